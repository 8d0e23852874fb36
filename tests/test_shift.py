"""The tests of the bank: trimmed CUSUM, binomial and gauge LLRs."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detectors.binomial import BinomialModel
from detectors.cusum import TrimmedCusum
from detectors.gaussian import GaussianModel
from detectors.onset import OnsetWindow
from detectors.spec import MetricSpec, spec_for


def test_trimmed_cusum_ignores_its_k_largest_increments():
    c = TrimmedCusum(spike_samples=2)
    assert [c.update(x, 0.0, 1.0, float(i)) for i, x in enumerate([100.0, 90.0], 1)] == [0.0, 0.0]
    assert c.s == 190.0 and c.onset_ts == 1.0
    assert c.update(1.0, 0.0, 1.0, 3.0) == 1.0  # only the third sample's evidence counts
    assert c.update(-200.0, 0.0, 1.0, 4.0) == 0.0 and c.onset_ts == 0.0  # excursion over


def test_trimmed_level_drops_the_strongest_samples():
    c = TrimmedCusum(spike_samples=1)
    for ts, (llr, y) in enumerate([(5.0, 100.0), (1.0, 2.0), (1.0, 4.0)], 1):
        c.update(llr, y, 1.0, float(ts))
    assert c.level() == (6.0, 2.0)


def test_cusum_limit_and_state_round_trip():
    c = TrimmedCusum(1)
    for ts in range(1, 6):
        c.update(3.0, 1.0, 1.0, float(ts), limit=7.0)
    assert c.s == 7.0
    d = TrimmedCusum.from_state(c.to_state(), 1)
    assert d.update(1.0, 1.0, 1.0, 6.0) == c.update(1.0, 1.0, 1.0, 6.0)
    assert d.to_state() == c.to_state()
    with pytest.raises(ValueError, match="spike_samples must be >= 0"):
        TrimmedCusum(-1)


def _warm(model, value, count, n=60):
    for _ in range(n):
        y, w, _ = model.transform(value, count)
        model.learn(y, w, 0.0)
    return model


def _llrs(model, value, count):
    y, w, scale = model.transform(value, count)
    return [(a * y + b * w) / scale for _, a, b, *_ in model.designs(3)]


def test_one_error_in_30_requests_is_weak_evidence():
    m = _warm(BinomialModel(spec_for("error_rate")), 0.005, 30.0)
    thresholds = [d[3] for d in m.designs(3)]
    assert all(llr < h / 4 for llr, h in zip(_llrs(m, 1 / 30, 30.0), thresholds, strict=True)), thresholds


def test_errors_at_high_count_are_strong_evidence():
    m = _warm(BinomialModel(spec_for("error_rate")), 0.005, 2000.0)
    assert max(_llrs(m, 0.05, 2000.0)) > 50.0


def test_overdispersion_discounts_the_evidence():
    tidy = _warm(BinomialModel(spec_for("error_rate")), 0.005, 2000.0)
    wild = _warm(BinomialModel(spec_for("error_rate")), 0.005, 2000.0)
    wild.rate.rho_raw = 0.004  # beta-binomial kappa = 250
    assert _llrs(wild, 0.01, 2000.0)[0] == pytest.approx(_llrs(tidy, 0.01, 2000.0)[0] / (1 + 1999 * 0.004))


def test_missing_count_uses_the_streams_mean_count():
    m = _warm(BinomialModel(spec_for("error_rate")), 0.005, 400.0)
    assert m.transform(0.01, None)[1] == pytest.approx(400.0)
    assert BinomialModel(spec_for("error_rate")).transform(0.01, None)[1] == 100.0


def test_rate_gate_needs_min_ratio():
    m = _warm(BinomialModel(spec_for("error_rate")), 0.01, 1000.0)
    p0 = m.baseline
    assert m.gate(1.6 * p0 * 1000, 1000.0, 1) and not m.gate(1.4 * p0 * 1000, 1000.0, 1)


def test_latency_designs_start_at_the_minimum_effect():
    m = GaussianModel(spec_for("latency_p95"))
    for v in [0.2, 0.22, 0.18, 0.2] * 10:
        m.learn(*m.transform(v, None)[:2], clip=0.0)
    sign, a, b, h, *_ = m.designs(3)[0]
    d = a * m.sigma  # design shift in sigmas (rho = 0 here)
    assert sign == 1 and d * m.sigma == pytest.approx(math.log(1.2), rel=0.05)
    assert m.gate(math.log(0.2 * 1.25), 1.0, 1) and not m.gate(math.log(0.2 * 1.15), 1.0, 1)


def test_health_floor_is_a_drop_to_baseline_over_min_ratio():
    m = GaussianModel(spec_for("health"))
    _warm(m, 1.0, None)
    assert m.detector == "health_cusum" and m.sigma == 0.02  # the floor: health 1.0 has no noise
    assert m.gate(0.85, 1.0, -1) and not m.gate(0.92, 1.0, -1)  # 2 pods of 12 down, not 1


def test_both_directions_test_both_ways():
    spec = MetricSpec(kind="gauge", direction="both", min_ratio=1.0, log_scale=False)
    m = _warm(GaussianModel(spec), 5.0, None)
    assert [s for s, *_ in m.designs(6)] == [1, 1, 1, -1, -1, -1]


def test_spec_validation_lists_valid_values():
    with pytest.raises(ValueError, match="shift_grid must start at 1.0"):
        MetricSpec(kind="gauge", direction="up", min_ratio=1.2, shift_grid=(2.0, 3.0))
    with pytest.raises(ValueError, match="'rate', 'gauge' or 'health'"):
        MetricSpec(kind="counter", direction="up", min_ratio=1.2)


# -- onset --------------------------------------------------------------------------------------


def _gauge_gain(sy, sw, sign):  # baseline 0, sigma 1
    return sy * sy / sw if sign * sy > 0 else 0.0


def _window(values, k=2, size=64, start=1):
    w = OnsetWindow(size, k)
    for ts, y in enumerate(values, start):
        w.add(y, 1.0, float(ts))
    return w


def test_onset_is_the_start_of_the_segment_that_moved_most():
    w = _window([0.0, 0.1, -0.1, 0.6, 0.4, 0.1, 2.0, 2.1, 1.9, 2.0])
    assert w.onset(0.0, _gauge_gain, 1, fallback=4.0) == 7.0
    down = _window([0.0, 0.1, -0.1, 0.0, -2.0, -2.1, -1.9, -2.0])
    assert down.onset(0.0, _gauge_gain, -1, fallback=2.0) == 5.0
    assert down.onset(0.0, _gauge_gain, 1, fallback=2.0) == 2.0  # nothing moved up: the CUSUM's onset


def test_a_spike_just_before_a_shift_does_not_pull_its_onset_back():
    values = [0.0, 0.1, -0.1, 0.0, 40.0, 0.0, 0.1, 2.0, 2.1, 1.9, 2.0, 2.2]
    assert _window(values).onset(0.0, _gauge_gain, 1, fallback=5.0) == 8.0
    assert _window(values, k=0).onset(0.0, _gauge_gain, 1, fallback=5.0) == 5.0  # untrimmed, it would


def test_with_slack_the_onset_is_the_newest_start_nearly_as_good_as_the_best():
    w = _window([0.0, 0.0, 1.2, 1.0, 0.8, 0.0, 1.5, 1.4, 1.6, 1.5, 1.5])
    best, at = w.best(0.0, _gauge_gain, 1)
    assert at == 3.0  # the three raised samples make the longer segment the best, by a little
    gain, start, newest = w.span(0.0, _gauge_gain, 1, slack=3.0)
    assert gain == best and start == at and newest == 7.0
    gain, _, newest = w.span(0.0, _gauge_gain, 1, slack=0.01)
    assert (gain, newest) == (best, 3.0)


def test_onset_falls_back_to_the_cusum_when_the_window_cannot_see_the_change():
    assert _window([5.0, 5.0]).onset(0.0, _gauge_gain, 1, fallback=1.0) == 1.0  # <= k samples
    w = _window([0.0] * 10 + [3.0] * 10, size=8)  # holds ts 13..20 only
    assert len(w) == 8 and w.onset(0.0, _gauge_gain, 1, fallback=11.0) == 11.0
    w.clear()
    assert len(w) == 0 and w.onset(0.0, _gauge_gain, 1, fallback=11.0) == 11.0
    with pytest.raises(ValueError, match="size must be >= 1"):
        OnsetWindow(0, 2)


def test_rate_onset_gain_is_the_binomial_glr_in_the_direction():
    m = _warm(BinomialModel(spec_for("error_rate")), 0.01, 1000.0)
    p0 = m.center
    assert m.onset_gain(50.0, 1000.0, 1) == pytest.approx(1000.0 * (0.05 * math.log(0.05 / p0)
                                                                  + 0.95 * math.log(0.95 / (1 - p0))))
    assert m.onset_gain(50.0, 1000.0, -1) == 0.0 and m.onset_gain(0.0, 0.0, 1) == 0.0
    g = _warm(GaussianModel(spec_for("latency_p95")), 0.2, None)
    assert g.center == pytest.approx(math.log(0.2))
    assert g.onset_gain(2 * math.log(0.3), 2.0, 1) == pytest.approx(2 * math.log(1.5) ** 2)
    assert g.onset_gain(2 * math.log(0.3), 2.0, -1) == 0.0


@given(rows=st.lists(st.tuples(st.floats(-1e9, 1e9), st.floats(0.0, 1e6), st.floats(1e-3, 1e3)),
                     max_size=80),
       t0=st.sampled_from([0.0, 1e-9, 1.0, 1_767_225_600.0]))
def test_onset_window_state_round_trips_exactly(rows, t0):
    w = OnsetWindow(64, 2)
    ts = t0
    for y, n, step in rows:
        ts += step
        w.add(y, n, ts)
    state = w.to_state()
    back = OnsetWindow.from_state(json.loads(json.dumps(state)), 64, 2)
    assert back.to_state() == state and back._buf == w._buf
    gain = _gauge_gain
    assert back.onset(0.0, gain, 1, ts) == w.onset(0.0, gain, 1, ts)
