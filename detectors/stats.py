"""Windowed statistics of one stream: the baselines the tests compare against.

Both baselines are exponentially weighted with a half-life in samples: the
level follows slow drifts such as daily traffic swings (a 1 h half-life follows
a diurnal sine with a lag of minutes), while a fault, a step, stays far from it.
During the first samples the weight is ``max(alpha, 1/n)``: an equal-weight
average until the exponential window is full, so the warm-up is not biased
towards the first sample.

:class:`EWStats` is a gauge's baseline: mean, variance and lag-1
autocovariance of the (transformed) value. Its recurrences are river's
``stats.EWMean`` / ``stats.EWVar`` (``tests/test_stats.py`` checks they agree);
they are written out here because the monitor needs them at a few hundred
nanoseconds per sample and in a compact state, and river has no lag-1 term.
The autocovariance gives the variance inflation ``(1 + rho) / (1 - rho)`` of
AR(1) noise, by which the tests divide their LLRs.

:class:`EWRate` is a rate's baseline: exponentially weighted sums of events and
trials (errors and requests), so the rate is weighted by ``count`` (a ratio of
sums, not a mean of ratios), the mean count, and the extra-binomial
(beta-binomial) intra-class correlation ``rho``: real error counts vary
``n p (1-p) (1 + (n-1) rho)``, not ``n p (1-p)``.

:class:`EWLine` is the baseline of a gauge that trends by nature (a spec with
``trend_halflife_samples``): an exponentially weighted least-squares line
through the stream, so the tests compare each sample with the line's forecast
instead of a level that lags a ramp. Its residuals go to an :class:`EWStats`
with the mean held at zero.

Robustness: once warm, gauge updates are winsorised at 4 sigma (``clip``), so a
spike cannot drag the baseline; the monitor also freezes the level while a
shift is suspected, but a rate's dispersion keeps learning (winsorised).

>>> s = EWStats(halflife_samples=10)
>>> for x in [1.0, 2.0, 3.0, 2.0, 1.0]:
...     _ = s.update(x)
>>> round(s.mean, 4), round(s.var, 4)
(1.8, 0.56)
"""

from __future__ import annotations

import math


def alpha_of(halflife_samples: float) -> float:
    """Weight of the newest sample in an exponential window with this half-life."""
    if halflife_samples <= 0:
        raise ValueError(f"halflife_samples must be > 0, got {halflife_samples}")
    return 1.0 - 0.5 ** (1.0 / halflife_samples)


