"""Publishing input records (metrics and deploys) to their topics, at once or paced in event time,
stamped with their event time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from confluent_kafka import Producer

from backout.contracts import Deploy, Metric, encode
from streams import topics

INPUT_TOPICS = {"metric": topics.METRICS, "deploy": topics.DEPLOYS}


def publish_inputs(prod: Producer, records: Iterable[Metric | Deploy]) -> int:
    """Send each record to its input topic, keyed by service, in the given order.

    Each record's Kafka timestamp is its event time: the metrics stage measures
    the first sample of a partition against it, so that records replayed from
    an old file stay as valid as they were when they were new.
    """
    sent = 0
    for record in records:
        value, key, timestamp_ms = encode(record), record.service.encode(), round(record.ts * 1000)
        while True:
            try:
                prod.produce(INPUT_TOPICS[record.type], value, key=key, timestamp=timestamp_ms)
                break
            except BufferError:  # local queue full: let it drain
                prod.poll(0.1)
        prod.poll(0)
        sent += 1
    return sent


def replay_paced(prod: Producer, records: list[Metric | Deploy], speed: float, from_ts: float,
                 on_tick: Callable[[float], None] | None = None) -> None:
    """Publish records before ``from_ts`` at once, the rest at ``speed`` event seconds per second.

    ``on_tick(event_ts)`` is called whenever event time moves on, for a live display.
    """
    records = sorted(records, key=lambda r: r.ts)
    publish_inputs(prod, [r for r in records if r.ts < from_ts])
    prod.flush(10)
    start_wall, start_ts = time.monotonic(), from_ts
    last_ts = None
    for record in (r for r in records if r.ts >= from_ts):
        delay = (record.ts - start_ts) / speed - (time.monotonic() - start_wall)
        if delay > 0:
            prod.flush(delay)
            time.sleep(max(0.0, (record.ts - start_ts) / speed - (time.monotonic() - start_wall)))
        publish_inputs(prod, [record])
        if on_tick is not None and record.ts != last_ts:
            on_tick(record.ts)
            last_ts = record.ts
    prod.flush(10)
