"""The command line: a thin layer over the library.

Library errors become a one-line message and a non-zero exit here, and only here:
ConductorError -> exit 1 (``ConfigError`` and bad input -> exit 2).
"""

from __future__ import annotations

import datetime
import sys
from collections import Counter
from pathlib import Path

import click
import numpy as np

from conductor.config import default_settings, load_settings
from conductor.errors import ConductorError, ConfigError, InvalidRequestError, StorageError
from conductor.router import Conductor
from conductor.storage.sqlite import SQLiteStore

# The reference workload's mix (DESIGN.md): classification, summaries, support, descriptions.
REFERENCE_MIX = {"classify": 0.4, "summarize": 0.3, "chat": 0.2, "generate_long": 0.1}
_PROMPTS = {
    "classify": "Classify the sentiment of this review: 'Arrived fast, works as described.'",
    "summarize": "Summarize these 12 reviews of the AeroPress coffee maker in 3 sentences: ...",
    "chat": "My order #4412 has not arrived and the tracking page shows no update since Monday.",
    "generate_long": "Write a 500-word product description for a waterproof hiking backpack.",
}


def exit_code(exc: ConductorError) -> int:
    """The one place that maps errors to exit codes."""
    return 2 if isinstance(exc, ConfigError | InvalidRequestError) else 1


class ConductorGroup(click.Group):
    """Turns library errors into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ConductorError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exit_code(exc))


@click.group(cls=ConductorGroup)
@click.version_option(package_name="conductor-router")
def main() -> None:
    """Conductor: route each LLM request to the cheapest strategy that meets its constraints.

    Example: conductor demo --requests 500
    """


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML config (default: the built-in demo world).")
@click.option("--requests", "n", type=click.IntRange(1, 1_000_000), default=600, show_default=True,
              help="How many requests to route.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for the workload and the policy.")
@click.option("--every", type=click.IntRange(1), default=100, show_default=True,
              help="Print a progress line every N requests.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Log every decision, outcome and reward to this SQLite file.")
def demo(config_path: Path | None, n: int, seed: int, every: int, db_path: Path | None) -> None:
    """Route a simulated workload and print the strategy mix and cost as the policy learns.

    The workload is the reference mix (40% classify, 30% summarize, 20% chat, 10% long
    generation) on the demo world; the baseline is every request on the default strategy.

    Example: conductor demo --requests 1000 --seed 3 --db demo.db
    """
    settings = load_settings(config_path) if config_path else default_settings()
    rng = np.random.default_rng([seed, 7])
    tasks = [t for t in REFERENCE_MIX if t in settings.task_types]
    weights = np.array([REFERENCE_MIX[t] for t in tasks])
    store = SQLiteStore(db_path, store_text=settings.storage.store_text) if db_path else None
    with Conductor(settings, seed=seed, log_store=store) as conductor:
        window: Counter[str] = Counter()
        cost = base_cost = 0.0
        quality: list[float] = []
        default = settings.policy.default_strategy
        d_model = settings.models[settings.strategies[default].model]
        click.echo(f"routing {n} requests on {config_path or 'the demo world'}"
                   f"; baseline: everything on {default!r}")
        for i in range(1, n + 1):
            task = str(rng.choice(tasks, p=weights / weights.sum()))
            res = conductor.complete(_PROMPTS[task], task_type=task)
            window[res.outcome.strategy] += 1
            cost += res.outcome.cost_usd
            base_cost += (res.outcome.input_tokens * d_model.input_usd_per_1m
                          + res.outcome.output_tokens * d_model.output_usd_per_1m) / 1e6
            quality += [r.score for r in res.rewards]
            if i % every == 0 or i == n:
                mix = ", ".join(f"{s} {c / sum(window.values()):.0%}"
                                for s, c in window.most_common())
                q = float(np.mean(quality[-every:])) if quality else float("nan")
                click.echo(f"{i:>7}  cost ${cost:.4f} vs ${base_cost:.4f} on default "
                           f"({1 - cost / base_cost:+.0%} saved)  quality {q:.2f}  mix: {mix}")
                window.clear()


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML config (default: the built-in demo world, in real time).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes. Each learns on its own and shares the database.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path),
              help="SQLite database (default: the config's storage.path, conductor.db).")
def serve(config_path: Path | None, host: str, port: int, workers: int,
          db_path: Path | None) -> None:
    """Serve the HTTP API: OpenAI-compatible /v1/chat/completions, /v1/feedback, /v1/policy...

    With no config it serves the built-in demo world (no API key, no network) and keeps
    its log in conductor.db in the working directory.

    Example: conductor serve --config conductor.toml --port 8000
    """
    import os

    import uvicorn

    from conductor.service.app import create_app, serve_default_settings

    settings = load_settings(config_path) if config_path else serve_default_settings()
    where = config_path or "the built-in demo world"
    click.echo(f"serving {where} on http://{host}:{port} "
               f"(OpenAI base_url http://{host}:{port}/v1)", err=True)
    if workers == 1:
        uvicorn.run(create_app(settings, db_path=db_path), host=host, port=port,
                    log_level="info", timeout_graceful_shutdown=10)
        return
    if config_path:
        os.environ["CONDUCTOR_CONFIG"] = str(config_path)
    if db_path:
        os.environ["CONDUCTOR_DB"] = str(db_path)
    uvicorn.run("conductor.service.app:app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level="info", timeout_graceful_shutdown=10)


def parse_time(value: str | None) -> float | None:
    """Unix seconds or an ISO 8601 date/time (UTC unless it says otherwise)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequestError(
            f"--since {value!r}: expected unix seconds or an ISO date such as 2026-11-01T00:00",
            field="since") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.timestamp()


@main.command()
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path),
              default="conductor.db", show_default=True, help="The SQLite database to read.")
@click.option("--since", help="Only requests at or after this time (unix seconds or ISO 8601).")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The JSONL file to write.")
def export(db_path: Path, since: str | None, out: Path) -> None:
    """Export logged traffic as JSONL: one line per request with its decision (propensity,
    constraints), outcome and rewards. `replay`, `calibrate` and `compare` read it.

    Example: conductor export --db conductor.db --since 2026-11-01 --out traffic.jsonl
    """
    t = parse_time(since)
    if not db_path.exists():
        raise StorageError(f"{db_path}: no such database")
    store = SQLiteStore(db_path)
    try:
        n = store.export_jsonl(out, since=t)
    finally:
        store.close()
    click.echo(f"wrote {n} requests to {out}")


if __name__ == "__main__":  # pragma: no cover
    main()
