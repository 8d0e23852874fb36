"""The deploy-anchored test: clear shifts at k + 1 samples, spikes never, its budget per deploy, exact state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.anchored import MIN_PRE_SAMPLES, AnchoredTest, RecentWindow
from detectors.spec import spec_for

STEP = 10.0
DEPLOY = 1000.0


def clean(metric: str, rng: np.random.Generator, size: int, factor: float = 1.0, n: float | None = 2000.0):
    """(value, count) samples of a clean stream, the level multiplied by ``factor``."""
    if metric == "error_rate":
        count = n if n is not None else 2000.0
        return [(rng.binomial(int(count), min(0.005 * factor, 1.0)) / count, n) for _ in range(size)]
    if metric == "latency_p95":
        return [(0.2 * factor * math.exp(rng.normal(0, 0.08)), None) for _ in range(size)]
    return [((8 - rng.binomial(8, 0.003)) / 8 * (1.0 if factor == 1.0 else factor), 8.0) for _ in range(size)]


def pre_window(rows):
    return [(v, c, DEPLOY - STEP * (len(rows) - i)) for i, (v, c) in enumerate(rows)]


def run(test: AnchoredTest, rows) -> int | None:
    """Feed post-deploy rows; the 1-based index of the rejecting sample, or None."""
    for i, (v, c) in enumerate(rows):
        if test.update(v, c, DEPLOY + 5.0 + STEP * i):
            return i + 1
    return None


# (metric, shift factor, pre-deploy samples, counts given, rejected at the latest at this post sample)
CLEAR = [
    ("error_rate", 20.0, 90, True, 3),
    ("error_rate", 5.0, 30, True, 4),
    ("error_rate", 10.0, 16, False, 4),  # a rate without counts: its window's variance is the unit
    ("latency_p95", 3.0, 90, None, 3),
    ("latency_p95", 3.0, 8, None, 6),
    ("health", 0.5, 30, None, 4),  # half the pods down; k = 3 for health
]


@pytest.mark.parametrize("metric, factor, history, counts, latest", CLEAR)
def test_a_clear_shift_right_after_the_deploy_is_flagged_within_a_few_samples(metric, factor, history, counts,
                                                                              latest):
    rng = np.random.default_rng(7)
    n = None if counts is False else 2000.0
    test = AnchoredTest(spec_for(metric), DEPLOY, pre_window(clean(metric, rng, history, n=n)))
    at = run(test, clean(metric, rng, 30, factor, n=n))
    spec = spec_for(metric)
    assert at is not None and spec.spike_samples + 1 <= at <= latest
    assert test.rejected and test.done and test.onset_ts == DEPLOY + 5.0
    assert test.ratio == pytest.approx(factor, rel=0.4)


@pytest.mark.parametrize("metric", ["error_rate", "latency_p95", "health"])
def test_good_deploys_are_rarely_flagged(metric):
    """Budget per deploy: alpha = 0.003; 150 good deploys on clean noise, warm streams."""
    rng = np.random.default_rng(11)
    flagged = 0
    for _ in range(150):
        test = AnchoredTest(spec_for(metric), DEPLOY, pre_window(clean(metric, rng, 60)))
        flagged += run(test, clean(metric, rng, 60)) is not None
    assert flagged <= 2


def test_a_shift_that_began_before_the_deploy_is_dated_before_it():
    rng = np.random.default_rng(3)
    rows = clean("error_rate", rng, 40) + clean("error_rate", rng, 4, 8.0)
    test = AnchoredTest(spec_for("error_rate"), DEPLOY, pre_window(rows))
    at = run(test, clean("error_rate", rng, 30, 8.0))
    if at is not None:  # the window's level mostly predates the shift: flagged, but dated before the deploy
        assert test.onset_ts < DEPLOY


def test_a_shift_already_in_the_window_is_not_flagged():
    rng = np.random.default_rng(4)
    test = AnchoredTest(spec_for("error_rate"), DEPLOY, pre_window(clean("error_rate", rng, 40, 8.0)))
    assert run(test, clean("error_rate", rng, 60, 8.0)) is None


def test_later_onsets_need_more_evidence():
    """The prior on the onset: the same shift, starting at once or 5 minutes after the deploy."""
    rng = np.random.default_rng(5)
    pre = pre_window(clean("latency_p95", rng, 60))
    early, late = (AnchoredTest(spec_for("latency_p95"), DEPLOY, pre) for _ in range(2))
    shifted = clean("latency_p95", rng, 4, 1.6)
    quiet = clean("latency_p95", rng, 30)
    for i, (v, c) in enumerate(shifted):
        early.update(v, c, DEPLOY + 5.0 + STEP * i)
    for i, (v, c) in enumerate(quiet + shifted):
        late.update(v, c, DEPLOY + 5.0 + STEP * i)
    assert early.log_e > late.log_e + 2.0


def test_the_test_ends_at_its_horizon():
    rng = np.random.default_rng(6)
    test = AnchoredTest(spec_for("error_rate"), DEPLOY, pre_window(clean("error_rate", rng, 30)), horizon_s=60.0)
    assert run(test, clean("error_rate", rng, 6) + clean("error_rate", rng, 10, 20.0)) is None
    assert test.done and not test.rejected


@pytest.mark.parametrize("kwargs, message", [
    ({"alpha": 0.0}, "alpha must be in"),
    ({"horizon_s": -1.0}, "horizon_s and onset_half_s must be > 0"),
    ({"pre": [(0.01, 100.0, DEPLOY - 10.0 * i) for i in range(1, MIN_PRE_SAMPLES)]}, "at least 8 samples"),
    ({"pre": [(0.01, 100.0, DEPLOY + 10.0 * i) for i in range(20)]}, "at least 8 samples"),
])
def test_bad_arguments_are_refused_with_the_reason(kwargs, message):
    args = {"spec": spec_for("error_rate"), "deploy_ts": DEPLOY,
            "pre": [(0.01, 100.0, DEPLOY - 10.0 * i) for i in range(20, 0, -1)], **kwargs}
    with pytest.raises(ValueError, match=message):
        AnchoredTest(**args)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metric=st.sampled_from(["error_rate", "latency_p95", "health"]), seed=st.integers(0, 10**6),
       at=st.integers(0, 40), size=st.floats(3.0, 1000.0))
def test_k_spikes_of_any_size_never_flag_a_good_deploy(metric, seed, at, size):
    rng = np.random.default_rng(seed)
    spec = spec_for(metric)
    rows = clean(metric, rng, 50)
    usual = sorted(v for v, _ in rows)[len(rows) // 2]
    for j in (at - 1, at + spec.spike_samples):  # next to an adverse sample, k spikes are k + 1 adverse samples
        if 0 <= j < len(rows):
            rows[j] = (usual, rows[j][1])
    spiked = list(rows)
    for j in range(at, at + spec.spike_samples):  # k samples in a row, far in the bad direction
        v, c = rows[j]
        spiked[j] = (min(v * size + 0.05, 1.0) if metric == "error_rate" else v * size if metric == "latency_p95"
                     else 0.0, c)
    pre = pre_window(clean(metric, rng, 60))
    plain, test = AnchoredTest(spec, DEPLOY, pre), AnchoredTest(spec, DEPLOY, pre)
    if run(plain, rows) is None:  # (the clean stream itself may, rarely, be flagged)
        assert run(test, spiked) is None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metric=st.sampled_from(["error_rate", "latency_p95", "health"]), seed=st.integers(0, 10**6),
       cut=st.integers(0, 30), factor=st.sampled_from([1.0, 1.5, 4.0]))
def test_state_round_trips_exactly_through_json(metric, seed, cut, factor):
    rng = np.random.default_rng(seed)
    spec = spec_for(metric)
    test = AnchoredTest(spec, DEPLOY, pre_window(clean(metric, rng, 20)))
    rows = clean(metric, rng, cut) + clean(metric, rng, 30, factor if metric != "health" else 0.5)
    for i, (v, c) in enumerate(rows[:cut]):
        test.update(v, c, DEPLOY + 5.0 + STEP * i)
    copy = AnchoredTest.from_state(json.loads(json.dumps(test.to_state())), spec)
    for i, (v, c) in enumerate(rows[cut:], cut):
        ts = DEPLOY + 5.0 + STEP * i
        assert test.update(v, c, ts) == copy.update(v, c, ts)
        assert test.log_e == copy.log_e
    assert test.to_state() == copy.to_state()


def test_recent_window_opens_a_test_from_the_samples_before_the_deploy():
    rng = np.random.default_rng(8)
    win = RecentWindow(spec_for("error_rate"), size=30)
    for i, (v, c) in enumerate(clean("error_rate", rng, 40)):
        win.add(v, c, DEPLOY - STEP * (40 - i) + 15.0)  # the last sample falls after the deploy
    assert len(win) == 30 and [s[2] for s in win.after(DEPLOY)] == [DEPLOY + 5.0]
    test = win.start(DEPLOY)
    assert test is not None and test.deploy_ts == DEPLOY
    assert RecentWindow(spec_for("error_rate")).start(DEPLOY) is None  # no history: no test
    copy = RecentWindow.from_state(json.loads(json.dumps(win.to_state())), spec_for("error_rate"), size=30)
    assert copy.to_state() == win.to_state() and copy.dispersion == win.dispersion


def test_a_long_windows_low_count_shift_counts_its_busiest_samples_capped_not_dropped():
    """At two errors a sample, leaving out a segment's two busiest samples costs a 4x shift a third of
    its evidence; capping them at the rate of the next one does not, and a spike is still capped."""
    spec = spec_for("error_rate")
    delays: dict[bool, list[float]] = {True: [], False: []}
    for seed in range(12):
        rng = np.random.default_rng(seed)
        pre = [(float(rng.binomial(150, 0.003)) / 150, 150.0, 10.0 * i) for i in range(90)]
        post = [float(rng.binomial(150, 0.012)) / 150 for _ in range(60)]
        for capped in (True, False):
            test = AnchoredTest(spec, 900.0, pre)
            assert test._winsorise  # a 90-sample window caps
            test._winsorise = capped
            hit = next((i for i, v in enumerate(post) if test.update(v, 150.0, 905.0 + 10 * i)), 60)
            delays[capped].append(hit)
    assert np.median(delays[True]) < np.median(delays[False])
    assert sum(a <= b for a, b in zip(delays[True], delays[False], strict=True)) >= 10
    short = AnchoredTest(spec, 900.0, pre[-30:])
    assert not short._winsorise  # a short window may understate its noise: its busiest are dropped
    spike = AnchoredTest(spec, 900.0, pre)
    flags = [spike.update(v, 150.0, 905.0 + 10 * i) for i, v in enumerate([0.2, 0.2] + [0.0] * 30)]
    assert not any(flags)


def test_a_spike_shortly_before_a_shift_is_not_where_it_began():
    """Two samples of a burst, two quiet ones, the deploy, then the shift at the burst's level: a
    change-time estimate alone would date the shift back to the burst and excuse the deploy."""
    rng = np.random.default_rng(8)
    rows = clean("error_rate", rng, 60) + clean("error_rate", rng, 2, 8.0) + clean("error_rate", rng, 2)
    test = AnchoredTest(spec_for("error_rate"), DEPLOY, pre_window(rows))
    assert run(test, clean("error_rate", rng, 30, 8.0)) is not None
    assert test.onset_ts == DEPLOY + 5.0


def test_a_degradation_already_there_is_dated_before_the_deploy():
    rng = np.random.default_rng(9)
    rows = clean("latency_p95", rng, 60) + clean("latency_p95", rng, 8, 2.0)
    test = AnchoredTest(spec_for("latency_p95"), DEPLOY, pre_window(rows))
    assert run(test, clean("latency_p95", rng, 30, 2.0)) is not None
    assert test.onset_ts == DEPLOY - STEP * 8


def test_a_deploy_that_makes_a_degradation_much_worse_is_blamed_from_the_level_it_found():
    """Latency doubled (a callee's trouble) eight samples before the deploy; the deploy tripled it again."""
    rng = np.random.default_rng(9)
    rows = clean("latency_p95", rng, 60) + clean("latency_p95", rng, 8, 2.0)
    test = AnchoredTest(spec_for("latency_p95"), DEPLOY, pre_window(rows))
    assert run(test, clean("latency_p95", rng, 30, 6.0)) is not None
    assert test.onset_ts == DEPLOY + 5.0
    assert test.baseline == pytest.approx(0.4, rel=0.1) and test.ratio == pytest.approx(3.0, rel=0.2)


def bursty(rng: np.random.Generator, size: int, factor: float, n: float = 300.0, kappa: float = 80.0):
    """Error rates of about 1.5 errors a sample, their rate redrawn every sample (beta-binomial)."""
    p = 0.005 * factor
    return [(rng.binomial(int(n), rng.beta(p * kappa, (1 - p) * kappa)) / n, n) for _ in range(size)]


def test_an_onset_a_noisy_stream_cannot_place_on_either_side_of_the_deploy_says_so():
    """Tripled for four samples before the deploy, and after it: sustained before, yet the data
    favour neither onset by ONSET_NATS. Dated after the deploy, with the earlier onset it may have."""
    rng = np.random.default_rng(23)
    test = AnchoredTest(spec_for("error_rate"), DEPLOY, pre_window(bursty(rng, 60, 1.0) + bursty(rng, 4, 3.0)))
    assert run(test, bursty(rng, 40, 3.3)) is not None
    assert test.onset_ts >= DEPLOY
    assert test.earliest_onset_ts is not None and test.earliest_onset_ts < DEPLOY - STEP


def test_a_sparse_streams_onset_may_be_as_late_as_the_samples_cannot_tell_from_the_best():
    """A few errors a minute: three stray errors just after the deploy, the shift three minutes later.
    The best change time starts at the stray errors; dated there alone, the shift would seem the
    deploy's, right after it, and apart from other services' shifts of the same moment."""
    pre = [(1 / 20 if i in (11, 37) else 0.0, 20.0) for i in range(60)]
    post = [(1 / 20 if i in (1, 2, 4) else 0.0, 20.0) for i in range(18)]
    post += [(1 / 20 if i % 3 else 2 / 20, 20.0) for i in range(40)]
    test = AnchoredTest(spec_for("error_rate"), DEPLOY, pre_window(pre))
    assert run(test, post) is not None
    assert test.onset_ts < DEPLOY + 5.0 + STEP * 5
    assert test.latest_onset_ts is not None and test.latest_onset_ts >= DEPLOY + 5.0 + STEP * 15
