"""Gauges (latency, health, any level): Gaussian CUSUM LLRs on robustly standardised values.

The tested value is ``y = ln(value)`` for log-scale gauges (latency noise is
multiplicative, and a ratio ``min_ratio`` is then a fixed shift ``ln(min_ratio)``)
or ``y = value``. Against the baseline mean ``mu`` and scale ``sigma`` (floored
at ``min_sigma``: a health of exactly 1.0 has no noise to standardise by), the
LLR of a shift of ``delta`` sigmas in direction ``sign`` is::

    llr = (sign * delta * z - delta**2 / 2) / v,   z = (y - mu) / sigma

where ``v = (1 + rho) / (1 - rho)`` is the long-run variance inflation of AR(1)
noise with lag-1 autocorrelation rho: sums of n correlated residuals vary v
times more than independent ones, so dividing by v keeps the CUSUM calibrated
(quasi-likelihood). The bank tests ``delta_1 * g`` for ``g`` in ``shift_grid``,
with ``delta_1`` the minimum effect in sigmas (at least ``min_shift_sigma``):
a CUSUM is near-optimal for shifts near its design, so a small design catches
small harmful shifts while the large ones catch big shifts in k+1 samples.

With ``trend_halflife_samples`` the baseline is a local line
(:class:`~detectors.stats.EWLine`) instead of a level: ``y`` is then the
sample's standardised recursive residual against the line's forecast, ``mu``
is 0 and ``sigma`` the residuals' scale, so the same tests see a change of
level or of slope, and a steady ramp is normal. While a shift is suspected the
line stops learning and extrapolates; a confirmed shift restarts it
(segmentation) or, once accepted as the new normal, makes the monitor learn a
new one.

Everything is linear in y, ``llr = A * y + B``; :meth:`GaussianModel.designs`
returns ``(sign, A, B, h, c1, c2)`` rows, recomputed by the monitor every few
samples. ``c1 + c2`` caps one sample's llr (Huber): the llr's mean under the
design shift plus 4 of its standard deviations. A sample beyond that is more
likely a spike than the design's shift, and the cap keeps a burst of spikes
from adding up (a larger design in the bank takes over for larger shifts).

>>> from detectors.spec import spec_for
>>> m = GaussianModel(spec_for("latency_p95"))
>>> for v in [0.20, 0.21, 0.19, 0.20, 0.22, 0.18] * 5:
...     m.learn(*m.transform(v, None)[:2], clip=0.0)
>>> [(s, round(a, 2), round(h, 2)) for s, a, _, h, _, _ in m.designs(3)]
[(1, 43.46, 10.7), (1, 108.65, 7.56), (1, 260.77, 0.5)]
"""

from __future__ import annotations

import math

from detectors.calibration import threshold
from detectors.spec import MetricSpec
from detectors.stats import EWLine, EWStats

TINY = 1e-12
HUBER = 4.0  # a sample's llr counts at most its mean plus this many sds under the design shift


def _q_threshold(arl0: float, delta: float, overshoot: bool = True) -> float:
    """threshold() on delta rounded to 2% steps, memoised (a pure function): monitors recalibrate often."""
    key = (arl0, round(math.log(delta) * 50.0), overshoot)
    h = _CACHE.get(key)
    if h is None:
        h = _CACHE[key] = threshold(arl0, math.exp(key[1] / 50.0), overshoot)
    return h


_CACHE: dict[tuple[float, int, bool], float] = {}


