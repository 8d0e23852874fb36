"""A deploy is a change point whose time we know: :class:`AnchoredTest`, an always-valid test from it.

The unconditional monitor (:mod:`detectors.monitor`) must not cry wolf more
than once per ARL0 = 10^5 samples of every stream, which costs it
``ln(10^5) = 11.5`` nats of evidence per alarm. Right after a deploy the
question is narrower: *did this deploy move this metric?* Its error budget is
per deploy (DETECTION.md, "Error budget per deploy"): ``alpha``, the
probability that a good deploy is ever flagged while the test runs, spent
once. The test compares the samples after the deploy with the window of
``pre`` samples just before it, for ``horizon_s`` (the rollout and a few
minutes more), and rejects when its e-value reaches ``1 / alpha``.

The e-value is a mixture of Bayes factors, each a nonnegative martingale
under "this deploy changed nothing", so by Ville's inequality the chance that
it *ever* reaches ``1/alpha`` is at most ``alpha`` however often it is looked
at (Robbins 1970; Johari et al. 2017, "always valid p-values")::

    E_t = sum_tau  w_tau * M_tau(t)   +   (prior mass of onsets not yet seen)

* ``tau`` is where the shift began, a post-deploy sample; ``w_tau`` is the
  prior mass of the onset falling between that sample and the one before,
  under ``P(onset <= u) = u / (u + onset_half_s)`` (u: seconds after the
  deploy). Half of the mass falls in the first ``onset_half_s``: a shift
  that begins ten minutes after the deploy needs about 6.6 nats more evidence
  than one that begins at once ("the further away, the larger it must be").
* ``M_tau(t)`` is the Bayes factor of the samples from ``tau`` to now
  (without their ``spike_samples`` most adverse ones: a spike of k samples
  never confirms anything, as everywhere in Backout; a rate tested against a
  window of 60 samples or more caps them at the rate of the next one instead,
  so that at a few errors a sample a shift keeps its busiest samples'
  evidence, and the trimmed Bayes factor stays below the untrimmed one;
  ``bench/detectors.py``: warm delay ratio 4.17 -> 3.33, false flags per
  warm deploy 0.04% -> 0.08% against alpha 0.3%) against the pre-deploy
  window, for "the level moved by at least ``min_ratio``" against "it moved
  by at most ``sqrt(min_ratio)``" (the *margin*: a drifting base rate, a
  diurnal swing, a benign change of a few per cent are not this deploy's
  fault, and a short window's level is uncertain).

Rates (errors out of requests): a Gamma-Poisson model. The pre window gives
the rate a Gamma(``0.5 + X0``, ``N0``) posterior (X0 errors in N0 requests);
the post segment's X errors in N requests then have the Bayes factor, for
the rate multiplied by ``r`` against by ``r0``::

    log BF(r) = X ln(r / r0) + (A + X) ln((B + r0 N) / (B + r N))

averaged over a grid of ``r`` from ``min_ratio`` to 50x, every count (X0,
N0, X, N) in units of ``phi``, the quasi-Poisson dispersion of the *recent*
window: its Pearson dispersion ``d`` (the beta-binomial excess of real error
counts, and a base rate that drifts within the window), its excess inflated
by the lag-1 autocorrelation of the residuals as much as a sum of that many
samples is (a drifting rate's excess is autocorrelated; one sample is one
sample): ``phi(m) = U (1 + (d - 1) infl(rho, m))`` for the window's m samples
and for a segment's, ``U`` the upper 90% bound of a dispersion estimated on so
few samples (a short window says little about its own noise; that
uncertainty is not a drift, rho does not inflate it), never below the stream's
long-run dispersion when the caller knows it (:class:`RecentWindow`).
Rates without ``count`` get an effective count from the window, ``p(1-p)/var``
(the number of trials a binomial of that variance would have, every sample
counted): the same test, with the window's own noise as the unit of evidence
(``bench/detectors.py``, ``anchored.false_flags``, ``no counts``).

Gauges (latency on a log scale, health): the two-sample Bayesian t-test
(Gönen et al. 2005), a normal prior of scale ``tau`` on the standardised
shift, averaged over ``tau`` in (1, 3, 10). With the nuisance mean and scale
integrated out under their invariant priors it is a martingale in the
invariant filtration (Pérez-Ortiz et al. 2022, "E-statistics, group
invariance and anytime valid testing"): valid with as few as 8 pre samples,
and its Student-t tails carry the uncertainty of the short window's level and
scale. Its sample sizes are divided by the AR(1) variance inflation of a mean of
that many samples (:func:`_inflation`: 1 for one sample, ``(1 + rho)/(1 - rho)``
for a long mean) and its degrees of freedom multiplied by
``(1 - rho**2)/(1 + rho**2)`` (latency is autocorrelated; ``rho`` is the
stream's long-run lag-1 autocorrelation, or the window's), and the post level is first moved back
by the margin. Pre-window samples are winsorised at 4 MADs of their median
(a spike before the deploy must not hide or fake a shift).

The anomaly it leads to reports the onset as the monitor does
(:mod:`detectors.onset`, over the last pre samples and the post samples): a
shift that was already there before the deploy is dated before it, and the
decider does not blame the deploy for it. Already there means sustained: past
the margin from that onset to the deploy without its k most adverse samples
(a burst of k samples shortly before a shift looks like its start to a
change-time estimate, and would excuse the deploy). A degradation that the
deploy then made ``min_ratio`` times worse is the deploy's: dated after it,
against the level it found. After the deploy, ``latest_onset_ts`` is the
latest onset the samples cannot tell from the best by ``ONSET_NATS`` (at a
few events a sample, stray errors just after a deploy date a later shift
back to them).

Calibration (``bench/detectors.py``, ``anchored``): false flags per good
deploy against ``alpha`` on clean and on drifting noise, and the delay in
samples against ``ln(1/alpha) / KL``.

>>> from detectors.spec import spec_for
>>> import numpy as np
>>> rng = np.random.default_rng(3)
>>> pre = [(float(rng.binomial(1000, 0.005)) / 1000, 1000.0, 10.0 * i) for i in range(12)]
>>> test = AnchoredTest(spec_for("error_rate"), deploy_ts=120.0, pre=pre)
>>> flags = [test.update(float(rng.binomial(1000, 0.03)) / 1000, 1000.0, 125.0 + 10 * i) for i in range(6)]
>>> flags.index(True), test.onset_ts, round(test.ratio, 1)  # 6x: the 3rd shifted sample (k = 2)
(2, 125.0, 7.2)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any

from detectors.binomial import _kl
from detectors.onset import OnsetWindow
from detectors.packing import pack_rows, unpack_rows
from detectors.spec import MetricSpec

MIN_PRE_SAMPLES = 8
LONG_RUN_SAMPLES = 30  # a RecentWindow's long-run noise counts from this many samples
TAIL_SAMPLES = 8  # pre samples kept to date an onset that came before the deploy
ONSET_NATS = 3.0  # an onset is dated before the deploy only if the data favour it this much (e^3 ~ 20:1)
RATE_GRID = (1.0, 1.5, 2.2, 3.3, 5.0, 7.5, 11.0, 17.0, 25.0, 35.0)  # x min_ratio, capped at MAX_RATIO
MAX_RATIO = 50.0
TAUS = (1.0, 3.0, 10.0)  # prior scales of a gauge's standardised shift
MAX_RHO = 0.8  # the AR(1) inflation is capped at (1 + 0.8) / (1 - 0.8) = 9
WINSOR_MADS = 4.0
Z90 = 1.2816  # the standard normal's 90% quantile: a short window's dispersion is taken at its upper bound
TINY = 1e-12
WINSOR_PRE_SAMPLES = 2 * LONG_RUN_SAMPLES  # rate windows this long cap their spikes instead of dropping them


def _logmeanexp(xs: list[float]) -> float:
    top = max(xs)
    return top + math.log(sum(math.exp(x - top) for x in xs) / len(xs))


def _rho(resid: list[float]) -> float:
    """Lag-1 autocorrelation of a short series, bias-corrected (Marriott & Pope 1954:
    ``E r1 ~ rho - (1 + 3 rho) / m``), in [0, MAX_RHO]."""
    m = len(resid)
    ss = sum(r * r for r in resid)
    if m < 4 or ss <= 0.0:
        return 0.0
    r1 = sum(a * b for a, b in zip(resid, resid[1:], strict=False)) / ss
    return min(max((r1 * m + 1.0) / (m - 3.0), 0.0), MAX_RHO)


def _inflation(rho: float, n: float) -> float:
    """Variance of the mean of ``n`` AR(1) samples, in units of ``sigma**2 / n``:
    ``1 + 2 sum_k (1 - k/n) rho**k`` = ``(1 + rho)/(1 - rho) - 2 rho (1 - rho**n) / (n (1 - rho)**2)``.
    One sample is one sample whatever rho; the long-run factor applies only to long means."""
    if rho <= 0.0 or n <= 1.0:
        return 1.0
    return (1.0 + rho) / (1.0 - rho) - 2.0 * rho * (1.0 - rho ** n) / (n * (1.0 - rho) ** 2)


def _effective_count(values: list[float], default: float) -> float:
    """The count of a rate reported without one: the trials of a binomial of the window's variance,
    ``p(1-p)/var``, over every sample, spikes too. Without its largest samples a bursty stream looks
    quiet (false flags per young deploy several times alpha) and a sparse one (a few errors a
    sample, mostly none) almost errorless, every error then weighing like many. ``default`` when
    the window has no error at all."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return min(max(mean * (1.0 - mean) / var, 1.0), 1e6) if var > 0.0 and mean > 0.0 else default


