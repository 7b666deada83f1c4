"""The HTTP service under uvicorn on 127.0.0.1, against the fake upstream and a real
SQLite file: the official OpenAI SDK, plain httpx, bad input, keys and limits."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import msgspec
import openai
import pytest

from conductor.config import settings_from_dict
from conductor.service.app import create_app
from conductor.testing import FakeUpstream
from tests.integration.conftest import ServedApp, fake_settings, wait_for

USER_KEY, ADMIN_KEY, LIMITED_KEY = "sk-user-123", "sk-admin-456", "sk-limited-789"
FRUGAL_KEY = "sk-frugal-000"


def _service_settings(base_url: str) -> Any:
    data = msgspec.to_builtins(fake_settings(base_url, attempts=1))
    data["clients"] = {
        "acme": {"api_key_env": "TEST_CONDUCTOR_USER_KEY"},
        "ops": {"api_key_env": "TEST_CONDUCTOR_ADMIN_KEY", "admin": True},
        "tiny": {"api_key_env": "TEST_CONDUCTOR_LIMITED_KEY", "requests_per_minute": 3},
        "frugal": {"api_key_env": "TEST_CONDUCTOR_FRUGAL_KEY", "max_cost_per_hour_usd": 0.0001},
    }
    data["task_types"]["classify"]["labels"] = ["positive", "negative"]
    return settings_from_dict(data)


@pytest.fixture
def served(upstream: FakeUpstream, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ServedApp, Path]]:
    monkeypatch.setenv("TEST_CONDUCTOR_USER_KEY", USER_KEY)
    monkeypatch.setenv("TEST_CONDUCTOR_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("TEST_CONDUCTOR_LIMITED_KEY", LIMITED_KEY)
    monkeypatch.setenv("TEST_CONDUCTOR_FRUGAL_KEY", FRUGAL_KEY)
    db = tmp_path / "service.db"
    app = create_app(_service_settings(upstream.base_url), db_path=db, max_body_bytes=20_000)
    with ServedApp(app) as s:
        yield s, db


def _http(s: ServedApp, key: str | None = USER_KEY) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=s.url, headers=headers, timeout=10)


def _rows(db: Path, table: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def test_openai_sdk_non_streaming_with_extra_body_hints(served, upstream: FakeUpstream) -> None:
    s, _ = served
    upstream.behaviour.answer = "positive"
    client = openai.OpenAI(base_url=s.url + "/v1", api_key=USER_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Great value!"}],
        extra_body={"conductor": {"task_type": "classify", "min_quality": 0.5,
                                  "max_latency_ms": 5000}})
    resp = raw.parse()
    assert resp.choices[0].message.content == "positive"
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens == 2
    trace = resp.model_extra["conductor"]
    assert trace["strategy"] in ("direct-cheap", "direct-strong", "batch-cheap", "verified")
    assert raw.headers["x-conductor-strategy"] == trace["strategy"]
    assert raw.headers["x-conductor-request-id"] == trace["request_id"]
    assert float(raw.headers["x-conductor-cost-usd"]) == pytest.approx(trace["cost_usd"])
    assert resp.model == trace["model"]
    assert trace["quality_scale"] == "as_scored"  # no user labels yet
    # The SDK's newer name for the answer's length limit reaches the upstream, forced
    # to a direct strategy so that one upstream call answers.
    client.chat.completions.create(model="direct-cheap", max_completion_tokens=7,
                                   messages=[{"role": "user", "content": "Great value!"}])
    assert upstream.requests[-1]["max_tokens"] == 7
    client.close()


def test_openai_sdk_streaming(served, upstream: FakeUpstream) -> None:
    s, _ = served
    upstream.behaviour.answer = "one two three four five six seven"
    client = openai.OpenAI(base_url=s.url + "/v1", api_key=USER_KEY, max_retries=0)
    stream = client.chat.completions.create(
        model="direct-cheap", messages=[{"role": "user", "content": "count"}], stream=True,
        stream_options={"include_usage": True}, temperature=0.4, seed=5)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four five six seven"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 3
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and
              c.choices[0].finish_reason]
    assert finish == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    sent = upstream.requests[-1]  # a stream carries the sampling parameters too
    assert (sent["stream"], sent["temperature"], sent["seed"]) == (True, 0.4, 5)
    client.close()


def test_openai_sdk_unknown_model_lists_the_valid_names(served) -> None:
    s, _ = served
    client = openai.OpenAI(base_url=s.url + "/v1", api_key=USER_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="valid names: auto, batch-cheap"):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    models = [m.id for m in client.models.list()]
    assert models[:2] == ["auto", "conductor"] and "direct-cheap" in models
    for name in models[:2]:  # both routing names are accepted
        assert client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "x"}]).choices
    client.close()


def test_a_stream_cut_midway_ends_with_an_error_event(served, upstream: FakeUpstream) -> None:
    s, _db = served
    upstream.behaviour.answer = "one two three four five six"
    upstream.behaviour.stream_cut_after = 2
    with _http(s) as h, h.stream("POST", "/v1/chat/completions", json={
            "model": "direct-cheap", "stream": True,
            "messages": [{"role": "user", "content": "go"}]}) as r:
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert r.status_code == 200
    assert events[-1] != "data: [DONE]"
    err = msgspec.json.decode(events[-1][6:])
    assert err["error"]["code"] == "upstream_error" and "stream" in err["error"]["message"]
    assert any('"content"' in e for e in events[:-1])  # the deltas that did arrive
    # What was streamed is paid for: stored with estimated tokens and cost, never as 0.
    rid = r.headers["x-conductor-request-id"]
    with _http(s) as h:
        for _ in range(100):
            stored = h.get(f"/v1/requests/{rid}")
            if stored.status_code == 200 and stored.json()["outcome"]:
                break
            time.sleep(0.05)
    o = stored.json()["outcome"]
    assert o["error"] and o["cost_estimated"] is True
    assert 1 <= o["output_tokens"] < 10 and o["input_tokens"] > 0
    assert o["cost_usd"] == pytest.approx((o["input_tokens"] * 1 + o["output_tokens"] * 2) / 1e6)


def test_usage_says_when_conductor_counted_the_tokens(served, upstream: FakeUpstream) -> None:
    s, _db = served
    body = {"model": "direct-cheap", "messages": [{"role": "user", "content": "hi there"}]}
    with _http(s) as h:
        counted_upstream = h.post("/v1/chat/completions", json=body).json()["usage"]
        upstream.behaviour.usage = False
        counted_here = h.post("/v1/chat/completions", json=body).json()["usage"]
    assert "estimated" not in counted_upstream
    assert counted_here["estimated"] is True and counted_here["completion_tokens"] > 0


def test_httpx_header_hints_native_route_and_audit(served, upstream: FakeUpstream) -> None:
    s, _db = served
    upstream.behaviour.answer = "negative"
    with _http(s) as h:
        r = h.post("/v1/chat/completions", headers={
            "X-Conductor-Task-Type": "classify", "X-Conductor-Min-Quality": "0.5"},
            json={"messages": [{"role": "user", "content": "Broke in a day."}],
                  "metadata": {"team": "search"}})
        assert r.status_code == 200, r.text
        rid = r.headers["x-conductor-request-id"]
        before = len(upstream.requests)
        route = h.post("/v1/route", json={"prompt": "x", "task_type": "classify",
                                          "min_quality": 0.9})
        assert route.status_code == 200 and route.json()["task_type"] == "classify"
        assert route.json()["constraints"]["min_quality"] == 0.9
        assert len(upstream.requests) == before  # a dry run calls nothing
        native = h.post("/v1/complete", json={"prompt": "Label it", "task_type": "classify",
                                              "strategy": "direct-strong",
                                              "request_id": "ticket-4711"})
        assert native.status_code == 200 and native.json()["text"] == "negative"
        assert native.json()["decision"]["routed_by"] == "forced"
        assert native.json()["request_id"] == "ticket-4711"  # the caller's id is kept
        audit = h.get(f"/v1/requests/{rid}")
        assert audit.status_code == 200
        body = audit.json()
        assert body["decision"]["task_type"] == "classify"
        assert body["decision"]["constraints"]["min_quality"] == 0.5
        assert body["outcome"]["text"] == "" and body["outcome"]["strategy"]
        assert [x["source"] for x in body["rewards"]] == ["heuristic"]  # "negative" is a label
        assert h.get("/v1/requests/nope").status_code == 404

    def stored_metadata() -> Any:  # the OpenAI body's metadata, stored with the request
        conn = sqlite3.connect(_db)
        try:
            return conn.execute("SELECT metadata FROM requests WHERE request_id = ?",
                                (rid,)).fetchone()
        finally:
            conn.close()

    wait_for(lambda: stored_metadata() is not None, "the request row committed")
    assert msgspec.json.decode(stored_metadata()[0]) == {"team": "search"}


def test_feedback_is_idempotent_pending_and_404(served, upstream: FakeUpstream) -> None:
    s, db = served
    with _http(s) as h:
        rid = h.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hi"}]}).headers["x-conductor-request-id"]
        for _ in range(2):
            fb = h.post("/v1/feedback", json={"request_id": rid, "stars": 4, "rater": "ann"})
            assert fb.status_code == 200
            assert fb.json() == {"request_id": rid, "score": 0.75, "effective_score": 0.75,
                                 "status": "applied"}
        fb = h.post("/v1/feedback", json={"request_id": rid, "rating": "down", "rater": "ann"})
        assert fb.json()["effective_score"] == 0.0
        missing = h.post("/v1/feedback", json={"request_id": "nope", "stars": 5})
        assert missing.status_code == 404
        assert missing.json()["error"]["message"] == "unknown request id 'nope'"
        early = h.post("/v1/feedback", json={"request_id": "later-1", "score": 1.0,
                                             "pending_ok": True})
        assert early.status_code == 202 and early.json()["status"] == "pending"
        assert h.post("/v1/feedback", json={"request_id": rid, "stars": 9}).status_code == 400
        # The same score whichever way the encoder writes the number; a bare one is refused.
        as_int = h.post("/v1/feedback", content=b'{"request_id": "%s", "score": 1, '
                        b'"rater": "js"}' % rid.encode(), headers={"content-type":
                                                                  "application/json"})
        as_float = h.post("/v1/feedback", json={"request_id": rid, "score": 1.0, "rater": "py"})
        assert as_int.json()["score"] == as_float.json()["score"] == 1.0
        bare = h.post("/v1/feedback", json={"request_id": rid, "rating": 1})
        assert bare.status_code == 400
        assert "ambiguous" in bare.json()["error"]["message"]
        assert '"stars" (1-5)' in bare.json()["error"]["message"]
    assert _rows(db, "pending_feedback") == 1  # committed before the 202


def test_policy_admin_and_history(served) -> None:
    s, db = served
    with _http(s, None) as anon:
        assert anon.get("/v1/policy").status_code == 401
    with _http(s) as user:
        assert user.get("/v1/policy").json()["rollout_percent"] == 100.0
        r = user.put("/v1/policy", json={"rollout_percent": 50})
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    with _http(s, ADMIN_KEY) as admin:
        r = admin.put("/v1/policy", json={"rollout_percent": 25, "exploration": {"chat": 0.5},
                                          "version": "v2"})
        assert r.status_code == 200, r.text
        assert r.json()["rollout_percent"] == 25 and r.json()["exploration"]["chat"] == 0.5
        bad = admin.put("/v1/policy", json={"default_strategy": "gpt-9"})
        assert bad.status_code == 400, bad.text  # a bad field, not a missing resource
        assert bad.json()["error"]["message"] == (
            "default_strategy: unknown strategy 'gpt-9'; valid: direct-cheap, direct-strong, "
            "batch-cheap, verified")
        assert admin.put("/v1/policy", json={"rollout_percent": 101}).status_code == 400
        assert admin.get("/v1/policy").json()["version"] == "v2"
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT actor, settings FROM policy_history").fetchall()
    conn.close()
    assert [a for a, _ in rows] == ["ops"]  # committed before the 200; failed ones absent
    assert msgspec.json.decode(rows[0][1])["rollout_percent"] == 25


def test_rate_limit_is_429_with_retry_after_naming_the_limit(served) -> None:
    s, _ = served
    with _http(s, LIMITED_KEY) as h:
        body = {"messages": [{"role": "user", "content": "hi"}]}
        assert [h.post("/v1/chat/completions", json=body).status_code
                for _ in range(3)] == [200, 200, 200]
        r = h.post("/v1/chat/completions", json=body)
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.json()["error"]["code"] == "requests_per_minute"
    assert "requests_per_minute limit of 3" in r.json()["error"]["message"]


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"{not json", 400, "malformed"),
    (b'{"messages": "hi"}', 400, "messages"),
    (b'{"messages": []}', 400, "messages"),
    (b'{"messages": [{"role": "user", "content": "x"}], "conductor": {"min_quality": 1.5}}',
     400, "conductor.min_quality"),
    (b'{"messages": [{"role": "user", "content": "x"}], "conductor": {"task_type": "poetry"}}',
     400, "unknown task type 'poetry'"),
    (b'{"messages": [{"role": "wizard", "content": "x"}]}', 400, "role"),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', 400, "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "x"}], "conductor": {"colour": 1}}', 400,
     "colour"),
    (b'{"messages": [{"role": "user", "content": "' + b"x" * 30_000 + b'"}]}', 413, ""),
])
def test_bad_input_is_a_4xx_naming_the_field_and_stores_nothing(served, body: bytes,
                                                                 status: int,
                                                                 needle: str) -> None:
    s, db = served
    with _http(s) as h:
        r = h.post("/v1/chat/completions", content=body,
                   headers={"Content-Type": "application/json"})
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert needle.lower() in (err["message"] + " " + str(err["param"])).lower()
        h.post("/v1/feedback", json={"request_id": "x", "stars": 3, "bogus": 1})
    assert _rows(db, "requests") == _rows(db, "decisions") == 0


def test_a_client_request_id_in_the_probes_form_is_refused_and_stores_nothing(
        served, upstream: FakeUpstream) -> None:
    """A probe of request X is logged as request "X.probe": a client's own id of that form
    would overwrite a probe's rows (or a probe its), so it is refused, and a plain client
    id is kept as given."""
    s, db = served
    with _http(s) as h:
        r = h.post("/v1/complete", json={"prompt": "Label it", "task_type": "classify",
                                          "request_id": "order-7.probe"})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "request_id" and "'.probe'" in err["message"]
        # An id held for a request refused after the hold (here: an unknown task type) is
        # released: the corrected request with the same id goes through.
        bad = h.post("/v1/complete", json={"prompt": "Label it", "task_type": "poetry",
                                            "request_id": "order-8"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "task_type"
        assert _rows(db, "requests") == _rows(db, "decisions") == 0
        assert len(upstream.requests) == 0
        again = h.post("/v1/complete", json={"prompt": "Label it", "task_type": "classify",
                                              "request_id": "order-8"})
        assert again.status_code == 200, again.text
        ok = h.post("/v1/complete", json={"prompt": "Label it", "task_type": "classify",
                                           "request_id": "order-7.probe-2"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["request_id"] == "order-7.probe-2"


def test_a_client_request_id_used_twice_is_a_409_and_the_first_request_stays(
        served, upstream: FakeUpstream) -> None:
    """The log keeps one request per id: a second request with a client's id, while the
    first is in flight or after it is logged, is refused before it runs (409), and the
    first request's decision and answer stay as they were."""
    s, _db = served
    upstream.behaviour.latency_s = 2.0
    body = {"prompt": "Label it", "task_type": "classify", "request_id": "dup-1"}
    with _http(s) as h, ThreadPoolExecutor(1) as pool:
        first = pool.submit(h.post, "/v1/complete", json=body)
        wait_for(lambda: len(upstream.requests) == 1, "the first request reaches upstream")
        during = h.post("/v1/complete", json=body)
        assert during.status_code == 409, during.text
        assert during.json()["error"]["code"] == "request_id_in_use"
        assert "dup-1" in during.json()["error"]["message"]
        answered = first.result(timeout=60)
        assert answered.status_code == 200, answered.text
        wait_for(lambda: h.get("/v1/requests/dup-1").status_code == 200, "it is logged")
        after = h.post("/v1/complete", json={**body, "prompt": "Another"})
        assert after.status_code == 409 and "already in the log" in after.json()["error"][
            "message"]
        record = h.get("/v1/requests/dup-1").json()
    assert not any("Another" in str(r["messages"]) for r in upstream.requests)  # never ran
    first_answer = answered.json()
    assert record["decision"]["created_at"] == first_answer["decision"]["created_at"]
    assert record["outcome"]["output_tokens"] == first_answer["outcome"]["output_tokens"]


