"""``backout topics dump`` / ``backout topics replay``: topics to JSON Lines and back.

A dump line is the record exactly as it is on the topic (a JSON object), plus
one field, ``"_topic"``, naming the topic it was read from. Records keep
unknown fields, so every Backout reader takes such a line as it is:
``backout backtest`` replays the metric and deploy lines of a whole dump (and
reports the other lines on stderr), ``backout incident report --from`` reads
all of them. The leading underscore keeps the name clear of record fields
(a dead letter has a ``topic`` of its own).

Lines are written in event-time order (``ts``, then topic, partition and
offset), which is the order a backtest wants; ``--from`` / ``--to`` select by
event time too. The topics are read to their end as of the start of the dump.

Replay publishes each line to its ``_topic`` (or, for a line without one, the
topic of its ``type``: a ``backout simulate`` file replays too), keyed as the
product keys it (:func:`streams.topics.key_of`), with its event time
untouched: ``ts`` travels in the value. The Kafka timestamp is the replay's
own, so that the topics' retention counts from the replay, not from the
incident. Records are validated against their contract first; a bad line is
reported with its number, counted and sent to the dead letter topic, like
``backout ingest`` does.
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import IO

import click
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from backout.contracts import decode, encode
from backout.errors import BrokerError, ContractError
from backout.settings import KafkaSettings
from streams import topics
from streams.deadletter import envelope
from streams.kafka import flush, producer

TOPIC_FIELD = "_topic"
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")  # Kafka's own rule


def read_to_end(settings: KafkaSettings, names: Iterable[str], stall_s: float = 30.0) -> Iterator[Message]:
    """Every message of ``names`` from the beginning until each partition is caught up.

    A partition is done at the end-of-partition event the consumer raises when
    it has fetched all there is, not at the end ListOffsets reports: the
    embedded tansu broker answers ListOffsets with the last *batch's* base
    offset + 1, short of the end whenever that batch held several records.
    That end is still a floor (an end-of-partition before it is not the end).
    Nothing is committed (a throwaway group). Raises :class:`BrokerError` for
    a topic the broker does not have, or when nothing arrives for ``stall_s``
    while a partition is not done.
    """
    names = list(names)
    cons = Consumer(settings.confluent(**{
        "group.id": f"backout-dump-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "enable.partition.eof": True, "auto.offset.reset": "earliest",
    }))
    try:
        try:
            meta = cons.list_topics(timeout=10)
        except Exception as exc:  # KafkaException: the broker is not there
            raise BrokerError(f"cannot list topics at {settings.bootstrap_servers}: {exc}") from None
        missing = [n for n in names if n not in meta.topics or meta.topics[n].error is not None]
        if missing:
            raise BrokerError(f"no topic {', '.join(missing)} at {settings.bootstrap_servers} "
                              "(create them with 'backout topics create')")
        floors: dict[tuple[str, int], int] = {}
        start = []
        for name in names:
            for partition in sorted(meta.topics[name].partitions):
                low, high = cons.get_watermark_offsets(TopicPartition(name, partition), timeout=10)
                if high > low:  # else empty
                    floors[(name, partition)] = high
                    start.append(TopicPartition(name, partition, low))
        cons.assign(start)
        last = time.monotonic()
        while floors:
            msg = cons.poll(0.5)
            if msg is None:
                if time.monotonic() - last > stall_s:
                    short = ", ".join(f"{t}[{p}]" for t, p in sorted(floors))
                    raise BrokerError(f"no record for {stall_s:.0f} s while {short} had not reached its end")
                continue
            last = time.monotonic()
            where = (msg.topic() or "", msg.partition() or 0)
            error = msg.error()
            if error is None:
                if where in floors:
                    yield msg
            elif error.code() != KafkaError._PARTITION_EOF:
                raise BrokerError(f"reading {where[0]}[{where[1]}] failed: {error}")
            elif where in floors and (msg.offset() or 0) >= floors[where]:
                del floors[where]
    finally:
        cons.close()


def parse_ts(text: str) -> float:
    """Unix seconds, or an ISO 8601 time ('2026-03-01T14:00:00Z'; no zone means UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"expected unix seconds or an ISO 8601 time, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def dump_lines(messages: Iterable[Message], from_ts: float | None = None, to_ts: float | None = None,
               on_skip: Callable[[str], None] | None = None) -> list[bytes]:
    """The dump of ``messages``: one JSON line each, with ``_topic``, in event-time order."""
    rows: list[tuple[float, str, int, int, bytes]] = []
    for msg in messages:
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        where = f"{topic}[{partition}]@{offset}"
        try:
            data = json.loads(msg.value() or b"")
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = None
        ts = data.get("ts") if isinstance(data, dict) else None
        if not isinstance(ts, int | float) or isinstance(ts, bool):
            if on_skip is not None:
                on_skip(f"{where}: not a JSON record with a numeric 'ts'; left out (see backout.deadletter)")
            continue
        if (from_ts is not None and ts < from_ts) or (to_ts is not None and ts > to_ts):
            continue
        assert isinstance(data, dict)
        data[TOPIC_FIELD] = topic
        line = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        rows.append((float(ts), topic, partition, offset, line))
    rows.sort(key=lambda r: r[:4])
    return [r[4] for r in rows]