class EWStats:
    """Exponentially weighted mean, variance and lag-1 autocovariance of a stream."""

    def __init__(self, halflife_samples: float, zero_mean: bool = False) -> None:
        self.halflife_samples = halflife_samples
        self.zero_mean = zero_mean  # residuals of a fitted line: the mean is 0 by construction
        self._alpha = alpha_of(halflife_samples)
        self._reset()

    def _reset(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.var = 0.0
        self.cov1 = 0.0  # E[(x_t - m)(x_{t-1} - m)]
        self._prev = 0.0  # previous residual

    def update(self, x: float, clip: float = 0.0) -> EWStats:
        """Add x; with ``clip > 0`` the residual is winsorised at ``clip`` standard deviations."""
        self.n += 1
        a = max(self._alpha, 1.0 / self.n)
        d = x - self.mean
        if clip > 0.0 and self.var > 0.0:
            lim = clip * math.sqrt(self.var)
            d = lim if d > lim else -lim if d < -lim else d
        if self.zero_mean:  # no mean estimated: no (1 - a) correction for it
            self.var += a * (d * d - self.var)
            if self.n > 1:
                self.cov1 += a * (d * self._prev - self.cov1)
            self._prev = d
            return self
        self.mean += a * d
        self.var = (1.0 - a) * (self.var + a * d * d)
        if self.n > 1:
            self.cov1 += a * ((1.0 - a) * d * self._prev - self.cov1)
        self._prev = (1.0 - a) * d
        return self

    @property
    def rho(self) -> float:
        """Lag-1 autocorrelation, clipped to [0, 0.95] (negative correlation only helps)."""
        if self.var <= 0.0:
            return 0.0
        r = self.cov1 / self.var
        return 0.0 if r < 0.0 else 0.95 if r > 0.95 else r

    def to_state(self) -> list[float]:
        return [self.n, self.mean, self.var, self.cov1, self._prev]

    @classmethod
    def from_state(cls, state: list[float], halflife_samples: float, zero_mean: bool = False) -> EWStats:
        s = cls(halflife_samples, zero_mean)
        s.n, s.mean, s.var, s.cov1, s._prev = int(state[0]), *map(float, state[1:5])
        return s


class EWLine:
    """Exponentially weighted least-squares line ``level + slope * u`` through a stream (u: samples from now).

    Sums over the samples learnt, weighted ``lam ** age``, with time counted from
    the newest step (``u <= 0``) and values from a reference level ``ref`` (the
    weighted mean, re-centred at every sample), so they stay small however long
    the stream and however large the values (a GDP in the 1e15 would otherwise
    lose its residuals to rounding): ``S0 = sum w``, ``S1 = sum w u``,
    ``S2 = sum w u**2``, ``Sy = sum w (y - ref)``, ``Suy = sum w u (y - ref)``.
    :meth:`step` moves "now" one sample on (a sample that is not learnt, while a
    shift is suspected, still moves time: the frozen line extrapolates),
    :meth:`add` learns the sample at ``u = 0``.

    The slope is trusted only as far as the data show it: shrunk towards zero by
    the positive-part factor ``max(0, 1 - slope_t**2 / t**2)``, with ``t`` its
    weighted-least-squares t-statistic. Those formulas treat the exponential
    weights as precisions, which overstates the slope's standard error about
    twice for an exponential window, so ``slope_t = 2.5`` keeps only slopes
    about 5 true standard errors from zero: a level series keeps a flat line
    (its level tests then behave as without a trend), a clear ramp keeps almost
    all of its slope.

    :meth:`forecast` also gives the leverage of the forecast, ``1/S0 + u_bar**2 / Sxx``
    (``u_bar = S1 / S0``; the same weighted formula, about 1.5 times the true
    value): the one-step error of a fitted line has variance
    ``sigma**2 * (1 + leverage)``, large while few samples are in the fit.
    Dividing residuals by ``sqrt(1 + leverage)`` (recursive residuals, Brown,
    Durbin & Evans 1975) keeps the tests calibrated right after a (re)start.

    >>> line = EWLine(halflife_samples=10)
    >>> for x in [1.0, 3.0, 5.0, 7.0]:
    ...     _ = line.step().add(x)
    >>> level, slope, leverage = line.step().forecast(var=1e-9)  # an exact line: t is huge
    >>> round(level, 6), round(slope, 6)
    (9.0, 2.0)
    """

    def __init__(self, halflife_samples: float, slope_t: float = 2.5) -> None:
        if slope_t < 0:
            raise ValueError(f"slope_t must be >= 0 standard errors, got {slope_t}")
        self.halflife_samples = halflife_samples
        self.slope_t = slope_t
        self._lam = 1.0 - alpha_of(halflife_samples)
        self._reset()

    def _reset(self) -> None:
        self._ref = 0.0
        self._sums = [0.0] * 5  # S0, S1, S2, Sy, Suy

    @property
    def empty(self) -> bool:
        return self._sums[0] <= 0.0

    def step(self) -> EWLine:
        """Move "now" one sample on: every learnt sample is one sample older (u -> u - 1)."""
        s0, s1, s2, sy, suy = self._sums
        self._sums = [s0, s1 - s0, s2 - 2.0 * s1 + s0, sy, suy - sy]
        return self

    def add(self, y: float) -> EWLine:
        """Learn ``y`` at ``u = 0`` (call :meth:`step` first); older samples are discounted."""
        lam = self._lam
        s0, s1, s2, sy, suy = self._sums
        if s0 <= 0.0:
            self._ref = y
        s0, s1, sy = lam * s0 + 1.0, lam * s1, lam * sy + (y - self._ref)
        m = sy / s0  # re-centre on the weighted mean
        self._ref += m
        self._sums = [s0, s1, lam * s2, 0.0, lam * suy - m * s1]
        return self

    def forecast(self, var: float) -> tuple[float, float, float]:
        """(level at u = 0, slope per sample, leverage); ``var``: the residuals' variance, for the slope's t.

        Without any sample the level is 0 with infinite leverage: the caller learns the first sample as is.
        """
        s0, s1, s2, sy, suy = self._sums
        if s0 <= 0.0:
            return 0.0, 0.0, math.inf
        ubar = s1 / s0
        sxx = s2 - s1 * ubar
        slope = 0.0
        if sxx > 1e-12 * max(1.0, s2) and var > 0.0:
            slope = (suy - ubar * sy) / sxx
            t2 = slope * slope * sxx / var
            slope *= max(0.0, 1.0 - self.slope_t ** 2 / t2) if t2 > 0.0 else 0.0
        level = self._ref + sy / s0 - slope * ubar
        leverage = 1.0 / s0 + (ubar * ubar / sxx if slope != 0.0 else 0.0)
        return level, slope, leverage

    def restart(self, level: float) -> EWLine:
        """Forget the line: a new segment starts at ``level`` with the weight of one sample and no slope."""
        self._ref = level
        self._sums = [1.0, 0.0, 0.0, 0.0, 0.0]
        return self

    def clear(self) -> EWLine:
        """Forget every sample: the next one added is the line."""
        self._reset()
        return self

    def to_state(self) -> list[float]:
        return [self._ref, *self._sums]

    @classmethod
    def from_state(cls, state: list[float], halflife_samples: float, slope_t: float = 2.5) -> EWLine:
        line = cls(halflife_samples, slope_t)
        line._ref = float(state[0])
        line._sums = [float(v) for v in state[1:6]]
        return line


class EWRate:
    """Exponentially weighted events/trials (errors/requests) with beta-binomial overdispersion."""

    PRIOR_EVENTS = 0.5  # half an event spread over PRIOR_TRIALS: p0 > 0 before the first error
    PRIOR_TRIALS = 500.0

    def __init__(self, halflife_samples: float) -> None:
        self.halflife_samples = halflife_samples
        self._alpha = alpha_of(halflife_samples)
        self._reset()

    def _reset(self) -> None:
        self.n = 0
        self.events = 0.0  # EW sum of events
        self.trials = 0.0  # EW sum of trials
        self.mean_count = 0.0  # EW mean trials per sample
        self.rho_raw = 0.0  # EW moment estimate of the intra-class correlation, may be < 0

    @property
    def rho(self) -> float:
        """The overdispersion rho >= 0; clipped on use, not in the recurrence, which would bias it upwards."""
        return self.rho_raw if self.rho_raw > 0.0 else 0.0

    @property
    def p(self) -> float:
        """The baseline rate, count-weighted (ratio of sums)."""
        return (self.events + self.PRIOR_EVENTS) / (self.trials + self.PRIOR_TRIALS)

    def update(self, x: float, n: float, clip: float = 0.0, level: bool = True) -> EWRate:
        """Add x events out of n trials; ``clip > 0`` winsorises x at ``clip`` sigmas (overdispersed).

        ``level=False`` learns only the dispersion: the monitor freezes the rate while a shift is
        suspected, but the high samples that raise suspicion are exactly the ones the dispersion
        needs (leaving them out underestimates rho, which makes suspicion more frequent). Such a
        sample counts with the long-run weight only, so a real shift barely moves rho before it is
        confirmed, even early in a stream's life.
        """
        if level:
            self.n += 1
        a = max(self._alpha, 1.0 / self.n) if level else self._alpha
        p = self.p
        v = n * p * (1.0 - p)
        if v > 0.0:
            phi = 1.0 + (n - 1.0) * self.rho
            r2 = (x - n * p) ** 2 / v
            if clip > 0.0:
                lim = clip * clip * phi
                if r2 > lim:
                    r2 = lim
                    x = n * p + clip * math.sqrt(v * phi) * (1.0 if x > n * p else -1.0)
            if n >= 2.0:
                est = (r2 - 1.0) / (n - 1.0)
                self.rho_raw += a * (est - self.rho_raw)
        if not level:
            return self
        decay = 1.0 - self._alpha  # sums need no warm-up correction: the ratio is already an average
        self.events = decay * self.events + x
        self.trials = decay * self.trials + n
        self.mean_count += a * (n - self.mean_count)
        return self

    def to_state(self) -> list[float]:
        return [self.n, self.events, self.trials, self.mean_count, self.rho_raw]

    @classmethod
    def from_state(cls, state: list[float], halflife_samples: float) -> EWRate:
        r = cls(halflife_samples)
        r.n, r.events, r.trials, r.mean_count, r.rho_raw = int(state[0]), *map(float, state[1:5])
        return r
