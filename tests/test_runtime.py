"""The keyed-state runtime, driven by hand through its seam (no broker): the commit never passes
an unsaved state or an unacknowledged output; a restart resumes exactly; refusals and bugs are
dead-lettered; quiet partitions are declared idle."""

from __future__ import annotations

import json

from confluent_kafka import KafkaError

from backout.contracts import Alert, decode
from backout.errors import ContractError
from streams import topics
from streams.runtime.keyed import KeyedConsumer, Settings
from streams.telemetry import Telemetry
from tests.fakes import FakeClients, FakeMessage

TOPIC, CHANGELOG = "in", "app-changelog"


class Counting:
    """Counts records per key. A value is ``key[:flag]``: ``emit`` also sends an alert, ``boom``
    is a bug in the step, a key ``bad`` is refused."""

    def __init__(self) -> None:
        self.after_calls: list[tuple[int, str]] = []

    def read(self, value, source):
        key, _, flag = (value or b"").decode().partition(":")
        if key == "bad":
            raise ContractError("field 'key': got 'bad', expected a good one")
        return key.encode(), flag

    def step(self, state, flag):
        if flag == "boom":
            raise RuntimeError("a bug")
        count = (state or 0) + 1
        emitted = [("out", Alert(ts=1.0, severity="info", text=f"count {count}"))] if flag == "emit" else []
        return count, emitted

    def dump(self, state):
        return b"%d" % state

    def load(self, key, raw):
        return int(raw)

    def after(self, partition, flag):
        self.after_calls.append((partition, flag))
        return []

    def idle(self, partition):
        return [("marks", Alert(ts=1.0, severity="info", text=f"partition {partition} idle"))]

    def before(self):
        pass

    def assigned(self, partitions):
        pass

    def revoked(self, partitions):
        pass


def runtime(clients: FakeClients | None = None) -> tuple[KeyedConsumer, FakeClients, Counting]:
    clients = clients or FakeClients()
    stage = Counting()
    rt = KeyedConsumer(stage, Settings(TOPIC, "g", CHANGELOG, partitions=1, checkpoint_s=5.0, commit_s=1.0),
                       clients, Telemetry(None))  # type: ignore[arg-type]
    rt.connect()
    clients.consumer_.assign(TOPIC, [0])
    return rt, clients, stage


def msgs(*values: str, start: int = 0) -> list[FakeMessage]:
    return [FakeMessage(TOPIC, 0, start + i, v.encode()) for i, v in enumerate(values)]


def saved(clients: FakeClients) -> list[tuple[bytes | None, dict]]:
    return [(key, json.loads(value or b"")) for value, key, _ in clients.producer_.to(CHANGELOG)]


def test_nothing_is_committed_before_anything_is_read():
    rt, clients, _ = runtime()
    rt.tick([], now=0.0)
    assert clients.consumer_.commits == []


def test_the_commit_waits_for_the_output_then_for_the_state_that_includes_it():
    rt, clients, _ = runtime()
    rt.tick(msgs("a", "a", "a:emit"), now=0.0)  # offsets 0-2; the alert is caused by offset 2
    assert [v for v, _, _ in clients.producer_.to("out")] and saved(clients) == []
    rt.tick([], now=10.0)  # past checkpoint_s, but the alert is in flight: the state waits
    assert saved(clients) == [] and clients.consumer_.commits[-1] == {0: 0}
    clients.producer_.deliver()
    rt.tick([], now=11.0)
    assert saved(clients) == [(b"a", {"offset": 2, "state": 3})]
    assert clients.consumer_.commits[-1] == {0: 0}  # until the broker has the state itself
    clients.producer_.deliver()
    rt.tick([], now=12.0)
    assert clients.consumer_.commits[-1] == {0: 3}


def test_a_state_is_not_written_again_while_its_last_write_is_in_flight():
    """Otherwise a retried older state could land after a newer one and win the compaction."""
    rt, clients, _ = runtime()
    rt.tick(msgs("a"), now=0.0)
    rt.tick([], now=6.0)
    rt.tick(msgs("a", start=1), now=6.0)
    rt.tick([], now=12.0)
    assert saved(clients) == [(b"a", {"offset": 0, "state": 1})]
    clients.producer_.deliver()
    rt.tick([], now=13.0)
    assert saved(clients)[1] == (b"a", {"offset": 1, "state": 2})


