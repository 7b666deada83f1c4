"""Reward fusion: one effective reward per request, from the best source present.

Sources rank by a priority table (lower rank wins): the users' ratings (their mean, one
vote per rater) > the demo world's simulated signal > the judge's score (as scored: the
learner reads judged rewards through the judge's error rates, in aggregate) > custom
evaluators > the heuristic score. A custom evaluator's source takes
the rank it declares, or ``CUSTOM_RANK``. Each request counts once in the posterior: when a
better source arrives (or a rater changes their rating) the posterior is corrected by the
difference, never counted twice.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from msgspec import Struct

from conductor.types import Reward

PRIORITY: Mapping[str, int] = {"user": 0, "simulated": 10, "judge": 20, "heuristic": 40}
CUSTOM_RANK = 30  # custom evaluators: between the judge and the heuristics


class RequestRewards(Struct, kw_only=True):
    """One request's rewards by source (user ratings by rater) and its fused reward."""

    scores: dict[str, float] = {}
    users: dict[str, float] = {}
    effective: float | None = None
    effective_source: str | None = None
    features: tuple[float, ...] = ()  # the request's prompt features
    served: bool = True  # False: a probe's answer (learned from, never served)


class RewardFusion:
    """Per-request reward state, bounded (least recently used requests are forgotten;
    they are rebuilt from the store's reward rows if they come back).

    ``ranks`` adds or overrides sources' ranks (custom evaluators)."""

    def __init__(self, max_requests: int = 200_000,
                 ranks: Mapping[str, int] | None = None) -> None:
        self.max_requests = max_requests
        self.ranks = {**PRIORITY, **(ranks or {})}
        self._state: OrderedDict[str, RequestRewards] = OrderedDict()

    def rank(self, source: str) -> int:
        return self.ranks.get(source, CUSTOM_RANK)

    def get(self, request_id: str) -> RequestRewards | None:
        st = self._state.get(request_id)
        if st is not None:
            self._state.move_to_end(request_id)
        return st

    def forget(self, request_id: str) -> None:
        """Drop a request's state (another process changed its rewards): the next reward
        rebuilds it from the store."""
        self._state.pop(request_id, None)

    def start(self, request_id: str, features: tuple[float, ...] = (), *,
              served: bool = True) -> None:
        """A new request with no rewards yet (keeps any state it already has)."""
        if request_id not in self._state:
            self._put(request_id, RequestRewards(scores={}, users={}, features=features,
                                                 served=served))

    def rebuild(self, request_id: str, rewards: list[Reward],
                features: tuple[float, ...] = (), *, served: bool = True) -> RequestRewards:
        """State for a request from its stored rewards (after a restart or eviction)."""
        st = RequestRewards(scores={}, users={}, features=features, served=served)
        for r in rewards:
            self._set(st, r)
            if r.effective_score is not None:
                st.effective = r.effective_score
        st.effective_source = self._best(st)
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
        else:
            st.scores[r.source] = r.score

    def _best(self, st: RequestRewards) -> str | None:
        present = [*st.scores, *(["user"] if st.users else [])]
        return min(present, key=self.rank) if present else None

    def effective(self, st: RequestRewards) -> float | None:
        best = self._best(st)
        if best is None:
            return None
        if best == "user":
            return sum(st.users.values()) / len(st.users)
        return st.scores[best]

    def update(self, reward: Reward) -> tuple[float | None, float | None]:
        """Apply a reward; returns (effective before, effective after)."""
        st = self.get(reward.request_id)
        if st is None:
            st = RequestRewards(scores={}, users={})
            self._put(reward.request_id, st)
        old = st.effective
        self._set(st, reward)
        st.effective = self.effective(st)
        st.effective_source = self._best(st)
        return old, st.effective
