"""Topics to JSON Lines and back on the real broker: dump → replay into fresh topics → dump is the same."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from backout.cli import cli
from backout.contracts import dead_letter, encode
from streams import topics
from streams.admin import create_topics
from streams.dump import TOPIC_FIELD, read_topics
from streams.kafka import read_to_end
from streams.topics import TopicSpec
from tests.test_incident import story

pytestmark = pytest.mark.integration


def fresh(unique: str, tag: str) -> dict[str, str]:
    """A private copy of every public topic name: product name -> test name."""
    return {name: f"{name}.{tag}-{unique}" for name in topics.ALL}


def provision(kafka, names: dict[str, str]) -> None:
    create_topics(kafka, [TopicSpec(n, 3, 3_600_000) for n in names.values()])


def run(kafka, args: list[str], stdin: bytes | None = None):
    result = CliRunner().invoke(cli, args, input=stdin, env={"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers})
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def dump(kafka, names: dict[str, str], *extra: str):
    args = ["topics", "dump", *[a for n in names.values() for a in ("--topic", n)], *extra]
    result = run(kafka, args)
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def placed(kafka, names: dict[str, str]) -> dict[str, tuple[bytes | None, int | None]]:
    """Each JSON record's key and, when it has one, its partition (unkeyed records land anywhere)."""
    out = {}
    for msg in read_topics(kafka, names.values()):
        try:
            value = json.dumps(json.loads(msg.value() or b""), sort_keys=True)
        except json.JSONDecodeError:
            continue  # the junk value: left out of the dump, so not replayed
        out[value] = (msg.key(), msg.partition() if msg.key() else None)
    return out


def test_dump_replay_dump_gives_the_same_records_keyed_the_same(kafka, unique):
    a, b = fresh(unique, "a"), fresh(unique, "b")
    provision(kafka, a)
    provision(kafka, b)
    records = story("approved")
    prod = Producer(kafka.producer())
    for record in reversed(records):  # produced out of event-time order, as seven producers would
        topic = a[topics.OF_TYPE[record.type]]
        prod.produce(topic, encode(record), key=topics.key_of(record.model_dump()))
    dead = dead_letter(b'{"value": "x"}', "field 'value': got 'x'", "backout.metrics", 0, 7, records[0].ts + 1)
    prod.produce(a[topics.DEADLETTER], encode(dead))
    prod.produce(a[topics.METRICS], b"not json at all", key=b"checkout")
    assert prod.flush(30) == 0

    first, report = dump(kafka, a)
    assert len(first) == len(records) + 1
    assert "not a JSON record with a numeric 'ts'; left out" in report and "1 left out" in report
    assert [line["ts"] for line in first] == sorted(line["ts"] for line in first)  # event-time order
    assert {line[TOPIC_FIELD] for line in first} == set(a.values())
    assert next(line for line in first if line["type"] == "deadletter")["topic"] == "backout.metrics"  # its own

    file = "\n".join(json.dumps(line) for line in first).encode()
    renames = [arg for name in topics.ALL for arg in ("--rename", f"{a[name]}={b[name]}")]
    replayed = run(kafka, ["topics", "replay", "-", *renames], stdin=file)
    assert "; 0 bad lines dead-lettered" in replayed.stderr

    second, _ = dump(kafka, b)
    back = {v: k for k, v in b.items()}
    again = [{**line, TOPIC_FIELD: a[back[line[TOPIC_FIELD]]]} for line in second]
    assert sorted(map(json.dumps, again)) == sorted(map(json.dumps, first))
    assert placed(kafka, b) == placed(kafka, a)  # same keys, hence the same partitions


def test_dump_selects_by_event_time(kafka, unique):
    a = fresh(unique, "t")
    provision(kafka, a)
    records = story("auto")
    prod = Producer(kafka.producer())
    for record in records:
        prod.produce(a[topics.OF_TYPE[record.type]], encode(record), key=topics.key_of(record.model_dump()))
    assert prod.flush(30) == 0
    deploy_ts = records[0].ts
    lines, _ = dump(kafka, a, "--from", str(deploy_ts + 90), "--to", "2023-11-14T22:15:30Z")  # deploy + 130 s
    assert lines and all(deploy_ts + 90 <= line["ts"] <= deploy_ts + 130 for line in lines)
    expected = [r for r in records if deploy_ts + 90 <= r.ts <= deploy_ts + 130]
    assert len(lines) == len(expected)
    assert {"anomaly", "decision", "alert", "verification", "metric"} == {line["type"] for line in lines}


