"""Per-event cost of the two mechanisms: a Faust agent and the keyed-state runtime.

    .venv/bin/python bench/event_cost.py --json [--events 50000]

Both read the same pre-published backlog of small records from the embedded
broker and do nothing with them (a Faust agent with an empty body over raw
bytes; a runtime stage whose step keeps a count per key, as a Faust table
would not even do); the figure is their own cost per event, from the first
record read to the last. The boundary between the two in the README comes
from this: the metrics stage's detectors need about 10 µs a sample, so a
mechanism that costs 100 µs an event of its own would be nine tenths of the
hot path; for deploys, decisions, approvals and web views (a few per minute)
Faust's agents, tables and web server are worth far more than the cost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backout.settings import KafkaSettings  # noqa: E402
from streams.admin import create_topics  # noqa: E402
from streams.broker import EmbeddedBroker  # noqa: E402
from streams.kafka import sender  # noqa: E402
from streams.runtime.keyed import Clients, KeyedConsumer, Settings  # noqa: E402
from streams.telemetry import Telemetry  # noqa: E402
from streams.topics import TopicSpec  # noqa: E402

FAUST_APP = '''
import os, sys, time
import faust
app = faust.App("cost-" + os.environ["COST_TOPIC"], broker="kafka://" + os.environ["COST_BOOTSTRAP"],
                store="memory://", web_enabled=False, consumer_auto_offset_reset="earliest",
                broker_session_timeout=6.0, broker_heartbeat_interval=1.0)
topic = app.topic(os.environ["COST_TOPIC"], key_type=bytes, value_type=bytes, key_serializer="raw",
                  value_serializer="raw")
want = int(os.environ["COST_EVENTS"])
seen = [0, 0.0]

@app.agent(topic)
async def count(stream):
    async for _ in stream:
        if seen[0] == 0:
            seen[1] = time.perf_counter()
        seen[0] += 1
        if seen[0] == want:
            with open(os.environ["COST_OUT"], "w") as out:
                out.write(repr((time.perf_counter() - seen[1]) / (want - 1)))
            os._exit(0)

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "error", "--without-web"]
    app.main()
'''


class Counting:
    """A runtime stage that only counts records per key."""

    def read(self, value: bytes | None, source: Any) -> tuple[bytes, None]:
        return (value or b"")[:8], None

    def step(self, state: int | None, record: None) -> tuple[int, list[Any]]:
        return (state or 0) + 1, []

    def dump(self, state: int) -> bytes:
        return b"%d" % state

    def load(self, key: bytes, raw: bytes) -> int:
        return int(raw)

    def after(self, partition: int, record: None) -> list[Any]:
        return []

    def idle(self, partition: int) -> list[Any]:
        return []

    def before(self) -> None:
        pass

    def assigned(self, partitions: list[int]) -> None:
        pass

    def revoked(self, partitions: list[int]) -> None:
        pass


def publish(kafka: KafkaSettings, topic: str, events: int) -> None:
    create_topics(kafka, [TopicSpec(topic, 1, 3_600_000)])
    out = sender(kafka, **{"linger.ms": 20, "queue.buffering.max.messages": 1_000_000})
    for i in range(events):
        out.send(topic, b"svc-%04d {\"type\":\"metric\"}" % (i % 2000), b"svc-%04d" % (i % 2000))
        if i % 10_000 == 0:
            out.poll()
    out.flush(60)


def faust_cost(kafka: KafkaSettings, topic: str, events: int, tmp: Path) -> float:
    app, result = tmp / "faust_cost_app.py", tmp / "faust.out"
    app.write_text(FAUST_APP)
    env = {**os.environ, "COST_TOPIC": topic, "COST_BOOTSTRAP": kafka.bootstrap_servers,
           "COST_EVENTS": str(events), "COST_OUT": str(result)}
    subprocess.run([sys.executable, str(app)], env=env, cwd=tmp, timeout=600, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return float(result.read_text())


def runtime_cost(kafka: KafkaSettings, topic: str, events: int) -> float:
    telemetry = Telemetry(None)
    rt = KeyedConsumer(Counting(), Settings(topic, f"{topic}-g", f"{topic}-changelog", 1), Clients(kafka),
                       telemetry)
    rt.connect()
    first = None
    read = 0
    try:
        while read < events:
            batch = rt.consume(0.5)
            if batch and first is None:
                first = time.perf_counter()
            read += len(batch)
            rt.tick(batch, time.monotonic())
        assert first is not None
        return (time.perf_counter() - first) / (events - 1)
    finally:
        rt.close()


@click.command()
@click.option("--events", default=50_000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def main(events: int, as_json: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="backout-cost-") as tmp, EmbeddedBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        publish(kafka, "cost-faust", events)
        publish(kafka, "cost-runtime", events)
        faust_s = faust_cost(kafka, "cost-faust", events, Path(tmp))
        runtime_s = runtime_cost(kafka, "cost-runtime", events)
    result = {"events": events, "faust_agent_us_per_event": round(faust_s * 1e6, 1),
              "runtime_us_per_event": round(runtime_s * 1e6, 1),
              "faust_events_per_s": round(1 / faust_s), "runtime_events_per_s": round(1 / runtime_s)}
    print(json.dumps(result) if as_json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
