"""Every contract through real topics, provisioning, and the dead letter path."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from confluent_kafka.admin import ConfigResource

from backout.cli import cli
from backout.contracts import decode, encode
from backout.errors import BackoutError
from streams import topics
from streams.admin import AdminClient, create_topics, existing_topics
from streams.kafka import consumer, messages, sender
from streams.runtime.keyed import Clients
from streams.topics import TopicSpec, specs
from tests.test_contracts import EXAMPLES


def test_every_contract_round_trips_through_a_real_topic(kafka, unique):
    topic = f"contracts-{unique}"
    create_topics(kafka, [TopicSpec(topic, 2, 3_600_000)])
    out = sender(kafka)
    for record in EXAMPLES:
        out.send(topic, encode(record), record.type.encode())
    out.flush(30)
    cons = consumer(kafka, [topic])
    try:
        got = [decode(m.value()) for m in messages(cons, timeout_s=30, idle_s=3)]
    finally:
        cons.close()
    assert sorted(got, key=lambda r: r.type) == sorted(EXAMPLES, key=lambda r: r.type)


def test_topics_create_provisions_all_topics_idempotently(kafka, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    runner = CliRunner()
    first = runner.invoke(cli, ["topics", "create", "--partitions", "4"])
    second = runner.invoke(cli, ["topics", "create", "--partitions", "4"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    present = existing_topics(AdminClient(kafka.confluent()))
    for name in topics.ALL:
        assert present[name] == 4
    assert present[topics.DECIDER] == 1
    assert "created" not in second.output
    assert len(specs()) == len(topics.ALL) + 1


def test_ingest_dead_letters_bad_lines_and_keeps_going(kafka, monkeypatch, tmp_path):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    create_topics(kafka, specs(2))
    good = [r for r in EXAMPLES if r.type in ("metric", "deploy")]
    marker = tmp_path.name
    lines = [encode(good[0]).decode(), '{"type":"metric","ts":1,"service":"' + marker + '","metric":"m","value":"x"}',
             "garbage " + marker, encode(good[1]).decode()]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(cli, ["ingest", str(source)])
    assert result.exit_code == 0, result.output
    assert "line 2: invalid metric record: field 'value'" in result.output
    assert "line 3: not JSON" in result.output
    cons = consumer(kafka, [topics.DEADLETTER])
    mine = []
    try:  # the two dead letters may sit on different partitions: read until both came
        for m in messages(cons, timeout_s=30):
            envelope = json.loads(m.value())
            if marker in envelope["value"]:
                mine.append(envelope)
            if len(mine) == 2:
                break
    finally:
        cons.close()
    mine.sort(key=lambda d: d["offset"])
    assert [d["offset"] for d in mine] == [2, 3]
    assert "field 'value'" in mine[0]["reason"] and mine[1]["reason"].startswith("not JSON")


def test_the_runtime_refuses_a_changelog_with_other_partitions(kafka, unique):
    clients, changelog = Clients(kafka), f"app-{unique}-monitors-changelog"
    clients.changelog(changelog, 3)  # created compacted, with the input topic's partitions; idempotent
    clients.changelog(changelog, 3)
    admin = AdminClient(kafka.confluent())
    assert existing_topics(admin)[changelog] == 3
    (described,) = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, changelog)]).values()
    assert described.result(30)["cleanup.policy"].value == "compact"  # one state per key survives
    with pytest.raises(BackoutError, match=r"has 3 partitions, the stage expects 4 \(BACKOUT_PARTITIONS\)"):
        clients.changelog(changelog, 4)