class GaussianModel:
    """Baseline and LLR coefficients of a gauge (see module doc)."""

    detector = "gauge_cusum"
    LEARN_CLIP = 4.0  # baseline updates winsorised at 4 sigma

    def __init__(self, spec: MetricSpec) -> None:
        self.spec = spec
        self.detector = "health_cusum" if spec.kind == "health" else "gauge_cusum"
        self._log = spec.log_scale and spec.kind != "health"
        self._reset()

    def _reset(self) -> None:
        spec = self.spec
        trend = spec.trend_halflife_samples
        self.stats = EWStats(spec.baseline_halflife_samples, zero_mean=trend is not None)
        self.line = None if trend is None else EWLine(trend, spec.trend_slope_t)
        # with a line: its level now, sqrt(1 + leverage), 1.0 if the last sample was not learnt
        self._forecast = [0.0, 1.0, 0.0]

    def transform(self, value: float, count: float | None) -> tuple[float, float, float]:
        """(y, w, scale) of one sample: the tested value, its weight, the LLR divisor.

        With a trend line, y is the sample's standardised recursive residual (module doc of
        :class:`~detectors.stats.EWLine`), so the tests see a level series centred on zero.
        This moves the line's time on: call it once per sample, before :meth:`learn`.
        While the line does not learn (a shift suspected or confirmed) residuals keep the
        divisor of its last learnt sample: the extrapolation's growing leverage would
        otherwise shrink a lasting shift until it looked recovered.
        """
        y = math.log(value if value > TINY else TINY) if self._log else value
        line = self.line
        if line is None:
            return y, 1.0, 1.0
        level, _, leverage = line.step().forecast(self.stats.var)
        if math.isinf(leverage):  # the first sample of the stream: it is the line
            self._forecast = [y, 1.0, 1.0]
            return 0.0, 1.0, 1.0
        root = self._forecast[1] if self._forecast[2] else math.sqrt(1.0 + leverage)
        self._forecast = [level, root, 1.0]
        return (y - level) / root, 1.0, 1.0

    def learn(self, y: float, w: float, clip: float, level: bool = True) -> None:
        if not level:
            return
        if self.line is None:
            self.stats.update(y, clip)
            return
        if clip > 0.0 and self.stats.var > 0.0:
            lim = clip * math.sqrt(self.stats.var)
            y = lim if y > lim else -lim if y < -lim else y
        first = self.line.empty  # its residual is 0 by construction: no evidence about the scale
        self.line.add(self._forecast[0] + y * self._forecast[1])
        self._forecast[2] = 0.0
        if not first:
            self.stats.update(y)

    def forget_trend(self) -> bool:
        """Drop a line that cannot be carried on: after a gap (its slope counts samples) or once a
        shift is accepted (the new slope is unknown). True if the baseline must be learnt again."""
        if self.line is None:
            return False
        self.line.clear()
        self._forecast = [0.0, 1.0, 0.0]
        return True

    @property
    def sigma(self) -> float:
        return max(math.sqrt(self.stats.var), self.spec.min_sigma, TINY)

    def _floor(self, sign: int) -> float:
        """The minimum effect in tested units (>= 0; with a line, in standardised residuals)."""
        r = self.spec.min_ratio
        if self._log:
            floor = math.log(r)
        else:
            mu = abs(self._now)
            floor = mu * (r - 1.0) if sign > 0 else mu * (1.0 - 1.0 / r)
        return floor if self.line is None else floor / self._forecast[1]

    def designs(self, m: int) -> list[tuple[int, float, float, float, float, float]]:
        """(sign, A, B, h, c1, c2) per test: ``llr = A*y + B``, capped at ``c1 + c2``; h for m tests."""
        spec, mu, sigma = self.spec, self.stats.mean, self.sigma
        rho = self.stats.rho
        v = (1.0 + rho) / (1.0 - rho)
        out = []
        for sign in _signs(spec.direction):
            d1 = max(self._floor(sign) / sigma, spec.min_shift_sigma)
            for g in spec.shift_grid:
                d = d1 * g
                a = sign * d / (sigma * v)
                h = _q_threshold(m * spec.arl0, d / math.sqrt(v))
                out.append((sign, a, -a * mu - d * d / (2.0 * v), h, d * d / (2.0 * v), HUBER * d / math.sqrt(v)))
        return out

    def gate(self, sy: float, sw: float, sign: int) -> bool:
        """Is the excursion's level at least the minimum effect away, in the tested direction?"""
        if sw <= 0.0:
            return False
        diff = sign * (sy / sw - self.stats.mean)
        return diff > 0.0 and diff >= self._floor(sign)

    @property
    def center(self) -> float:
        """The baseline level per unit weight, in tested units (for :mod:`detectors.onset`)."""
        return self.stats.mean

    def onset_gain(self, sy: float, sw: float, sign: int) -> float:
        """GLR of "a segment with sums (sy, sw) moved from the baseline in direction sign", times sigma**2."""
        diff = sy - sw * self.stats.mean
        return diff * diff / sw if sign * diff > 0.0 and sw > 0.0 else 0.0

    def value(self, y: float) -> float:
        """A tested value back in the metric's units."""
        return math.exp(y) if self._log else y

    def level(self, sy: float, sw: float) -> float:
        """The level of (sy, sw) in the metric's units (with a line: residuals added to its forecast)."""
        if sw <= 0:
            return self.baseline
        return self.value(sy / sw) if self.line is None else self.value(self._now + self._unscaled(sy / sw))

    def _unscaled(self, r: float) -> float:
        """A standardised residual back in tested units (times sqrt(1 + leverage) of the forecast)."""
        return r * self._forecast[1]

    @property
    def _now(self) -> float:
        """The baseline level now, in tested units: the line's forecast, or the mean."""
        return self.stats.mean if self.line is None else self._forecast[0]

    @property
    def baseline(self) -> float:
        return self.value(self._now)

    def recovery(self, sy: float, sw: float, sign: int) -> tuple[float, float, float]:
        """(A, B, h) of the test 'back from the shifted level to halfway towards the baseline'."""
        ya = sy / sw if sw > 0 else self.stats.mean
        sigma = self.sigma
        rho = self.stats.rho
        v = (1.0 + rho) / (1.0 - rho)
        mid = 0.5 * (ya + self.stats.mean)
        d = max(abs(ya - mid) / sigma, 0.25)
        a = (mid - ya) / (sigma * sigma * v) if mid != ya else -sign * d / (sigma * v)
        return a, -a * 0.5 * (mid + ya), _q_threshold(self.spec.arl0, d / math.sqrt(v))

    def rebase(self, sy: float, sw: float, restart: bool = False) -> None:
        """Accept the level of (sy, sw) as the new normal; ``restart``: as the first sample of a new
        segment, so the rest of the baseline is re-learnt with equal weights (a line restarts flat:
        the old segment's slope is no evidence about the new one)."""
        line = self.line
        if line is None:
            if sw > 0:
                self.stats.mean = sy / sw
        else:  # only segmentation restarts a line; an accepted shift forgets it (forget_trend)
            line.restart(self._now + (self._unscaled(sy / sw) if sw > 0 else 0.0))
            self._forecast[2] = 0.0  # the new line's own leverage from the next sample on
        if restart:
            self.stats.n = 1

    def to_state(self) -> list[float]:
        """``EWStats`` (5 floats), then with a line ``EWLine`` (6) and the forecast (3)."""
        if self.line is None:
            return self.stats.to_state()
        return self.stats.to_state() + self.line.to_state() + self._forecast

    def load(self, state: list[float]) -> bool:
        """Restore :meth:`to_state`; False (nothing loaded) if it was saved with(out) a line this
        spec does not have: the configuration changed, and the baseline must be learnt again."""
        spec = self.spec
        if len(state) != (5 if self.line is None else 14):
            return False
        self.stats = EWStats.from_state(state, spec.baseline_halflife_samples, self.line is not None)
        if self.line is not None and spec.trend_halflife_samples is not None:
            self.line = EWLine.from_state(state[5:11], spec.trend_halflife_samples, spec.trend_slope_t)
            self._forecast = [float(v) for v in state[11:14]]
        return True


def _signs(direction: str) -> tuple[int, ...]:
    return (1,) if direction == "up" else (-1,) if direction == "down" else (1, -1)
