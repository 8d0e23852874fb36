"""Bounded state under a flood of new service names, on one ``backout worker`` (embedded broker).

    .venv/bin/python bench/hostile.py --json [--flood 100000] [--max-keys 20000]

A simulated shop (bad deploys, a shared incident, good deploys; its backtest decides them) is
published with a flood of ``--flood`` new service names, one valid error-rate sample each,
interleaved with its second sixth. Measured from the worker itself (``/proc``, ``/metrics``):

* ``bytes_per_key``: resident memory grown per state taken while under the cap (a flood
  name's monitor has seen one sample); ``warm_bytes_per_key``: a warmed-up monitor's size,
  measured in this process with tracemalloc (the worst case for a state held);
* ``rss_mb`` before the flood, after it, and the peak (``VmHWM``), against the documented cap
  ``rss_before + max_keys × warm_bytes_per_key`` plus the bounded buffers (the producer's queue,
  ``PRODUCER_QUEUE_KIB``, and SQLite's page cache, ``CACHE_KIB``);
* ``states_held`` (``backout_live_states``) and ``refused_by_cap``
  (``backout_state_cap_refusals_total``), which must add up to the flood plus the real keys;
* ``decisions_equal``: the real services' decisions are the backtest's of the scenario alone.
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import click
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's detectors/, not bench/detectors.py

from backout.contracts import Decision, Metric, decode, encode  # noqa: E402
from backout.errors import SampleRejected  # noqa: E402
from backout.settings import KafkaSettings  # noqa: E402
from detectors.config import BackoutConfig  # noqa: E402
from detectors.engine import Engine  # noqa: E402
from detectors.monitor import MetricMonitor  # noqa: E402
from detectors.spec import spec_for  # noqa: E402
from streams import topics  # noqa: E402
from streams.admin import create_topics  # noqa: E402
from streams.broker import EmbeddedBroker  # noqa: E402
from streams.kafka import read_to_end  # noqa: E402
from streams.processes import WorkerProcess  # noqa: E402
from streams.runtime.keyed import PRODUCER_QUEUE_KIB  # noqa: E402
from streams.runtime.store import CACHE_KIB  # noqa: E402
from streams.simulate import scenario  # noqa: E402
from streams.topics import specs  # noqa: E402


def rss_mb(worker: WorkerProcess, field: str = "VmRSS") -> float:
    assert worker._process is not None
    status = Path(f"/proc/{worker._process.pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
    assert match, status
    return int(match.group(1)) / 1024


def gauge(worker: WorkerProcess, name: str) -> float:
    match = re.search(rf'^{name}{{topic="{re.escape(topics.METRICS)}"}} (\S+)', worker.metrics(), re.M)
    return float(match.group(1)) if match else 0.0


def wait_consumed(worker: WorkerProcess, total: int, timeout_s: float = 900.0) -> None:
    deadline = time.monotonic() + timeout_s
    while gauge(worker, "backout_records_consumed_total") < total and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2.0)  # the last batch's states and dead letters


def warm_bytes_per_key(n: int = 2000, samples: int = 40) -> float:
    """Heap bytes of one warmed-up monitor (error rate, calibrated bank) with its runtime entries."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held: dict[bytes, tuple[MetricMonitor, int, float]] = {}  # as the runtime's ledger holds them
    for i in range(n):
        monitor = MetricMonitor(f"svc-{i:05d}", "error_rate", spec_for("error_rate"))
        for s in range(samples):
            monitor.update(Metric(ts=1.7e9 + 10 * s, service=monitor.service, metric="error_rate",
                                  value=0.005 + 0.001 * (s % 3), count=500.0))
        held[f"svc-{i:05d}\x1ferror_rate".encode()] = (monitor, s, float(s))
    gc.collect()
    size = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    return size


def send(prod: Producer, topic: str, value: bytes, key: bytes, ts: float) -> None:
    while True:
        try:
            prod.produce(topic, value, key, timestamp=int(ts * 1000))
            return
        except BufferError:
            prod.poll(0.05)


