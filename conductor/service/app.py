"""The Litestar app: ``create_app(settings)`` wires everything in one place.

A lifespan opens the store and Conductor on startup and closes them on shutdown (judge
jobs finish, the posterior is snapshotted, the write queue drains).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, Router, get, post, put
from litestar.connection import ASGIConnection
from litestar.datastructures import CacheControlHeader, State
from litestar.exceptions import NotFoundException
from litestar.handlers.base import BaseRouteHandler
from litestar.logging.config import LoggingConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.params import FromPath, JSONBody
from litestar.response import Stream

from conductor.config import Settings, default_settings, load_settings
from conductor.router import Conductor
from conductor.service.auth import KeyRing
from conductor.service.errors import handle_exception
from conductor.service.gateway import Gateway
from conductor.service.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    CompleteRequest,
    CompleteResponse,
    FeedbackRequest,
    FeedbackResponse,
    ModelList,
    PolicyUpdate,
    PolicyView,
    RequestView,
)
from conductor.storage.stores import database_of, open_database
from conductor.types import Decision

log = logging.getLogger("conductor.service")


def _gateway(state: State) -> Gateway:
    return state.gateway


def _client_of(connection: ASGIConnection[Any, Any, Any, Any], *,
               key_in_query: bool = False) -> str:
    """The caller's client id from its API key (401 without a valid one)."""
    key = connection.headers.get("x-api-key")
    if key_in_query:
        key = key or connection.query_params.get("key")
    return _gateway(connection.app.state).keys.client_for(
        connection.headers.get("authorization"), key,
        connection.client.host if connection.client else "")


async def client_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
                       ) -> None:
    """Resolve the caller's API key to a client id; handlers read it from
    ``request.state.client``. Async, though it awaits nothing: Litestar runs a sync guard
    in a worker thread, a hop that cost ~3% of a request's CPU (py-spy)."""
    connection.state.client = _client_of(connection)


async def page_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
                     ) -> None:
    """For what a browser or a scraper opens (/metrics, /dashboard, /schema): the key may
    also come as ``?key=`` in the address. Any client's key works (give Prometheus a
    client of its own)."""
    _client_of(connection, key_in_query=True)


async def admin_guard(connection: ASGIConnection[Any, Any, Any, Any],
                      handler: BaseRouteHandler) -> None:
    """A client that is an admin (403 otherwise)."""
    await client_guard(connection, handler)
    _gateway(connection.app.state).keys.require_admin(connection.state.client)


@post("/v1/chat/completions", status_code=200, summary="OpenAI-compatible chat completion",
      guards=[client_guard])
async def chat_completions(request: Request[Any, Any, Any], data: JSONBody[ChatCompletionRequest]
                           ) -> Response[ChatCompletion] | Stream:
    """``model: "auto"`` routes; a strategy name forces it. Routing hints: a ``conductor``
    object in the body or ``X-Conductor-*`` headers. ``stream: true`` streams SSE."""
    gw = _gateway(request.app.state)
    req, strategy = gw.chat_request(data, request.headers, request.state.client)
    if data.stream:
        include = bool(data.stream_options and data.stream_options.include_usage)
        decision, body = await gw.stream(req, strategy, include)
        return Stream(body, media_type="text/event-stream", headers={
            "X-Conductor-Request-Id": decision.request_id,
            "X-Conductor-Strategy": decision.strategy,
            "X-Conductor-Predicted-Cost-Usd": f"{decision.predicted_cost_usd:.8f}",
            "Cache-Control": "no-cache"})
    # Logging and learning are queued: the answer never waits for them.
    result = await gw.run_later(req, strategy)
    return Response(gw.chat_completion(result), headers=gw.headers_of(result))


@post("/v1/complete", status_code=200, summary="Route and run (native form)",
      guards=[client_guard])
async def complete(request: Request[Any, Any, Any], data: JSONBody[CompleteRequest]
                   ) -> Response[CompleteResponse]:
    gw = _gateway(request.app.state)
    result = await gw.run(gw.native_request(data, request.state.client), data.strategy)
    return Response(gw.complete_response(result), headers=gw.headers_of(result))