def _quasi_dispersion(dispersion: float, rho: float, bound: float, samples: float, floor: float) -> float:
    """The quasi-Poisson dispersion of the sum of ``samples`` successive samples: the window's
    excess over binomial, inflated by its autocorrelation as much as a sum that long is (one
    sample is one sample whatever rho), times the upper bound of a dispersion estimated on so
    few samples (that uncertainty is not a drift: it is not inflated by rho), never below the
    stream's long-run dispersion ``floor``."""
    return max(bound * (1.0 + (dispersion - 1.0) * _inflation(rho, samples)), floor)


def _upper_dispersion(dispersion: float, df: float) -> float:
    """Upper 90% bound of a dispersion estimated on ``df`` degrees of freedom: ``df * d / chi2_df(0.1)``.

    The chi-square quantile by Wilson & Hilferty (1931). A window of 8 quiet samples of a bursty
    stream looks binomial; its bound (2.5 times the estimate) does not trust that.
    """
    c = 2.0 / (9.0 * df)
    q = df * (1.0 - c - Z90 * math.sqrt(c)) ** 3
    return max(dispersion, 1.0) * df / max(q, 1e-3)


class AnchoredTest:
    """Post-deploy samples of one stream against its pre-deploy window (see module doc).

    ``pre``: the samples just before the deploy as ``(value, count, ts)``, oldest first (at least
    ``MIN_PRE_SAMPLES``; the caller keeps the last few dozen). Feed every later sample to
    :meth:`update`; it returns True once, when the test rejects.
    """

    def __init__(self, spec: MetricSpec, deploy_ts: float, pre: Iterable[tuple[float, float | None, float]],
                 alpha: float = 0.003, horizon_s: float = 600.0, onset_half_s: float = 60.0,
                 dispersion: float = 1.0, rho: float | None = None) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1) (false flags per good deploy), got {alpha}")
        if horizon_s <= 0.0 or onset_half_s <= 0.0:
            raise ValueError(f"horizon_s and onset_half_s must be > 0 s, got {horizon_s}, {onset_half_s}")
        if spec.direction == "both" and spec.kind == "rate":
            raise ValueError("an anchored rate test has one direction, 'up' or 'down'")
        self.spec = spec
        self.deploy_ts = deploy_ts
        self.alpha = alpha
        self.horizon_s = horizon_s
        self.onset_half_s = onset_half_s
        self.dispersion = dispersion
        self.rho = rho
        rows = [(v, c, ts) for v, c, ts in pre if ts < deploy_ts]
        if len(rows) < MIN_PRE_SAMPLES:
            raise ValueError(f"an anchored test needs at least {MIN_PRE_SAMPLES} samples before the deploy, "
                             f"got {len(rows)}")
        self._reset()
        self._learn_pre(rows)

    def _reset(self) -> None:
        self._pre: list[float] = []  # the window's summary (per kind, see _learn_pre)
        self._tail: list[tuple[float, float, float]] = []  # last pre samples (y, w, ts)
        self._post: list[tuple[float, float, float]] = []  # (y, w, ts) after the deploy
        self.log_e = 0.0  # log of the e-value
        self._winsorise = False
        self.rejected = False
        self.done = False
        self.onset_ts = 0.0
        self.earliest_onset_ts: float | None = None  # the onset may be this one, before the deploy
        self.latest_onset_ts: float | None = None  # or as late as this one
        self.baseline = 0.0
        self.current = 0.0

    # -- the window before the deploy --------------------------------------------------------------

    @property
    def _rate(self) -> bool:
        return self.spec.kind == "rate"

    def _sign(self) -> int:
        return -1 if self.spec.direction == "down" else 1

    def _learn_pre(self, rows: list[tuple[float, float | None, float]]) -> None:
        if self._rate:
            self._learn_rate(rows)
        else:
            self._learn_gauge(rows)

    def _learn_rate(self, rows: list[tuple[float, float | None, float]]) -> None:
        values = [min(max(v, 0.0), 1.0) for v, _, _ in rows]
        n_eff = 0.0  # 0: counts are given
        if any(c is None for _, c, _ in rows):
            n_eff = _effective_count(values, self.spec.default_count)
        samples = [(v * (n_eff or c or 0.0), n_eff or c or 0.0, ts) for v, (_, c, ts) in zip(values, rows, strict=True)]
        samples = [s for s in samples if s[1] > 0.0]
        if len(samples) < MIN_PRE_SAMPLES:
            raise ValueError(f"an anchored test needs at least {MIN_PRE_SAMPLES} samples with requests "
                             f"before the deploy, got {len(samples)}")
        p = sum(x for x, _, _ in samples) / sum(n for _, n, _ in samples)
        # of the window's k most adverse samples, those beyond WINSOR_MADS robust sds are spikes: left out
        k, sign = self.spec.spike_samples, self._sign()
        z = [sign * (x - n * p) / math.sqrt(n * p * (1.0 - p)) if 0.0 < p < 1.0 else 0.0 for x, n, _ in samples]
        scale = max(1.0, 1.4826 * sorted(abs(v) for v in z)[len(z) // 2])
        worst = sorted(range(len(z)), key=lambda i: -z[i])[:k]
        kept = [i for i in range(len(samples)) if i not in worst or z[i] <= WINSOR_MADS * scale]
        x0 = sum(samples[i][0] for i in kept)
        n0 = sum(samples[i][1] for i in kept)
        p = x0 / n0
        resid = [(samples[i][0] - samples[i][1] * p) / math.sqrt(samples[i][1] * p * (1.0 - p))
                 if 0.0 < p < 1.0 else 0.0 for i in kept]
        dispersion = max(sum(r * r for r in resid) / (len(resid) - 1), 1.0)
        bound = _upper_dispersion(dispersion, len(resid) - 1.0) / dispersion
        # quasi-Poisson: the window's counts in units of phi; a segment's in units of _phi(its length)
        rho = _rho(resid)
        phi = _quasi_dispersion(dispersion, rho, bound, len(kept), self.dispersion)
        self._pre = [0.5 + x0 / phi, n0 / phi, phi, n_eff, dispersion, rho, bound]
        # a long window (its dispersion known) lets a segment's busiest samples count, capped (_excess);
        # a short one may understate the noise: its k most adverse are left out, as for gauges
        self._winsorise = len(kept) >= WINSOR_PRE_SAMPLES
        self.baseline = (0.5 + x0) / n0
        self._tail = [(x, n, ts) for x, n, ts in samples[-TAIL_SAMPLES:]]

    def _y(self, value: float) -> float:
        if self.spec.log_scale and self.spec.kind != "health":
            return math.log(value if value > TINY else TINY)
        return value

    def _learn_gauge(self, rows: list[tuple[float, float | None, float]]) -> None:
        raw = [self._y(v) for v, _, _ in rows]
        ys = raw
        med = sorted(ys)[len(ys) // 2]
        mad = 1.4826 * sorted(abs(y - med) for y in ys)[len(ys) // 2]
        lim = WINSOR_MADS * mad
        ys = [med + max(-lim, min(lim, y - med)) for y in ys]
        n0 = len(ys)
        m0 = sum(ys) / n0
        s0 = sum((y - m0) ** 2 for y in ys)
        rho = _rho([y - m0 for y in ys]) if self.rho is None else min(max(self.rho, 0.0), MAX_RHO)
        self._pre = [float(n0), m0, s0, rho]
        self.baseline = self._value(m0)
        # the tail as it was, not winsorised: it dates a shift that began before the deploy
        self._tail = [(y, 1.0, ts) for y, (_, _, ts) in zip(raw[-TAIL_SAMPLES:], rows[-TAIL_SAMPLES:], strict=True)]

    def _value(self, y: float) -> float:
        return math.exp(y) if self.spec.log_scale and self.spec.kind != "health" else y

    # -- after the deploy -----------------------------------------------------------------------------

    def _weight(self, ts: float) -> float:
        """Prior mass of the onset up to ``ts``: ``u / (u + onset_half_s)``, u seconds after the deploy."""
        u = max(ts - self.deploy_ts, 0.0)
        return u / (u + self.onset_half_s)

    def update(self, value: float, count: float | None, ts: float) -> bool:
        """Feed one post-deploy sample; True exactly once, on the sample that makes the test reject."""
        if self.done or ts < self.deploy_ts:
            return False
        if ts - self.deploy_ts > self.horizon_s:
            self.done = True
            return False
        if self._rate:
            n = self._pre[3] or (count or 0.0)
            if n <= 0.0:
                return False  # no requests: no evidence
            self._post.append((min(max(value, 0.0), 1.0) * n, n, ts))
        else:
            self._post.append((self._y(value), 1.0, ts))
        log_e, best, level = self._evidence()
        self.log_e = log_e
        if log_e < math.log(1.0 / self.alpha) or best < 0 or not self._gate(level):
            return False
        self.rejected = self.done = True
        self.current = level
        self.onset_ts = self._onset(self._post[best][2])
        return True

    def _evidence(self) -> tuple[float, int, float]:
        """(log E_t, the start of the segment that weighs most, its level in the metric's units)."""
        post, k, sign = self._post, self.spec.spike_samples, self._sign()
        center = self.baseline if self._rate else self._pre[1]
        terms: list[float] = []
        best, best_term, best_level = -1, -math.inf, self.baseline
        sy = sw = syy = 0.0
        # the k most adverse (dev, y, w) of the segment (rates: k + 1, the last one their ceiling)
        top: list[tuple[float, float, float]] = []
        capped = self._rate and self._winsorise
        keep = k + 1 if capped and k else k
        masses = [self._weight(ts) for _, _, ts in post]
        for i in range(len(post) - 1, -1, -1):  # segments [i, now], newest start first
            y, w, _ = post[i]
            sy, sw, syy = sy + y, sw + w, syy + y * y
            if k:
                dev = sign * (y - w * center)
                if len(top) < keep or dev > top[-1][0]:
                    if len(top) == keep:
                        top.pop()
                    top.append((dev, y, w))
                    top.sort(reverse=True)
            if len(post) - i <= k:
                continue
            if capped:
                # past k samples the segment holds k + 1, so top[k] is the ceiling; rates use no tyy
                ty, tw, tyy = sy - (self._excess(top[:k], top[k]) if k else 0.0), sw, 0.0
            else:
                ty = sy - sum(t[1] for t in top)
                tw = sw - sum(t[2] for t in top)
                tyy = syy - sum(t[1] * t[1] for t in top)
            mass = masses[i] - (masses[i - 1] if i else 0.0)
            if mass <= 0.0 or tw <= 0.0:
                continue
            lbf = self._rate_lbf(ty, tw, len(post) - i) if self._rate else self._gauge_lbf(ty, tw, tyy)
            if lbf is None:
                continue
            term = math.log(mass) + lbf
            terms.append(term)
            if term > best_term:
                best, best_term = i, term
                best_level = ty / tw if self._rate else self._value(ty / tw)
        unseen = 1.0 - masses[-1]
        if not terms:
            return math.log(unseen) if unseen > 0 else -math.inf, -1, best_level
        top_term = max(terms)
        total = sum(math.exp(t - top_term) for t in terms) + unseen * math.exp(-top_term)
        return top_term + math.log(total), best, best_level

    def _excess(self, top: list[tuple[float, float, float]], ceiling: tuple[float, float, float]) -> float:
        """Events of a segment's k most adverse samples beyond the rate of its (k+1)-th: a spike of k
        samples adds nothing, yet a shift's own busiest samples count as much as the others (at a
        few events a sample, leaving them out would cost a shift a third of its evidence). The
        segment's events only decrease: the Bayes factor, increasing in them, stays below the
        untrimmed one, a martingale."""
        _, cy, cw = ceiling
        rate = cy / cw if cw > 0.0 else 0.0
        if self._sign() < 0:
            return sum(y - max(y, w * rate) for _, y, w in top)  # a "down" rate: raised to its floor
        return sum(y - min(y, w * rate) for _, y, w in top)

    def _phi(self, samples: int) -> float:
        """The quasi-Poisson dispersion of a segment of ``samples`` (:func:`_quasi_dispersion`)."""
        if len(self._pre) < 7:  # saved before segments had their own dispersion
            return self._pre[2]
        dispersion, rho, bound = self._pre[4:7]
        return _quasi_dispersion(dispersion, rho, bound, samples, self.dispersion)

    def _rate_lbf(self, x: float, n: float, samples: int) -> float | None:
        a, b = self._pre[0], self._pre[1]
        sign = self._sign()
        root = math.sqrt(self.spec.min_ratio)
        r0 = root if sign > 0 else 1.0 / root
        out = []
        phi = self._phi(samples)
        x, n = x / phi, n / phi
        for g in RATE_GRID:
            r = min(self.spec.min_ratio * g, MAX_RATIO)
            r = r if sign > 0 else 1.0 / r
            out.append(x * math.log(r / r0) + (a + x) * math.log((b + r0 * n) / (b + r * n)))
        return _logmeanexp(out)

    def _margin(self) -> float:
        """How far (tested units, bad direction) the post level may move and still be 'nothing'."""
        root = math.sqrt(self.spec.min_ratio)
        if self.spec.log_scale and self.spec.kind != "health":
            return math.log(root)
        mu = abs(self._pre[1])
        return mu * (root - 1.0) if self._sign() > 0 else mu * (1.0 - 1.0 / root)

    def _gauge_lbf(self, sy: float, n1: float, syy: float) -> float | None:
        """Log Bayes factor of the two-sample t-test, or None when the segment moved the good way."""
        n0, m0, s0, rho = self._pre
        sign = self._sign()
        m1 = sy / n1
        d = sign * (m1 - m0) - self._margin()
        if d <= 0.0:
            return None
        s1 = max(syy - n1 * m1 * m1, 0.0)
        nu = max(1.0, (n0 + n1 - 2.0) * (1.0 - rho * rho) / (1.0 + rho * rho))  # dof of an AR(1) variance
        var = max((s0 + s1) / max(n0 + n1 - 2.0, 1.0), self.spec.min_sigma ** 2, TINY)
        nd = 1.0 / (_inflation(rho, n0) / n0 + _inflation(rho, n1) / n1)
        t2 = d * d * nd / var
        out = []
        for tau in TAUS:
            g = 1.0 + nd * tau * tau
            out.append(-0.5 * math.log(g) + 0.5 * (nu + 1.0) * (math.log1p(t2 / nu) - math.log1p(t2 / (g * nu))))
        return _logmeanexp(out)

    def _gate(self, level: float, base: float | None = None) -> bool:
        """The segment's level is at least ``min_ratio`` away from the window's (or ``base``), the bad way."""
        base, r = self.baseline if base is None else base, self.spec.min_ratio
        if self._rate or (self.spec.log_scale and self.spec.kind != "health"):
            ratio = level / base if base > 0 else math.inf
            return ratio >= r if self._sign() > 0 else ratio <= 1.0 / r
        floor = abs(base) * (r - 1.0) if self._sign() > 0 else abs(base) * (1.0 - 1.0 / r)
        return self._sign() * (level - base) >= floor

    def _onset(self, fallback: float) -> float:
        """The change-time estimate over the last pre samples and the post samples (:mod:`detectors.onset`).

        After the deploy it is the best start, and ``latest_onset_ts`` the newest that the data
        cannot tell from it by ``ONSET_NATS``: at a few events a sample, stray errors soon after
        a deploy make a segment from them the best by a little, and a shift dated minutes early
        would seem the deploy's, right after it, and apart from the other services' shifts of a
        shared incident.
        It may precede the deploy (a degradation that was already there), but only when the data
        favour that by more than ``ONSET_NATS`` over the best onset after the deploy (an estimate
        one sample early is noise, and must not excuse the deploy), when the samples from it to the
        deploy, their k most adverse left out, are past the margin (a spike of k samples before a
        shift is no degradation), and when the level after the deploy is not ``min_ratio`` past
        that one (then the deploy made it worse: the onset is the deploy's, the level it found the
        baseline). Sustained before the deploy but favoured by less than ``ONSET_NATS``: the onset
        is the deploy's, and ``earliest_onset_ts`` says it may have been there already (a noisy
        stream cannot date a shift within a few samples; the decider does not call that clear-cut).
        """
        sign = self._sign()
        if self._rate:
            p0, unit = self.baseline, self._pre[2]  # gains in counts: phi of them to a nat

            def gain(sy: float, sw: float, s: int) -> float:
                p = min(max(sy / sw, 0.0), 1.0)
                return sw * _kl(p, p0) if s * (p - p0) > 0.0 and sw > 0 else 0.0
            center = p0
        else:
            n0, m0, s0, rho = self._pre
            center = m0
            unit = 2.0 * max(s0 / max(n0 - 1.0, 1.0), self.spec.min_sigma ** 2, TINY) * (1.0 + rho) / (1.0 - rho)

            def gain(sy: float, sw: float, s: int) -> float:
                diff = sy - sw * m0
                return diff * diff / sw if s * diff > 0.0 and sw > 0 else 0.0
        before, after = (OnsetWindow(len(rows) or 1, self.spec.spike_samples)
                         for rows in (self._tail + self._post, self._post))
        for y, w, ts in self._tail + self._post:
            before.add(y, w, ts)
            if ts >= self.deploy_ts:
                after.add(y, w, ts)
        g_all, ts_all = before.best(center, gain, sign)
        g_post, ts_post, latest = after.span(center, gain, sign, slack=ONSET_NATS * unit)
        self.latest_onset_ts = latest if g_post > 0.0 and latest > ts_post else None
        if g_post <= 0.0:
            ts_post = fallback
        if g_all <= 0.0 or ts_all >= self.deploy_ts:
            return ts_post
        found = self._level_before(ts_all, center)
        if found is None:  # a spike shortly before the shift looks like its start: it is no degradation
            return ts_post
        if self._gate(self.current, found):  # degraded before, and this deploy made it much worse
            self.baseline = found
            return ts_post
        if (g_all - g_post) / unit < ONSET_NATS:  # sustained before, but the data favour neither onset
            self.earliest_onset_ts = ts_all
            return ts_post
        return ts_all

    def _level_before(self, since_ts: float, center: float) -> float | None:
        """The level (metric units) of the samples from ``since_ts`` to the deploy, if a degradation
        was already there: past the margin without their k most adverse (a spike is not); else None.
        The level is their whole mean: a deploy is blamed for making it worse only when it did."""
        k, sign = self.spec.spike_samples, self._sign()
        rows = [(y, w) for y, w, ts in self._tail if since_ts <= ts < self.deploy_ts]
        kept = sorted(rows, key=lambda r: sign * (r[0] - r[1] * center))[:len(rows) - k]
        ty, tw = sum(y for y, _ in kept), sum(w for _, w in kept)
        if not kept or tw <= 0.0:
            return None
        if self._rate:
            root = math.sqrt(self.spec.min_ratio)
            if (ty / tw < center * root) if sign > 0 else (ty / tw > center / root):
                return None
        elif sign * (ty / tw - center) <= self._margin():
            return None
        level = sum(y for y, _ in rows) / sum(w for _, w in rows)
        return level if self._rate else self._value(level)

    @property
    def ratio(self) -> float:
        """current / baseline, in the metric's units (0 with a zero baseline)."""
        return self.current / self.baseline if self.baseline else 0.0

    @property
    def samples(self) -> int:
        """Samples tested after the deploy."""
        return len(self._post)

    @property
    def shifted_samples(self) -> int:
        """Samples from the onset to now (before the deploy too, if it was dated before it)."""
        return sum(1 for _, _, ts in self._tail + self._post if ts >= self.onset_ts)

    # -- state ----------------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {"d": self.deploy_ts, "a": self.alpha, "f": self.dispersion, "q": self.rho, "h": self.horizon_s, "o": self.onset_half_s,
                "p": self._pre, "t": [list(r) for r in self._tail], "s": [list(r) for r in self._post],
                "e": self.log_e, "r": self.rejected, "x": self.done, "b": [self.onset_ts, self.baseline, self.current],
                "w": self._winsorise}

    @classmethod
    def from_state(cls, state: dict[str, Any], spec: MetricSpec) -> AnchoredTest:
        test = cls.__new__(cls)
        test.spec = spec
        test.deploy_ts, test.alpha = float(state["d"]), float(state["a"])
        test.horizon_s, test.onset_half_s = float(state["h"]), float(state["o"])
        test.dispersion, test.rho = float(state["f"]), None if state["q"] is None else float(state["q"])
        test._reset()
        test._pre = [float(v) for v in state["p"]]
        test._tail = [(float(a), float(b), float(c)) for a, b, c in state["t"]]
        test._post = [(float(a), float(b), float(c)) for a, b, c in state["s"]]
        test.log_e, test.rejected, test.done = float(state["e"]), bool(state["r"]), bool(state["x"])
        test.onset_ts, test.baseline, test.current = (float(v) for v in state["b"])
        test._winsorise = bool(state.get("w", False))  # saved before rate spikes were capped: dropped
        return test



class RecentWindow:
    """What an anchored test needs of a stream's past: its last samples and its long-run noise.

    The monitor keeps one per stream and feeds it every sample; :meth:`start` opens an
    :class:`AnchoredTest` at a deploy from the samples before it. Besides the last ``size``
    samples it learns, over ``halflife_samples``, two properties of the noise that a short window
    cannot show and that do not drift the way levels do:

    * rates: the beta-binomial intra-class correlation from *successive differences*,
      ``E[(x2/n2 - x1/n1)**2] = p(1-p) [1/n1 + 1/n2 + rho ((n1-1)/n1 + (n2-1)/n2)]``: a base rate
      that wanders over the hour cancels out of a difference, bursty counts do not (a window of
      30 quiet samples of a bursty stream would look binomial);
    * gauges: the lag-1 autocorrelation of the tested value (log latency is AR(1)).

    Squared differences are winsorised at 16 times the current estimate: a spike is not noise.

    >>> from detectors.spec import spec_for
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> win = RecentWindow(spec_for("error_rate"))
    >>> for i in range(400):
    ...     p = rng.beta(0.005 * 60, 0.995 * 60)  # bursty: the rate is redrawn every sample
    ...     win.add(rng.binomial(2000, p) / 2000, 2000.0, 10.0 * i)
    >>> round(win.dispersion), len(win)  # 1 + (n - 1) / (kappa + 1) = 33.8 in truth
    (36, 90)
    """

    def __init__(self, spec: MetricSpec, size: int = 90, halflife_samples: float = 360.0) -> None:
        if size < MIN_PRE_SAMPLES:
            raise ValueError(f"size must be >= {MIN_PRE_SAMPLES} samples, got {size}")
        self.spec = spec
        self.size = size
        self.halflife_samples = halflife_samples
        self._alpha = 1.0 - 0.5 ** (1.0 / halflife_samples)
        self._reset()

    def _reset(self) -> None:
        self._buf: deque[tuple[float, float | None, float]] = deque(maxlen=self.size)  # (value, count, ts)
        self._n = 0
        # rates: EW events, trials, mean count, rho; gauges: EW mean, var, lag-1 cov, previous y
        self._ew = [0.0, 0.0, 0.0, 0.0]

    def __len__(self) -> int:
        return len(self._buf)

    def add(self, value: float, count: float | None, ts: float) -> None:
        buf = self._buf
        prev = buf[-1] if buf else None
        buf.append((value, count, ts))  # the oldest falls out
        self._n += 1
        a = max(self._alpha, 1.0 / self._n)
        ew = self._ew
        if self.spec.kind == "rate":
            if count is None or count <= 0.0:
                return
            decay = 1.0 - self._alpha
            ew[0], ew[1] = decay * ew[0] + value * count, decay * ew[1] + count
            ew[2] += a * (count - ew[2])
            p = (ew[0] + 0.5) / (ew[1] + 500.0)
            if prev is None or prev[1] is None or prev[1] <= 1.0 or count <= 1.0 or self._n < 3:
                return
            n1, n2 = prev[1], count
            d2 = (value - prev[0]) ** 2 / (p * (1.0 - p))
            lim = 16.0 * (1.0 / n1 + 1.0 / n2 + max(ew[3], 0.0) * 2.0)
            est = (min(d2, lim) - 1.0 / n1 - 1.0 / n2) / ((n1 - 1.0) / n1 + (n2 - 1.0) / n2)
            ew[3] += max(self._alpha, 1.0 / (self._n - 2)) * (est - ew[3])
            return
        y = math.log(value if value > TINY else TINY) if self.spec.log_scale and self.spec.kind != "health" else value
        d = y - ew[0]
        if self._n > 1 and ew[1] > 0.0:
            lim = 4.0 * math.sqrt(ew[1])
            d = max(-lim, min(lim, d))
        ew[0] += a * d
        ew[1] = (1.0 - a) * (ew[1] + a * d * d)
        if self._n > 1:
            ew[2] += a * ((1.0 - a) * d * ew[3] - ew[2])
        ew[3] = (1.0 - a) * d

    @property
    def dispersion(self) -> float:
        """A rate's long-run variance inflation at its mean count, ``1 + (n - 1) rho`` (1 before 30 samples)."""
        if self.spec.kind != "rate" or self._n < LONG_RUN_SAMPLES:
            return 1.0
        return 1.0 + max(self._ew[2] - 1.0, 0.0) * max(self._ew[3], 0.0)

    @property
    def rho(self) -> float | None:
        """A gauge's long-run lag-1 autocorrelation (None for rates, or before 30 samples)."""
        if self.spec.kind == "rate" or self._n < LONG_RUN_SAMPLES or self._ew[1] <= 0.0:
            return None
        return min(max(self._ew[2] / self._ew[1], 0.0), MAX_RHO)

    def start(self, deploy_ts: float, since_ts: float = -math.inf, aside: Iterable[tuple[float, float]] = (),
              **settings: Any) -> AnchoredTest | None:
        """An anchored test of the deploy at ``deploy_ts`` from the samples since ``since_ts``, those
        within an ``aside`` interval ``(from, to)`` left out (``settings``: its keyword arguments), or
        None with fewer than ``MIN_PRE_SAMPLES`` of them."""
        gaps = list(aside)
        pre = [s for s in self._buf if since_ts <= s[2] < deploy_ts and not any(a <= s[2] <= b for a, b in gaps)]
        try:
            return AnchoredTest(self.spec, deploy_ts, pre, dispersion=self.dispersion, rho=self.rho, **settings)
        except ValueError:
            return None

    @property
    def oldest_ts(self) -> float:
        """The ts of the oldest sample kept (inf when empty)."""
        return self._buf[0][2] if self._buf else math.inf

    @property
    def step_s(self) -> float:
        """The median interval between the window's samples (0 with fewer than two)."""
        buf = self._buf
        if len(buf) < 2:
            return 0.0
        ts = [s[2] for s in buf]
        steps = sorted(b - a for a, b in zip(ts, ts[1:], strict=False))
        return steps[len(steps) // 2]

    def after(self, deploy_ts: float) -> list[tuple[float, float | None, float]]:
        """The samples already seen at or after ``deploy_ts`` (a deploy record read late)."""
        return [s for s in self._buf if s[2] >= deploy_ts]

    def to_state(self) -> list[Any]:
        """``[n, ew, rows]``, the rows ``(value, count, ts)`` packed (see :mod:`detectors.packing`)."""
        return [self._n, self._ew, pack_rows(self._buf)]

    @classmethod
    def from_state(cls, state: list[Any], spec: MetricSpec, size: int = 90,
                   halflife_samples: float = 360.0) -> RecentWindow:
        win = cls(spec, size, halflife_samples)
        win._n = int(state[0])
        win._ew = [float(v) for v in state[1]]
        if len(state) == 3:
            win._buf.extend((v, None if c != c else c, ts) for v, c, ts in unpack_rows(state[2], 3))
        else:  # saved before the rows were packed: [n, ew, ref, values, counts, ts - ref]
            ref, values, counts, dts = float(state[2]), state[3], state[4], state[5]
            counts = counts if counts is not None else [None] * len(values)
            win._buf.extend((float(v), None if c is None else float(c), float(dt) + ref)
                            for v, c, dt in zip(values, counts, dts, strict=True))
        return win
