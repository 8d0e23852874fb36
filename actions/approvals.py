"""Answering the approval gate, and reading incidents back: ``backout approve`` / ``deny`` and
``backout incident list`` / ``show``.

:func:`answer` is the one way an approval or a denial reaches ``backout.approvals``: every front
end that lets someone answer (the CLI here, the MCP server, the web page, the executor's web
endpoints) calls it, so an answer has one shape, one set of checks and one destination.

Where an approval goes. The executor's state is keyed by service (:mod:`actions.gate`), as
``backout.actions`` is, so the replica that owns a service's partition of the actions topic owns
its incidents; an approval must reach that replica. It goes to the *same partition number* of
``backout.approvals`` as its incident's decisions on ``backout.actions`` (found by reading the
actions topic, which also refuses an unknown incident), keyed by the service. Every producer of
Backout's hashes keys with murmur2 (``KafkaSettings.producer``), so the key alone would agree; the
partition is named anyway, so that an answer follows its decision whichever client produced it.
It needs both topics to have as many partitions, which ``backout topics create`` gives them, and
is checked.

The checks, in order: the incident id and the name of who answers (:func:`check_incident`,
:func:`check_by`), before anything is read; then the topics are folded into timelines
(:class:`detectors.incident.IncidentFold`) and an answer the gate would ignore is refused with the
gate's own reason (:meth:`~detectors.incident.IncidentTimeline.refusal`): the incident was answered
already (the first answer counts), its rollback already ran, it was escalated, or its question
timed out.

>>> check_incident("inc-0123456789abcdef"), check_by("alice@example.com")
('inc-0123456789abcdef', 'alice@example.com')
>>> check_incident("inc-1; rm -rf /")
Traceback (most recent call last):
...
backout.errors.ContractError: incident 'inc-1; rm -rf /' is not an incident id: letters, digits, '.', '_', ':' and '-', at most 128
"""

from __future__ import annotations

import getpass
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from backout.contracts import Approval, encode
from backout.errors import AnswerRefused, BrokerError, ConfigError, ContractError, UnknownIncident
from backout.settings import KafkaSettings
from detectors import wording
from detectors.incident import IncidentFold, IncidentTimeline
from streams import topics

APPROVAL_TIMEOUT_S = 900.0  # the gate's default (actions.gate.GateSettings)
INCIDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
BY = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@+-]{0,63}")
VIA = re.compile(r"[a-z]{1,16}")


def check_incident(value: str) -> str:
    if not INCIDENT_ID.fullmatch(value):
        raise ContractError(f"incident {value[:80]!r} is not an incident id: letters, digits, '.', '_', ':' "
                            "and '-', at most 128")
    return value


def check_by(value: str) -> str:
    if not BY.fullmatch(value):
        raise ContractError(f"by {value[:80]!r} is not a name: letters, digits, spaces and '._@+-', at most 64")
    return value


@dataclass(frozen=True)
class IncidentTopics:
    """The topics incidents are read from and approvals sent to (tests use their own)."""

    actions: str = topics.ACTIONS
    approvals: str = topics.APPROVALS
    verifications: str = topics.VERIFICATIONS
    alerts: str = topics.ALERTS
    deploys: str = topics.DEPLOYS
    anomalies: str = topics.ANOMALIES
    metrics: str = topics.METRICS  # read for plots only

    @classmethod
    def of(cls, names: Mapping[str, str]) -> IncidentTopics:
        """From a map of Backout's topic names to the names they have on this broker."""
        return cls(*(names.get(default, default) for default in cls().names()))

    def names(self) -> dict[str, str]:
        """Backout's topic name -> the name it has here."""
        return {topics.ACTIONS: self.actions, topics.APPROVALS: self.approvals,
                topics.VERIFICATIONS: self.verifications, topics.ALERTS: self.alerts,
                topics.DEPLOYS: self.deploys, topics.ANOMALIES: self.anomalies, topics.METRICS: self.metrics}


@dataclass
class Reading:
    """The topics folded into incidents, and how many records could not be read."""

    fold: IncidentFold
    unreadable: int


