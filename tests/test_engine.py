"""The single-process engine, and its parity with the partitioned live composition."""

from __future__ import annotations

import random

import pytest

from backout.contracts import Alert, Anomaly, Decision, Deploy, Metric
from backout.errors import (
    DuplicateSample,
    ImpossibleValue,
    SampleRejected,
    UnexpectedRecord,
    UnknownMetric,
)
from detectors.config import BackoutConfig
from detectors.decider import Decider
from detectors.engine import Engine
from detectors.monitor import MetricMonitor
from detectors.watermark import PartitionClock
from streams.simulate import demo_scenario, scenario


def run_engine(records) -> tuple[list, int]:
    engine = Engine(BackoutConfig())
    out, rejected = [], 0
    for r in records:
        try:
            out += engine.feed(r)
        except SampleRejected:
            rejected += 1
    return out + engine.finish(), rejected


@pytest.fixture(scope="module")
def demo():
    return demo_scenario(7)


def test_unknown_metric_is_rejected():
    with pytest.raises(UnknownMetric, match="unknown metric 'cpu_temp'"):
        Engine(BackoutConfig()).feed(Metric(ts=1e9, service="a", metric="cpu_temp", value=1.0))


def test_records_that_are_not_inputs_are_refused_as_samples():
    alert = Alert(ts=1e9, severity="info", text="hello")
    for feed in (Engine(BackoutConfig()).feed, Decider(BackoutConfig()).handle):
        with pytest.raises(UnexpectedRecord) as refused:
            feed(alert)  # type: ignore[operator]
        assert isinstance(refused.value, SampleRejected) and "alert" in str(refused.value).lower()


@pytest.mark.parametrize("metric, value, why", [
    ("error_rate", 1.2, "fraction in \\[0, 1\\]"), ("health", -0.1, "fraction"),
    ("latency_p95", -0.0004, "cannot be negative.*log_scale: false")])
def test_a_value_its_metric_cannot_take_is_refused_and_the_stream_goes_on(metric, value, why):
    engine = Engine(BackoutConfig())
    with pytest.raises(ImpossibleValue, match=why):
        engine.feed(Metric(ts=1e9, service="a", metric=metric, value=value, count=100))
    engine.feed(Metric(ts=1e9, service="a", metric=metric, value=0.5, count=100))  # same ts: not a duplicate
    with pytest.raises(DuplicateSample):
        engine.feed(Metric(ts=1e9, service="a", metric=metric, value=0.5, count=100))


def test_duplicate_sample_propagates():
    engine = Engine(BackoutConfig())
    m = Metric(ts=1e9, service="a", metric="error_rate", value=0.01, count=100)
    engine.feed(m)
    with pytest.raises(DuplicateSample):
        engine.feed(m)


def test_demo_bad_deploy_rolled_back_and_nothing_else(demo):
    out, _ = run_engine(demo)
    decisions = [o for o in out if isinstance(o, Decision)]
    bad = [d for d in demo if isinstance(d, Deploy) and d.model_extra["label"] == "bad"]
    assert [(d.action, d.deploy_id) for d in decisions] == [("rollback", bad[0].deploy_id)]
    assert decisions[0].to_version == bad[0].previous_version
    first_anomaly = next(i for i, o in enumerate(out) if isinstance(o, Anomaly))
    assert first_anomaly < out.index(decisions[0])


def test_finish_does_not_force_undue_candidates(demo):
    out, _ = run_engine(demo)
    decision = next(o for o in out if isinstance(o, Decision))
    cut = [r for r in demo if r.ts < decision.ts - 5]
    out, _ = run_engine(cut)
    assert not any(isinstance(o, Decision) for o in out)


def _live(records, partitions: int, seed: int) -> list[Decision]:
    """The worker's composition: monitors and a clock per partition, one decider, a random interleaving."""
    config = BackoutConfig()
    rng = random.Random(seed)
    monitors: dict = {}
    clocks = [PartitionClock(p, config.watermark_interval_s, partitions) for p in range(partitions)]
    queues: list[list] = [[] for _ in range(partitions)]
    for r in records:
        p = sum(map(ord, r.service)) % partitions
        if isinstance(r, Deploy):  # to the decider, and to the service's monitors (their anchored tests)
            queues[p].append(r)
            if r.status in ("started", "finished") and r.version != r.previous_version:
                for (service, _), mon in monitors.items():
                    found = mon.anchor(r.deploy_id, r.ts, r.ts if r.status == "finished" else None) \
                        if service == r.service else None
                    if found is not None:
                        queues[p].append(found)
            continue
        spec = config.spec_for(r.metric)
        key = (r.service, r.metric)
        if spec is None:
            continue
        mon = monitors.get(key) or MetricMonitor(r.service, r.metric, spec)
        try:
            anomaly = mon.update(r)
        except SampleRejected:
            continue
        monitors[key] = mon
        if anomaly is not None:
            queues[p].append(anomaly)
        if mon.warmed_up:
            clocks[p].establish(r.service)
        mark = clocks[p].observe(r.ts)
        if mark is not None:
            queues[p].append(mark)
    for p, clock in enumerate(clocks):
        mark = clock.flush()
        if mark is not None:
            queues[p].append(mark)
        else:  # a partition without traffic: its worker says it is idle
            queues[p].append(clock.idle(default_ts=records[0].ts))
    decider = Decider(config)
    out = []
    read = [0.0] * partitions
    while any(queues):  # partitions read at random relative speeds, none more than a minute ahead
        ready = [i for i, q in enumerate(queues) if q]
        slowest = min(read[i] for i in ready)
        p = rng.choice([i for i in ready if read[i] <= slowest + 60])
        for _ in range(rng.randint(1, 50)):
            if queues[p]:
                rec = queues[p].pop(0)
                read[p] = max(read[p], rec.ts)
                out += decider.handle(rec)
    return [o for o in out if isinstance(o, Decision)]


