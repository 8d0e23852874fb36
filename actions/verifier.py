"""Did the rollback work? The adapter between ``backout.metrics`` and :class:`detectors.recovery.Recovery`.

It runs in the executor service, in a thread per executed rollback, because that is where the
rollback's moment is known first and where an escalation belongs; the statistics are the core's.
It reads ``backout.metrics`` from the offsets of the earliest blamed onset (``offsets_for_times``
on every partition; a broker that cannot answer for a time reads from the start, which only costs
time: older samples are not part of the test), keeps the service's records (by key, before
decoding) and feeds them to the test until its verdict, or until wall-clock time passes the
deadline plus the lateness (metrics that stopped arriving). Samples the worker refuses (invalid,
duplicate, out of order) are skipped here: the worker dead-letters them.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from actions.gate import Verify
from backout.contracts import Metric, Verification, decode
from backout.errors import BackoutError, BrokerError
from backout.settings import KafkaSettings
from detectors.recovery import Recovery
from detectors.spec import MetricSpec
from streams import topics

log = logging.getLogger(__name__)

MARGIN_S = 60.0  # read from this long before the onset (producers' clocks, batching)


def verify(order: Verify, kafka: KafkaSettings, specs: Mapping[str, MetricSpec], lateness_s: float,
           stop: threading.Event, topic: str = topics.METRICS, poll_s: float = 0.2) -> Verification | None:
    """The verdict on ``order`` (``None`` if ``stop`` was set first)."""
    try:
        test = Recovery(order.incident_id, order.service, order.version, order.executed_ts, order.blamed, specs,
                        order.within_s, lateness_s)
    except (BackoutError, ValueError) as exc:
        return Verification(ts=time.time(), incident_id=order.incident_id, status="not_recovered",
                            detail=f"the recovery of {order.service} cannot be tested: {exc}; a human must check it")
    onsets = [b.onset_ts for b in order.blamed if b.onset_ts is not None]
    since_ts = min(onsets, default=order.executed_ts) - MARGIN_S
    key = order.service.encode()
    cons = Consumer(kafka.confluent(**{"group.id": f"backout-verifier-{uuid.uuid4().hex[:8]}",
                                       "enable.auto.commit": False, "auto.offset.reset": "earliest"}))
    try:
        cons.assign(_starts(cons, topic, since_ts))
        while not stop.is_set():
            for msg in cons.consume(500, poll_s):
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise BrokerError(f"reading {topic} to verify {order.incident_id}: {error}")
                    continue
                if msg.key() != key:
                    continue
                verdict = _feed(test, msg.value() or b"")
                if verdict is not None:
                    return verdict
            verdict = test.tick(time.time())
            if verdict is not None:
                return verdict
        return None
    finally:
        cons.close()


def _feed(test: Recovery, value: bytes) -> Verification | None:
    try:
        sample = decode(value, expect=Metric)
        return test.update(sample)
    except BackoutError:  # invalid, duplicate, out of order: the worker dead-letters those
        return None


def _starts(cons: Consumer, topic: str, since_ts: float) -> list[TopicPartition]:
    """Every partition of ``topic`` at its first record stamped at or after ``since_ts``."""
    meta = cons.list_topics(topic, timeout=30).topics.get(topic)
    if meta is None or meta.error is not None:
        raise BrokerError(f"topic {topic} cannot be read: {meta.error if meta is not None else 'it does not exist'}")
    asked = [TopicPartition(topic, p, int(since_ts * 1000)) for p in sorted(meta.partitions)]
    try:
        found = cons.offsets_for_times(asked, timeout=30)
    except KafkaException as exc:
        log.warning("offsets_for_times on %s failed (%s): reading it from the start", topic, exc)
        return [TopicPartition(topic, tp.partition, OFFSET_BEGINNING) for tp in asked]
    starts = []
    for tp in found:
        if tp.error is not None:
            starts.append(TopicPartition(topic, tp.partition, OFFSET_BEGINNING))
        elif tp.offset >= 0:
            starts.append(TopicPartition(topic, tp.partition, tp.offset))
        else:  # no record that recent yet: from the end (a floor of it; older records are not tested)
            _, high = cons.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=30)
            starts.append(TopicPartition(topic, tp.partition, high))
    return starts
