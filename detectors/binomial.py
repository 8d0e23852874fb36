"""Rates with counts (errors out of requests): quasi-binomial CUSUM LLRs.

A sample is ``x = value * count`` events out of ``n = count`` trials. The LLR
of the rate moving from the baseline ``p0`` to ``p1 = p0 * r`` is::

    llr = (x ln(p1/p0) + (n - x) ln((1-p1)/(1-p0))) / phi,  phi = 1 + (n - 1) rho

Counts weigh the evidence: 1 error out of 30 requests is little evidence of
anything (about +0.9 for a 10x design at p0 = 0.5%), 100 out of 2000 is a lot
(about +150). ``phi`` is the beta-binomial variance inflation estimated on the
baseline (:class:`~detectors.stats.EWRate`): production error rates wander
from interval to interval, so counts vary ``phi`` times more than binomially
and the plain binomial LLR would be ``phi`` times overconfident
(quasi-likelihood scaling). Because phi grows with n, a busy service's noise
is discounted more than a quiet one's.

The bank tests ``r = min_ratio ** g`` for ``g`` in ``shift_grid`` (1.5, 2.75,
11.4 at the defaults): a 2x, 3x or 10x shift is each within a few per cent of
the optimal CUSUM for its size. Thresholds come from ARL0 through the null drift:
``delta**2 = 2 * n_mean * KL(p0 || p1) / phi``, without the Gaussian overshoot
correction, which does not hold for lattice-valued count LLRs (:mod:`detectors.calibration`).

A sample without ``count`` is weighed as the stream's mean count, or
``spec.default_count`` if the stream never had one: the same test, with a
guessed amount of evidence (the LLR still needs the rate to move by
``min_ratio``, and a default of 100 requests is modest evidence per sample).

>>> from detectors.spec import spec_for
>>> m = BinomialModel(spec_for("error_rate"))
>>> for _ in range(40):
...     m.learn(*m.transform(0.005, 2000.0)[:2], clip=0.0)
>>> [(round(a, 3), round(b, 5), round(h, 2)) for _, a, b, h, _, _ in m.designs(3)]
[(0.408, -0.0025, 12.56), (1.022, -0.00882, 12.61), (2.486, -0.05334, 12.61)]
"""

from __future__ import annotations

import math

from detectors.gaussian import HUBER, _q_threshold, _signs
from detectors.spec import MetricSpec
from detectors.stats import EWRate

P_MAX = 0.999


def _kl(p: float, q: float) -> float:
    """KL(Bernoulli(p) || Bernoulli(q))."""
    out = 0.0
    if p > 0:
        out += p * math.log(p / q)
    if p < 1:
        out += (1 - p) * math.log((1 - p) / (1 - q))
    return out


