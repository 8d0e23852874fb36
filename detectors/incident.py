"""The post-incident timeline: a pure fold from the records on the topics.

An incident is what the decider names with an ``incident_id``: "this deploy
broke this service". Everything an on-call engineer asks afterwards is on the
topics already — the deploy, the metric samples, the anomaly and its onset,
the decision and its sentence, the answer to the question, the rollback's
``executing`` / ``executed`` / ``failed`` and the verifier's ``verified`` /
``not_recovered`` — so the timeline is folded from those records and nothing
else:

* records come in any order (they live on seven topics and partitions) and
  redeliveries are deduped, each kind on the key its producer makes unique:
  a decision on ``(incident_id, action)`` (a question upgraded to a rollback
  is a second decision of the same incident), a metric sample on
  ``(service, metric, ts)``, an anomaly on its onset and detection;
* the timeline is computed from what was folded, never from arrival order, so
  any permutation of the same records gives the same timeline;
* "now" is the latest event time seen (an unanswered question has timed out
  only if the records show that much time passed), or a later ``now_ts`` a
  front end passes in (its wall clock, as the gate's ticks are); never read here.

It is also what the front ends that answer a question check first
(``backout approve`` / ``deny``, the MCP server, the web page): a timeline reads
its incident's state as the approval gate (:mod:`actions.gate`) decides it —
the first answer in time counts, a denial is final, a question times out
``approval_timeout_s`` after it was asked, a started rollback supersedes it —
and :meth:`IncidentTimeline.refusal` gives the gate's own reason for an answer
that would change nothing. The partition a decision was read from is kept, so
that an answer can be sent to the same partition of ``backout.approvals``.

Metric samples are the only voluminous input: :meth:`IncidentFold.wants`
tells a reader which samples can matter (near an incident of their service),
so a front end folds the small topics first and then only those samples.

>>> from backout.contracts import Decision, Deploy, Verification
>>> fold = IncidentFold()
>>> for r in [Verification(ts=1130, incident_id="inc-1", status="executed"),
...           Decision(ts=1090, incident_id="inc-1", service="checkout", deploy_id="d-17",
...                    action="rollback", from_version="v2", to_version="v1", confidence=0.9,
...                    reason="Error rate went from 0.5% to 5% (10x)."),
...           Deploy(ts=1000, service="checkout", deploy_id="d-17", version="v2", previous_version="v1"),
...           Verification(ts=1250, incident_id="inc-1", status="verified")]:
...     _ = fold.add(r)
>>> t = fold.timeline("inc-1")
>>> t.status, t.durations.deploy_to_decision_s, t.durations.deploy_to_verified_s
('verified', 90.0, 250.0)
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from backout.contracts import (
    Alert,
    Anomaly,
    Approval,
    Decision,
    Deploy,
    Metric,
    Record,
    Target,
    Verification,
)
from backout.errors import UnknownIncident
from detectors import wording

IncidentStatus = Literal["verified", "not_recovered", "failed", "executed", "executing", "decided",
                         "approved", "denied", "timed_out", "awaiting_approval", "escalated", "alerted"]
OPEN: tuple[IncidentStatus, ...] = ("executing", "executed", "decided", "approved", "awaiting_approval")
RAN: tuple[IncidentStatus, ...] = ("executing", "executed", "failed", "verified", "not_recovered")
StepKind = Literal["deploy", "degradation", "decision", "approval", "timeout", "superseded", "executing",
                   "executed", "failed", "verified", "not_recovered"]

Folded = Deploy | Anomaly | Decision | Approval | Verification | Alert
_FOLDED: TypeAdapter[Any] = TypeAdapter(Annotated[Folded, Field(discriminator="type")])


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class Sample(_Model):
    ts: float
    value: float
    count: float | None = None


class DeployInfo(_Model):
    """The blamed deploy; ``seen`` is false when only the decision's evidence names it."""

    deploy_id: str
    version: str
    previous_version: str | None
    ts: float
    finished_ts: float | None = None
    target: dict[str, Any] | None = None
    seen: bool = True
    text: str


