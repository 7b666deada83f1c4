"""Requests in flight: a rating that races its request waits for it to land, and only
that long."""

from __future__ import annotations

import threading

from conductor.lifecycle import InFlight


def test_a_rating_waits_until_its_request_lands_and_no_longer() -> None:
    flights = InFlight()
    assert flights.wait("unknown", 3600.0) is False  # not in flight: no wait at all
    flights.begin("r1", None)
    result: list[bool] = []
    waiting = threading.Thread(target=lambda: result.append(flights.wait("r1", 3600.0)),
                               daemon=True)
    waiting.start()
    while "r1" not in flights._waiters:  # the rating is waiting now
        threading.Event().wait(0.001)
    flights.landed("r1")
    waiting.join(30.0)  # landing wakes it: it must not sit out its hour
    assert not waiting.is_alive() and result == [False]  # landed: no longer in flight
    assert flights._waiters == {} and flights.pending("r1") is None


def test_a_wait_that_runs_out_says_the_request_is_still_in_flight() -> None:
    flights = InFlight()
    flights.begin("r2", None)
    assert flights.wait("r2", 0.0) is True
    flights.landed("r2")
    assert flights.wait("r2", 0.0) is False
