"""Several processes on one store learn as one router: each applies, in log order, the
events the others committed (``Learner.follow``). Two Conductors on one real SQLite file,
or one real PostgreSQL database, stand for two workers or replicas (each store is its own
origin, as each process's is)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from conductor import Conductor, default_settings
from conductor.config import ClientConfig, Settings
from conductor.errors import RateLimitedError
from conductor.storage.base import LogStore
from conductor.storage.sqlite import SQLiteStore
from tests.integration.conftest import states_close, without_snapshots
from tests.postgres import Cluster


class Shared:
    """One database every Conductor of a test opens: a SQLite file or a PostgreSQL
    database."""

    def __init__(self, tmp_path: Path, cluster: Cluster | None) -> None:
        self.tmp_path = tmp_path
        self.cluster = cluster
        self.where: str | Path = cluster.new_database() if cluster else tmp_path / "shared.db"

    def store(self, where: str | Path | None = None) -> LogStore:
        where = where or self.where
        if isinstance(where, str):
            from conductor.storage.postgres import PostgresStore

            return PostgresStore(where)
        return SQLiteStore(where)

    def without_snapshots(self) -> str | Path:
        if self.cluster is not None:
            assert isinstance(self.where, str)
            return self.cluster.copy_without_snapshots(self.where)
        assert isinstance(self.where, Path)
        return without_snapshots(self.where, self.tmp_path / "bare.db")


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Shared:
    cluster = request.getfixturevalue("pg_cluster") if request.param == "postgres" else None
    return Shared(tmp_path, cluster)


def _settings(follow_every_s: float = 0.0) -> Settings:
    s = default_settings()
    return msgspec.structs.replace(s, storage=msgspec.structs.replace(
        s.storage, follow_every_s=follow_every_s))


def _open(db: Shared, seed: int, follow_every_s: float = 0.0,
          where: str | Path | None = None) -> Conductor:
    return Conductor(_settings(follow_every_s), seed=seed, log_store=db.store(where))


def _settle(*cs: Conductor) -> None:
    """Everything answered is learned locally and committed."""
    for c in cs:
        c.books.wait_idle()
        c.wait_for_judges()
        c.log_store.flush()


def _evidence(c: Conductor, task: str, strategy: str) -> tuple[float, float]:
    post = c.posteriors[task]
    i = post.index[strategy]
    return float(post.evidence["q_s"][i]), float(post.evidence["q_f"][i])


def test_feedback_through_one_worker_moves_the_others_posterior(db: Shared) -> None:
    a, b = _open(db, seed=1), _open(db, seed=2)
    r = a.complete("Is this review positive? Great value!", task_type="classify")
    _settle(a)
    before = _evidence(b, "classify", r.decision.strategy)
    assert b.learner.follow() > 0  # the outcome and the automatic rewards
    a.feedback(r.request_id, stars=1)
    assert b.learner.follow() >= 1
    after = _evidence(b, "classify", r.decision.strategy)
    assert after != before
    # B applied A's events in A's order: the two hold the same posterior.
    assert states_close(b.state(), a.state(), 1e-12)
    assert b.learner.follow() == 0  # nothing is applied twice
    a.close()
    b.close()


def test_a_policy_change_through_one_worker_is_in_force_on_the_other(db: Shared) -> None:
    a, b = _open(db, seed=1), _open(db, seed=2)
    a.update_policy(freeze=True, exploration={"classify": 0.5}, actor="ops")
    assert not b.policy_settings().freeze
    b.learner.follow()
    assert b.policy_settings().freeze
    assert b.policy_settings().exploration["classify"] == 0.5
    b.update_policy(freeze=False, actor="ops")
    a.learner.follow()
    assert not a.policy_settings().freeze
    a.close()
    b.close()
    again = _open(db, seed=3)  # and after a restart
    assert not again.policy_settings().freeze
    assert again.policy_settings().exploration["classify"] == 0.5
    again.close()


def test_the_follower_thread_applies_the_others_events_on_its_own(db: Shared) -> None:
    a, b = _open(db, seed=1), _open(db, seed=2, follow_every_s=0.05)
    assert b.follower is not None and a.follower is None
    a.update_policy(freeze=True, actor="ops")
    deadline = time.monotonic() + 30.0  # bounds a hang; the follower takes ~0.05 s
    while not b.policy_settings().freeze and time.monotonic() < deadline:
        time.sleep(0.01)
    assert b.policy_settings().freeze
    a.close()
    b.close()


def test_after_both_restart_their_posteriors_equal_a_rebuild_from_nothing(
        db: Shared) -> None:
    a, b = _open(db, seed=1), _open(db, seed=2)
    served = []
    for i in range(60):
        c = (a, b)[i % 2]
        r = c.complete(f"request {i}: is this positive?", task_type=("classify", "chat")[i % 3 > 0])
        served.append((c, r))
        if i % 7 == 0:
            _settle(a, b)
            (b, a)[i % 2].learner.follow()
        if i == 30:
            a.snapshot()  # a snapshot mid-way, with followed events in it
    _settle(a, b)
    for i, (_, r) in enumerate(served[::3]):
        (b, a)[i % 2].feedback(r.request_id, stars=1 + i % 5)  # often the other worker
    a.learner.follow()
    b.learner.follow()
    # Both hold every event; their orders differ (each applied its own first, and its
    # probes as they landed on its judge thread), so with evidence decay (half-life
    # 5,000: 1.4e-4 per observation out of place) they agree closely, not bit for bit.
    assert states_close(a.state(), b.state(), 5e-3)
    a.close()
    b.close()

    bare = db.without_snapshots()
    a2, b2 = _open(db, seed=1), _open(db, seed=2)
    rebuilt = _open(db, seed=3, where=bare)
    assert states_close(a2.state(), rebuilt.state(), 5e-3)
    assert states_close(b2.state(), rebuilt.state(), 5e-3)
    # Nothing was counted twice or missed: as many outcomes (an undecayed count), and the
    # evidence sums equal the rebuild's up to the order of decay.
    for task in ("classify", "chat"):
        assert a2.posteriors[task].observations == rebuilt.posteriors[task].observations
        for name in a2.posteriors[task].strategies:
            assert _evidence(a2, task, name) == pytest.approx(
                _evidence(rebuilt, task, name), rel=5e-3, abs=1e-9)
    for c in (a2, b2, rebuilt):
        c.close()


def _limited(db: Shared, seed: int, **limits: Any) -> Conductor:
    s = _settings()
    s = msgspec.structs.replace(s, clients={"acme": ClientConfig(**limits)})
    return Conductor(s, seed=seed, log_store=db.store())


def _race(workers: list[Conductor], n: int) -> tuple[list[Any], list[RateLimitedError]]:
    """``n`` requests from client acme, spread over the workers, each worker in a thread of
    its own: each has its own store connection, so admissions truly race, as between
    processes."""
    def serve(k: int) -> list[Any]:
        out: list[Any] = []
        for i in range(k, n, len(workers)):
            try:
                out.append(workers[k].complete(f"item {i}", task_type="classify",
                                               client_id="acme", max_tokens=16))
            except RateLimitedError as exc:
                out.append(exc)
        return out

    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        out = [r for rs in pool.map(serve, range(len(workers))) for r in rs]
    return ([r for r in out if not isinstance(r, RateLimitedError)],
            [r for r in out if isinstance(r, RateLimitedError)])


def test_a_rate_limit_holds_exactly_across_workers(db: Shared) -> None:
    workers = [_limited(db, seed, requests_per_minute=30) for seed in range(4)]
    admitted, refused = _race(workers, 100)
    assert len(admitted) == 30 and len(refused) == 70
    assert {e.limit for e in refused} == {"requests_per_minute"}
    assert 0 < refused[0].retry_after_s <= 60
    for c in workers:
        c.close()
    again = _limited(db, 9, requests_per_minute=30)  # a restart keeps the window
    with pytest.raises(RateLimitedError):
        again.complete("one more", task_type="classify", client_id="acme")
    again.close()


def test_an_hourly_budget_is_never_exceeded_across_workers(db: Shared) -> None:
    budget = 0.005  # a request reserves up to ~2.4e-4 (16 tokens out) and costs ~5e-5
    workers = [_limited(db, seed, max_cost_per_hour_usd=budget) for seed in range(4)]
    admitted, refused = _race(workers, 300)
    assert admitted and refused
    assert {e.limit for e in refused} == {"max_cost_per_hour_usd"}
    spent = sum(r.outcome.cost_usd for r in admitted)
    assert budget * 0.9 <= spent <= budget + 1e-12  # used up, never passed
    ledger = workers[0].log_store.limit_ledger()
    assert ledger is not None
    assert ledger.spent_last_hour("acme") == pytest.approx(spent, rel=1e-9)
    for c in workers:
        c.close()


def test_a_calibration_pair_made_on_one_worker_reaches_the_others(db: Shared) -> None:
    """A user rating through A completes a (judge, user) pair: B, following the log, adds
    the same pair to its judge calibration (not only after a restart)."""
    from conductor.types import Reward

    # No simulated signal (it would outrank the judge): the judge's scores are learned;
    # three pairs calibrate it.
    s = _settings(0.0)
    s = msgspec.structs.replace(s, judge=msgspec.structs.replace(s.judge,
                                                                 min_calibration_pairs=3))
    # No probes: the judged rewards counted below are the four given by hand.
    s = msgspec.structs.replace(s, policy=msgspec.structs.replace(s.policy,
                                                                  probe_cost_ratio=0.0))
    a, b = (Conductor(s, seed=seed, log_store=db.store(None), evaluators=[])
            for seed in (1, 2))
    served = [a.complete(f"review {i}: positive?", task_type="classify") for i in range(4)]
    _settle(a)
    b.learner.follow()
    for i, r in enumerate(served):
        a.learner.add_reward(Reward(
            request_id=r.request_id, source="judge", score=0.9 - i / 10, task_type="classify",
            strategy=r.decision.strategy, created_at=time.time()))
    assert a.learner.posteriors["classify"].evidence["j_n"].sum() == pytest.approx(4, abs=0.01)
    for i, r in enumerate(served[:3]):
        a.feedback(r.request_id, stars=1 + 2 * i)
    cal_a, cal_b = a.learner.calibrations["classify"], b.learner.calibrations["classify"]
    assert cal_a.n == 3 and cal_b.n == 0
    b.learner.follow()
    assert cal_b.n == 3
    assert (cal_b.sx, cal_b.sy, cal_b.sxy) == pytest.approx((cal_a.sx, cal_a.sy, cal_a.sxy))
    assert b.learner.follow() == 0 and cal_b.n == 3  # nothing twice
    # The error rates too, and the judged rewards the ratings replaced left the judged
    # ones on B as on A (each rating's row says it replaced the judge's value).
    assert b.learner.rates.all["classify"].pairs == 3
    pa, pb = a.learner.posteriors["classify"], b.learner.posteriors["classify"]
    for f in ("j_n", "j_s", "q_s", "q_f"):
        assert np.allclose(pa.evidence[f], pb.evidence[f]), f
    assert pa.evidence["j_n"].sum() == pytest.approx(1, abs=0.01) and pa.evidence["q_s"].sum() > 1
    scale = a.learner.rates.scale("classify")
    assert scale is not None and b.learner.rates.scale("classify") == scale
    assert pb.judge_scales == (scale,) * len(pb.strategies)  # B reads it as A does
    assert np.allclose(pa.quality_mean(), pb.quality_mean())
    a.close()
    b.close()
    again = _open(db, seed=3)  # a restart reads every pair from the store, once
    assert again.learner.calibrations["classify"].n == 3
    again.close()
