"""Publishing input records (metrics and deploys) to their topics, at once or paced in event time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from backout.contracts import Deploy, Metric
from streams import topics
from streams.kafka import publish
from streams.runtime.sender import Sender

INPUT_TOPICS = {"metric": topics.METRICS, "deploy": topics.DEPLOYS}


def publish_inputs(out: Sender, records: Iterable[Metric | Deploy]) -> int:
    """Send each record to its input topic, keyed by service, in the given order."""
    sent = 0
    for record in records:
        sent += publish(out, INPUT_TOPICS[record.type], [record])
    return sent


def replay_paced(out: Sender, records: list[Metric | Deploy], speed: float, from_ts: float,
                 on_tick: Callable[[float], None] | None = None) -> None:
    """Publish records before ``from_ts`` at once, the rest at ``speed`` event seconds per second.

    ``on_tick(event_ts)`` is called whenever event time moves on, for a live display.
    """
    records = sorted(records, key=lambda r: r.ts)
    publish_inputs(out, [r for r in records if r.ts < from_ts])
    out.flush(10)
    start_wall, start_ts = time.monotonic(), from_ts
    last_ts = None
    for record in (r for r in records if r.ts >= from_ts):
        delay = (record.ts - start_ts) / speed - (time.monotonic() - start_wall)
        if delay > 0:
            out.poll(delay)
            time.sleep(max(0.0, (record.ts - start_ts) / speed - (time.monotonic() - start_wall)))
        publish_inputs(out, [record])
        if on_tick is not None and record.ts != last_ts:
            on_tick(record.ts)
            last_ts = record.ts
    out.flush(10)
