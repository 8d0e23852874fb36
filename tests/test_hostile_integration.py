"""Hostile input against a live worker on a real broker, record by record.

The hostile corpus (tests/corpus.py: 50+ kinds, on the metrics and the deploys topics) and a flood
of new service names past the worker's state cap are interleaved with a simulated scenario. Each
hostile record must come back as a dead letter carrying its own source (topic, partition,
offset) and its reason; no valid record may; the worker must stay up and ready; and its decisions
must be the backtest's decisions of the clean records.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Producer

from backout.contracts import Metric, encode
from backout.errors import SampleRejected
from backout.settings import KafkaSettings
from detectors.config import BackoutConfig
from detectors.engine import Engine
from streams import topics
from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.processes import WorkerProcess
from streams.simulate import scenario
from streams.topics import specs
from tests import corpus
from tests.test_worker_integration import PARTITIONS, decisions_on, key, read

FLOOD = 120  # new service names, one sample each
pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_broker():
    with EmbeddedBroker() as embedded:
        create_topics(KafkaSettings(bootstrap_servers=embedded.bootstrap), specs(PARTITIONS))
        yield embedded


class Recorded:
    """Produces in order and remembers where each record landed (topic, partition, offset)."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = Producer(KafkaSettings(bootstrap_servers=bootstrap).confluent(**{"linger.ms": 5}))
        self.landed: dict[int, tuple[str, int, int]] = {}
        self.count = 0

    def send(self, topic: str, value: bytes | None, key: bytes | None, ts: float) -> int:
        index, self.count = self.count, self.count + 1

        def done(error, msg, index=index) -> None:
            assert error is None, error
            self.landed[index] = (msg.topic(), msg.partition(), msg.offset())

        self.producer.produce(topic, value, key, on_delivery=done, timestamp=int(ts * 1000))
        self.producer.poll(0)
        return index

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


def health(worker: WorkerProcess) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/health", timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def start_and_watch_health(worker: WorkerProcess, timeout_s: float = 90.0) -> list[tuple[int, dict]]:
    """Start the worker; every /health answer until the first 200."""
    worker.start()
    answers: list[tuple[int, dict]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not (answers and answers[-1][0] == 200):
        assert worker.alive, f"the worker exited; see {worker.log}"
        try:
            answers.append(health(worker))
        except OSError:  # the web server is not up yet
            pass
        time.sleep(0.1)
    return answers


def wait_consumed(worker: WorkerProcess, count: int, timeout_s: float = 120.0) -> None:
    pattern = f'backout_records_consumed_total{{topic="{topics.METRICS}"}} '
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = next((x for x in worker.metrics().splitlines() if x.startswith(pattern)), pattern + "0")
        if float(line.split()[-1]) >= count:
            return
        time.sleep(0.5)
    raise AssertionError(f"the worker did not read {count} metric records in {timeout_s:.0f} s")


def test_hostile_corpus_and_a_flood_through_a_live_worker(fresh_broker, tmp_path: Path, monkeypatch):
    records, _ = scenario(11, kinds=["bad_error", "good", "bad_latency"], hours=1.5, services=8)
    clean, refused_by_core = Engine(BackoutConfig()), set()
    expected = []
    for i, record in enumerate(records):
        try:
            expected += clean.feed(record)
        except SampleRejected:  # the scenario's own duplicates and late samples
            refused_by_core.add(i)
    expected = [d for d in expected + clean.finish() if d.type == "decision"]
    assert any(d.action == "rollback" for d in expected)
    real_keys = {(r.service, r.metric) for r in records if isinstance(r, Metric)}
    max_keys = len(real_keys) + 30
    monkeypatch.setenv("BACKOUT_MAX_KEYS", str(max_keys))

    worker = WorkerProcess(fresh_broker.bootstrap, tmp_path / "w", partitions=PARTITIONS, log=tmp_path / "w.log")
    answers = start_and_watch_health(worker)
    try:
        assert answers and answers[-1][0] == 200, answers[-3:]
        assert all(body["status"] == "starting" for status, body in answers if status == 503)
        assert answers[-1][1]["assigned"][topics.METRICS] == list(range(PARTITIONS))

        out = Recorded(fresh_broker.bootstrap)
        scenario_at: dict[int, int] = {}  # produced index -> index in the scenario
        hostile_at: dict[int, corpus.Hostile] = {}
        flood_at: list[int] = []
        start = len(records) // 3  # every partition has its event time by then
        hostile = iter(corpus.metrics(records[start].service, records[start].ts)
                       + corpus.deploys(records[start].service, records[start].ts))
        flooding = False
        for i, record in enumerate(records):
            topic = topics.METRICS if isinstance(record, Metric) else topics.DEPLOYS
            scenario_at[out.send(topic, encode(record), record.service.encode(), record.ts)] = i
            if i <= start or i % 7 or not isinstance(record, Metric):
                continue
            h = next(hostile, None)
            if h is not None:
                hostile_at[out.send(h.topic, h.value, h.key, record.ts)] = h
                continue
            if not flooding:  # the corpus read first: partitions are read in any order, and the
                out.flush()   # flood must not take the state cap before a hostile record is judged
                wait_consumed(worker, sum(t == topics.METRICS for t, _, _ in out.landed.values()))
                flooding = True
            if len(flood_at) < FLOOD:  # new names, valid, one sample each
                name = f"flood-{len(flood_at):04d}"
                flood = Metric(ts=record.ts, service=name, metric="error_rate", value=0.5, count=100)
                flood_at.append(out.send(topics.METRICS, encode(flood), name.encode(), record.ts))
        out.flush()
        assert len(hostile_at) >= 50 and len(flood_at) == FLOOD, "the corpus and the flood were all sent"

        got = decisions_on(fresh_broker, len(expected), timeout_s=150)
        accepted_flood = max_keys - len(real_keys)
        dead = read(fresh_broker, topics.DEADLETTER, timeout_s=120,
                    expect=len(hostile_at) + len(refused_by_core) + FLOOD - accepted_flood)
        by_source = {(d["topic"], d["partition"], d["offset"]): d for d in dead}
        assert len(by_source) == len(dead), "a dead letter was written twice"
        assert all(d["id"] == f"dl-{d['topic']}-{d['partition']}-{d['offset']}" for d in dead)

        wrong = {}
        for index, h in hostile_at.items():
            letter = by_source.pop(out.landed[index], None)
            if letter is None or h.reason not in letter["reason"]:
                wrong[f"{h.topic}:{h.kind}"] = letter and letter["reason"]
        assert not wrong, wrong
        flood_letters = [by_source.pop(out.landed[index], None) for index in flood_at]
        refused_flood = [letter for letter in flood_letters if letter is not None]  # which ones: read order
        assert len(refused_flood) == FLOOD - accepted_flood
        assert all(letter["reason"].startswith("state cap") for letter in refused_flood)
        valid_refused = {scenario_at[index] for index, source in out.landed.items()
                         if index in scenario_at and source in by_source}
        assert valid_refused == refused_by_core, "a valid record was dead-lettered, or a late one was not"

        assert sorted(map(key, got)) == sorted(map(key, expected))
        assert [d.reason for d in sorted(got, key=key)] == [d.reason for d in sorted(expected, key=key)]
        alerts = read(fresh_broker, topics.ALERTS, expect=1, idle_s=3)
        assert sum("state cap" in a["text"] for a in alerts) == 1
        exposition = worker.metrics()
        assert f'backout_state_cap_refusals_total{{topic="{topics.METRICS}"}} {float(FLOOD - accepted_flood)}' \
            in exposition
        assert worker.alive and health(worker)[0] == 200
    finally:
        worker.stop()
