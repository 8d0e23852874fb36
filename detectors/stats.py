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

    def __init__(self, halflife_samples: float) -> None:
        self.halflife_samples = halflife_samples
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
    def from_state(cls, state: list[float], halflife_samples: float) -> EWStats:
        s = cls(halflife_samples)
        s.n, s.mean, s.var, s.cov1, s._prev = int(state[0]), *map(float, state[1:5])
        return s


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
