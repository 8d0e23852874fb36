"""Throughput and decision latency of one ``backout worker`` on the embedded broker.

    .venv/bin/python bench/pipeline.py --json [--services 2000] [--partitions 8] [--store rocksdb://]

Phase 1 (throughput): rounds of samples for every (service, metric) — error
rate with its request count, p95 latency, health, traffic — are published
first; then the worker starts on that backlog. ``samples_per_s`` is its steady
consumption rate (10% → 90% of the backlog, read from its own ``/metrics``),
so the bench producer's own pace does not enter it.

Phase 2 (latency): the stream continues in real time at half that rate, at
most 8,000 samples/s (ten times the real load of 2,000 services × 4 metrics
every 10 s); samples are sent at their event time, in 50 slices per round, and
bad deploys are injected into a few services (error rate 0.5% → 10%). A
decision is due when event time passes its ``ts``; its latency runs from the
produce of the first samples past that ``ts`` to the decision's arrival on
``backout.actions``. Prints ``p50_latency_s`` and ``p99_latency_s``.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition

# run as a script, bench/ is first on the path and bench/detectors.py would shadow the package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backout.settings import KafkaSettings  # noqa: E402
from streams import topics  # noqa: E402
from streams.admin import create_topics  # noqa: E402
from streams.broker import EmbeddedBroker  # noqa: E402
from streams.processes import WorkerProcess  # noqa: E402
from streams.topics import specs  # noqa: E402

STEP_S = 10.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00Z: event time, whatever the wall clock says


class Fleet:
    """Samples of ``n`` services, one round per ``STEP_S`` of event time; some services go bad."""

    def __init__(self, n: int, seed: int = 1) -> None:
        self.rng = np.random.default_rng(seed)
        self.names = [f"svc-{i:05d}" for i in range(n)]
        self.keys = [name.encode() for name in self.names]
        self.rate = np.full(n, 0.005)
        self.traffic = self.rng.uniform(100, 400, n)
        self.offset = self.rng.uniform(0, STEP_S, n)  # exporters are not in lockstep

    def round(self, r: int) -> list[tuple[bytes, bytes]]:
        n = len(self.names)
        ts = T0 + r * STEP_S + self.offset
        requests = self.rng.poisson(self.traffic)
        errors = self.rng.binomial(np.maximum(requests, 1), self.rate)
        latency = self.rng.lognormal(np.log(0.12), 0.1, n)
        out = []
        for i in range(n):
            name, t, req = self.names[i], round(float(ts[i]), 3), int(requests[i])
            head = f'{{"type":"metric","ts":{t},"service":"{name}",'
            out += [
                (self.keys[i], f'{head}"metric":"error_rate","value":{errors[i] / max(req, 1):.6f},"count":{req}}}'.encode()),
                (self.keys[i], f'{head}"metric":"latency_p95","value":{latency[i]:.5f}}}'.encode()),
                (self.keys[i], f'{head}"metric":"health","value":1.0}}'.encode()),
                (self.keys[i], f'{head}"metric":"requests","value":{req}}}'.encode()),
            ]
        return out

    def deploy(self, i: int, ts: float, version: str, previous: str) -> tuple[bytes, bytes]:
        name = self.names[i]
        return self.keys[i], json.dumps({"type": "deploy", "ts": ts, "service": name, "deploy_id": f"{name}-{version}",
                                         "version": version, "previous_version": previous}).encode()


def produce(prod: Producer, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    for key, value in items:
        while True:
            try:
                prod.produce(topic, value, key=key)
                break
            except BufferError:
                prod.poll(0.05)
    prod.poll(0)


def consumed(worker: WorkerProcess) -> float:
    match = re.search(rf'backout_records_consumed_total{{topic="{re.escape(topics.METRICS)}"}} (\S+)', worker.metrics())
    return float(match.group(1)) if match else 0.0


def decider_lag(worker: WorkerProcess) -> float:
    match = re.search(rf'backout_consumer_lag{{partition="0",topic="{re.escape(topics.DECIDER)}"}} (\S+)',
                      worker.metrics())
    return float(match.group(1)) if match else float("inf")


def caught_up(worker: WorkerProcess, timeout_s: float = 300.0) -> float:
    """Seconds until the decider has taken every watermark and anomaly of the backlog."""
    start = time.monotonic()
    while decider_lag(worker) > 0 and time.monotonic() - start < timeout_s:
        time.sleep(0.1)
    return time.monotonic() - start


def throughput(prod: Producer, worker: WorkerProcess, fleet: Fleet, rounds: int, log) -> tuple[float, float]:
    """Publish ``rounds`` rounds, then start the worker on that backlog; return (steady samples/s, drain s).

    The backlog is on the broker before the worker starts, so the figure is the worker's own pace,
    not the bench producer's."""
    total = rounds * len(fleet.names) * 4
    for r in range(rounds):
        produce(prod, topics.METRICS, fleet.round(r))
    prod.flush(120)
    worker.start()
    worker.wait_ready()
    start = time.monotonic()
    marks: list[tuple[float, float]] = []
    while True:
        n = consumed(worker)
        marks.append((time.monotonic(), n))
        if n >= total or time.monotonic() - start > 1200:
            break
        time.sleep(0.25)
        if len(marks) % 20 == 0:
            log(f"  consumed {n:,.0f} / {total:,}")
    lo = next(m for m in marks if m[1] >= 0.1 * total)
    hi = next((m for m in marks if m[1] >= 0.9 * total), marks[-1])
    return (hi[1] - lo[1]) / max(hi[0] - lo[0], 1e-9), marks[-1][0] - start