def test_health_ready_models_stats_openapi(served, upstream: FakeUpstream) -> None:
    s, _ = served
    upstream.behaviour.answer = "fine"
    with _http(s) as h:
        assert h.get("/healthz").json() == {"status": "ok", "pid": os.getpid()}  # in-process
        ready = h.get("/readyz")
        assert ready.status_code == 200 and ready.json()["strategies_available"] == 4
        answers = [h.post("/v1/chat/completions", json={
            "model": "direct-cheap", "messages": [{"role": "user", "content": "x"}]})
            for _ in range(3)]
        assert [r.status_code for r in answers] == [200, 200, 200]
        assert {r.json()["choices"][0]["message"]["content"] for r in answers} == {"fine"}
        spent = sum(float(r.headers["x-conductor-cost-usd"]) for r in answers)
        # Answers go out before their bookkeeping: the stats count a request once it is
        # logged, a moment after its answer.
        wait_for(lambda: h.get("/v1/stats").json()["counters"]["outcomes_total"] >= 3,
                 "the three answers counted")
        stats = h.get("/v1/stats").json()
        assert stats["counters"]["outcomes_total"] == 3
        assert stats["counters"]["errors_total"] == 0
        assert stats["strategies"] == {"direct-cheap": 1.0}
        assert stats["cost"]["total_usd"] == pytest.approx(spent)
        assert stats["cost"]["saved_vs_default_usd"] > 0  # the default is direct-strong
        assert stats["policy"]["default_strategy"] == "direct-strong"
        assert stats["router"]["fallbacks"] == 0 and stats["router"]["retries"] == 0
        spec = h.get("/schema/openapi.json").json()
        assert "/v1/chat/completions" in spec["paths"] and "/v1/feedback" in spec["paths"]


