"""Reward fusion: one effective reward per request, from the best source present.

Priority: the users' ratings (their mean, one vote per rater) > the demo world's simulated
signal > the judge's score mapped through the calibration > the heuristic score. Each
request counts once in the posterior: when a better source arrives (or a rater changes
their rating) the posterior is corrected by the difference, never counted twice.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from msgspec import Struct

from conductor.types import Reward


class RequestRewards(Struct, kw_only=True):
    heuristic: float | None = None
    simulated: float | None = None
    judge: float | None = None
    users: dict[str, float] = {}
    effective: float | None = None


class RewardFusion:
    """Per-request reward state, bounded (least recently used requests are forgotten;
    they are rebuilt from the store's reward rows if they come back)."""

    def __init__(self, calibrate: Callable[[str, float], float], max_requests: int = 200_000
                 ) -> None:
        self.calibrate = calibrate
        self.max_requests = max_requests
        self._state: OrderedDict[str, RequestRewards] = OrderedDict()

    def get(self, request_id: str) -> RequestRewards | None:
        st = self._state.get(request_id)
        if st is not None:
            self._state.move_to_end(request_id)
        return st

    def start(self, request_id: str) -> None:
        """A new request with no rewards yet (keeps any state it already has)."""
        if request_id not in self._state:
            self._put(request_id, RequestRewards(users={}))

    def rebuild(self, request_id: str, rewards: list[Reward]) -> RequestRewards:
        """State for a request from its stored rewards (after a restart or eviction)."""
        st = RequestRewards(users={})
        for r in rewards:
            self._set(st, r)
            if r.effective_score is not None:
                st.effective = r.effective_score
        self._put(request_id, st)
        return st

    def _put(self, request_id: str, st: RequestRewards) -> None:
        self._state[request_id] = st
        self._state.move_to_end(request_id)
        while len(self._state) > self.max_requests:
            self._state.popitem(last=False)

    @staticmethod
    def _set(st: RequestRewards, r: Reward) -> None:
        if r.source == "user":
            st.users[r.rater] = r.score
        elif r.source == "judge":
            st.judge = r.score
        elif r.source == "simulated":
            st.simulated = r.score
        else:
            st.heuristic = r.score

    def effective(self, task_type: str, st: RequestRewards) -> float | None:
        if st.users:
            return sum(st.users.values()) / len(st.users)
        if st.simulated is not None:
            return st.simulated
        if st.judge is not None:
            return self.calibrate(task_type, st.judge)
        return st.heuristic

    def update(self, reward: Reward) -> tuple[float | None, float | None]:
        """Apply a reward; returns (effective before, effective after)."""
        st = self.get(reward.request_id)
        if st is None:
            st = RequestRewards(users={})
            self._put(reward.request_id, st)
        old = st.effective
        self._set(st, reward)
        st.effective = self.effective(reward.task_type, st)
        return old, st.effective