@click.command()
@click.option("--flood", default=100_000, show_default=True, help="New service names, one sample each.")
@click.option("--max-keys", default=20_000, show_default=True, help="The worker's BACKOUT_MAX_KEYS.")
@click.option("--partitions", default=8, show_default=True)
@click.option("--hours", default=3.0, show_default=True, help="Event hours of the simulated shop.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def main(flood: int, max_keys: int, partitions: int, hours: float, as_json: bool) -> None:
    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    warm = warm_bytes_per_key()
    records, _ = scenario(3, kinds=["bad_error", "shared_incident", "good", "bad_latency"], hours=hours)
    engine, expected = Engine(BackoutConfig()), []
    for record in records:
        try:
            expected += engine.feed(record)
        except SampleRejected:
            pass
    expected = sorted(encode(d) for d in expected + engine.finish() if isinstance(d, Decision))
    metrics = [r for r in records if isinstance(r, Metric)]
    real_keys = len({(r.service, r.metric) for r in metrics})
    first, second = len(records) // 6, len(records) // 3
    log(f"{len(records)} records of {real_keys} real keys, {len(expected)} decisions in the backtest; "
        f"flood of {flood} names; max_keys {max_keys}")
    with tempfile.TemporaryDirectory(prefix="backout-hostile-") as tmp, EmbeddedBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        create_topics(kafka, specs(partitions))
        worker = WorkerProcess(broker.bootstrap, Path(tmp) / "w", partitions=partitions, log=Path(tmp) / "w.log")
        prod = Producer(kafka.confluent(**{"linger.ms": 20, "queue.buffering.max.messages": 1_000_000}))
        os.environ["BACKOUT_MAX_KEYS"] = str(max_keys)  # the worker's environment
        try:
            worker.start()
            worker.wait_ready(120)
            for record in records[:first]:
                topic = topics.METRICS if isinstance(record, Metric) else topics.DEPLOYS
                send(prod, topic, encode(record), record.service.encode(), record.ts)
            prod.flush(60)
            wait_consumed(worker, sum(isinstance(r, Metric) for r in records[:first]))
            before_mb, held_before = rss_mb(worker), gauge(worker, "backout_live_states")
            log(f"before the flood: {before_mb:.0f} MB resident, {held_before:.0f} states")
            per_record = flood / max(second - first, 1)
            sent, owed = 0, 0.0
            started = time.monotonic()
            for record in records[first:second]:
                topic = topics.METRICS if isinstance(record, Metric) else topics.DEPLOYS
                send(prod, topic, encode(record), record.service.encode(), record.ts)
                owed += per_record
                while owed >= 1 and sent < flood:
                    name = f"flood-{sent:06d}"
                    sample = Metric(ts=record.ts, service=name, metric="error_rate", value=0.5, count=100)
                    send(prod, topics.METRICS, encode(sample), name.encode(), record.ts)
                    sent, owed = sent + 1, owed - 1
                prod.poll(0)
            while sent < flood:  # what rounding left over
                name = f"flood-{sent:06d}"
                sample = Metric(ts=records[second].ts, service=name, metric="error_rate", value=0.5, count=100)
                send(prod, topics.METRICS, encode(sample), name.encode(), records[second].ts)
                sent += 1
            prod.flush(120)
            wait_consumed(worker, sum(isinstance(r, Metric) for r in records[:second]) + sent)
            flood_s = time.monotonic() - started
            after_mb, held = rss_mb(worker), gauge(worker, "backout_live_states")
            refused = gauge(worker, "backout_state_cap_refusals_total")
            log(f"after the flood ({flood_s:.0f} s): {after_mb:.0f} MB resident, {held:.0f} states, "
                f"{refused:.0f} refused by the cap")
            for record in records[second:]:
                topic = topics.METRICS if isinstance(record, Metric) else topics.DEPLOYS
                send(prod, topic, encode(record), record.service.encode(), record.ts)
            prod.flush(60)
            wait_consumed(worker, len(metrics) + sent)
            deadline = time.monotonic() + 120
            got: list[bytes] = []
            while time.monotonic() < deadline:
                got = sorted(encode(decode(m.value())) for m in read_to_end(kafka, topics.ACTIONS))
                if len(got) >= len(expected):
                    break
                time.sleep(2)
            time.sleep(5)  # nothing more is to come
            got = sorted(encode(decode(m.value())) for m in read_to_end(kafka, topics.ACTIONS))
            peak_mb = rss_mb(worker, "VmHWM")
            alive = worker.alive
        finally:
            worker.stop()
    bytes_per_key = (after_mb - before_mb) * 1024 * 1024 / max(held - held_before, 1)
    cap_mb = before_mb + max_keys * warm / (1024 * 1024) + (PRODUCER_QUEUE_KIB + CACHE_KIB) / 1024
    result = {
        "flood": sent, "max_keys": max_keys, "real_keys": real_keys, "partitions": partitions,
        "bytes_per_key": round(bytes_per_key), "warm_bytes_per_key": round(warm), "rss_before_mb": round(before_mb, 1),
        "rss_after_mb": round(after_mb, 1), "rss_peak_mb": round(peak_mb, 1), "cap_mb": round(cap_mb, 1),
        "under_cap": peak_mb <= cap_mb, "states_held": int(held), "refused_by_cap": int(refused),
        "accounted": int(held) + int(refused) == real_keys + sent, "flood_s": round(flood_s, 1),
        "decisions": len(got), "decisions_expected": len(expected), "decisions_equal": got == expected,
        "worker_alive": alive,
    }
    print(json.dumps(result) if as_json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