def test_partitioned_live_composition_takes_the_backtest_decisions():
    records, _ = scenario(11, kinds=["bad_error", "shared_incident", "concurrent_deploys"], hours=3.0,
                          services=6, spacing_s=2400.0)
    out, _ = run_engine(records)
    expected = sorted(o.model_dump_json() for o in out if isinstance(o, Decision))
    assert expected
    for seed in (1, 2):
        got = sorted(d.model_dump_json() for d in _live(records, partitions=3, seed=seed))
        assert got == expected


def test_a_question_becomes_a_rollback_when_the_shift_gets_much_worse():
    """A slow rollout: 4x errors after the deploy (ask), then 24x as it reaches all traffic (act)."""
    rng = random.Random(3)
    t0 = 1_767_225_600.0
    records: list = [Deploy(ts=t0 - 3600, service="cart", deploy_id="cart-1", version="v1", previous_version="v0")]
    for i in range(200):
        ts = t0 + 10 * i
        if i == 90:
            records.append(Deploy(ts=ts - 5, service="cart", deploy_id="cart-2", version="v2", previous_version="v1"))
        p = 0.005 if i < 90 else 0.02 if i < 120 else 0.12
        errors = sum(rng.random() < p for _ in range(1000))
        records.append(Metric(ts=ts, service="cart", metric="error_rate", value=errors / 1000, count=1000))
    out, _ = run_engine(records)
    decisions = [(d.action, d.incident_id, d.to_version) for d in out if isinstance(d, Decision)]
    assert [a for a, _, _ in decisions] == ["request_approval", "rollback"]
    assert decisions[0][1] == decisions[1][1] and decisions[1][2] == "v1"
    worsened = [a for a in out if isinstance(a, Anomaly) and a.worsened]
    assert len(worsened) == 1


def _shifted_service(t0: float, late_s: float) -> list:
    """A service watched for 20 min, deployed at t0 (its record read ``late_s`` after it), errors 10x from t0 + 5."""
    rng = random.Random(4)
    samples = []
    for i in range(-120, 30):
        ts = t0 + 10.0 * i + 5.0
        p = 0.004 * (10 if i >= 0 else 1)
        errors = sum(rng.random() < p for _ in range(1500))
        samples.append(Metric(ts=ts, service="cart", metric="error_rate", value=errors / 1500, count=1500))
    history = Deploy(ts=t0 - 7200, service="cart", deploy_id="cart-1", version="v1", previous_version="v0")
    deploy = Deploy(ts=t0, service="cart", deploy_id="cart-2", version="v2", previous_version="v1")
    records: list = [history, *samples]
    at = next(i for i, r in enumerate(records) if r.ts > t0 + late_s)
    return records[:at] + [deploy] + records[at:]


@pytest.mark.parametrize("late_s", [0.0, 12.0])
def test_the_anchored_test_decides_whenever_the_deploy_record_is_read(late_s):
    """The deploy opens its anchored test from the recent window; samples already seen after it are
    tested at once, so a record read 12 s late (within deploy_lateness_s) gives the same decision."""
    t0 = 1_767_225_600.0
    out, _ = run_engine(_shifted_service(t0, late_s))
    (anomaly,) = [o for o in out if isinstance(o, Anomaly)][:1]
    assert anomaly.detector == "anchored_rate" and anomaly.deploy_id == "cart-2"
    assert anomaly.onset_ts == t0 + 5.0 and anomaly.detected_ts == t0 + 25.0  # the 3rd shifted sample (k = 2)
    (decision,) = [o for o in out if isinstance(o, Decision)]
    assert (decision.action, decision.to_version, decision.ts) == ("rollback", "v1", t0 + 35.0)
