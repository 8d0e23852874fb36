"""The metrics stage's commit rule, without a broker: never commit past a sample whose effects
(a changed detector state, an output) are not yet on the broker."""

from __future__ import annotations

import json
import time

from confluent_kafka import KafkaError

from backout.settings import KafkaSettings, load_config
from detectors.monitor import MetricMonitor
from detectors.spec import spec_for
from detectors.watermark import PartitionClock
from streams.deadletter import KEEP_BYTES, envelope
from streams.monitor_stage import RESEND_S, MonitorStage, _Partition
from streams.telemetry import Telemetry


def partition() -> _Partition:
    return _Partition(PartitionClock(0))


def test_nothing_read_nothing_to_commit():
    assert partition().committable() is None


def test_commits_up_to_the_next_offset_when_everything_is_saved():
    p = partition()
    p.next_offset = 120
    assert p.committable() == 120


def test_an_unsaved_state_holds_the_commit_at_its_first_unsaved_sample():
    p = partition()
    p.next_offset = 120
    p.dirty[b"a\x1ferror_rate"] = (100, 0.0)
    p.dirty[b"b\x1ferror_rate"] = (110, 0.0)
    assert p.committable() == 100
    del p.dirty[b"a\x1ferror_rate"]
    assert p.committable() == 110


def test_an_unacknowledged_output_holds_the_commit_until_delivered():
    p = partition()
    p.next_offset = 120
    p.hold(95, b"a\x1ferror_rate")  # an anomaly sent to two topics
    p.hold(95, b"a\x1ferror_rate")
    assert p.committable() == 95 and p.unacked_by_key[b"a\x1ferror_rate"] == 2
    p.release(95, b"a\x1ferror_rate")
    assert p.committable() == 95  # one of the two still in flight
    p.release(95, b"a\x1ferror_rate")
    assert p.committable() == 120 and not p.unacked and not p.unacked_by_key


def test_releasing_what_was_never_held_changes_nothing():
    p = partition()
    p.next_offset = 7
    p.release(3, b"x")
    assert p.committable() == 7 and not p.unacked


class _Recorder:
    """Stands in for the confluent producer: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, int]] = []

    def produce(self, topic, value, key, partition=-1, on_delivery=None) -> None:
        self.sent.append((topic, value, key, partition))


def _stage_with_one_key() -> tuple[MonitorStage, _Recorder, _Partition, bytes]:
    stage = MonitorStage("t", 1, KafkaSettings(), load_config(None), Telemetry(None))
    stage._producer = recorder = _Recorder()  # type: ignore[assignment]
    p = partition()
    key = b"checkout\x1ferror_rate"
    p.monitors[key] = MetricMonitor("checkout", "error_rate", spec_for("error_rate"))
    p.applied[key], p.dirty[key], p.next_offset = 5, (5, 0.0), 6
    stage._owned = {0: p}
    return stage, recorder, p, key


def test_a_state_is_written_only_once_its_anomalies_are_acknowledged():
    stage, recorder, p, key = _stage_with_one_key()
    p.hold(5, key)  # its anomaly is still in flight
    stage._save_changed(changed_before=1.0)
    assert recorder.sent == [] and key in p.dirty
    p.release(5, key)
    stage._save_changed(changed_before=1.0)
    [(topic, value, sent_key, to_partition)] = recorder.sent
    assert (topic, sent_key, to_partition) == ("t-monitors-changelog", key, 0)
    assert json.loads(value)["offset"] == 5 and key not in p.dirty
    assert p.committable() == 5  # until the broker acknowledges the state itself


def test_a_partition_given_away_drops_out_of_the_lag_gauge():
    telemetry = Telemetry(None)
    telemetry.consumed("backout.metrics", 3, next_offset=10, count=10)
    telemetry.highwater("backout.metrics", 3, 15)
    assert b'backout_consumer_lag{partition="3",topic="backout.metrics"} 5.0' in telemetry.exposition()[0]
    telemetry.released("backout.metrics", 3)
    assert b'partition="3"' not in telemetry.exposition()[0]


class _Refused:
    """A delivery report's message, as confluent-kafka hands it back."""

    def topic(self) -> str:
        return "backout.anomalies"

    def value(self) -> bytes:
        return b'{"type":"anomaly"}'

    def key(self) -> bytes:
        return b"checkout"

    def partition(self) -> int:
        return 2


def test_a_refused_record_is_sent_again_and_holds_the_commit_until_delivered():
    stage, recorder, p, _ = _stage_with_one_key()
    p.dirty.clear()
    p.next_offset = 9
    p.hold(4)
    stage._delivered(p, 4, None, KafkaError(KafkaError._MSG_TIMED_OUT), _Refused())
    stage._send_again(now=0.0)
    assert recorder.sent == [] and p.committable() == 4  # not yet: it waits RESEND_S
    stage._send_again(now=time.monotonic() + RESEND_S)
    assert recorder.sent == [("backout.anomalies", b'{"type":"anomaly"}', b"checkout", 2)]
    assert p.committable() == 4  # still held until the broker acknowledges it


def test_a_state_is_not_written_again_while_its_last_write_is_in_flight():
    """Otherwise a retried older state could land after a newer one and win the compaction."""
    stage, recorder, p, key = _stage_with_one_key()
    stage._save_changed(changed_before=1.0)
    assert len(recorder.sent) == 1 and p.unacked_by_key[key] == 1
    p.applied[key], p.dirty[key] = 8, (8, 0.0)  # changed again before the broker acknowledged
    stage._save_changed(changed_before=1.0)
    assert len(recorder.sent) == 1 and key in p.dirty
    p.release(5, key)
    stage._save_changed(changed_before=1.0)
    assert len(recorder.sent) == 2 and json.loads(recorder.sent[1][1])["offset"] == 8


def test_a_record_refused_for_good_is_counted_and_no_longer_holds_the_commit():
    stage, recorder, p, key = _stage_with_one_key()
    p.dirty.clear()
    p.hold(5)
    stage._delivered(p, 5, None, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), _Refused())
    assert p.committable() == 6 and not stage._resend
    assert b'backout_records_refused_total{topic="backout.anomalies"} 1.0' in stage.telemetry.exposition()[0]


def test_a_huge_dead_letter_is_cut_to_fit_the_broker():
    big = json.loads(envelope(b"\xff" * (KEEP_BYTES * 4), "bad", "backout.metrics", 0, 1, 0.0))
    assert big["truncated_from_bytes"] == KEEP_BYTES * 4 and big["encoding"] == "base64"
    assert len(big["value"]) < 2 * KEEP_BYTES
    assert "truncated_from_bytes" not in json.loads(envelope(b"{oops", "bad", "backout.metrics", 0, 1, 0.0))