def read(kafka: KafkaSettings, where: IncidentTopics, approval_timeout_s: float = APPROVAL_TIMEOUT_S,
         samples: bool = False) -> Reading:
    """Every incident on the topics, each read to the end it had when called (``samples``: with the
    metric samples around them, for plots)."""
    from streams.incidents import fold_topics

    unreadable = 0

    def count(where: str, reason: str) -> None:  # not ours to dead-letter: its consumer did, or will
        nonlocal unreadable
        unreadable += 1

    fold = IncidentFold(approval_timeout_s=approval_timeout_s)
    fold_topics(fold, kafka, where.names(), count, samples)
    return Reading(fold, unreadable)


def incident_timeline(fold: IncidentFold, incident_id: str, topic: str, now_ts: float) -> IncidentTimeline:
    """The timeline of an incident Backout decided about (by its exact id), else :class:`UnknownIncident`."""
    t = fold.timeline(incident_id, now_ts) if incident_id in fold.incident_ids() else None
    if t is None or not t.decisions or t.partition is None:
        raise UnknownIncident(wording.unknown_incident(incident_id, topic))
    return t


def answer(kafka: KafkaSettings, where: IncidentTopics, incident_id: str, approved: bool, by: str, *,
           via: str | None = None, approval_timeout_s: float = APPROVAL_TIMEOUT_S,
           now_ts: float | None = None) -> tuple[Approval, int]:
    """Send one approval (or denial) to the partition of its incident; (the record, that partition).

    ``via`` names the front end ('mcp', 'web'): the record says ``"alice via web"``.
    """
    from streams.admin import AdminClient, existing_topics
    from streams.kafka import sender

    check_incident(incident_id)
    who = check_by(by)
    if via is not None:
        if not VIA.fullmatch(via):
            raise ValueError(f"via {via!r}: a front end's name, 1-16 lowercase letters")
        who = f"{who} via {via}"
    counts = existing_topics(AdminClient(kafka.confluent()))
    for name in (where.actions, where.approvals):
        if name not in counts:
            raise ConfigError(f"topic {name} does not exist; create Backout's topics with `backout topics create`")
    if counts[where.actions] != counts[where.approvals]:
        raise ConfigError(f"{where.approvals} has {counts[where.approvals]} partitions and {where.actions} "
                          f"{counts[where.actions]}: they must have as many, so that an approval reaches the "
                          "executor that owns its incident")
    now = time.time() if now_ts is None else now_ts
    t = incident_timeline(read(kafka, where, approval_timeout_s).fold, incident_id, where.actions, now)
    assert t.service is not None and t.partition is not None  # a decision names both
    why = t.refusal(approved, who)
    if why is not None:
        raise AnswerRefused(why)
    record = Approval(ts=now, incident_id=incident_id, approved=approved, by=who, service=t.service)
    refused: list[str] = []
    out = sender(kafka, **{"enable.idempotence": True})
    out.on_refused = refused.append
    out.send(where.approvals, encode(record), t.service.encode(), partition=t.partition,
             timestamp_ms=int(now * 1000))
    out.flush(30.0)
    if refused:
        raise BrokerError(f"{where.approvals} refused the approval; nothing was sent")
    return record, t.partition


# -- the commands ------------------------------------------------------------------------------