@post("/v1/route", status_code=200, summary="The decision only; nothing is called",
      guards=[client_guard])
async def route(request: Request[Any, Any, Any], data: JSONBody[CompleteRequest]) -> Decision:
    return _gateway(request.app.state).route(data, request.state.client)


@post("/v1/feedback", status_code=200, summary="A user rating for a request (idempotent)",
      guards=[client_guard])
async def feedback(request: Request[Any, Any, Any], data: JSONBody[FeedbackRequest]
                   ) -> Response[FeedbackResponse]:
    body, status = await _gateway(request.app.state).feedback(data)
    return Response(body, status_code=status)


@get("/v1/requests/{request_id:str}", summary="One request's decision, outcome and rewards",
     guards=[client_guard])
async def request_record(request: Request[Any, Any, Any],
                         request_id: FromPath[str]) -> RequestView:
    return await _gateway(request.app.state).request_record(request_id)


@get("/v1/models", summary="Strategies as OpenAI model objects, plus auto",
     guards=[client_guard])
async def models(request: Request[Any, Any, Any]) -> ModelList:
    return _gateway(request.app.state).models()


@get("/v1/policy", summary="Exploration, rollout, default strategy, freeze, version",
     guards=[client_guard])
async def get_policy(request: Request[Any, Any, Any]) -> PolicyView:
    return _gateway(request.app.state).policy()


@put("/v1/policy", summary="Change the policy (admin); every change is stored",
     guards=[admin_guard])
async def put_policy(request: Request[Any, Any, Any], data: JSONBody[PolicyUpdate]) -> PolicyView:
    return await _gateway(request.app.state).update_policy(data, actor=request.state.client)