class Moved(_Model):
    """One metric the deploy moved: its baseline, its worst value after the onset, and when."""

    metric: str
    direction: Literal["up", "down"]
    baseline: float
    peak: float
    peak_ts: float
    onset_ts: float
    detected_ts: float
    detector: str
    text: str


class Degradation(_Model):
    """The first metric to move: its onset, and the samples just before and after it."""

    metric: str
    onset_ts: float
    detected_ts: float
    detector: str
    samples: list[Sample]
    text: str


class DecisionInfo(_Model):
    ts: float
    action: str
    confidence: float
    reason: str
    from_version: str | None
    to_version: str | None
    upgrade: bool  # a rollback that superseded this incident's question
    text: str
    evidence: list[dict[str, Any]] = Field(default_factory=list)  # the decider's, as published


class Answer(_Model):
    ts: float
    approved: bool
    by: str
    text: str


class RollbackInfo(_Model):
    target: dict[str, Any] | None
    target_text: str | None
    from_version: str | None
    to_version: str | None
    executing_ts: float | None = None
    executed_ts: float | None = None
    failed_ts: float | None = None
    detail: str = ""


class RecoveryInfo(_Model):
    status: Literal["verified", "not_recovered"]
    ts: float
    detail: str
    before: dict[str, float]
    after: dict[str, float]
    text: str


class Step(_Model):
    ts: float
    kind: StepKind
    text: str
    action: str | None = None  # of a decision step


class AlertInfo(_Model):
    ts: float
    severity: str
    text: str


class Durations(_Model):
    """Seconds between the steps, in event time; ``None`` where a step did not happen."""

    deploy_to_decision_s: float | None = None
    question_to_answer_s: float | None = None
    decision_to_executed_s: float | None = None
    executed_to_verified_s: float | None = None
    deploy_to_executed_s: float | None = None
    deploy_to_verified_s: float | None = None


class IncidentTimeline(_Model):
    """Everything the report says about one incident; JSON as it is."""

    incident_id: str
    service: str | None
    partition: int | None = Field(description="of its decisions on the actions topic; None: not read there")
    status: IncidentStatus
    headline: str
    deploy: DeployInfo | None
    degradation: Degradation | None
    pattern: list[Moved]
    decisions: list[DecisionInfo]
    answers: list[Answer]
    answer: Answer | None = Field(description="the answer that counts: the first one in time, before the "
                                              "rollback started (the gate ignores the others)")
    question_due_ts: float | None = Field(description="when an unanswered question times out")
    timed_out: bool
    rollback: RollbackInfo | None
    recovery: RecoveryInfo | None
    durations: Durations
    steps: list[Step]
    alerts: list[AlertInfo]
    as_of_ts: float  # the latest event time the fold had seen, or the later now_ts it was asked at

    @property
    def is_open(self) -> bool:
        """Backout may still act on it, or a person still answer it."""
        return self.status in OPEN

    def refusal(self, approved: bool, by: str) -> str | None:
        """Why the approval gate would ignore this answer now, in the gate's own words
        (:mod:`actions.gate`), or None: it counts. An approval the gate has acted on before the
        topics show it is refused as answered: the first answer counts, whatever came of it."""
        if self.status in RAN:
            to_version = self.rollback.to_version if self.rollback is not None else None
            approver = self.answer.by if self.answer is not None and self.answer.approved else None
            why = wording.why_ran(str(to_version), approver)
        elif self.timed_out and self.question_due_ts is not None:
            why = wording.why_timed_out(self.as_of_ts - self.question_due_ts)
        elif self.answer is not None:
            why = wording.why_answered(self.answer.approved, self.answer.by)
        elif self.status == "escalated":
            why = wording.why_escalated()
        else:
            return None
        return wording.answer_refused(approved, by, self.incident_id, why)