def test_the_hourly_cost_budget_refuses_what_could_pass_it(served) -> None:
    s, _ = served
    with _http(s, FRUGAL_KEY) as h:
        # Upper bound: input tokens + max_tokens at the strong model's prices.
        small = {"model": "direct-cheap", "max_tokens": 5,
                 "messages": [{"role": "user", "content": "hi"}]}
        assert h.post("/v1/chat/completions", json=small).status_code == 200
        big = {**small, "model": "direct-strong", "max_tokens": 4000}
        r = h.post("/v1/chat/completions", json=big)
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "max_cost_per_hour_usd"
    assert "would be exceeded" in r.json()["error"]["message"]


def test_streaming_a_verified_strategy_answers_whole(served, upstream: FakeUpstream) -> None:
    s, _ = served
    upstream.behaviour.answer = "a whole answer"
    with _http(s) as h, h.stream("POST", "/v1/chat/completions", json={
            "model": "verified", "stream": True,
            "messages": [{"role": "user", "content": "go"}]}) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [msgspec.json.decode(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "a whole answer"
    assert chunks[-1]["conductor"]["strategy"] == "verified"


def test_pages_and_metrics_need_a_key_when_keys_are_configured(served) -> None:
    s, _ = served
    with _http(s, None) as anon:
        for path in ("/metrics", "/dashboard", "/schema", "/schema/openapi.json"):
            r = anon.get(path)
            assert r.status_code == 401, (path, r.status_code)
            assert r.json()["error"]["message"].startswith("missing API key")
            assert anon.get(path, params={"key": USER_KEY}).status_code == 200, path
        assert anon.get("/metrics", headers={"Authorization": f"Bearer {USER_KEY}"}
                        ).status_code == 200
        assert anon.get("/assets/chart.umd.min.js").status_code == 200  # library code only
        assert anon.get("/healthz").status_code == 200


def test_failed_keys_are_limited_per_address(served) -> None:
    s, _ = served
    with _http(s, "sk-wrong") as bad, _http(s) as good:
        codes = [bad.get("/v1/stats").status_code for _ in range(12)]
        assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]
        refused = bad.get("/v1/stats")
        assert refused.json()["error"]["code"] == "failed_api_keys"
        assert int(refused.headers["retry-after"]) > 0
        # The same address with a good key is refused too (the guessing source is the
        # address), until the minute has passed.
        assert good.get("/v1/stats").status_code == 429


def _answers(body: dict[str, Any]) -> str:
    """"ok" per item: a JSON array for a micro-batch, plain text otherwise."""
    prompt = body["messages"][-1]["content"]
    n = prompt.count("### Item ")
    return msgspec.json.encode(["ok"] * n).decode() if n else "ok"


def test_sampling_and_output_parameters_reach_the_model(served,
                                                        upstream: FakeUpstream) -> None:
    s, _ = served
    upstream.behaviour.answer = _answers
    client = openai.OpenAI(base_url=s.url + "/v1", api_key=USER_KEY, max_retries=0)
    sent = {"temperature": 0.3, "top_p": 0.9, "stop": ["END"], "seed": 7,
            "presence_penalty": 0.5, "frequency_penalty": -0.5,
            "response_format": {"type": "json_object"}}
    for model in ("auto", "direct-cheap", "verified"):
        before = len(upstream.requests)
        resp = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Give JSON"}],
            **sent)  # type: ignore[call-overload]
        assert resp.choices[0].message.content == "ok"
        assert resp.model_extra["conductor"]["strategy"] != "batch-cheap"
        body = upstream.requests[before]  # the answering call (a verified draft's first)
        assert {k: body.get(k) for k in sent} == sent, body
    # A batching strategy cannot honour a form of answer of the client's: refused by name
    # when forced, never chosen by routing (without the form, routing often chooses it).
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.chat.completions.create(model="batch-cheap", response_format={
            "type": "json_object"}, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="stop"):
        client.chat.completions.create(model="batch-cheap", stop="END",
                                       messages=[{"role": "user", "content": "x"}])
    with _http(s) as h:
        def routed(params: dict[str, Any] | None) -> set[str]:
            return {h.post("/v1/route", json={"prompt": "x", **(
                {"params": params} if params else {})}).json()["strategy"] for _ in range(40)}

        assert "batch-cheap" in routed(None) | routed({"temperature": 0.2})
        assert "batch-cheap" not in routed({"stop": ["\n"]}) | routed(
            {"response_format": {"type": "json_object"}})
        bad = h.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "tools"
        bad = h.post("/v1/chat/completions", json={"messages": [
            {"role": "system", "content": "Describe."},
            {"role": "user", "content": [{"type": "text", "text": "What is it?"},
                                         {"type": "image_url", "image_url": {"url": "x"}}]}]})
        assert bad.status_code == 400, bad.text  # not answered without the image
        assert bad.json()["error"]["param"] == "messages[1].content"
        assert "'image_url'" in bad.json()["error"]["message"]
        ok = h.post("/v1/chat/completions", json={"model": "direct-cheap", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What "},
                                         {"type": "text", "text": "is it?"}]}]})
        assert ok.status_code == 200 and upstream.requests[-1]["messages"] == [
            {"role": "user", "content": "What is it?"}]
        bad = h.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "x"}], "top_p": 1.5})
        err = bad.json()["error"]
        assert bad.status_code == 400 and "top_p" in f"{err['message']} {err['param']}"
    client.close()


