"""Incidents as the topics tell them: a pure fold of decisions, approvals, verifications and alerts.

What ``backout incident list`` / ``show`` print and what ``backout approve`` checks before it
answers. It is a reader's view, from the records alone: the approval gate
(:mod:`actions.gate`) decides, and says what it decided in the verifications and alerts
it publishes, which this view shows as they are. Its status comes from the most telling
record: a verification (executing, executed, verified, not_recovered, failed), else the
first answer (approved, denied), else the decisions (escalated, rollback decided,
awaiting approval; a question older than the approval timeout is shown as timed out, as
the gate will have escalated it). Records whose incident has no decision (alerts about
shifts that blamed no deploy) are not incidents.

>>> from backout.contracts import Approval, Decision
>>> d = Decision(ts=100.0, incident_id="inc-1", service="checkout", action="request_approval",
...              from_version="v2", to_version="v1", confidence=0.7, reason="Error rate 2x.")
>>> view = fold([(d, 3), (Approval(ts=160.0, incident_id="inc-1", approved=True, by="alice"), 3)])
>>> inc = view["inc-1"]
>>> inc.status(now_ts=200.0, approval_timeout_s=900.0), inc.partition, inc.is_open(200.0, 900.0)
('approved', 3, True)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from backout.contracts import Alert, Approval, Decision, Record, Verification
from detectors import wording

CLOSED = ("verified", "not_recovered", "failed", "denied", "escalated", "timed out")
RANK = {"executing": 1, "executed": 2, "failed": 3, "verified": 3, "not_recovered": 3}


@dataclass(frozen=True)
class Step:
    """One line of an incident's timeline."""

    ts: float
    what: str  # "decision rollback", "approval", "verification executed", "alert warning"…
    text: str


@dataclass
class Incident:
    """One incident as its records tell it."""

    incident_id: str
    service: str = ""
    partition: int | None = None  # of its decisions on the actions topic
    opened_ts: float = 0.0
    actions: list[str] = field(default_factory=list)
    from_version: str | None = None
    to_version: str | None = None
    asked_ts: float | None = None  # when approval was requested
    answer: Approval | None = None  # the first answer counts
    verification: Verification | None = None  # the furthest step
    steps: list[Step] = field(default_factory=list)

    @property
    def last_ts(self) -> float:
        return max((s.ts for s in self.steps), default=self.opened_ts)

    def status(self, now_ts: float, approval_timeout_s: float) -> str:
        if self.verification is not None:
            return self.verification.status
        if self.answer is not None:
            return "approved" if self.answer.approved else "denied"
        if "rollback" in self.actions:
            return "rollback decided"
        if "request_approval" in self.actions and self.asked_ts is not None:
            return "timed out" if now_ts - self.asked_ts >= approval_timeout_s else "awaiting approval"
        return "escalated"

    def is_open(self, now_ts: float, approval_timeout_s: float) -> bool:
        return self.status(now_ts, approval_timeout_s) not in CLOSED


def fold(records: Iterable[tuple[Record, int | None]]) -> dict[str, Incident]:
    """Incidents by id from ``(record, partition)`` pairs, in any order across topics (each step
    keeps its own ts; timelines are sorted by it); only incidents with a decision."""
    incidents: dict[str, Incident] = {}
    alerts: list[Alert] = []
    for record, partition in records:
        if isinstance(record, Alert):
            alerts.append(record)
            continue
        key = getattr(record, "incident_id", None)
        if not isinstance(key, str):
            continue
        inc = incidents.setdefault(key, Incident(key))
        if isinstance(record, Decision):
            _decision(inc, record, partition)
        elif isinstance(record, Approval):
            if inc.answer is None or record.ts < inc.answer.ts:
                inc.answer = record
            verb = "approved" if record.approved else "denied"
            inc.steps.append(Step(record.ts, "approval", f"{verb} by {record.by}"))
        elif isinstance(record, Verification):
            if inc.verification is None or RANK[record.status] > RANK[inc.verification.status]:
                inc.verification = record
            inc.steps.append(Step(record.ts, f"verification {record.status}", record.detail))
    for alert in alerts:
        told = incidents.get(alert.incident_id or "")
        if told is not None and all(alert.text != s.text for s in told.steps):  # the decider repeats its reason
            told.steps.append(Step(alert.ts, f"alert {alert.severity}", alert.text))
    decided = {k: inc for k, inc in incidents.items() if inc.actions}
    for inc in decided.values():
        inc.steps.sort(key=lambda s: s.ts)
    return decided


def _decision(inc: Incident, d: Decision, partition: int | None) -> None:
    if d.action in inc.actions:
        return  # a redelivery
    first = not inc.actions
    inc.actions.append(d.action)
    inc.service = d.service
    if partition is not None:
        inc.partition = partition
    if first or d.ts < inc.opened_ts:
        inc.opened_ts = d.ts
    if d.action == "request_approval":
        inc.asked_ts = d.ts
    if d.to_version is not None:
        inc.from_version, inc.to_version = d.from_version, d.to_version
    inc.steps.append(Step(d.ts, f"decision {d.action.replace('_', ' ')}", d.reason))


def refusal(inc: Incident, approved: bool, by: str, now_ts: float, approval_timeout_s: float) -> str | None:
    """Why the gate would ignore this answer (the same reasons it gives), or None: it counts."""
    status = inc.status(now_ts, approval_timeout_s)
    if inc.answer is not None:
        why = wording.why_answered(inc.answer.approved, inc.answer.by)
    elif status in RANK:
        why = wording.why_ran(str(inc.to_version), None)
    elif status == "timed out":
        assert inc.asked_ts is not None
        why = wording.why_timed_out(now_ts - inc.asked_ts - approval_timeout_s)
    elif status == "escalated":
        why = wording.why_escalated()
    else:
        return None
    return wording.answer_refused(approved, by, inc.incident_id, why)