class IncidentFold:
    """Records in, in any order; one :class:`IncidentTimeline` per incident out.

    ``approval_timeout_s`` is the gate's (an unanswered question is shown as
    timed out once the records reach that much later); ``context_s`` is how
    much metric history around an incident :meth:`wants` keeps;
    ``samples_around`` how many samples either side of the onset the report shows;
    ``peak_samples`` how many consecutive samples the worst value is the median of,
    so that a spike does not speak for the incident.
    """

    def __init__(self, approval_timeout_s: float = 900.0, context_s: float = 600.0,
                 samples_around: int = 5, peak_samples: int = 5) -> None:
        if approval_timeout_s <= 0 or context_s < 0 or samples_around < 1 or peak_samples < 1:
            raise ValueError("approval_timeout_s must be > 0, context_s >= 0, samples_around >= 1 and "
                             f"peak_samples >= 1; got {approval_timeout_s}, {context_s}, {samples_around}, "
                             f"{peak_samples}")
        self.approval_timeout_s = approval_timeout_s
        self.context_s = context_s
        self.samples_around = samples_around
        self.peak_samples = peak_samples
        self._records: dict[tuple[Any, ...], Folded] = {}
        self._samples: dict[tuple[str, str], dict[float, tuple[float, float | None]]] = {}
        self._partitions: dict[str, int] = {}  # incident -> partition of its decisions
        self._now = 0.0
        self._windows: dict[str, list[tuple[float, float]]] | None = None

    # -- folding ---------------------------------------------------------------------

    def add(self, record: Record, partition: int | None = None) -> bool:
        """Fold one record (``partition``: the one it was read from); ``False`` for a redelivery or a
        kind the timeline does not use."""
        if isinstance(record, Decision) and partition is not None:
            self._partitions[record.incident_id] = partition
        if isinstance(record, Metric):
            samples = self._samples.setdefault((record.service, record.metric), {})
            if record.ts in samples:
                return False
            samples[record.ts] = (record.value, record.count)
        elif isinstance(record, Folded):
            key = _key(record)
            if key in self._records:
                return False
            self._records[key] = record
            self._windows = None
        else:
            return False  # watermarks: internal to the worker
        self._now = max(self._now, record.ts)
        return True

    def add_all(self, records: Iterable[Record]) -> int:
        return sum(self.add(r) for r in records)

    def wants(self, sample: Metric) -> bool:
        """Whether a sample can appear in a timeline: within ``context_s`` of an incident of its service."""
        if self._windows is None:
            self._windows = {}
            for incident in self.incident_ids():
                records = self._of(incident)
                decisions = [r for r in records if isinstance(r, Decision)]
                if not decisions:
                    continue
                deploy = self._deploy(decisions)
                start = min([r.ts for r in records] + ([deploy.ts] if deploy else []))
                end = max(r.ts for r in records)
                self._windows.setdefault(decisions[0].service, []).append(
                    (start - self.context_s, end + self.context_s))
        return any(a <= sample.ts <= b for a, b in self._windows.get(sample.service, ()))

    # -- questions -------------------------------------------------------------------

    def incident_ids(self) -> list[str]:
        """Incidents a decision, an answer or a verification names, oldest first."""
        first: dict[str, float] = {}
        for r in self._records.values():
            if isinstance(r, Decision | Approval | Verification):
                first[r.incident_id] = min(first.get(r.incident_id, r.ts), r.ts)
        return sorted(first, key=lambda i: (first[i], i))

    def resolve(self, wanted: str) -> str:
        """The incident ``wanted`` names: its id, or a prefix of exactly one id."""
        ids = self.incident_ids()
        if wanted in ids:
            return wanted
        matches = [i for i in ids if i.startswith(wanted)]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(ids[-5:]) or "none"
        if matches:
            raise UnknownIncident(f"incident {wanted!r} is ambiguous: it starts {len(matches)} ids "
                                  f"({', '.join(matches[:5])}); give more of it")
        raise UnknownIncident(f"no incident {wanted!r} in the records read (latest: {known})")

    def series(self, service: str, metric: str, from_ts: float = float("-inf"),
               to_ts: float = float("inf")) -> list[Sample]:
        """The folded samples of one metric between two event times, in time order."""
        samples = self._samples.get((service, metric), {})
        return [Sample(ts=ts, value=v, count=c) for ts, (v, c) in sorted(samples.items())
                if from_ts <= ts <= to_ts]

    def timelines(self, now_ts: float | None = None) -> list[IncidentTimeline]:
        return [self.timeline(i, now_ts) for i in self.incident_ids()]

    def timeline(self, incident_id: str, now_ts: float | None = None) -> IncidentTimeline:
        """The timeline of one incident (an id or a unique prefix of one), as of the latest event
        time or ``now_ts`` if later (a front end's clock: a question unanswered by then timed out)."""
        incident_id = self.resolve(incident_id)
        now = self._now if now_ts is None else max(self._now, now_ts)
        records = self._of(incident_id)
        decisions = sorted((r for r in records if isinstance(r, Decision)), key=lambda d: (d.ts, d.action))
        answers = sorted((r for r in records if isinstance(r, Approval)), key=lambda a: (a.ts, a.by))
        checks = sorted((r for r in records if isinstance(r, Verification)), key=lambda v: v.ts)
        alerts = sorted((r for r in records if isinstance(r, Alert)), key=lambda a: (a.ts, a.text))
        service = decisions[0].service if decisions else None
        deploy = self._deploy(decisions)
        first_of = {status: next((v for v in checks if v.status == status), None)
                    for status in ("executing", "executed", "failed")}
        outcome = next((v for v in checks if v.status in ("verified", "not_recovered")), None)
        end_ts = outcome.ts if outcome is not None else now
        pattern = self._pattern(service, decisions, end_ts) if service else []
        degradation = self._degradation(service, pattern, deploy) if service and pattern else None

        question = next((d for d in decisions if d.action == "request_approval"), None)
        rollback_decision = next((d for d in decisions if d.action == "rollback"), None)
        acted_ts = min([x.ts for x in (rollback_decision, first_of["executing"]) if x is not None], default=None)
        due_ts = question.ts + self.approval_timeout_s if question is not None else None
        started = first_of["executing"]
        answer = next((a for a in answers if (due_ts is None or a.ts <= due_ts)
                       and (started is None or a.ts <= started.ts)), None)  # the one the gate counts
        timed_out = (due_ts is not None and now >= due_ts and answer is None
                     and (acted_ts is None or acted_ts > due_ts))
        if answer is not None and not answer.approved:
            acting = None  # a denial is final
        else:
            acting = rollback_decision or (question if answer is not None else None)
        rollback = self._rollback(decisions, acting, deploy, first_of) if checks or acting else None
        recovery = _recovery(outcome, pattern, rollback) if outcome is not None else None

        status = _status(decisions, answer, timed_out, rollback, recovery)
        durations = _durations(deploy, decisions, question, answer, acting, rollback, recovery)
        steps = _steps(service, deploy, degradation, decisions, answers, question, rollback_decision,
                       timed_out, self.approval_timeout_s, rollback, recovery,
                       self._later_deploys(service, deploy, end_ts))
        worst = pattern[0] if pattern else None
        what = (f"{wording.label(worst.metric).lower()} {wording.value(worst.metric, worst.baseline)} → "
                f"{wording.value(worst.metric, worst.peak)}" if worst else None)
        to_version = rollback.to_version if rollback else (decisions[-1].to_version if decisions else None)
        headline = wording.headline(service or "the service", deploy.version if deploy else None, what, status,
                                    to_version, answer.by if answer else None, durations.deploy_to_executed_s,
                                    durations.deploy_to_verified_s, self.approval_timeout_s)
        told = {id(a): Answer(ts=a.ts, approved=a.approved, by=a.by,
                              text=wording.answered(a.approved, a.by, a.ts - question.ts if question else None))
                for a in answers}
        return IncidentTimeline(
            incident_id=incident_id, service=service, partition=self._partitions.get(incident_id),
            status=status, headline=headline, deploy=deploy, degradation=degradation, pattern=pattern,
            decisions=[_decision_info(d, question) for d in decisions],
            answers=list(told.values()), answer=told[id(answer)] if answer is not None else None,
            question_due_ts=due_ts, timed_out=timed_out, rollback=rollback, recovery=recovery,
            durations=durations, steps=steps,
            alerts=[AlertInfo(ts=a.ts, severity=a.severity, text=a.text) for a in alerts],
            as_of_ts=now)

    # -- state -----------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """JSON-serialisable: the folded records as on the topics, samples as ``[ts, value, count]``."""
        metrics: dict[str, dict[str, list[list[float | None]]]] = {}
        for (service, metric), samples in sorted(self._samples.items()):
            metrics.setdefault(service, {})[metric] = [[ts, v, c] for ts, (v, c) in sorted(samples.items())]
        return {"v": 1, "now": self._now,
                "records": [r.model_dump(mode="json") for r in self._records.values()],
                "metrics": metrics, "partitions": dict(self._partitions)}

    @classmethod
    def from_state(cls, state: dict[str, Any], approval_timeout_s: float = 900.0, context_s: float = 600.0,
                   samples_around: int = 5, peak_samples: int = 5) -> IncidentFold:
        fold = cls(approval_timeout_s, context_s, samples_around, peak_samples)
        for data in state["records"]:
            record = _FOLDED.validate_python(data)
            fold._records[_key(record)] = record
        for service, by_metric in state["metrics"].items():
            for metric, rows in by_metric.items():
                fold._samples[(service, metric)] = {float(ts): (float(v), c) for ts, v, c in rows}
        fold._now = float(state["now"])
        fold._partitions = {str(k): int(v) for k, v in state["partitions"].items()}
        return fold

    # -- parts of a timeline -----------------------------------------------------------

    def _of(self, incident_id: str) -> list[Folded]:
        return [r for r in self._records.values() if getattr(r, "incident_id", None) == incident_id]

    def _deploy(self, decisions: list[Decision]) -> DeployInfo | None:
        """The blamed deploy: its first record (a rollout starts there), else the decision's evidence."""
        deploy_id = next((d.deploy_id for d in decisions if d.deploy_id), None)
        if deploy_id is None:
            return None
        service = decisions[0].service
        records = sorted((r for r in self._records.values() if isinstance(r, Deploy)
                          and r.deploy_id == deploy_id and r.service == service), key=lambda r: r.ts)
        target_of = next((d.target for d in decisions if d.target is not None), None)
        if records:
            first = records[0]
            finished = next((r.ts for r in records if r.status == "finished" and r.ts > first.ts), None)
            target = next((r.target for r in records if r.target is not None), target_of)
            return DeployInfo(deploy_id=deploy_id, version=first.version, previous_version=first.previous_version,
                              ts=first.ts, finished_ts=finished, target=_target_dict(target),
                              text=wording.deployed(first.version, service, first.previous_version,
                                                    _target_text(target)))
        for d in decisions:
            for e in d.evidence:
                if e.get("kind") == "deploy" and e.get("deploy_id") == deploy_id:
                    version = str(e.get("version") or d.from_version or "?")
                    previous = e.get("previous_version")
                    return DeployInfo(deploy_id=deploy_id, version=version, previous_version=previous,
                                      ts=float(e["ts"]), target=_target_dict(target_of), seen=False,
                                      text=wording.deployed(version, service, previous, _target_text(target_of)))
        return None

    def _pattern(self, service: str, decisions: list[Decision], end_ts: float) -> list[Moved]:
        """The metrics the decisions blamed (their evidence), worst first; anomalies if none is named."""
        shifts: dict[str, dict[str, Any]] = {}
        for d in decisions:
            for e in d.evidence:
                if e.get("kind") == "anomaly" and e.get("service", service) == service and "metric" in e:
                    _merge(shifts, e)
        if not shifts:
            last = decisions[-1].ts if decisions else end_ts
            for r in self._records.values():
                if isinstance(r, Anomaly) and r.service == service and r.detected_ts <= last:
                    _merge(shifts, r.model_dump())
        moved = []
        for metric, s in shifts.items():
            baseline, current = float(s["baseline"]), float(s["current"])
            direction: Literal["up", "down"] = "down" if current < baseline else "up"
            onset, detected = float(s["onset_ts"]), float(s["detected_ts"])
            peak, peak_ts = current, detected
            worst = _worst(self.series(service, metric, onset, max(end_ts, detected)), direction,
                           self.peak_samples)
            if worst is not None and (worst[0] > peak if direction == "up" else worst[0] < peak):
                peak, peak_ts = worst
            moved.append(Moved(metric=metric, direction=direction, baseline=baseline, peak=peak, peak_ts=peak_ts,
                               onset_ts=onset, detected_ts=detected, detector=str(s.get("detector", "?")),
                               text=wording.worst(metric, baseline, peak, direction, peak_ts - onset)))
        return sorted(moved, key=lambda m: (-_factor(m), m.onset_ts, m.metric))

    def _degradation(self, service: str, pattern: list[Moved], deploy: DeployInfo | None) -> Degradation:
        first = min(pattern, key=lambda m: (m.onset_ts, m.metric))
        series = self.series(service, first.metric)
        cut = bisect.bisect_left([s.ts for s in series], first.onset_ts)
        around = series[max(0, cut - self.samples_around):cut + self.samples_around]
        lag_s = first.onset_ts - deploy.ts if deploy else 0.0
        return Degradation(metric=first.metric, onset_ts=first.onset_ts, detected_ts=first.detected_ts,
                           detector=first.detector, samples=around,
                           text=wording.began(first.metric, first.direction, lag_s, first.detector,
                                              first.detected_ts - first.onset_ts))

    def _rollback(self, decisions: list[Decision], acting: Decision | None, deploy: DeployInfo | None,
                  first_of: dict[str, Verification | None]) -> RollbackInfo:
        chosen = acting or next((d for d in reversed(decisions) if d.to_version), None)
        target = next((d.target for d in ([chosen] if chosen else []) + decisions if d.target is not None), None)
        target_dict = _target_dict(target) or (deploy.target if deploy else None)
        executed, failed = first_of["executed"], first_of["failed"]
        return RollbackInfo(
            target=target_dict,
            target_text=_target_text(Target(**target_dict)) if target_dict else None,
            from_version=chosen.from_version if chosen else None,
            to_version=chosen.to_version if chosen else None,
            executing_ts=first_of["executing"].ts if first_of["executing"] else None,
            executed_ts=executed.ts if executed else None,
            failed_ts=failed.ts if failed and not executed else None,
            detail=next((v.detail for v in (executed, failed, first_of["executing"]) if v is not None), ""))

    def _later_deploys(self, service: str | None, deploy: DeployInfo | None, end_ts: float) -> list[Deploy]:
        """Deploys of the service after the blamed one, up to the end: a rollback as the deploy system saw it."""
        if service is None or deploy is None:
            return []
        later = [r for r in self._records.values() if isinstance(r, Deploy) and r.service == service
                 and r.deploy_id != deploy.deploy_id and deploy.ts < r.ts <= end_ts]
        firsts: dict[str, Deploy] = {}
        for r in sorted(later, key=lambda r: r.ts):
            firsts.setdefault(r.deploy_id, r)
        return list(firsts.values())