def test_replay_refuses_bad_lines_by_number_and_dead_letters_them(kafka, unique, tmp_path):
    a = fresh(unique, "r")
    provision(kafka, a)
    good = story("auto")[0]
    path = tmp_path / "dump.jsonl"
    path.write_text("\n".join([
        encode(good).decode(),  # no _topic: goes by its type
        json.dumps({**json.loads(encode(good)), TOPIC_FIELD: "backout.alerts"}),  # a deploy on the alerts topic
        '{"type":"metric","ts":5,"service":"x"}',  # missing fields
        "[1, 2]",
    ]) + "\n")
    renames = [arg for name in topics.ALL for arg in ("--rename", f"{name}={a[name]}")]
    result = run(kafka, ["topics", "replay", str(path), *renames])
    assert "line 2: field '_topic': a deploy record belongs on backout.deploys, not backout.alerts" in result.stderr
    assert "line 3: invalid metric record: field 'metric': missing" in result.stderr
    assert "line 4: expected a JSON object, got list" in result.stderr
    assert "replayed 1 to " + a[topics.DEPLOYS] + "; 3 bad lines dead-lettered" in result.stderr
    got = [json.loads(m.value() or b"") for m in read_topics(kafka, [a[topics.DEPLOYS], a[topics.DEADLETTER]])]
    assert [g["type"] for g in got].count("deadletter") == 3
    assert [g for g in got if g["type"] == "deploy"] == [json.loads(encode(good))]


def test_read_to_end_reads_every_record_of_a_batch(kafka, unique):
    """tansu answers ListOffsets with the last batch's base offset + 1: the end is the fetch's."""
    topic = f"batches-{unique}"
    create_topics(kafka, [TopicSpec(topic, 1, 3_600_000)])
    prod = Producer(kafka.producer(**{"linger.ms": 200}))
    sent = 0
    for batch in (10, 1, 5):  # several records per produce request, the last one too
        for _ in range(batch):
            prod.produce(topic, b'{"n": %d}' % sent)
            sent += 1
        assert prod.flush(30) == 0
    got = [json.loads(m.value() or b"")["n"] for m in read_to_end(kafka, topic)]
    assert got == list(range(sent))


def test_backtest_reads_a_whole_dump(kafka, unique, tmp_path):
    """A dump of every topic is a backtest file: the same decisions as the inputs alone."""
    from streams.simulate import demo_records as demo_scenario

    a = fresh(unique, "bt")
    provision(kafka, a)
    records = demo_scenario()
    prod = Producer(kafka.producer())
    for record in records:
        prod.produce(a[topics.OF_TYPE[record.type]], encode(record), key=topics.key_of(record.model_dump()))
    for extra in story("auto"):  # outputs of other stages in the same dump: reported, never fatal
        if extra.type not in ("metric", "deploy"):
            prod.produce(a[topics.OF_TYPE[extra.type]], encode(extra), key=topics.key_of(extra.model_dump()))
    assert prod.flush(30) == 0
    lines, _ = dump(kafka, a)
    dumped, inputs = tmp_path / "dump.jsonl", tmp_path / "inputs.jsonl"
    dumped.write_text("".join(json.dumps(line) + "\n" for line in lines))
    inputs.write_text("".join(encode(r).decode() + "\n" for r in records))
    from_dump = CliRunner().invoke(cli, ["backtest", str(dumped)])
    from_inputs = CliRunner().invoke(cli, ["backtest", str(inputs)])
    assert from_dump.exit_code == 0 and from_inputs.exit_code == 0
    assert from_dump.stdout.splitlines() == from_inputs.stdout.splitlines() != []
    assert "expected a metric or deploy record, got 'decision'" in from_dump.stderr
