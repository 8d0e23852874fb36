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
event time too. Each topic is read until caught up (:func:`streams.kafka.read_to_end`).

Replay publishes each line to its ``_topic`` (or, for a line without one, the
topic of its ``type``: a ``backout simulate`` file replays too), keyed as the
product keys it (:func:`streams.topics.key_of`), with its event time kept:
``ts`` is unchanged and the Kafka timestamp is stamped with it, as
:func:`streams.kafka.publish` does. (So a broker deletes replayed records older
than the topic's retention soon after: give a staging topic a longer
``--retention-hours`` to replay an old incident.) Records are validated
against their contract first; a bad line is reported with its number, counted
and sent to the dead letter topic, like ``backout ingest`` does.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import IO

import click
from confluent_kafka import KafkaException, Message
from confluent_kafka.admin import AdminClient

from backout.contracts import Record, dead_letter, decode, encode
from backout.errors import BrokerError, ContractError
from backout.settings import KafkaSettings
from streams import topics
from streams.kafka import read_to_end, sender
from streams.runtime.sender import Sender

TOPIC_FIELD = "_topic"
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")  # Kafka's own rule


def read_topics(settings: KafkaSettings, names: Iterable[str]) -> Iterator[Message]:
    """Every record of ``names``, each topic read to its end; :class:`BrokerError` for a missing one."""
    names = list(names)
    try:
        present = AdminClient(settings.confluent()).list_topics(timeout=10).topics
    except KafkaException as exc:
        raise BrokerError(f"cannot list topics at {settings.bootstrap_servers}: {exc}") from None
    missing = [n for n in names if n not in present]
    if missing:
        raise BrokerError(f"no topic {', '.join(missing)} at {settings.bootstrap_servers} "
                          "(create them with 'backout topics create')")
    for name in names:
        yield from read_to_end(settings, name)


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
                on_skip(f"{where}: not a JSON record with a numeric 'ts'; left out (the worker dead-letters it)")
            continue
        if (from_ts is not None and ts < from_ts) or (to_ts is not None and ts > to_ts):
            continue
        assert isinstance(data, dict)
        data[TOPIC_FIELD] = topic
        line = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        rows.append((float(ts), topic, partition, offset, line))
    rows.sort(key=lambda r: r[:4])
    return [r[4] for r in rows]


def replay_lines(out: Sender, lines: Iterable[str | bytes], rename: dict[str, str] | None = None,
                 source: str = "file", on_bad: Callable[[int, str], None] | None = None) -> Counter[str]:
    """Publish dump lines to their topics (renamed through ``rename``); count them by topic and 'bad'."""
    rename = rename or {}
    counts: Counter[str] = Counter()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            topic, record = _destination(line)
        except ContractError as exc:
            counts["bad"] += 1
            if on_bad is not None:
                on_bad(number, str(exc))
            raw = line if isinstance(line, bytes) else line.encode()
            letter = dead_letter(raw, str(exc), f"file:{source}", -1, number, time.time())
            out.send(rename.get(topics.DEADLETTER, topics.DEADLETTER), encode(letter))
            out.poll()
            continue
        topic = rename.get(topic, topic)
        out.send(topic, encode(record), topics.key_of(record.model_dump()), timestamp_ms=int(record.ts * 1000))
        out.poll()
        counts[topic] += 1
    return counts


def _destination(line: str | bytes) -> tuple[str, Record]:
    """Where one dump line goes, and its record; :class:`ContractError` if it cannot be published.

    The record's type says what it is (its contract and its key); ``_topic``
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
    return topic, decode(json.dumps(data))


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

    lines = dump_lines(read_topics(KafkaSettings(), names or topics.ALL), from_ts, to_ts, on_skip)
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

    out = sender(KafkaSettings())
    counts = replay_lines(out, file, _rename_option(rename), getattr(file, "name", "stdin"), on_bad)
    out.flush(60)
    bad = counts.pop("bad", 0)
    per_topic = ", ".join(f"{n} to {t}" for t, n in sorted(counts.items())) or "nothing"
    click.echo(f"replayed {per_topic}; {bad} bad lines dead-lettered", err=True)


__all__ = ["dump", "replay", "read_topics", "dump_lines", "replay_lines"]