# -- helpers (pure functions of the parts) ------------------------------------------------


def _key(record: Folded) -> tuple[Any, ...]:
    """What makes a record of its kind unique; a redelivery has the same key."""
    if isinstance(record, Deploy):
        return ("deploy", record.service, record.deploy_id, record.status, record.ts)
    if isinstance(record, Anomaly):
        return ("anomaly", record.service, record.metric, record.onset_ts, record.detected_ts)
    if isinstance(record, Decision):
        return ("decision", record.incident_id, record.action)
    if isinstance(record, Approval):
        return ("approval", record.incident_id, record.ts, record.by, record.approved)
    if isinstance(record, Verification):
        return ("verification", record.incident_id, record.status, record.ts)
    return ("alert", record.incident_id, record.ts, record.text)


def _worst(samples: list[Sample], direction: str, width: int) -> tuple[float, float] | None:
    """The worst median of ``width`` consecutive samples, and the ts of the window's middle.

    A median, so that the worst level is one most of the window held: a spike
    of fewer than half the samples does not speak for the incident. Ties go to
    the window whose middle sample is the worst, then to the earliest.
    """
    if not samples:
        return None
    sign = 1.0 if direction == "up" else -1.0
    width = min(width, len(samples))
    best: tuple[float, float] | None = None  # (median, middle ts)
    best_key: tuple[float, float] | None = None
    for i in range(len(samples) - width + 1):
        window = samples[i:i + width]
        middle = window[width // 2]
        level = statistics.median(s.value for s in window)
        key = (sign * level, sign * middle.value)
        if best_key is None or key > best_key:
            best_key, best = key, (level, middle.ts)
    return best


def _merge(shifts: dict[str, dict[str, Any]], shift: dict[str, Any]) -> None:
    """One entry per metric: its earliest onset and first detection, its largest excursion."""
    metric = str(shift["metric"])
    known = shifts.get(metric)
    if known is None:
        shifts[metric] = dict(shift)
        return
    grown = abs(float(shift["current"]) - float(known["baseline"])) > abs(float(known["current"]) -
                                                                          float(known["baseline"]))
    merged = {**known, "current": shift["current"]} if grown else dict(known)
    merged["onset_ts"] = min(float(known["onset_ts"]), float(shift["onset_ts"]))
    merged["detected_ts"] = min(float(known["detected_ts"]), float(shift["detected_ts"]))
    shifts[metric] = merged


def _factor(m: Moved) -> float:
    if m.direction == "up":
        return m.peak / m.baseline if m.baseline > 0 else float("inf")
    return m.baseline / m.peak if m.peak > 0 else float("inf")


def _target_dict(target: Target | None) -> dict[str, Any] | None:
    return target.model_dump(mode="json") if target is not None else None


def _target_text(target: Target | None) -> str | None:
    if target is None:
        return None
    fields = {k: v for k, v in target.model_dump(mode="json").items() if k != "kind"}
    return wording.target_name(target.kind, fields)


def _decision_info(d: Decision, question: Decision | None) -> DecisionInfo:
    upgrade = d.action == "rollback" and question is not None and question.ts <= d.ts
    return DecisionInfo(ts=d.ts, action=d.action, confidence=d.confidence, reason=d.reason,
                        from_version=d.from_version, to_version=d.to_version, upgrade=upgrade,
                        text=wording.decided(d.action, d.confidence, d.reason, upgrade), evidence=d.evidence)


def _recovery(outcome: Verification, pattern: list[Moved], rollback: RollbackInfo | None) -> RecoveryInfo:
    executed_ts = rollback.executed_ts if rollback else None
    since = outcome.ts - executed_ts if executed_ts is not None else None
    baselines = {m.metric: m.baseline for m in pattern}
    parts = []
    for metric in sorted(outcome.after):
        before, after = outcome.before.get(metric), outcome.after[metric]
        if before is None:
            continue
        if outcome.status == "verified":
            parts.append(wording.timeline_recovered(metric, before, after, since))
        else:
            parts.append(wording.still_bad(metric, before, after, baselines.get(metric)))
    if outcome.status == "not_recovered":
        parts.append(wording.timeline_not_recovered(since))
    text = " ".join(parts) or outcome.detail or outcome.status.replace("_", " ")
    return RecoveryInfo(status=outcome.status, ts=outcome.ts, detail=outcome.detail,  # type: ignore[arg-type]
                        before=dict(outcome.before), after=dict(outcome.after), text=text)


def _status(decisions: list[Decision], answer: Approval | None, timed_out: bool,
            rollback: RollbackInfo | None, recovery: RecoveryInfo | None) -> IncidentStatus:
    if recovery is not None:
        return recovery.status
    if rollback is not None and rollback.failed_ts is not None:
        return "failed"
    if rollback is not None and rollback.executed_ts is not None:
        return "executed"
    if rollback is not None and rollback.executing_ts is not None:
        return "executing"
    actions = {d.action for d in decisions}
    if answer is not None and not answer.approved:
        return "denied"  # final, as the gate has it: a later rollback decision does not override it
    if "rollback" in actions:
        return "decided"
    if "escalate" in actions:
        return "escalated"
    if "request_approval" in actions:
        if answer is not None:
            return "approved"
        return "timed_out" if timed_out else "awaiting_approval"
    return "alerted"


def _durations(deploy: DeployInfo | None, decisions: list[Decision], question: Decision | None,
               answer: Approval | None, acting: Decision | None, rollback: RollbackInfo | None,
               recovery: RecoveryInfo | None) -> Durations:
    def between(a: float | None, b: float | None) -> float | None:
        return round(b - a, 3) if a is not None and b is not None else None

    deploy_ts = deploy.ts if deploy else None
    executed_ts = rollback.executed_ts if rollback else None
    verified_ts = recovery.ts if recovery is not None and recovery.status == "verified" else None
    return Durations(
        deploy_to_decision_s=between(deploy_ts, decisions[0].ts if decisions else None),
        question_to_answer_s=between(question.ts if question else None, answer.ts if answer else None),
        decision_to_executed_s=between(acting.ts if acting else None, executed_ts),
        executed_to_verified_s=between(executed_ts, verified_ts),
        deploy_to_executed_s=between(deploy_ts, executed_ts),
        deploy_to_verified_s=between(deploy_ts, verified_ts))


def _steps(service: str | None, deploy: DeployInfo | None, degradation: Degradation | None,
           decisions: list[Decision], answers: list[Approval], question: Decision | None,
           rollback_decision: Decision | None, timed_out: bool, timeout_s: float,
           rollback: RollbackInfo | None, recovery: RecoveryInfo | None,
           later_deploys: list[Deploy]) -> list[Step]:
    """The timeline's lines in event-time order, each a sentence from :mod:`detectors.wording`."""
    steps: list[Step] = []
    if deploy is not None:
        steps.append(Step(ts=deploy.ts, kind="deploy", text=deploy.text))
    if degradation is not None:
        steps.append(Step(ts=degradation.onset_ts, kind="degradation", text=degradation.text))
    for d in decisions:
        steps.append(Step(ts=d.ts, kind="decision", text=_decision_info(d, question).text, action=d.action))
    for a in answers:
        steps.append(Step(ts=a.ts, kind="approval",
                          text=wording.answered(a.approved, a.by, a.ts - question.ts if question else None)))
    if question is not None and rollback_decision is not None and not answers:
        steps.append(Step(ts=rollback_decision.ts, kind="superseded",
                          text=wording.superseded(rollback_decision.ts - question.ts)))
    if timed_out and question is not None:
        steps.append(Step(ts=question.ts + timeout_s, kind="timeout", text=wording.unanswered(timeout_s)))
    if rollback is not None:
        if rollback.executing_ts is not None:
            steps.append(Step(ts=rollback.executing_ts, kind="executing",
                              text=wording.timeline_executing(service or "the service", rollback.from_version,
                                                     rollback.to_version, rollback.target_text)))
        if rollback.executed_ts is not None:
            took = rollback.executed_ts - rollback.executing_ts if rollback.executing_ts is not None else None
            steps.append(Step(ts=rollback.executed_ts, kind="executed",
                              text=wording.timeline_executed(rollback.to_version, took, rollback.detail)))
        if rollback.failed_ts is not None:
            steps.append(Step(ts=rollback.failed_ts, kind="failed", text=wording.timeline_rollback_failed(rollback.detail)))
    for r in later_deploys:
        back = r.status == "rolled_back" or (deploy is not None and r.version == deploy.previous_version)
        steps.append(Step(ts=r.ts, kind="deploy", text=wording.later_deploy(r.version, r.previous_version,
                                                                             r.status, back)))
    if recovery is not None:
        steps.append(Step(ts=recovery.ts, kind=recovery.status, text=recovery.text))
    order = {kind: i for i, kind in enumerate(StepKind.__args__)}  # type: ignore[attr-defined]
    return sorted(steps, key=lambda s: (s.ts, order[s.kind]))