def replay_lines(prod: Producer, lines: Iterable[str | bytes], rename: dict[str, str] | None = None,
                 source: str = "file", on_bad: Callable[[int, str], None] | None = None) -> Counter[str]:
    """Publish dump lines to their topics (renamed through ``rename``); count them by topic and 'bad'."""
    rename = rename or {}
    counts: Counter[str] = Counter()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            topic, key, value = _destination(line)
        except ContractError as exc:
            counts["bad"] += 1
            if on_bad is not None:
                on_bad(number, str(exc))
            raw = line if isinstance(line, bytes) else line.encode()
            _produce(prod, rename.get(topics.DEADLETTER, topics.DEADLETTER), None,
                     envelope(raw, str(exc), f"file:{source}", -1, number, time.time()))
            continue
        topic = rename.get(topic, topic)
        _produce(prod, topic, key, value)
        counts[topic] += 1
    return counts


def _destination(line: str | bytes) -> tuple[str, bytes | None, bytes]:
    """(topic, key, value) of one dump line; :class:`ContractError` if it cannot be published.

    The record's type says what it is (how it is validated and keyed); ``_topic``
    where it goes, which may be any topic name, but not another record type's
    Backout topic.
    """
    try:
        data = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ContractError(f"expected a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    home = topics.OF_TYPE.get(kind) if isinstance(kind, str) else None
    topic = data.pop(TOPIC_FIELD, None) or home
    if not isinstance(topic, str) or not TOPIC_NAME.fullmatch(topic):
        raise ContractError(f"field '{TOPIC_FIELD}': got {topic!r}, expected a topic name "
                            "(letters, digits, '.', '_', '-'; at most 249)")
    if home is None:
        raise ContractError(f"field 'type': got {kind!r}, expected one of {', '.join(topics.OF_TYPE)}")
    if topic in topics.ALL and topic != home:
        raise ContractError(f"field '{TOPIC_FIELD}': a {kind} record belongs on {home}, not {topic}")
    if kind == "deadletter":  # an envelope, not a record: kept as it is
        return topic, None, json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    record = decode(json.dumps(data))
    return topic, topics.key_of(data), encode(record)


def _produce(prod: Producer, topic: str, key: bytes | None, value: bytes) -> None:
    while True:
        try:
            prod.produce(topic, value, key=key)
            break
        except BufferError:  # local queue full: let it drain
            prod.poll(0.1)
    prod.poll(0)


def _rename_option(values: tuple[str, ...]) -> dict[str, str]:
    mapping = {}
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old or not new:
            raise click.BadParameter(f"expected OLD=NEW, got {value!r}", param_hint="--rename")
        mapping[old] = new
    return mapping


@click.command()
@click.option("--topic", "names", multiple=True, metavar="T",
              help="A topic to dump, repeatable (default: every public Backout topic).")
@click.option("--from", "from_text", metavar="TS", help="Only records with ts at or after TS (unix seconds or ISO 8601).")
@click.option("--to", "to_text", metavar="TS", help="Only records with ts at or before TS.")
def dump(names: tuple[str, ...], from_text: str | None, to_text: str | None) -> None:
    """Write the topics, read to their end, to stdout as JSON Lines in event-time order.

    Each line is the record as it is on its topic plus "_topic" (the topic it
    came from). The file feeds 'backout topics replay', 'backout backtest' and
    'backout incident report --from'. A summary ends stderr.
    """
    from_ts = parse_ts(from_text) if from_text else None
    to_ts = parse_ts(to_text) if to_text else None
    skipped = 0

    def on_skip(reason: str) -> None:
        nonlocal skipped
        skipped += 1
        click.echo(reason, err=True)

    lines = dump_lines(read_to_end(KafkaSettings(), names or topics.ALL), from_ts, to_ts, on_skip)
    out: IO[bytes] = sys.stdout.buffer
    for line in lines:
        out.write(line + b"\n")
    out.flush()
    click.echo(f"dumped {len(lines)} records; {skipped} left out", err=True)


@click.command()
@click.argument("file", type=click.File("rb"), metavar="FILE.jsonl")
@click.option("--rename", multiple=True, metavar="OLD=NEW",
              help="Publish what was on topic OLD to topic NEW instead, repeatable.")
def replay(file: IO[bytes], rename: tuple[str, ...]) -> None:
    """Publish FILE.jsonl ('-' for stdin) back to the topics its lines name, keyed as Backout keys them.

    Event time is kept (it is the records' ts). Lines without "_topic" go to
    the topic of their record type. Bad lines are reported on stderr with their
    number and published to backout.deadletter.
    """
    def on_bad(number: int, reason: str) -> None:
        click.echo(f"line {number}: {reason}", err=True)

    prod = producer(KafkaSettings())
    counts = replay_lines(prod, file, _rename_option(rename), getattr(file, "name", "stdin"), on_bad)
    flush(prod)
    bad = counts.pop("bad", 0)
    per_topic = ", ".join(f"{n} to {t}" for t, n in sorted(counts.items())) or "nothing"
    click.echo(f"replayed {per_topic}; {bad} bad lines dead-lettered", err=True)


__all__ = ["dump", "replay", "read_to_end", "dump_lines", "replay_lines"]