class BinomialModel:
    """Baseline and LLR coefficients of a rate with counts (see module doc)."""

    detector = "binomial_cusum"
    LEARN_CLIP = 0.0  # no winsorising: overdispersed rates are skewed, clipping biases p0 low (frozen on suspicion instead)

    def __init__(self, spec: MetricSpec) -> None:
        self.spec = spec
        self._reset()

    def _reset(self) -> None:
        self.rate = EWRate(self.spec.baseline_halflife_samples)

    def transform(self, value: float, count: float | None) -> tuple[float, float, float]:
        """(x, n, phi): events, trials and the overdispersion divisor of one sample."""
        if count is None:
            n = self.rate.mean_count if self.rate.mean_count > 0 else self.spec.default_count
        else:
            n = count
        x = value * n
        x = 0.0 if x < 0.0 else n if x > n else x
        phi = 1.0 + (n - 1.0) * self.rate.rho if n > 1.0 else 1.0
        return x, n, phi

    def learn(self, y: float, w: float, clip: float, level: bool = True) -> None:
        if w > 0:
            self.rate.update(y, w, clip, level)

    def _ratio(self, g: float) -> float:
        return max(self.spec.min_ratio, 1.1) ** g

    def _coefs(self, p0: float, p1: float) -> tuple[float, float, float]:
        """(A, B, delta): llr = (A*x + B*n)/phi, and the design's null drift in sigmas."""
        a = math.log(p1 / p0)
        b = math.log((1 - p1) / (1 - p0))
        n = max(self.rate.mean_count, 1.0)
        phi = 1.0 + (n - 1.0) * self.rate.rho
        return a - b, b, math.sqrt(max(2.0 * n * _kl(p0, p1) / phi, 1e-12))

    def designs(self, m: int) -> list[tuple[int, float, float, float, float, float]]:
        """(sign, A, B, h, c1, c2) per test: ``llr = (A*x + B*n) / phi``; h calibrated for m tests.

        One sample's llr is capped (Huber) at ``(c1*n + c2*sqrt(n*phi)) / phi``: its mean under
        the design rate plus 4 standard deviations, so a burst of errors in a quiet
        stream counts like a plausible sample of the shift, not like 1000 of them.
        """
        p0 = min(self.rate.p, P_MAX / 2)
        out = []
        for sign in _signs(self.spec.direction):
            for g in self.spec.shift_grid:
                r = self._ratio(g)
                p1 = min(p0 * r, P_MAX) if sign > 0 else p0 / r
                a, b, delta = self._coefs(p0, p1)
                c1 = _kl(p1, p0)
                c2 = HUBER * abs(a) * math.sqrt(p1 * (1.0 - p1))
                out.append((sign, a, b, _q_threshold(m * self.spec.arl0, delta, overshoot=False), c1, c2))
        return out

    def gate(self, sy: float, sw: float, sign: int) -> bool:
        """Has the excursion's count-weighted rate moved by at least min_ratio?"""
        if sw <= 0.0:
            return False
        p, p0 = sy / sw, self.rate.p
        return p >= p0 * self.spec.min_ratio and p > p0 if sign > 0 else p <= p0 / self.spec.min_ratio and p < p0

    @property
    def center(self) -> float:
        """The baseline rate, events per trial (for :mod:`detectors.onset`)."""
        return self.rate.p

    def onset_gain(self, sy: float, sw: float, sign: int) -> float:
        """GLR of "sy events in sw trials moved from the baseline rate in direction sign", times phi."""
        if sw <= 0.0:
            return 0.0
        p, p0 = min(max(sy / sw, 0.0), 1.0), self.rate.p
        return sw * _kl(p, p0) if sign * (p - p0) > 0.0 else 0.0

    def level(self, sy: float, sw: float) -> float:
        return sy / sw if sw > 0 else self.baseline

    @property
    def baseline(self) -> float:
        return self.rate.p

    def recovery(self, sy: float, sw: float, sign: int) -> tuple[float, float, float]:
        """(A, B, h) of the test 'back from the shifted rate to the geometric midpoint'."""
        p0 = self.rate.p
        pa = min(max(sy / sw if sw > 0 else p0, 1e-9), P_MAX)
        pm = math.sqrt(p0 * pa)
        if abs(math.log(pa / p0)) < 0.05:  # no real shift to come back from: any movement counts
            pm = pa / 1.1 if sign > 0 else min(pa * 1.1, P_MAX)
        a, b, delta = self._coefs(pa, pm)
        return a, b, _q_threshold(self.spec.arl0, delta, overshoot=False)

    def rebase(self, sy: float, sw: float, restart: bool = False) -> None:
        """Accept the rate of (sy, sw) as the new normal; ``restart``: as the first sample of a new
        segment, so the rest of the baseline is re-learnt with equal weights."""
        r = self.rate
        if sw > 0:
            r.events = max((sy / sw) * (r.trials + r.PRIOR_TRIALS) - r.PRIOR_EVENTS, 0.0)
        if restart:
            r.n = 1

    def to_state(self) -> list[float]:
        return self.rate.to_state()

    def load(self, state: list[float]) -> bool:
        self.rate = EWRate.from_state(state, self.spec.baseline_halflife_samples)
        return True

    def forget_trend(self) -> bool:
        """A rate has no trend line: its baseline holds over gaps and accepted shifts."""
        return False