@get("/v1/stats", summary="Counters, cost, latency and quality", guards=[client_guard])
async def stats(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return _gateway(request.app.state).stats()


@get("/metrics", summary="Prometheus text exposition", media_type="text/plain",
     guards=[page_guard])
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    gw = _gateway(request.app.state)
    stats = gw.stats()  # refresh alerts and gauges derived at read time
    realized = {t: q["mean"] for t, q in stats["quality"]["by_task_type"].items()}
    return Response(gw.prometheus.render(realized, stats.get("store")),
                    media_type="text/plain; version=0.0.4")


@get("/v1/stats/series", summary="Time series per interval, targets and posteriors",
     guards=[client_guard])
async def stats_series(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return await asyncio.to_thread(_gateway(request.app.state).series)


@get("/dashboard", summary="A live dashboard page (refreshes from /v1/stats)",
     media_type="text/html", include_in_schema=False, guards=[page_guard])
async def dashboard() -> Response[str]:
    page = resources.files("conductor.data").joinpath("dashboard.html").read_text("utf-8")
    return Response(page, media_type="text/html")


_SWAGGER = "static"  # inside swagger-ui-py 25.7.1 (pinned): Swagger UI 5, OpenAPI 3.1


# Static files the pages need, served from installed packages so that nothing is fetched
# from the internet: the dashboard's chart library (vendored, MIT) and Swagger UI for
# /schema (the swagger-ui-py package). Only these names are served.
_ASSETS = {
    "chart.umd.min.js": ("conductor.data", "vendor/chart.umd.min.js", "text/javascript"),
    "swagger-ui-bundle.js": ("swagger_ui", f"{_SWAGGER}/swagger-ui-bundle.js",
                             "text/javascript"),
    "swagger-ui-standalone-preset.js": (
        "swagger_ui", f"{_SWAGGER}/swagger-ui-standalone-preset.js", "text/javascript"),
    "swagger-ui.css": ("swagger_ui", f"{_SWAGGER}/swagger-ui.css", "text/css"),
    "favicon.png": ("swagger_ui", f"{_SWAGGER}/favicon-32x32.png", "image/png"),
}


@get("/assets/{name:str}", include_in_schema=False, cache_control=CacheControlHeader(
    max_age=86400))
async def dashboard_asset(name: FromPath[str]) -> Response[bytes]:
    found = _ASSETS.get(name)
    if found is None:
        raise NotFoundException(f"no asset {name!r}")
    package, path, media_type = found
    return Response(resources.files(package).joinpath(path).read_bytes(),
                    media_type=media_type)


@get("/healthz", summary="The process is up (and which worker process answered)")
async def healthz() -> dict[str, Any]:
    return {"status": "ok", "pid": os.getpid()}


@get("/readyz", summary="The store is writable and a strategy is available")
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    ok, checks = await _gateway(request.app.state).ready()
    return Response({"status": "ok" if ok else "unavailable", **checks},
                    status_code=200 if ok else 503)


def create_app(settings: Settings | None = None, *, db_path: str | Path | None = None,
               conductor: Conductor | None = None, max_body_bytes: int = 1_000_000,
               metrics_file: str | Path | None = None, db_check: bool = True) -> Litestar:
    """The service. Give ``settings`` (default: built-in) and optionally the database, a
    SQLite path or a PostgreSQL URL (default: ``storage.url`` or ``storage.path``), or a
    ready Conductor (tests)."""
    settings = settings or (conductor.settings if conductor else default_settings())

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        c = conductor
        if c is None:
            store = open_database(db_path or database_of(settings),
                                  store_text=settings.storage.store_text, check=db_check,
                                  pool_size=settings.storage.pool_size)
            c = Conductor(settings, log_store=store)
        app.state.gateway = Gateway(c, KeyRing(settings.clients), metrics_file=metrics_file)
        log.info("conductor ready: %d strategies, store %s", len(settings.strategies),
                 getattr(c.log_store, "where", type(c.log_store).__name__))
        try:
            yield
        finally:
            await c.aclose()

    return Litestar(
        route_handlers=[chat_completions, complete, route, feedback, request_record, models,
                        get_policy, put_policy, stats, stats_series, metrics, dashboard,
                        dashboard_asset, healthz, readyz],
        lifespan=[lifespan],
        exception_handlers={Exception: handle_exception},
        # httpx logs every upstream request at INFO: a log line per call, not wanted.
        logging_config=LoggingConfig(loggers={
            "litestar": {"level": "INFO", "handlers": ["queue_listener"], "propagate": False},
            "httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}}),
        request_max_body_size=max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Conductor", version="0.1.0", path="/schema",
            openapi_router=Router("/schema", route_handlers=[], guards=[page_guard]),
            render_plugins=[SwaggerRenderPlugin(
                path=["/", "/swagger"], js_url="/assets/swagger-ui-bundle.js",
                css_url="/assets/swagger-ui.css",
                standalone_preset_js_url="/assets/swagger-ui-standalone-preset.js",
                favicon="<link rel='icon' type='image/png' href='/assets/favicon.png'>"),
                JsonRenderPlugin(path="/openapi.json")]),
        type_encoders={msgspec.Struct: msgspec.to_builtins},
    )


def app_from_env() -> Litestar:
    """An app factory for ``uvicorn --factory`` (``conductor serve --workers N``):
    reads CONDUCTOR_CONFIG, CONDUCTOR_DB and CONDUCTOR_SKIP_DB_CHECK."""
    path = os.environ.get("CONDUCTOR_CONFIG")
    settings = load_settings(path) if path else serve_default_settings()
    return create_app(settings, db_path=os.environ.get("CONDUCTOR_DB") or None,
                      db_check=not os.environ.get("CONDUCTOR_SKIP_DB_CHECK"))


def serve_default_settings() -> Settings:
    """The built-in default for ``conductor serve``: the demo world in real time, 5x
    faster than the latencies it simulates, so a curl answers in well under a second."""
    s = default_settings()
    providers = {name: msgspec.structs.replace(p, simulate_latency=True, latency_scale=0.2)
                 if p.kind == "demo" else p for name, p in s.providers.items()}
    return msgspec.structs.replace(s, providers=providers)
