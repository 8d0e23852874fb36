"""Answering the approval gate, and reading incidents back: ``backout approve`` / ``deny`` and
``backout incident list`` / ``show``.

Where an approval goes. The executor's state is keyed by service (:mod:`actions.gate`), as
``backout.actions`` is, so the replica that owns a service's partition of the actions topic owns
its incidents; an approval must reach that replica. It goes to the *same partition number* of
``backout.approvals`` as its incident's decisions on ``backout.actions`` (found by reading the
actions topic, which also refuses an unknown incident), keyed by the service. Naming the
partition instead of letting a partitioner hash the key holds whichever client produced the
decisions (Faust's aiokafka hashes keys with murmur2, librdkafka with CRC32 by default); it needs
both topics to have as many partitions, which ``backout topics create`` gives them, and is checked.

Before sending, the topics are folded into incidents (:mod:`detectors.incident_view`) and an answer
the gate would ignore is refused with the gate's own reason: the incident was answered already
(the first answer counts), its rollback already ran, it was escalated, or its question timed out.
"""

from __future__ import annotations

import getpass
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from backout.contracts import Alert, Approval, Decision, Record, Verification, decode, encode
from backout.errors import AnswerRefused, BrokerError, ConfigError, ContractError, UnknownIncident
from backout.settings import KafkaSettings
from detectors import wording
from detectors.incident_view import Incident, fold, refusal
from streams import topics

APPROVAL_TIMEOUT_S = 900.0  # the gate's default (actions.gate.GateSettings)
READ_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class IncidentTopics:
    """The topics incidents are read from and approvals sent to (tests use their own)."""

    actions: str = topics.ACTIONS
    approvals: str = topics.APPROVALS
    verifications: str = topics.VERIFICATIONS
    alerts: str = topics.ALERTS


@dataclass
class Reading:
    """Incidents folded from the topics, and how many records could not be read."""

    incidents: dict[str, Incident]
    unreadable: int


def read_incidents(kafka: KafkaSettings, where: IncidentTopics, with_alerts: bool = True,
                   timeout_s: float = READ_TIMEOUT_S) -> Reading:
    """Every incident on the topics, each read to the end it had when called."""
    from streams.kafka import read_to_end

    kinds: list[tuple[str, type[Record]]] = [(where.actions, Decision), (where.approvals, Approval),
                                             (where.verifications, Verification)]
    if with_alerts:
        kinds.append((where.alerts, Alert))
    pairs: list[tuple[Record, int | None]] = []
    unreadable = 0
    for topic, kind in kinds:
        for msg in read_to_end(kafka, topic, timeout_s=timeout_s):
            try:
                pairs.append((decode(msg.value() or b"", expect=kind), msg.partition()))
            except ContractError:
                unreadable += 1  # not ours to dead-letter: its consumer did, or will
    return Reading(fold(pairs), unreadable)


def answer(kafka: KafkaSettings, where: IncidentTopics, incident_id: str, approved: bool, by: str,
           approval_timeout_s: float = APPROVAL_TIMEOUT_S, now_ts: float | None = None) -> tuple[Approval, int]:
    """Send one approval (or denial) to the partition of its incident; (the record, that partition)."""
    from streams.admin import AdminClient, existing_topics
    from streams.kafka import sender

    counts = existing_topics(AdminClient(kafka.confluent()))
    for name in (where.actions, where.approvals):
        if name not in counts:
            raise ConfigError(f"topic {name} does not exist; create Backout's topics with `backout topics create`")
    if counts[where.actions] != counts[where.approvals]:
        raise ConfigError(f"{where.approvals} has {counts[where.approvals]} partitions and {where.actions} "
                          f"{counts[where.actions]}: they must have as many, so that an approval reaches the "
                          "executor that owns its incident")
    now = time.time() if now_ts is None else now_ts
    inc = read_incidents(kafka, where, with_alerts=False).incidents.get(incident_id)
    if inc is None or inc.partition is None:
        raise UnknownIncident(wording.unknown_incident(incident_id, where.actions))
    why = refusal(inc, approved, by, now, approval_timeout_s)
    if why is not None:
        raise AnswerRefused(why)
    record = Approval(ts=now, incident_id=incident_id, approved=approved, by=by, service=inc.service)
    refused: list[str] = []
    out = sender(kafka, **{"enable.idempotence": True})
    out.on_refused = refused.append
    out.send(where.approvals, encode(record), inc.service.encode(), partition=inc.partition,
             timestamp_ms=int(now * 1000))
    out.flush(30.0)
    if refused:
        raise BrokerError(f"{where.approvals} refused the approval; nothing was sent")
    return record, inc.partition


# -- the commands ------------------------------------------------------------------------------