def _by(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    try:
        return check_by(value if value is not None else getpass.getuser())
    except ContractError as exc:
        raise click.BadParameter(str(exc)) from None


_BY = click.option("--by", callback=_by, metavar="NAME",
                   help="Who answers (default: your login name); it is shown in every alert.")
_TIMEOUT = click.option("--approval-timeout-s", default=APPROVAL_TIMEOUT_S, show_default=True,
                        envvar="BACKOUT_APPROVAL_TIMEOUT_S", type=click.FloatRange(min=1.0),
                        help="The executor's approval timeout: a question older than this was escalated.")


def _where(ctx: click.Context) -> IncidentTopics:
    return ctx.find_object(IncidentTopics) or IncidentTopics()


def _answer(ctx: click.Context, incident_id: str, approved: bool, by: str, approval_timeout_s: float) -> None:
    where = _where(ctx)
    record, partition = answer(KafkaSettings(), where, incident_id, approved, by,
                               approval_timeout_s=approval_timeout_s)
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


@click.command("list")
@click.option("--since-hours", default=24.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Also show incidents closed this recently.")
@click.option("--all", "show_all", is_flag=True, help="Every incident on the topics.")
@_TIMEOUT
@click.pass_context
def incident_list(ctx: click.Context, since_hours: float, show_all: bool, approval_timeout_s: float) -> None:
    """Open incidents, then the recently closed ones, newest first."""
    from rich.table import Table

    reading = read(KafkaSettings(), _where(ctx), approval_timeout_s)
    now = time.time()
    decided = [t for t in reading.fold.timelines(now) if t.decisions]  # an alert alone is no incident
    rows = sorted(decided, key=lambda t: (not t.is_open, -t.decisions[0].ts))
    shown = [t for t in rows if show_all or t.is_open or _last_ts(t) >= now - since_hours * 3600]
    table = Table("incident", "service", "status", "rollback", "opened", "latest", title=(
        f"{sum(t.is_open for t in shown)} open, {sum(not t.is_open for t in shown)} closed"))
    for t in shown:
        table.add_row(t.incident_id, t.service or "", _status(t), _versions(t), _when(t.decisions[0].ts),
                      t.steps[-1].text if t.steps else "")
    _print(table, reading)


@click.command("show")
@click.argument("incident_id", metavar="ID")
@_TIMEOUT
@click.pass_context
def incident_show(ctx: click.Context, incident_id: str, approval_timeout_s: float) -> None:
    """The timeline of one incident, with the numbers before and after its rollback."""
    from rich.table import Table

    where = _where(ctx)
    reading = read(KafkaSettings(), where, approval_timeout_s)
    t = incident_timeline(reading.fold, incident_id, where.actions, time.time())
    table = Table("time (UTC)", "step", "what happened",
                  title=f"{t.incident_id} · {t.service} · {_status(t)} · {_versions(t)}")
    reasons = {d.reason for d in t.decisions}  # the decider's alert repeats its reason
    rows = [(s.ts, _label(s.kind, s.action), s.text) for s in t.steps]
    rows += [(a.ts, f"alert {a.severity}", a.text) for a in t.alerts if a.text not in reasons]
    for ts, label, text in sorted(rows, key=lambda r: r[0]):
        table.add_row(_when(ts), label, text)
    if t.recovery is not None and t.recovery.before:
        v = t.recovery
        numbers = "; ".join(f"{wording.label(m)} {wording.value(m, before)} → "
                            f"{wording.value(m, v.after[m]) if m in v.after else 'no samples'}"
                            for m, before in v.before.items())
        table.caption = f"before / after the rollback: {numbers}"
    _print(table, reading)


def _label(kind: str, action: str | None) -> str:
    if kind == "decision" and action is not None:
        return f"decision {action.replace('_', ' ')}"
    if kind in ("executing", "executed", "failed", "verified", "not_recovered"):
        return f"verification {kind}"
    return kind


def _status(t: IncidentTimeline) -> str:
    colour = {"verified": "green", "awaiting_approval": "yellow", "executing": "yellow", "executed": "yellow",
              "not_recovered": "red", "failed": "red", "timed_out": "red"}.get(t.status)
    status = t.status.replace("_", " ")
    return f"[{colour}]{status}[/{colour}]" if colour else status


def _versions(t: IncidentTimeline) -> str:
    chosen = t.rollback if t.rollback is not None and t.rollback.to_version else (
        t.decisions[-1] if t.decisions else None)
    if chosen is None or chosen.to_version is None:
        return "none"
    return f"{chosen.from_version or '?'} → {chosen.to_version}"


def _last_ts(t: IncidentTimeline) -> float:
    return max([s.ts for s in t.steps] + [a.ts for a in t.alerts], default=t.as_of_ts)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print(table: Any, reading: Reading) -> None:
    from rich.console import Console

    console = Console(soft_wrap=False)
    console.print(table)
    if reading.unreadable:
        click.echo(f"({reading.unreadable} records on these topics are not valid records and were left out)",
                   err=True)