async def _batch_pair(url: str, temperatures: tuple[float, float]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10, headers={
            "Authorization": f"Bearer {USER_KEY}"}) as h:
        rs = await asyncio.gather(*(h.post("/v1/chat/completions", json={
            "model": "batch-cheap", "temperature": t, "seed": 3,
            "messages": [{"role": "user", "content": f"item {i}"}]})
            for i, t in enumerate(temperatures)))
        assert [r.status_code for r in rs] == [200, 200], [r.text for r in rs]
        assert [r.json()["choices"][0]["message"]["content"] for r in rs] == ["ok", "ok"]


def test_a_micro_batch_shares_its_items_sampling_parameters(served,
                                                            upstream: FakeUpstream) -> None:
    """Requests of one batching strategy go upstream together only with the same
    parameters, which the batched call carries."""
    s, _ = served
    upstream.behaviour.answer = _answers
    asyncio.run(_batch_pair(s.url, (0.2, 0.2)))
    assert [(b["temperature"], b["seed"], b["messages"][-1]["content"].count("### Item "))
            for b in upstream.requests] == [(0.2, 3, 2)]
    asyncio.run(_batch_pair(s.url, (0.2, 0.9)))
    assert sorted((b["temperature"], b["messages"][-1]["content"].count("### Item "))
                  for b in upstream.requests[1:]) == [(0.2, 1), (0.9, 1)]
