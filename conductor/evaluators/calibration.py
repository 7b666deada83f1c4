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
from scipy import special


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


class JudgeErrorRates:
    """A judge's error rates, from requests with both a judge score and a true (user)
    label: false positives P(pass | wrong) and false negatives P(fail | right), with a
    verdict = score >= 0.5 and right = label >= 0.5, each a posterior mean.

    They belong to the judge, not to what it judges, so they turn any strategy's judged
    pass rate p into its true quality, q = (p - fp) / (1 - fp - fn) (Rogan & Gladen 1978,
    "Estimating prevalence from the results of a screening test"); a pooled judge-to-user
    map cannot, since P(right | pass) depends on the strategy's own quality. Each judged
    reward then carries (1 - fp - fn)^2 of a label's information (the estimator's
    variance grows by 1 / (1 - fp - fn)^2)."""

    def __init__(self, *, min_pairs: int = 10, min_informative: float = 0.2,
                 pooled: JudgeErrorRates | None = None, pooled_weight: float = 10.0) -> None:
        self.min_pairs = min_pairs
        self.min_informative = min_informative  # the least 1 - fp - fn taken at face value
        # The same judge's rates over every task type: the prior of this one's (worth
        # ``pooled_weight`` pairs of each kind), so a rare task type borrows strength.
        self.pooled = pooled
        self.pooled_weight = pooled_weight
        self.right = self.right_passed = self.wrong = self.wrong_passed = 0.0
        self.n = 0

    def add(self, judged: float, label: float) -> None:
        """One request with both. Graded scores count softly: a label of 0.75 is three
        quarters of a right answer, a judged 0.6 six tenths of a pass, so the rates are the
        judge's mean score on wrong and on right answers, E[judge | label] = fp + (1 - fp -
        fn) label: the measurement model the correction inverts. On pass/fail verdicts
        and labels these are the plain counts."""
        if self.pooled is not None:
            self.pooled.add(judged, label)
        self.n += 1
        u = min(1.0, max(0.0, float(label)))
        j = min(1.0, max(0.0, float(judged)))
        self.right += u
        self.right_passed += u * j
        self.wrong += 1.0 - u
        self.wrong_passed += (1.0 - u) * j

    @property
    def pairs(self) -> int:
        return self.n

    @property
    def active(self) -> bool:
        own = self.pairs >= self.min_pairs and self.right > 0 and self.wrong > 0
        return own or (self.pooled is not None and self.pooled.active)

    def rates(self) -> tuple[float, float]:
        """(false positive, false negative) rates: posterior means under Jeffreys' Beta(1/2,
        1/2) prior (Beta(1, 1) pulled a rate measured on a handful of wrong answers towards
        1/2: on RouterBench with 2% labels it overstated a 0.2 false-positive rate as 0.44),
        or the pooled rates as the prior when there are."""
        if self.pooled is not None and self.pooled.active:
            pfp, pfn = self.pooled.rates()
            w = self.pooled_weight
            return ((self.wrong_passed + w * pfp) / (self.wrong + w),
                    (self.right - self.right_passed + w * pfn) / (self.right + w))
        (fp_a, fp_b), (fn_a, fn_b) = self._jeffreys()
        return fp_a / (fp_a + fp_b), fn_a / (fn_a + fn_b)

    def _jeffreys(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """The Beta posteriors of the (false positive, false negative) rates from this
        judge's own pairs under Jeffreys' Beta(1/2, 1/2) prior."""
        return ((self.wrong_passed + 0.5, self.wrong - self.wrong_passed + 0.5),
                (self.right - self.right_passed + 0.5, self.right_passed + 0.5))

    def informativeness(self) -> float:
        fp, fn = self.rates()
        return max(self.min_informative, 1.0 - fp - fn)

    def true_quality(self, judged_rate: float) -> float:
        """The true quality behind a judged pass rate (clipped to [0, 1])."""
        fp, _ = self.rates()
        return min(1.0, max(0.0, (judged_rate - fp) / self.informativeness()))

    def intervals(self, level: float = 0.9) -> tuple[tuple[float, float], tuple[float, float]]:
        """Central ``level`` credible intervals of the (false positive, false negative)
        rates from this judge's own pairs (Jeffreys' prior): how little a handful of wrong
        answers with a label pins a false-positive rate down."""
        lo, hi = (1.0 - level) / 2.0, (1.0 + level) / 2.0
        (fp_a, fp_b), (fn_a, fn_b) = self._jeffreys()
        q = special.betaincinv([fp_a, fp_a, fn_a, fn_a], [fp_b, fp_b, fn_b, fn_b],
                               [lo, hi, lo, hi])
        return (float(q[0]), float(q[1])), (float(q[2]), float(q[3]))

    def report(self) -> dict[str, object]:
        """Rates, their 90% intervals and the labels they rest on (wrong answers for the
        false positives, right ones for the false negatives)."""
        fp, fn = self.rates() if self.pairs else (None, None)
        fp90, fn90 = self.intervals() if self.pairs else (None, None)
        return {"pairs": self.pairs, "false_positive": fp, "false_negative": fn,
                "false_positive_90": fp90, "false_negative_90": fn90,
                "wrong_labels": self.wrong, "right_labels": self.right,
                "active": self.active}