def _by(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    name = (value if value is not None else getpass.getuser()).strip()
    if not name or len(name) > 100 or not name.isprintable():
        raise click.BadParameter(f"got {name[:40]!r}: a name of 1-100 printable characters")
    return name


_BY = click.option("--by", callback=_by, metavar="NAME",
                   help="Who answers (default: your login name); it is shown in every alert.")
_TIMEOUT = click.option("--approval-timeout-s", default=APPROVAL_TIMEOUT_S, show_default=True,
                        envvar="BACKOUT_APPROVAL_TIMEOUT_S", type=click.FloatRange(min=1.0),
                        help="The executor's approval timeout: a question older than this was escalated.")


def _where(ctx: click.Context) -> IncidentTopics:
    return ctx.find_object(IncidentTopics) or IncidentTopics()


def _answer(ctx: click.Context, incident_id: str, approved: bool, by: str, approval_timeout_s: float) -> None:
    where = _where(ctx)
    record, partition = answer(KafkaSettings(), where, incident_id, approved, by, approval_timeout_s)
    verb = "Approved" if approved else "Denied"
    click.echo(f"{verb} {incident_id} ({record.service}) as {by}: sent to {where.approvals} partition "
               f"{partition}, where the executor that owns {record.service} reads it.")


@click.command()
@click.argument("incident_id", metavar="INCIDENT")
@_BY
@_TIMEOUT
@click.pass_context
def approve(ctx: click.Context, incident_id: str, by: str, approval_timeout_s: float) -> None:
    """Approve the rollback Backout asked about for INCIDENT (see `backout incident list`)."""
    _answer(ctx, incident_id, True, by, approval_timeout_s)


@click.command()
@click.argument("incident_id", metavar="INCIDENT")
@_BY
@_TIMEOUT
@click.pass_context
def deny(ctx: click.Context, incident_id: str, by: str, approval_timeout_s: float) -> None:
    """Deny the rollback Backout asked about for INCIDENT: it will not act on it."""
    _answer(ctx, incident_id, False, by, approval_timeout_s)


@click.group()
def incident() -> None:
    """Incidents as the topics tell them: decisions, answers, rollbacks and their verification."""


@incident.command("list")
@click.option("--since-hours", default=24.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Also show incidents closed this recently.")
@click.option("--all", "show_all", is_flag=True, help="Every incident on the topics.")
@_TIMEOUT
@click.pass_context
def incident_list(ctx: click.Context, since_hours: float, show_all: bool, approval_timeout_s: float) -> None:
    """Open incidents, then the recently closed ones, newest first."""
    from rich.table import Table

    reading = read_incidents(KafkaSettings(), _where(ctx))
    now = time.time()
    rows = sorted(reading.incidents.values(), key=lambda i: (not i.is_open(now, approval_timeout_s), -i.opened_ts))
    shown = [i for i in rows if show_all or i.is_open(now, approval_timeout_s)
             or i.last_ts >= now - since_hours * 3600]
    table = Table("incident", "service", "status", "rollback", "opened", "latest", title=(
        f"{sum(i.is_open(now, approval_timeout_s) for i in shown)} open, "
        f"{sum(not i.is_open(now, approval_timeout_s) for i in shown)} closed"))
    for inc in shown:
        table.add_row(inc.incident_id, inc.service, _status(inc, now, approval_timeout_s), _versions(inc),
                      _when(inc.opened_ts), inc.steps[-1].text if inc.steps else "")
    _print(table, reading)


@incident.command("show")
@click.argument("incident_id", metavar="ID")
@_TIMEOUT
@click.pass_context
def incident_show(ctx: click.Context, incident_id: str, approval_timeout_s: float) -> None:
    """The timeline of one incident, with the numbers before and after its rollback."""
    from rich.table import Table

    where = _where(ctx)
    reading = read_incidents(KafkaSettings(), where)
    inc = reading.incidents.get(incident_id)
    if inc is None:
        raise UnknownIncident(wording.unknown_incident(incident_id, where.actions))
    now = time.time()
    table = Table("time (UTC)", "step", "what happened", title=(
        f"{inc.incident_id} · {inc.service} · {_status(inc, now, approval_timeout_s)} · {_versions(inc)}"))
    for step in inc.steps:
        table.add_row(_when(step.ts), step.what, step.text)
    if inc.verification is not None and inc.verification.before:
        v = inc.verification
        numbers = "; ".join(f"{wording.label(m)} {wording.value(m, before)} → "
                            f"{wording.value(m, v.after[m]) if m in v.after else 'no samples'}"
                            for m, before in v.before.items())
        table.caption = f"before / after the rollback: {numbers}"
    _print(table, reading)


def _status(inc: Incident, now_ts: float, approval_timeout_s: float) -> str:
    status = inc.status(now_ts, approval_timeout_s)
    colour = {"verified": "green", "awaiting approval": "yellow", "executing": "yellow", "executed": "yellow",
              "not_recovered": "red", "failed": "red", "timed out": "red"}.get(status)
    return f"[{colour}]{status}[/{colour}]" if colour else status


def _versions(inc: Incident) -> str:
    if inc.to_version is None:
        return "none"
    return f"{inc.from_version or '?'} → {inc.to_version}"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print(table: Any, reading: Reading) -> None:
    from rich.console import Console

    console = Console(soft_wrap=False)
    console.print(table)
    if reading.unreadable:
        click.echo(f"({reading.unreadable} records on these topics are not valid records and were left out)",
                   err=True)
