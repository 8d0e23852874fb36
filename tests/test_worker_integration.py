"""The Faust worker on a real broker: parity with the backtest, scale-out, faults.

Each test gets its own embedded broker (tansu starts in milliseconds), so
topics and consumer groups never leak between tests.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backout.contracts import Decision, Deploy, Metric, decode
from backout.errors import SampleRejected
from backout.settings import KafkaSettings, load_config
from detectors.engine import Engine
from streams import topics
from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.kafka import consumer, messages, sender
from streams.processes import WorkerProcess
from streams.replay import publish_inputs
from streams.simulate import demo_scenario
from streams.topics import specs

PARTITIONS = 3


@pytest.fixture
def fresh_broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as embedded:
        create_topics(KafkaSettings(bootstrap_servers=embedded.bootstrap), specs(PARTITIONS))
        yield embedded


@pytest.fixture(scope="module")
def scenario() -> list[Metric | Deploy]:
    return sorted(demo_scenario(seed=7), key=lambda r: r.ts)


@pytest.fixture(scope="module")
def expected(scenario) -> list[Decision]:
    engine = Engine(load_config(None))
    out: list = []
    for rec in scenario:
        try:
            out += engine.feed(rec)
        except SampleRejected:  # duplicates and late samples: the worker dead-letters them
            pass
    out += engine.finish()
    decisions = [r for r in out if r.type == "decision"]
    assert any(d.action == "rollback" for d in decisions), "the scenario must contain a caught bad deploy"
    return decisions


def key(decision: Decision) -> tuple:
    return (decision.incident_id, decision.action, decision.from_version, decision.to_version, decision.ts)


def start_worker(broker: EmbeddedBroker, tmp_path: Path, name: str = "w1", **kw) -> WorkerProcess:
    worker = WorkerProcess(broker.bootstrap, tmp_path / name, partitions=PARTITIONS,
                           log=tmp_path / f"{name}.log", **kw).start()
    worker.wait_ready()
    return worker


def read(broker: EmbeddedBroker, topic: str, expect: int, timeout_s: float = 90.0, idle_s: float = 8.0) -> list:
    """Read ``topic`` until ``expect`` records came and nothing more arrives for ``idle_s``."""
    cons = consumer(KafkaSettings(bootstrap_servers=broker.bootstrap), [topic])
    got: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = list(messages(cons, timeout_s=idle_s if len(got) >= expect else 2.0))
            got += [json.loads(m.value()) for m in batch]
            if len(got) >= expect and not batch:
                break
    finally:
        cons.close()
    return got


def decisions_on(broker: EmbeddedBroker, expect: int, **kw) -> list[Decision]:
    return [decode(json.dumps(v)) for v in read(broker, topics.ACTIONS, expect, **kw)]


def publish(broker: EmbeddedBroker, records: list, raw: list[bytes] = ()) -> None:
    out = sender(KafkaSettings(bootstrap_servers=broker.bootstrap))
    publish_inputs(out, records)
    for value in raw:
        out.send(topics.METRICS, value, b"checkout")
    out.flush(30)


def test_worker_publishes_the_backtest_decisions(fresh_broker, tmp_path, scenario, expected):
    worker = start_worker(fresh_broker, tmp_path)
    try:
        publish(fresh_broker, scenario)
        got = decisions_on(fresh_broker, len(expected))
        assert sorted(map(key, got)) == sorted(map(key, expected))
        assert [d.reason for d in sorted(got, key=key)] == [d.reason for d in sorted(expected, key=key)]
        exposition = worker.metrics()
        assert "backout_decisions_total" in exposition and "backout_consumer_lag" in exposition
    finally:
        worker.stop()


def test_two_workers_share_partitions_and_decide_once(fresh_broker, tmp_path, scenario, expected):
    first = start_worker(fresh_broker, tmp_path, "w1")
    second = start_worker(fresh_broker, tmp_path, "w2")
    try:
        time.sleep(8)  # let the group settle on two members
        publish(fresh_broker, scenario)
        got = decisions_on(fresh_broker, len(expected))
        assert sorted(map(key, got)) == sorted(map(key, expected))
        shares = [set(w.health()["assigned"].get(topics.METRICS, [])) for w in (first, second)]
        assert all(shares) and not shares[0] & shares[1], f"each worker takes its own partitions: {shares}"
        assert shares[0] | shares[1] == set(range(PARTITIONS))
    finally:
        first.stop()
        second.stop()


@pytest.mark.parametrize("checkpoint_s", [600, 1], ids=["before-any-checkpoint", "after-checkpoints"])
def test_kill_9_mid_incident_decides_exactly_once(fresh_broker, tmp_path, scenario, expected, checkpoint_s,
                                                   monkeypatch):
    """Killed before its first checkpoint the worker replays everything; after some it resumes
    from the changelog's detector states, which must carry the incident on."""
    monkeypatch.setenv("BACKOUT_CHECKPOINT_S", str(checkpoint_s))
    rollback = next(d for d in expected if d.action == "rollback")
    cut = rollback.ts - 5  # the shift is under way, the decision not yet due
    before = [r for r in scenario if r.ts <= cut]
    after = [r for r in scenario if r.ts > cut]
    worker = start_worker(fresh_broker, tmp_path)
    publish(fresh_broker, before)
    read(fresh_broker, topics.ANOMALIES, expect=1, idle_s=4)
    worker.kill()
    worker = start_worker(fresh_broker, tmp_path)  # same data dir: the decider's RocksDB table
    try:
        publish(fresh_broker, after)
        got = decisions_on(fresh_broker, len(expected))
        assert sorted(map(key, got)) == sorted(map(key, expected))
        assert len({d.incident_id for d in got}) == len(got)
        refused = {(d["partition"], d["offset"]) for d in read(fresh_broker, topics.DEADLETTER, expect=1, idle_s=3)}
        assert len(refused) == _refused(scenario), "a sample read again after the restart was taken twice"
    finally:
        worker.stop()


