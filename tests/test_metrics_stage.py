"""The metrics stage on the runtime, through its seam (no broker): samples on the wrong partition
are refused, memory is bounded (idle monitors leave it and come back with their state; past the
cap new keys are dead-lettered, counted and alerted), the first sample of a partition is
measured against its Kafka timestamp, and the stage says when it is ready."""

from __future__ import annotations

from backout.contracts import Metric, decode, encode
from detectors.config import BackoutConfig
from streams import topics
from streams.metrics_stage import metrics_consumer
from streams.runtime.keyed import KeyedConsumer
from streams.telemetry import Telemetry
from tests.fakes import FakeClients, FakeMessage

T = 1_767_225_600.0


def stage(**settings) -> tuple[KeyedConsumer, FakeClients]:
    clients = FakeClients(auto=True)
    rt = metrics_consumer("app", 1, None, BackoutConfig(), Telemetry(None), clients=clients,  # type: ignore[arg-type]
                          **settings)
    rt.connect()
    return rt, clients


def sample(service: str, ts: float, offset: int, key: bytes | None | str = "service", metric: str = "error_rate",
           kafka_ts: float | None = None) -> FakeMessage:
    value = encode(Metric(ts=ts, service=service, metric=metric, value=0.01, count=500))
    return FakeMessage(topics.METRICS, 0, offset, value, service.encode() if key == "service" else key,
                       timestamp_ms=int((kafka_ts or ts) * 1000))


def letters(clients: FakeClients) -> list:
    return [decode(v) for v, _, _ in clients.producer_.to(topics.DEADLETTER)]


def test_a_sample_keyed_other_than_its_service_is_refused():
    rt, clients = stage()
    clients.consumer_.assign(topics.METRICS, [0])
    rt.tick([sample("checkout", T, 0), sample("checkout", T + 10, 1, key=b"payments"),
             sample("checkout", T + 20, 2, key=None)], now=0.0)
    assert [(d.offset, d.reason.split(",")[0]) for d in letters(clients)] == [
        (1, "Kafka key: got b'payments'"), (2, "Kafka key: got none")]
    assert rt.live_keys() == 1


def test_the_first_sample_of_a_partition_is_measured_against_its_kafka_timestamp():
    rt, clients = stage()
    clients.consumer_.assign(topics.METRICS, [0])
    rt.tick([sample("checkout", T + 86_400, 0, kafka_ts=T),  # a day ahead of when it was produced
             sample("payments", T - 300 * 86_400, 1, kafka_ts=T)], now=0.0)  # an old replay: fine
    assert [d.offset for d in letters(clients)] == [0]
    assert "ahead of its Kafka timestamp" in letters(clients)[0].reason


def test_an_idle_monitor_leaves_memory_and_comes_back_with_its_state():
    rt, clients = stage(state_ttl_s=60.0, checkpoint_s=1.0)
    clients.consumer_.assign(topics.METRICS, [0])
    rt.tick([sample("checkout", T, 0), sample("payments", T, 1)], now=0.0)
    rt.tick([], now=2.0)  # saved
    rt.tick([sample("payments", T + 10, 2)], now=50.0)
    rt.tick([], now=70.0)  # checkout has had nothing for 70 s: it leaves memory, payments stays
    assert rt.live_keys() == 1
    assert b'backout_states_evicted_total{topic="backout.metrics"} 1.0' in rt.telemetry.exposition()[0]  # type: ignore[attr-defined]
    rt.tick([sample("checkout", T, 3), sample("checkout", T + 10, 4)], now=71.0)
    # read back from the store: it remembers its newest sample, so the same ts again is a duplicate
    assert [(d.offset, d.reason.split(" ")[0]) for d in letters(clients)] == [(3, "duplicate")]
    assert rt.live_keys() == 2


def test_past_the_cap_new_keys_are_dead_lettered_counted_and_alerted_once():
    rt, clients = stage(max_keys=2)
    clients.consumer_.assign(topics.METRICS, [0])
    rt.tick([sample("checkout", T, 0), sample("payments", T, 1)] +
            [sample(f"flood-{i}", T, 2 + i) for i in range(5)] + [sample("checkout", T + 10, 7)], now=0.0)
    refused = letters(clients)
    assert [d.offset for d in refused] == [2, 3, 4, 5, 6]  # the known keys go on
    assert all(d.reason.startswith("state cap: this worker holds max_keys = 2 states") for d in refused)
    assert "'flood-0/error_rate' is not one of them" in refused[0].reason
    exposition = rt.telemetry.exposition()[0]  # type: ignore[attr-defined]
    assert b'backout_state_cap_refusals_total{topic="backout.metrics"} 5.0' in exposition
    assert b'backout_live_states{topic="backout.metrics"} 2.0' in exposition
    alerts = [decode(v) for v, _, _ in clients.producer_.to(topics.ALERTS)]
    assert len(alerts) == 1 and "state cap" in alerts[0].text


def test_ready_only_while_it_owns_its_partitions_with_their_states_read_back():
    rt, clients = stage()
    clients.changelog_records = [(0, b"checkout\x1ferror_rate", b'{"offset":4,"state":{}}')]
    assert not rt.ready
    clients.consumer_.assign(topics.METRICS, [0])
    assert rt.ready and rt.store.get(0, b"checkout\x1ferror_rate") == (4, b"{}")
    clients.consumer_.revoke(topics.METRICS, [0])
    assert not rt.ready and rt.store.get(0, b"checkout\x1ferror_rate") is None