def test_a_refused_output_is_sent_again_and_holds_the_commit_until_delivered():
    rt, clients, _ = runtime()
    rt.sender.resend_s = 0.0  # type: ignore[union-attr]
    rt.tick(msgs("a:emit"), now=0.0)
    clients.producer_.errors = [KafkaError._MSG_TIMED_OUT]
    clients.producer_.deliver()
    rt.tick([], now=1.0)
    assert len(clients.producer_.to("out")) == 2 and clients.consumer_.commits[-1] == {0: 0}
    clients.producer_.deliver()
    rt.tick([], now=6.0)
    clients.producer_.deliver()
    rt.tick([], now=8.0)
    assert clients.consumer_.commits[-1] == {0: 1}


def test_an_output_refused_for_good_is_counted_and_no_longer_holds_the_commit():
    rt, clients, _ = runtime()
    rt.tick(msgs("a:emit"), now=0.0)
    clients.producer_.errors = [KafkaError.MSG_SIZE_TOO_LARGE]
    clients.producer_.deliver()
    rt.tick([], now=6.0)
    clients.producer_.deliver()
    rt.tick([], now=8.0)
    assert clients.consumer_.commits[-1] == {0: 1}
    assert b'backout_records_refused_total{topic="out"} 1.0' in rt.telemetry.exposition()[0]  # type: ignore[attr-defined]


def test_a_restarted_owner_resumes_from_the_changelog_and_counts_nothing_twice():
    clients = FakeClients(auto=True)
    clients.changelog_records = [(0, b"a", b'{"offset":4,"state":5}')]
    rt, clients, stage = runtime(clients)
    rt.tick(msgs("a", "a", start=3), now=0.0)  # offsets 3-4 are in the saved state already
    rt.tick(msgs("a", start=5), now=0.0)
    rt.tick([], now=6.0)
    assert saved(clients) == [(b"a", {"offset": 5, "state": 6})]
    assert len(stage.after_calls) == 3  # replayed records still move the partition's event time


def test_a_refused_record_is_dead_lettered_with_its_source_and_a_bug_rebuilds_the_state():
    rt, clients, _ = runtime(FakeClients(auto=True))
    rt.tick(msgs("a", "bad", "a"), now=0.0)
    rt.tick([], now=6.0)  # saved: a = 2
    rt.tick(msgs("a", "a:boom", "a", start=3), now=6.0)
    rt.tick([], now=12.0)
    letters = [decode(v) for v, _, _ in clients.producer_.to(topics.DEADLETTER)]
    assert [(d.offset, d.partition, d.topic) for d in letters] == [(1, 0, TOPIC), (4, 0, TOPIC)]
    assert letters[0].reason.startswith("field 'key'") and letters[1].reason.startswith("internal error")
    assert letters[0].id != letters[1].id
    # the bug dropped the half-changed state: rebuilt from the saved 2, the sample after it makes 3
    assert saved(clients)[-1] == (b"a", {"offset": 5, "state": 3})


def test_partitions_lost_are_never_committed_from_here():
    rt, clients, _ = runtime(FakeClients(auto=True))
    rt.tick(msgs("a"), now=0.0)
    before = len(clients.consumer_.commits)
    clients.consumer_.lose(TOPIC, [0])
    rt.tick([], now=10.0)
    assert len(clients.consumer_.commits) == before and rt.assigned() == []


def test_a_quiet_caught_up_partition_is_declared_idle_once():
    rt, clients, _ = runtime(FakeClients(auto=True))
    rt.tick(msgs("a"), now=0.0)
    clients.consumer_.high[0] = 5  # records are waiting: not idle
    rt.tick([], now=20.0)
    assert clients.producer_.to("marks") == []
    clients.consumer_.high[0] = 1
    rt.tick([], now=40.0)
    rt.tick([], now=50.0)
    assert len(clients.producer_.to("marks")) == 1


def test_a_partition_given_away_drops_out_of_the_lag_gauge():
    telemetry = Telemetry(None)
    telemetry.consumed("backout.metrics", 3, next_offset=10, count=10)
    telemetry.highwater("backout.metrics", 3, 15)
    assert b'backout_consumer_lag{partition="3",topic="backout.metrics"} 5.0' in telemetry.exposition()[0]
    telemetry.released("backout.metrics", 3)
    assert b'partition="3"' not in telemetry.exposition()[0]
