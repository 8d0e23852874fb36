"""Thresholds from a target false-alarm rate (ARL0), not magic numbers.

Every test in the bank is a one-sided CUSUM on (quasi) log-likelihood ratios,
``S = max(0, S + llr)``, alarming at ``S >= h``. Two classical facts fix h:

* Wald/Lorden: with exact LLRs ``E0[exp(llr)] = 1``, so ``exp(S)`` is a
  supermartingale under no change and ``ARL0 >= exp(h)``. ``h = ln(ARL0)`` is
  always safe, and it is the ``ln(ARL0)`` of the delay bound ``ln(ARL0)/KL``.
* Siegmund's approximation is sharp for the Gaussian case: with the LLR of a
  shift of ``delta`` noise sigmas (null drift ``-delta**2/2``, variance
  ``delta**2``), ``ARL0 ~= (exp(b) - b - 1) / (delta**2 / 2)`` with
  ``b = h + 1.166 * delta`` (the overshoot correction). For small shifts the
  walk needs ~``1/drift`` samples per excursion, so the same ARL0 needs a lower
  h than ``ln(ARL0)``: small shifts are detected sooner at the same false-alarm rate.

:func:`threshold` solves Siegmund's formula for h. Counts (binomial LLRs) are
mapped onto it through their null drift, ``delta**2 = 2 * KL(p0 || p1) / phi``
(:mod:`detectors.binomial`). A bank of m tests shares the budget: each test
gets ``m * ARL0`` (union bound: alarm rates add up), which the bench confirms is
conservative because the tests are strongly correlated.

Two things make the real false-alarm rate lower than this target, on purpose:
the k strongest samples of an excursion do not count (spike immunity, see
:mod:`detectors.cusum`), and an alarm also needs the minimum effect
(``min_ratio``). Two make it higher, and are handled where they arise: the
noise of real metrics is not i.i.d. (overdispersed counts, AR(1) gauges: the
LLRs are divided by the estimated variance inflation), and the baseline is
estimated (the bench measures false alarms on realistic noise).

>>> round(threshold(1e5, 1.0), 3)
9.654
>>> round(arl0_siegmund(threshold(1e5, 1.0), 1.0))
100000
>>> round(threshold(1e5, 8.0), 3)  # large shifts overshoot h: Siegmund lowers h by ~1.166*delta
5.651
"""

from __future__ import annotations

import math

SIEGMUND_OVERSHOOT = 1.166  # -zeta(1/2)/sqrt(2*pi): the Gaussian overshoot constant
MIN_THRESHOLD = 0.5  # never below: keeps one ordinary sample from confirming anything


def arl0_siegmund(h: float, delta: float, overshoot: bool = True) -> float:
    """Siegmund's approximate in-control run length of a CUSUM with threshold h (LLR units).

    ``overshoot=False`` drops the overshoot correction, for counts (see :func:`threshold`).
    """
    if delta <= 0:
        raise ValueError(f"delta must be > 0 (noise sigmas of the design shift), got {delta}")
    b = h + SIEGMUND_OVERSHOOT * delta if overshoot else h
    q = delta * delta / 2.0
    if b > 700:
        return math.inf
    return (math.exp(b) - b - 1.0) / q


def threshold(arl0: float, delta: float, overshoot: bool = True) -> float:
    """The CUSUM threshold h (LLR units) whose ARL0 by Siegmund's formula is ``arl0``.

    Solved by bisection (monotone in h), bounded by ``[MIN_THRESHOLD, ln(arl0)]``.
    ``overshoot=False`` for counts: with few events per sample the LLR moves in
    lattice jumps (one error at 30 requests is +1.2 for a 10x design), the
    Gaussian overshoot correction would lower h by ~1.2 delta where the walk does
    not overshoot at all, and the measured false-alarm rate explodes; without
    it only the (valid) small-drift prefactor lowers h below ``ln(arl0)``.
    """
    if arl0 <= 1:
        raise ValueError(f"arl0 must be > 1 sample, got {arl0}")
    if delta <= 0:
        raise ValueError(f"delta must be > 0 (noise sigmas of the design shift), got {delta}")
    hi = math.log(arl0)
    lo = 0.0
    if arl0_siegmund(lo, delta, overshoot) >= arl0:
        return MIN_THRESHOLD
    if arl0_siegmund(hi, delta, overshoot) < arl0:
        return hi  # the exact-LLR bound ARL0 >= exp(h) already suffices
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if arl0_siegmund(mid, delta, overshoot) < arl0:
            lo = mid
        else:
            hi = mid
    return max(hi, MIN_THRESHOLD)


def delay_bound(arl0: float, kl: float, spike_samples: int = 0) -> float:
    """The delay no detector at false-alarm rate 1/arl0 beats on average: ``max(ln(arl0)/KL, k+1)``."""
    return max(math.log(arl0) / kl, spike_samples + 1.0)