def _refused(records: list) -> int:
    engine, refused = Engine(load_config(None)), 0  # the backtest refuses the same samples
    for rec in records:
        try:
            engine.feed(rec)
        except SampleRejected:
            refused += 1
    return refused


def test_malformed_duplicate_and_late_input_is_dead_lettered(fresh_broker, tmp_path, scenario, expected):
    metrics = [r for r in scenario if r.type == "metric"]
    garbage = [b"{oops", b'{"type":"metric","ts":"soon"}', b"\xff\xfe", b"[]"] * 50
    replayed = metrics[100:110] + [m.model_copy(update={"ts": m.ts - 1}) for m in metrics[300:305]]
    sequence = scenario[:400] + replayed + scenario[400:]
    refused = _refused(sequence)
    assert refused >= len(replayed)
    worker = start_worker(fresh_broker, tmp_path)
    try:
        publish(fresh_broker, scenario[:400] + replayed, raw=garbage)
        publish(fresh_broker, scenario[400:])
        got = decisions_on(fresh_broker, len(expected))
        assert sorted(map(key, got)) == sorted(map(key, expected))
        dead = read(fresh_broker, topics.DEADLETTER, expect=len(garbage) + refused)
        reasons = [d["reason"] for d in dead]
        assert sum("not JSON" in r or "invalid metric" in r or "expected a JSON object" in r
                   for r in reasons) == len(garbage)
        assert sum(r.startswith(("duplicate sample", "out-of-order sample")) for r in reasons) == refused
        assert len(dead) == len(garbage) + refused
        assert f"backout_dead_letters_total{{topic=\"{topics.METRICS}\"}} {float(len(dead))}" in worker.metrics()
    finally:
        worker.stop()


def test_worker_rides_out_a_broker_outage(fresh_broker, tmp_path, scenario, expected):
    half = len(scenario) // 2
    worker = start_worker(fresh_broker, tmp_path)
    try:
        publish(fresh_broker, scenario[:half])
        pid = fresh_broker._process.pid  # the broker stops answering: paused, connections open
        os.kill(pid, signal.SIGSTOP)
        time.sleep(15)
        os.kill(pid, signal.SIGCONT)
        publish(fresh_broker, scenario[half:])
        got = decisions_on(fresh_broker, len(expected), timeout_s=120)
        assert sorted(map(key, got)) == sorted(map(key, expected))
        assert worker.alive
    finally:
        worker.stop()

