"""Judge-to-user calibration, per task type, learned online from requests that have both.

Model: user = a + b * judge + noise, Bayesian linear regression with a Normal prior centred
on the identity (a = 0, b = 1) whose weight is ``prior_weight`` pseudo-pairs (a ridge
penalty towards "the judge is right"). The posterior mean is
    (a, b) = (lambda * I + X^T X)^-1 (lambda * (0, 1) + X^T y),  X rows = (1, judge)
(Bishop 2006, PRML eq. 3.53-3.54 with a non-zero prior mean). The mapping is applied once
``min_pairs`` pairs exist; before that judge scores are used as they are.
"""

from __future__ import annotations

import math

import numpy as np


class JudgeCalibration:
    """Sufficient statistics of (judge, user) pairs and the fitted linear map."""

    def __init__(self, *, min_pairs: int = 30, prior_weight: float = 2.0) -> None:
        self.min_pairs = min_pairs
        self.prior_weight = prior_weight
        self.n = 0
        self.sx = self.sy = self.sxx = self.sxy = self.syy = self.sabs = 0.0

    def add_pair(self, judge: float, user: float) -> None:
        self.n += 1
        self.sx += judge
        self.sy += user
        self.sxx += judge * judge
        self.sxy += judge * user
        self.syy += user * user
        self.sabs += abs(judge - user)

    def coefficients(self) -> tuple[float, float]:
        """(intercept, slope) of the posterior mean."""
        lam = self.prior_weight
        xtx = np.array([[self.n, self.sx], [self.sx, self.sxx]]) + lam * np.eye(2)
        xty = np.array([self.sy, self.sxy]) + lam * np.array([0.0, 1.0])
        a, b = np.linalg.solve(xtx, xty)
        return float(a), float(b)

    @property
    def active(self) -> bool:
        return self.n >= self.min_pairs

    def apply(self, judge: float) -> float:
        if not self.active:
            return judge
        a, b = self.coefficients()
        return min(1.0, max(0.0, a + b * judge))

    def agreement(self) -> dict[str, float | int | bool | None]:
        """Judge-user agreement on the raw judge scores: correlation and mean absolute error."""
        if self.n == 0:
            return {"pairs": 0, "correlation": None, "mae": None, "calibrated": False}
        n = self.n
        vx = self.sxx / n - (self.sx / n) ** 2
        vy = self.syy / n - (self.sy / n) ** 2
        cov = self.sxy / n - (self.sx / n) * (self.sy / n)
        corr = cov / math.sqrt(vx * vy) if vx > 1e-12 and vy > 1e-12 else None
        a, b = self.coefficients()
        return {"pairs": n, "correlation": corr, "mae": self.sabs / n,
                "calibrated": self.active, "intercept": a, "slope": b}
