"""Baselines: river-equivalent EW recurrences, warm-up weighting, AR(1) and overdispersion estimates, trend lines."""

from __future__ import annotations

import math

import numpy as np
import pytest
from river import stats as rstats

from detectors.stats import EWLine, EWRate, EWStats, alpha_of


@pytest.mark.parametrize("halflife", [1.0, 0.5])
def test_ew_mean_and_var_are_rivers(halflife):
    alpha = alpha_of(halflife)
    ours, mean, var = EWStats(halflife), rstats.EWMean(alpha), rstats.EWVar(alpha)
    for x in [1.0, 3.0, 5.0, 4.0, 6.0, 8.0, 7.0, 9.0, 11.0]:
        ours.update(x)
        mean.update(x)
        var.update(x)
        assert ours.mean == pytest.approx(mean.get(), rel=1e-12)
        assert ours.var == pytest.approx(var.get(), rel=1e-12, abs=1e-12)


def test_warm_up_weighs_samples_equally():
    s = EWStats(halflife_samples=1000)
    for x in [2.0, 4.0, 9.0]:
        s.update(x)
    assert s.mean == pytest.approx(5.0) and s.var == pytest.approx(26 / 3)


def test_winsorised_update_bounds_a_spike():
    s = EWStats(halflife_samples=100)
    rng = np.random.default_rng(1)
    for x in rng.normal(10, 1, 500):
        s.update(float(x), clip=4.0)
    before, sd = s.mean, math.sqrt(s.var)
    s.update(1e9, clip=4.0)
    assert 0 < s.mean - before <= 4 * sd * alpha_of(100) + 1e-12


def test_lag1_autocorrelation_of_ar1_noise():
    rng = np.random.default_rng(2)
    s, x = EWStats(halflife_samples=3000), 0.0
    for e in rng.normal(0, 1, 20000):
        x = 0.8 * x + float(e)
        s.update(x)
    assert s.rho == pytest.approx(0.8, abs=0.04)
    assert s.var == pytest.approx(1 / (1 - 0.64), rel=0.15)


def test_rate_is_count_weighted_ratio_of_sums():
    r = EWRate(halflife_samples=1e9)
    r.update(10.0, 1000.0).update(0.0, 10.0)  # 10 errors of 1010 requests, not mean(1%, 0%)
    assert r.p == pytest.approx((10 + EWRate.PRIOR_EVENTS) / (1010 + EWRate.PRIOR_TRIALS))


def test_rate_overdispersion_estimates_beta_binomial_rho():
    rng = np.random.default_rng(3)
    kappa, p = 250.0, 0.01
    r = EWRate(halflife_samples=2000)
    for _ in range(6000):
        n = int(rng.poisson(1000))
        r.update(float(rng.binomial(n, rng.beta(p * kappa, (1 - p) * kappa))), float(n))
    assert r.rho == pytest.approx(1 / (kappa + 1), rel=0.3)
    assert r.p == pytest.approx(p, rel=0.1)


def test_dispersion_only_update_leaves_the_rate_alone():
    r = EWRate(halflife_samples=100)
    for _ in range(50):
        r.update(10.0, 1000.0)
    p, n, rho = r.p, r.n, r.rho_raw
    r.update(60.0, 1000.0, clip=4.0, level=False)  # a suspected sample: the monitor froze the level
    assert (r.p, r.n) == (p, n) and r.rho_raw > rho


def test_binomial_counts_give_no_overdispersion():
    rng = np.random.default_rng(4)
    r = EWRate(halflife_samples=2000)
    for _ in range(6000):
        r.update(float(rng.binomial(1000, 0.01)), 1000.0)
    assert r.rho < 0.0006  # phi = 1 + 999 rho stays below 1.6


def test_state_round_trips():
    s = EWStats(50).update(1.0).update(2.5).update(2.0)
    t = EWStats.from_state(s.to_state(), 50)
    assert t.update(3.0).to_state() == s.update(3.0).to_state()
    r = EWRate(50).update(3.0, 100.0).update(1.0, 90.0)
    q = EWRate.from_state(r.to_state(), 50)
    assert q.update(2.0, 80.0).to_state() == r.update(2.0, 80.0).to_state()


def _line_over(values, halflife=10.0):
    """Fit a line through values as the monitor does; return it, its residual stats and its slopes."""
    line, res, slopes = EWLine(halflife), EWStats(20.0, zero_mean=True), []
    for x in values:
        level, slope, leverage = line.step().forecast(res.var)
        slopes.append(slope)
        if math.isfinite(leverage):
            res.update((x - level) / math.sqrt(1.0 + leverage))
        line.add(x)
    return line, res, slopes


def test_a_line_keeps_a_clear_slope_and_forecasts_the_ramp():
    rng = np.random.default_rng(5)
    line, res, _ = _line_over([5.0 + 0.5 * i + float(rng.normal(0, 1)) for i in range(200)])
    level, slope, _ = line.step().forecast(res.var)
    assert slope == pytest.approx(0.5, abs=0.15) and level == pytest.approx(5.0 + 0.5 * 200, abs=2.0)
    assert res.var == pytest.approx(1.0, rel=0.5)  # the residuals' scale, not the ramp's


def test_a_level_series_keeps_a_flat_line():
    rng = np.random.default_rng(6)
    _, _, slopes = _line_over([float(v) for v in rng.normal(3.0, 1.0, 400)])
    assert sum(s == 0.0 for s in slopes[20:]) / len(slopes[20:]) > 0.9  # noise is not a trend


def test_a_line_through_huge_constant_values_has_no_residuals():
    for value in (1e15, 123456789.123, -7.7e12):
        line, res, slopes = _line_over([value] * 2000, halflife=360.0)
        assert res.var == 0.0 and set(slopes) == {0.0}
        assert line.step().forecast(res.var)[0] == value


def test_known_zero_mean_variance_is_not_shrunk():
    rng = np.random.default_rng(7)
    early, late = [], []
    for _ in range(400):
        s = EWStats(20.0, zero_mean=True)
        for i, x in enumerate(rng.normal(0, 1, 200)):
            s.update(float(x))
            if i == 9:
                early.append(s.var)
        late.append(s.var)
        assert s.mean == 0.0
    assert np.mean(early) == pytest.approx(1.0, abs=0.06) and np.mean(late) == pytest.approx(1.0, abs=0.06)


def test_leverage_is_large_after_a_restart_and_shrinks_as_samples_come():
    line = EWLine(10.0).restart(2.0)
    assert line.step().forecast(1.0) == (2.0, 0.0, 1.0)  # one sample: the forecast error is sigma * sqrt(2)
    for x in (2.1, 1.9, 2.0, 2.2):
        line.add(x).step()
    assert line.forecast(1.0)[2] < 0.3


def test_a_line_round_trips_and_forgets():
    line = EWLine(10.0)
    for x in (1.0, 3.0, 5.0, 7.0):
        line.step().add(x)
    copy = EWLine.from_state(line.to_state(), 10.0)
    assert copy.step().add(20.0).to_state() == line.step().add(20.0).to_state()
    assert line.clear().empty and line.add(4.0).step().forecast(1.0) == (4.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="slope_t must be >= 0"):
        EWLine(10.0, slope_t=-1.0)


def test_bad_halflife_is_refused():
    with pytest.raises(ValueError, match="halflife_samples must be > 0"):
        EWStats(0)