def latency(prod: Producer, kafka: KafkaSettings, fleet: Fleet, first_round: int, rounds: int,
            samples_per_s: float, incidents: int, log) -> list[float]:
    """Samples in event-time order, paced in real time, with bad deploys; return decision latencies.

    Event time maps onto wall time linearly (``speed`` event seconds per wall second). A decision's
    latency runs from the produce of the first slice of samples past its ``ts`` (the samples that
    carry event time past it) to its arrival on ``backout.actions``.
    """
    n = len(fleet.names)
    speed = STEP_S * samples_per_s / (n * 4)
    spacing = max(1, (rounds - 20) // incidents)
    bad = {first_round + 3 + k * spacing: k * (n // incidents) for k in range(incidents)}
    # versions that ran clean long before: the rollback targets
    produce(prod, topics.DEPLOYS, [fleet.deploy(i, T0 - 3600, "v1", "v0") for i in bad.values()])
    actions = Consumer(kafka.confluent(**{"group.id": "bench-actions", "enable.auto.commit": False,
                                           "fetch.wait.max.ms": 5}))  # the reader adds no latency of its own
    # assigned at the current ends, not subscribed: a group join takes seconds, and the first decisions
    # come sooner than that at this pace
    parts = actions.list_topics(topics.ACTIONS, timeout=10).topics[topics.ACTIONS].partitions
    actions.assign([TopicPartition(topics.ACTIONS, p, actions.get_watermark_offsets(
        TopicPartition(topics.ACTIONS, p), timeout=10)[1]) for p in parts])
    arrivals: dict[str, tuple[float, float]] = {}  # incident -> (decision ts, wall arrival)
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            msg = actions.poll(0.1)
            if msg is not None and not msg.error():
                d = json.loads(msg.value())
                arrivals.setdefault(d["incident_id"], (d["ts"], time.monotonic()))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ts0, wall0 = T0 + first_round * STEP_S, time.monotonic()
    sent: list[tuple[float, float]] = []  # (event time of a slice, wall time it was produced)
    for r in range(first_round, first_round + rounds):
        if r in bad:
            i = bad[r]
            produce(prod, topics.DEPLOYS, [fleet.deploy(i, T0 + r * STEP_S - 5, "v2", "v1")])
            fleet.rate[i] = 0.10
        items = fleet.round(r)
        order = np.argsort(np.repeat(fleet.offset, 4), kind="stable")
        for chunk in np.array_split(order, 50):  # 50 slices per round, each sent at its event time
            ts = T0 + r * STEP_S + float(fleet.offset[chunk[0] // 4])
            time.sleep(max(0.0, wall0 + (ts - ts0) / speed - time.monotonic()))
            produce(prod, topics.METRICS, [items[k] for k in chunk])
            sent.append((ts, time.monotonic()))
            prod.poll(0)
    prod.flush(10)
    deadline = time.monotonic() + 60
    while len(arrivals) < incidents and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    watcher.join()
    actions.close()
    log(f"  {len(arrivals)}/{incidents} incidents decided")
    # from the produce of the first slice past the decision's ts (the bench's own pacing lag is not counted)
    starts = [next((wall for ts, wall in sent if ts > due), None) for due, _ in arrivals.values()]
    return [arrived - start for (_, arrived), start in zip(arrivals.values(), starts, strict=True)
            if start is not None]


@click.command()
@click.option("--services", default=2000, show_default=True)
@click.option("--partitions", default=8, show_default=True)
@click.option("--rounds", default=40, show_default=True,
              help="Rounds (10 s of event time each) in phase 1; the detectors warm up on 30.")
@click.option("--latency-rounds", default=60, show_default=True, help="Real-time rounds in phase 2.")
@click.option("--incidents", default=10, show_default=True)
@click.option("--store", default="rocksdb://", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def main(services: int, partitions: int, rounds: int, latency_rounds: int, incidents: int, store: str,
         as_json: bool) -> None:
    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    fleet = Fleet(services)
    with tempfile.TemporaryDirectory(prefix="backout-bench-") as tmp, EmbeddedBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        create_topics(kafka, specs(partitions))
        worker = WorkerProcess(broker.bootstrap, Path(tmp) / "w", partitions=partitions, store=store,
                               log=Path(tmp) / "worker.log")
        try:
            prod = Producer(kafka.producer(**{"linger.ms": 20, "batch.num.messages": 10000,
                                               "queue.buffering.max.messages": 1_000_000}))
            log(f"phase 1: {rounds} rounds x {services} services x 4 metrics published, then the worker started")
            rate, drain_s = throughput(prod, worker, fleet, rounds, log)
            log(f"  {rate:,.0f} samples/s")
            decider_catchup_s = caught_up(worker)  # phase 2 measures latency in the steady state
            log(f"  the decider caught up {decider_catchup_s:.1f} s after the samples")
            pace = min(0.5 * rate, 8000.0)
            log(f"phase 2: {latency_rounds} real-time rounds at {pace:,.0f} samples/s, {incidents} bad deploys")
            lat = latency(prod, kafka, fleet, rounds, latency_rounds, pace, incidents, log)
        finally:
            worker.stop()
    result = {
        "samples_per_s": round(rate, 1),
        "drain_s": round(drain_s, 1),
        "decider_catchup_s": round(decider_catchup_s, 1),
        "services": services, "metrics_per_service": 4, "partitions": partitions, "store": store,
        "latency_pace_samples_per_s": round(pace, 1),
        "decisions": len(lat),
        "p50_latency_s": round(float(np.percentile(lat, 50)), 3) if lat else None,
        "p99_latency_s": round(float(np.percentile(lat, 99)), 3) if lat else None,
        "latencies_s": sorted(round(x, 3) for x in lat),
    }
    print(json.dumps(result) if as_json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
