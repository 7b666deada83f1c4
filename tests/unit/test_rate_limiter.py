"""RateLimiter: exact admission under concurrency, sliding windows, cost budgets; each
test runs on every ledger (this process's windows, and the shared tables of a SQLite
store and of a PostgreSQL store)."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conductor.errors import RateLimitedError
from conductor.rate_limiter import RateLimitConfig, RateLimiter
from conductor.storage.limits import SQLiteLimits, SQLLimits
from conductor.storage.sqlite import SQLiteStore

MakeLimiter = Callable[..., RateLimiter]


@pytest.fixture(params=["window", "sqlite", "postgres"])
def limiter_of(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeLimiter]:
    opened: list[Any] = []

    def make(limits: dict[str, RateLimitConfig],
             clock: Callable[[], float] = time.monotonic) -> RateLimiter:
        if request.param == "window":
            return RateLimiter(limits, clock=clock)
        if request.param == "postgres":
            from conductor.storage.postgres import PostgresStore

            store = PostgresStore(request.getfixturevalue("pg_cluster").new_database())
            opened.append(store)
            ledger: SQLLimits = store.limit_ledger()
            ledger.clock = clock
        else:
            db = tmp_path / f"limits{len(opened)}.db"
            SQLiteStore(db).close()  # the schema
            ledger = SQLiteLimits(db, clock=clock)
            opened.append(ledger)
        limiter = RateLimiter(limits, clock=clock, ledger=ledger)
        limiter.ledger_tables = ledger  # type: ignore[attr-defined]
        return limiter

    yield make
    for it in opened:
        it.close()


@pytest.mark.parametrize("limit", [1, 10, 31])
def test_exactly_the_limit_is_admitted_from_a_concurrent_burst(
        limiter_of: MakeLimiter, limit: int) -> None:
    limiter = limiter_of({"acme": RateLimitConfig(requests_per_minute=limit)})
    barrier = threading.Barrier(32)
    admitted: list[bool] = []

    def one() -> None:
        barrier.wait()
        try:
            limiter.acquire("acme")
            admitted.append(True)
        except RateLimitedError:
            admitted.append(False)

    threads = [threading.Thread(target=one) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted.count(True) == limit
    assert limiter.refused == 32 - limit


def test_hourly_spend_never_exceeds_the_budget_under_random_concurrency(
        limiter_of: MakeLimiter) -> None:
    budget = 0.05
    limiter = limiter_of({"acme": RateLimitConfig(max_cost_per_hour_usd=budget)})
    rng = random.Random(4)
    jobs = [(rng.uniform(0.0001, 0.004), rng.random()) for _ in range(1000)]
    spent: list[float] = []
    lock = threading.Lock()

    def one(job: tuple[float, float]) -> None:
        bound, frac = job
        try:
            r = limiter.acquire("acme", bound)
        except RateLimitedError as exc:
            assert exc.limit == "max_cost_per_hour_usd"
            return
        actual = bound * frac  # the actual cost is at most the reserved upper bound
        limiter.reconcile(r, actual)
        with lock:
            spent.append(actual)
            assert sum(spent) <= budget + 1e-12

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, jobs))
    assert sum(spent) <= budget
    assert limiter.spent_last_hour("acme") == pytest.approx(sum(spent))
    assert len(spent) > 20  # reconciliation freed budget for more requests than bound/total


def test_windows_slide_so_there_is_no_burst_at_the_edge(limiter_of: MakeLimiter) -> None:
    now = [0.0]
    limiter = limiter_of({"c": RateLimitConfig(requests_per_minute=10)}, clock=lambda: now[0])
    now[0] = 59.0
    for _ in range(10):
        limiter.acquire("c")
    now[0] = 61.0  # a fixed window would have reset at 60 s and allowed 10 more
    with pytest.raises(RateLimitedError, match="requests_per_minute limit of 10") as info:
        limiter.acquire("c")
    assert info.value.retry_after_s == pytest.approx(58.0)
    now[0] = 119.0
    limiter.acquire("c")


def test_hourly_request_limit_and_unlimited_clients(limiter_of: MakeLimiter) -> None:
    now = [0.0]
    limiter = limiter_of({"c": RateLimitConfig(requests_per_hour=2)}, clock=lambda: now[0])
    limiter.acquire("c")
    now[0] = 100.0
    limiter.acquire("c")
    with pytest.raises(RateLimitedError, match="requests_per_hour") as info:
        limiter.acquire("c")
    assert info.value.retry_after_s == pytest.approx(3500.0)  # the first leaves at 3600 s
    for _ in range(100):
        limiter.acquire("someone-else")  # no limits configured


def test_a_refused_cost_reservation_says_when_budget_frees_up(limiter_of: MakeLimiter) -> None:
    now = [0.0]
    limiter = limiter_of({"c": RateLimitConfig(max_cost_per_hour_usd=1.0)},
                          clock=lambda: now[0])
    r1 = limiter.acquire("c", 0.6)
    now[0] = 600.0
    limiter.acquire("c", 0.3)
    with pytest.raises(RateLimitedError) as info:
        limiter.acquire("c", 0.5)
    assert info.value.retry_after_s == pytest.approx(3000.0)  # when the 0.6 leaves the hour
    limiter.reconcile(r1, 0.1)  # it really cost 0.1
    limiter.acquire("c", 0.5)


def test_a_fallback_releases_the_failed_bound_and_reserves_its_own(
        limiter_of: MakeLimiter) -> None:
    now = [0.0]
    limiter = limiter_of({"c": RateLimitConfig(max_cost_per_hour_usd=1.0)},
                         clock=lambda: now[0])
    other = limiter.acquire("c", 0.3)
    r = limiter.acquire("c", 0.4)
    # The 0.4 candidate failed having cost 0.1; its fallback may cost up to 0.5: 0.6 held.
    limiter.rebase(r, 0.1 + 0.5, "dear")
    assert r.amount_usd == pytest.approx(0.6)
    assert limiter.spent_last_hour("c") == pytest.approx(0.9)
    now[0] = 60.0
    with pytest.raises(RateLimitedError, match="by the fallback to dearer") as info:
        limiter.rebase(r, 0.1 + 0.5 + 0.2, "dearer")  # 1.1 in all: over
    assert info.value.limit == "max_cost_per_hour_usd"
    assert info.value.retry_after_s == pytest.approx(3540.0)  # when `other` leaves the hour
    assert limiter.spent_last_hour("c") == pytest.approx(0.9)  # the refusal held nothing
    limiter.reconcile(r, 0.3)
    limiter.reconcile(other, 0.3)
    assert limiter.spent_last_hour("c") == pytest.approx(0.6)
    unlimited = limiter.acquire("someone-else", 5.0)
    assert unlimited.id is None and limiter.spent_last_hour("someone-else") == 0.0


@pytest.mark.parametrize("limiter_of", ["sqlite", "postgres"], indirect=True)
def test_the_clients_totals_stay_equal_to_its_rows(limiter_of: MakeLimiter) -> None:
    """A shared ledger reads each client's count and spend from ``limit_clients``; after
    admissions, fallbacks, settlements, refusals and expiry, they equal its rows."""
    now = [0.0]
    limiter = limiter_of({"c": RateLimitConfig(requests_per_minute=5, max_cost_per_hour_usd=3.0),
                          "d": RateLimitConfig(requests_per_hour=50)}, clock=lambda: now[0])
    ledger = limiter.ledger_tables  # type: ignore[attr-defined]
    rng = random.Random(5)
    held = []
    for _ in range(300):
        now[0] += rng.choice([0.5, 5.0, 60.0, 900.0])
        client = rng.choice("cd")
        with contextlib.suppress(RateLimitedError):
            held.append(limiter.acquire(client, rng.uniform(0.0, 0.5)))
        if held and rng.random() < 0.5:
            r = held.pop(rng.randrange(len(held)))
            if rng.random() < 0.3:
                with contextlib.suppress(RateLimitedError):
                    limiter.rebase(r, r.amount_usd + rng.uniform(-0.1, 0.3))
            limiter.reconcile(r, rng.uniform(0.0, r.amount_usd))

    def rows(ex: Any) -> tuple[list[Any], list[Any]]:
        return (ex("SELECT client_id, hour_count, hour_usd FROM limit_clients"
                   " ORDER BY client_id", ()),
                ex("SELECT client_id, count(*), sum(usd) FROM limit_reservations"
                   " GROUP BY client_id ORDER BY client_id", ()))

    totals, recount = ledger._locked(None, rows)
    assert [r[0] for r in totals] == [r[0] for r in recount] == ["c", "d"]
    for (_, n, usd), (_, n2, usd2) in zip(totals, recount, strict=True):
        assert n == n2 and usd == pytest.approx(usd2, abs=1e-9)
    oldest = ledger._locked(None, lambda ex: ex(
        "SELECT min(at) FROM limit_reservations", ()))[0][0]
    assert oldest > now[0] - 3600.0 - 900.0 * 2  # expired rows were deleted as it went
