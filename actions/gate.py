"""The approval gate: the one home of "at most one rollback per incident" and of the safety rules.

A pure state machine, ``step(state | None, record) -> (state, outputs)``: no clock, no I/O; the
executor service is a thin adapter that feeds it records, publishes the records it returns and
carries out its commands. **Its state is keyed by service**, with one entry per incident inside:
incidents of one service interact (the cooldown, "never back to a version rolled back before",
one rollback of a service at a time), and every topic it reads is keyed by service —
``backout.actions``, ``backout.deploys``, ``backout.approvals`` (:mod:`actions.approvals` sends
each approval to the partition of its incident's decision) — so one replica owns all of a service.

Inputs: :class:`~backout.contracts.Decision` (rollback / request_approval / escalate),
:class:`~backout.contracts.Approval`, :class:`~backout.contracts.Deploy` (what runs now),
:class:`~backout.contracts.Verification` (the executor's own results, ``executed`` / ``failed``,
and the verifier's ``verified`` / ``not_recovered``) and :class:`Tick` (wall-clock time, passed
in, for approval timeouts and pruning). Outputs: records to publish (``Verification``,
``Alert``: every step is both a verification or an alert), commands for the adapter
(:class:`Execute`, :class:`Verify`), and :class:`Ignored` (a no-op and why, for the log).

Per incident (phases in ``Phase``)::

    request_approval ──► asking ──approved──► executing ──executed──► executed ──verified──► verified
          │                │  └──denied──► denied              └failed─► failed   └─not_recovered─► not_recovered
          │                └──approval_timeout_s──► timed_out (an escalation)
    rollback (or a later rollback of an asking / timed-out incident: it supersedes the question) ──► executing
    escalate ──► escalated

* The same decision again (same incident and action) is a no-op; a rollback decision for an
  incident that is executing or past it is a no-op: never twice, and after ``not_recovered``
  never again automatically. A denial is final: a later rollback decision does not override it.
* The first answer counts. An approval after the rollback ran, after a denial, after the
  timeout, or for an escalated or refused incident changes nothing and says why (an alert for
  the person who answered). An approval read before its question (another topic, read ahead)
  waits ``approval_timeout_s`` for its decision.
* Before executing — automatically or approved — and before asking: the decision must name a
  target and a version (a target missing from the decision is taken from the service's latest
  deploy record); never to a version that was itself rolled back (versions Backout rolled back
  from, and the ``previous_version`` of ``rolled_back`` deploy records); never when the service's
  current version is no longer the blamed ``from_version``; never while another rollback of the
  service is executing. Each refusal closes the incident with a critical alert for a human.
* **Current version.** The newest record, by event time, among deploy records (``failed``: its
  ``previous_version``), decisions (their ``from_version``, as of their ts) and Backout's own
  ``executed`` rollbacks. A deploy record read after the decision but stamped before it does not
  count against it (a deploy topic read behind the actions topic refuses nothing), one stamped
  after it does. The executor checks the target itself right before acting (:class:`Execute`).
* **Cooldown.** At most one automatic rollback of a service within ``cooldown_s`` of the last
  rollback Backout started there (automatic or approved): a rollback decision in that window
  becomes a question, with the usual timeout. An approved rollback is not held by the cooldown.
* Decisions older than ``horizon_s`` (against the latest tick) are stale and ignored; closed
  incidents are forgotten ``horizon_s`` after they closed (7 days, the topics' retention, so a
  redelivered decision can never find its incident gone).

Exactly once, with the adapter: the step that returns :class:`Execute` has already moved the
incident to ``executing`` and returned the ``executing`` verification; the adapter publishes it
and saves the state before it acts, and feeds the outcome back as ``executed`` / ``failed``.
A redelivered decision finds ``executing`` and does nothing; after a crash between acting and
recording, :meth:`ServiceGate.resume` returns the in-flight rollbacks with ``resume=True``:
ask the target which version runs before acting.

>>> from backout.contracts import Decision, Target
>>> d = Decision(ts=1000.0, incident_id="inc-1", service="checkout", action="rollback",
...              from_version="v2", to_version="v1", confidence=1.0, reason="Error rate 10x.",
...              target=Target(kind="kubernetes", namespace="shop", name="checkout"))
>>> state, out = step(None, d)
>>> [type(o).__name__ for o in out], out[0].status
(['Verification', 'Alert', 'Execute'], 'executing')
>>> state, out = step(state, d)  # redelivered
>>> out
[Ignored(incident_id='inc-1', reason='rollback decision redelivered; the incident is executing')]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from actions.executors.base import ExecutionFailed, Rollback
from backout.contracts import Alert, Approval, Decision, Deploy, Target, Verification
from backout.errors import ContractError
from detectors import wording
from detectors.recovery import Blamed, blamed_of

STATE_VERSION = 1
MAX_VERSIONS = 32  # rolled-back versions remembered per service
MAX_EARLY = 16  # approvals waiting for their decision, per service

Phase = Literal["early", "asking", "executing", "executed", "verified", "not_recovered", "failed",
                "denied", "timed_out", "escalated", "refused"]
# a verification status the gate accepts, and the phases it may follow
AFTER: dict[str, tuple[str, ...]] = {"executed": ("executing",), "failed": ("executing",),
                                     "verified": ("executed",), "not_recovered": ("executed",)}


class GateSettings(BaseModel):
    """The gate's settings (``backout executor`` reads them from its configuration)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    approval_timeout_s: float = Field(default=900.0, gt=0,
                                      description="an unanswered request_approval escalates after this")
    cooldown_s: float = Field(default=3600.0, ge=0,
                              description="at most one automatic rollback of a service within this; 0: off")
    verify_within_s: float = Field(default=300.0, gt=0,
                                   description="the blamed metrics must recover within this after the rollback")
    horizon_s: float = Field(default=7 * 86400.0, gt=0,
                             description="closed incidents are forgotten, older decisions ignored, after this")


@dataclass(frozen=True)
class Tick:
    """Wall-clock time has reached ``ts`` (the adapter's clock: the core never reads one)."""

    ts: float


@dataclass(frozen=True)
class Execute:
    """Carry out this rollback, then feed ``executed`` or ``failed`` back. ``resume``: it may have
    been carried out already (a restart): ask the target which version runs before acting. In
    every case the target must still run ``rollback.from_version`` (or already ``to_version``)."""

    rollback: Rollback
    resume: bool = False


@dataclass(frozen=True)
class Verify:
    """Start the recovery test (:class:`detectors.recovery.Recovery`) and feed its verdict back.

    Feed it the service's samples from the earliest blamed ``onset_ts`` on: those before
    ``executed_ts`` teach it the metric's noise (on ``backout.metrics``, read from the offsets
    of that time)."""

    incident_id: str
    service: str
    version: str | None  # of the blamed deploy, for the sentence
    executed_ts: float
    within_s: float
    blamed: tuple[Blamed, ...]


@dataclass(frozen=True)
class Ignored:
    """A record that changed nothing, and why (for the log and a counter)."""

    incident_id: str
    reason: str


Input = Decision | Approval | Deploy | Verification | Tick
Output = Verification | Alert | Execute | Verify | Ignored


@dataclass
class _Incident:
    phase: Phase
    opened_ts: float
    actions: list[str] = field(default_factory=list)  # the decisions seen
    decided_ts: float | None = None  # the newest decision's ts: an incident outlives its decisions' horizon
    decision: dict[str, Any] | None = None  # kept while it may still be executed
    from_version: str | None = None
    to_version: str | None = None
    version: str | None = None  # of the blamed deploy
    blamed: list[list[Any]] = field(default_factory=list)  # [metric, baseline, shifted, onset_ts]
    deadline_ts: float | None = None  # of the question, or of an early answer
    answer: list[Any] | None = None  # [approved, by, ts]
    started_ts: float | None = None  # Execute returned
    executed_ts: float | None = None  # the executed verification's ts: the recovery test runs from here
    by: str | None = None  # who approved the execution; None: automatic
    closed_ts: float | None = None
    note: str = ""  # why it was refused

    def to_state(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, [], "")}


class ServiceGate:
    """The gate of one service (see module doc)."""

    def __init__(self, service: str, settings: GateSettings | None = None) -> None:
        self.service = service
        self.settings = settings or GateSettings()
        self._now = 0.0  # the latest tick
        self._running: tuple[float, str] | None = None  # (ts, version): the newest word on what runs
        self._target: tuple[float, dict[str, Any]] | None = None  # the latest deploy record's target
        self._last_rollback_ts: float | None = None
        self._rolled_back: list[str] = []
        self._incidents: dict[str, _Incident] = {}

    # -- stream interface ---------------------------------------------------------------------

    def handle(self, record: Input) -> list[Output]:
        if isinstance(record, Tick):
            return self._tick(record.ts)
        if isinstance(record, Decision):
            self._check_service(record.service, record.incident_id)
            return self._decision(record)
        if isinstance(record, Approval):
            if record.service is not None:
                self._check_service(record.service, record.incident_id)
            return self._approval(record)
        if isinstance(record, Verification):
            return self._verification(record)
        if isinstance(record, Deploy):
            self._check_service(record.service, record.deploy_id)
            self._deploy(record)
            return []
        raise TypeError(f"the gate takes decision, approval, deploy, verification and tick records, "
                        f"got {type(record).__name__}")

    def resume(self) -> list[Output]:
        """After a restart or a partition handover: the rollbacks that were executing, to be checked
        on the target first, and the recovery tests that were running (they restart from the onset,
        in event time, so they give the verdict they would have given)."""
        out: list[Output] = []
        for key, inc in sorted(self._incidents.items()):
            if inc.phase == "executing" and inc.decision is not None:
                out.append(Execute(self._rollback(inc), resume=True))
            elif inc.phase == "executed" and inc.executed_ts is not None and inc.blamed:
                out.append(self._verify(key, inc, inc.executed_ts))
        return out

    @property
    def next_due_ts(self) -> float | None:
        """When a :class:`Tick` next changes something (a question times out, an incident is forgotten)."""
        due = [inc.deadline_ts for inc in self._incidents.values()
               if inc.phase in ("asking", "early") and inc.deadline_ts is not None]
        due += [forget for inc in self._incidents.values() if (forget := self._forget_ts(inc)) is not None]
        return min(due) if due else None

    def phase(self, incident_id: str) -> Phase | None:
        inc = self._incidents.get(incident_id)
        return inc.phase if inc is not None else None

    # -- decisions --------------------------------------------------------------------------

    def _decision(self, d: Decision) -> list[Output]:
        key = d.incident_id
        inc = self._incidents.get(key)
        if inc is not None and d.action in inc.actions:
            return [Ignored(key, f"{d.action} decision redelivered; the incident is {inc.phase}")]
        if self._now and d.ts < self._now - self.settings.horizon_s:
            return [Ignored(key, f"{d.action} decision stamped {self._now - d.ts:.0f} s before the latest "
                                 f"tick, past the horizon of {self.settings.horizon_s:.0f} s: stale")]
        self._learn_running(d.ts, d.from_version, authoritative=False)
        if inc is not None:
            inc.decided_ts = max(inc.decided_ts or d.ts, d.ts)
        if inc is not None and inc.phase not in ("early", "asking", "timed_out"):
            inc.actions.append(d.action)
            return [Ignored(key, f"{d.action} decision for an incident that is {inc.phase}: "
                                 "at most one rollback per incident, and none after a denial")]
        if inc is not None and inc.phase == "timed_out" and d.action == "request_approval":
            inc.actions.append(d.action)
            return [Ignored(key, "request_approval decision for a question that already timed out")]
        if inc is None:
            inc = self._incidents[key] = _Incident("asking", d.ts, decided_ts=d.ts)
        early = inc.answer if inc.phase == "early" else None
        version, blamed = blamed_of(d)
        inc.actions.append(d.action)
        inc.decision = d.model_dump(mode="json")
        inc.from_version, inc.to_version, inc.version = d.from_version, d.to_version, version
        inc.blamed = [[b.metric, b.baseline, b.shifted, b.onset_ts] for b in blamed]
        if d.action == "escalate":
            return self._close_escalated(key, inc, d.ts, early)
        if early is not None:  # answered before the question was read: the answer stands
            inc.phase, inc.answer = "asking", early
            return self._answered(key, inc, bool(early[0]), str(early[1]), d.ts)
        held = d.action == "rollback" and self._in_cooldown(d.ts)
        refusal = self._unsafe(key, d, acting=d.action == "rollback" and not held)
        if refusal is not None:
            return self._refuse(key, inc, d.ts, refusal)
        if d.action == "request_approval":
            return self._ask(inc, d.ts)
        if held:
            assert self._last_rollback_ts is not None
            text = wording.cooldown(self.service, key, d.ts - self._last_rollback_ts, self.settings.cooldown_s)
            if inc.phase != "asking":
                self._ask(inc, d.ts)
            return [Alert(ts=d.ts, incident_id=key, severity="warning", text=text)]
        return self._execute(key, inc, d.ts, by=None)

    def _ask(self, inc: _Incident, ts: float) -> list[Output]:
        inc.phase, inc.deadline_ts, inc.closed_ts = "asking", ts + self.settings.approval_timeout_s, None
        return []  # the decider's alert asked the question already

    def _close_escalated(self, key: str, inc: _Incident, ts: float, early: list[Any] | None) -> list[Output]:
        self._close(inc, "escalated", ts)
        if early is None:
            return []  # the decider's alert said it
        return [self._answer_ignored(key, bool(early[0]), str(early[1]), ts, wording.why_escalated())]

    def _unsafe(self, key: str, d: Decision, acting: bool = True) -> str | None:
        """Why this decision must not be executed (``acting``: now; else: ever), or None."""
        try:
            self._rollback_of(d)
        except ExecutionFailed as exc:
            return wording.cannot_roll_back(self.service, str(exc))
        if d.to_version in self._rolled_back:
            return wording.target_rolled_back(self.service, str(d.to_version))
        if self._running is not None and d.from_version is not None and self._running[1] != d.from_version:
            return wording.version_moved(self.service, self._running[1], d.from_version)
        other = next((k for k, inc in sorted(self._incidents.items()) if inc.phase == "executing" and k != key),
                     None)
        if acting and other is not None:
            return wording.rollback_in_progress(self.service, other)
        return None

    def _refuse(self, key: str, inc: _Incident, ts: float, reason: str) -> list[Output]:
        self._close(inc, "refused", ts)
        inc.note = reason
        return [Alert(ts=ts, incident_id=key, severity="critical", text=reason)]

    def _in_cooldown(self, ts: float) -> bool:
        last = self._last_rollback_ts
        return last is not None and self.settings.cooldown_s > 0 and ts < last + self.settings.cooldown_s

    def _execute(self, key: str, inc: _Incident, ts: float, by: str | None) -> list[Output]:
        rollback = self._rollback(inc)
        inc.phase, inc.started_ts, inc.by, inc.deadline_ts, inc.closed_ts = "executing", ts, by, None, None
        self._last_rollback_ts = ts
        if rollback.from_version and rollback.from_version not in self._rolled_back:
            self._rolled_back = (self._rolled_back + [rollback.from_version])[-MAX_VERSIONS:]
        text = wording.executing(self.service, rollback.from_version, rollback.to_version,
                                 rollback.target.kind, by)
        return [Verification(ts=ts, incident_id=key, status="executing", detail=text),
                Alert(ts=ts, incident_id=key, severity="warning", text=text), Execute(rollback)]

    def _rollback(self, inc: _Incident) -> Rollback:
        assert inc.decision is not None
        return self._rollback_of(Decision.model_validate(inc.decision))

    def _rollback_of(self, d: Decision) -> Rollback:
        if d.target is None and self._target is not None:
            d = d.model_copy(update={"target": Target.model_validate(self._target[1])})
        return Rollback.of(d)

    # -- approvals --------------------------------------------------------------------------

    def _approval(self, a: Approval) -> list[Output]:
        key = a.incident_id
        answer = [a.approved, a.by, a.ts]
        inc = self._incidents.get(key)
        if inc is not None and inc.answer == answer:
            return [Ignored(key, f"{'approval' if a.approved else 'denial'} by {a.by} redelivered")]
        if inc is None:
            if sum(i.phase == "early" for i in self._incidents.values()) >= MAX_EARLY:
                why = wording.why_too_many(self.service, MAX_EARLY)
                return [self._answer_ignored(key, a.approved, a.by, a.ts, why)]
            self._incidents[key] = _Incident("early", a.ts, answer=answer,
                                             deadline_ts=a.ts + self.settings.approval_timeout_s)
            return []
        if inc.phase != "asking":
            return [self._answer_ignored(key, a.approved, a.by, a.ts, self._why(inc, a.ts))]
        inc.answer = answer
        return self._answered(key, inc, a.approved, a.by, a.ts)

    def _answered(self, key: str, inc: _Incident, approved: bool, by: str, ts: float) -> list[Output]:
        if not approved:
            self._close(inc, "denied", ts)
            return [Alert(ts=ts, incident_id=key, severity="warning",
                          text=wording.denied(self.service, str(inc.to_version), by))]
        assert inc.decision is not None
        refusal = self._unsafe(key, Decision.model_validate(inc.decision))  # things may have moved since
        if refusal is not None:
            return self._refuse(key, inc, ts, refusal)
        return self._execute(key, inc, ts, by=by)

    def _why(self, inc: _Incident, ts: float) -> str:
        if inc.phase in ("executing", "executed", "verified", "not_recovered", "failed"):
            return wording.why_ran(str(inc.to_version), inc.by)
        if inc.phase in ("early", "denied") and inc.answer is not None:
            return wording.why_answered(bool(inc.answer[0]), str(inc.answer[1]))
        if inc.phase == "timed_out":
            return wording.why_timed_out(ts - (inc.closed_ts or ts))
        if inc.phase == "refused":
            return wording.why_refused(inc.note)
        return wording.why_escalated()

    def _answer_ignored(self, key: str, approved: bool, by: str, ts: float, why: str) -> Alert:
        return Alert(ts=ts, incident_id=key, severity="info", text=wording.answer_ignored(approved, by, key, why))

    # -- verifications, deploys, time --------------------------------------------------------

    def _verification(self, v: Verification) -> list[Output]:
        key = v.incident_id
        inc = self._incidents.get(key)
        if inc is None or v.status not in AFTER or inc.phase not in AFTER[v.status]:
            phase = "unknown" if inc is None else inc.phase
            return [Ignored(key, f"{v.status} verification for an incident that is {phase}")]
        to_version = str(inc.to_version)
        if v.status == "executed":
            inc.phase, inc.decision, inc.executed_ts = "executed", None, v.ts
            self._learn_running(v.ts, inc.to_version, authoritative=True)
            took_s = v.ts - (inc.started_ts if inc.started_ts is not None else v.ts)
            if not inc.blamed:
                self._close(inc, "executed", v.ts)
                return [v, Alert(ts=v.ts, incident_id=key, severity="warning",
                                 text=wording.nothing_to_verify(self.service, to_version))]
            text = wording.executed(self.service, to_version, took_s, self.settings.verify_within_s)
            return [v, Alert(ts=v.ts, incident_id=key, severity="info", text=text), self._verify(key, inc, v.ts)]
        self._close(inc, cast(Phase, v.status), v.ts)  # a key of AFTER, each a Phase
        if v.status == "failed":
            text = wording.rollback_failed(self.service, to_version, v.detail or "the executor gave no detail")
            return [v, Alert(ts=v.ts, incident_id=key, severity="critical", text=text)]
        if v.status == "verified":
            return [v, Alert(ts=v.ts, incident_id=key, severity="info", text=wording.rollback_verified(v.detail))]
        return [v, Alert(ts=v.ts, incident_id=key, severity="critical",
                         text=wording.rollback_not_recovered(self.service, v.detail))]

    def _verify(self, key: str, inc: _Incident, executed_ts: float) -> Verify:
        blamed = tuple(Blamed(str(m), float(b), float(s), None if t is None else float(t))
                       for m, b, s, t in inc.blamed)
        return Verify(key, self.service, inc.version, executed_ts, self.settings.verify_within_s, blamed)

    def _deploy(self, dep: Deploy) -> None:
        if dep.target is not None and (self._target is None or dep.ts >= self._target[0]):
            self._target = (dep.ts, dep.target.model_dump(mode="json"))
        if dep.status == "rolled_back" and dep.previous_version and dep.previous_version not in self._rolled_back:
            self._rolled_back = (self._rolled_back + [dep.previous_version])[-MAX_VERSIONS:]
        self._learn_running(dep.ts, dep.previous_version if dep.status == "failed" else dep.version,
                            authoritative=True)

    def _learn_running(self, ts: float, version: str | None, authoritative: bool) -> None:
        """Keep the newest word on what runs; at equal ts a deploy or a rollback beats a decision."""
        if version is None:
            return
        cur = self._running
        if cur is None or ts > cur[0] or (ts == cur[0] and authoritative):
            self._running = (ts, version)

    def _tick(self, now: float) -> list[Output]:
        self._now = max(self._now, now)
        out: list[Output] = []
        for key, inc in sorted(self._incidents.items()):
            if inc.deadline_ts is None or inc.deadline_ts > now:
                continue
            if inc.phase == "asking":
                self._close(inc, "timed_out", now)
                out.append(Alert(ts=now, incident_id=key, severity="critical", text=wording.approval_timed_out(
                    self.service, str(inc.to_version), self.settings.approval_timeout_s)))
            elif inc.phase == "early" and inc.answer is not None:
                del self._incidents[key]
                why = wording.why_unknown(self.service, self.settings.approval_timeout_s)
                out.append(self._answer_ignored(key, bool(inc.answer[0]), str(inc.answer[1]), now, why))
        for key in [k for k, inc in self._incidents.items() if (t := self._forget_ts(inc)) is not None and t < now]:
            del self._incidents[key]
        return out

    def _forget_ts(self, inc: _Incident) -> float | None:
        """When a closed incident is forgotten: ``horizon_s`` after it closed and after its newest
        decision, so that any redelivery of its decisions is stale by then."""
        if inc.closed_ts is None:
            return None
        return max(inc.closed_ts, inc.decided_ts or inc.closed_ts) + self.settings.horizon_s

    def _close(self, inc: _Incident, phase: Phase, ts: float) -> None:
        inc.phase, inc.closed_ts, inc.decision, inc.deadline_ts = phase, ts, None, None

    def _check_service(self, service: str, what: str) -> None:
        if service != self.service:
            raise ContractError(f"field 'service' of {what}: got {service!r}, expected {self.service!r}: "
                                "records reach the gate of their own service (keyed by service)")

    # -- state --------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Compact, JSON-serialisable; closed incidents are pruned ``horizon_s`` after they closed."""
        return {"v": STATE_VERSION, "service": self.service, "now": self._now,
                "running": None if self._running is None else list(self._running),
                "target": None if self._target is None else list(self._target),
                "last_rollback_ts": self._last_rollback_ts, "rolled_back": list(self._rolled_back),
                "incidents": {k: inc.to_state() for k, inc in self._incidents.items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any], settings: GateSettings | None = None) -> ServiceGate:
        if state.get("v") != STATE_VERSION:
            raise ValueError(f"gate state version {state.get('v')!r} is not {STATE_VERSION}")
        gate = cls(state["service"], settings)
        gate._now = float(state["now"])
        running, target = state["running"], state["target"]
        gate._running = None if running is None else (float(running[0]), str(running[1]))
        gate._target = None if target is None else (float(target[0]), dict(target[1]))
        last = state["last_rollback_ts"]
        gate._last_rollback_ts = None if last is None else float(last)
        gate._rolled_back = [str(v) for v in state["rolled_back"]]
        gate._incidents = {k: _Incident(**v) for k, v in state["incidents"].items()}
        return gate


def step(state: dict[str, Any] | None, record: Input,
         settings: GateSettings | None = None) -> tuple[dict[str, Any] | None, list[Output]]:
    """One record through the gate of its service: the executor service's whole use of this module.

    ``state`` is the service's (None: nothing yet). A tick, a verification or an approval
    without a service for a service with no state changes nothing.
    """
    service = getattr(record, "service", None)
    if state is None and service is None:
        if isinstance(record, Tick):
            return None, []
        incident = getattr(record, "incident_id", "")
        if isinstance(record, Approval):
            why = "no decision with this incident id is known here"
            return None, [Alert(ts=record.ts, incident_id=incident, severity="info",
                                text=wording.answer_ignored(record.approved, record.by, incident, why))]
        return None, [Ignored(incident, f"{record.type} record for a service with no incident")]
    gate = ServiceGate(str(service), settings) if state is None else ServiceGate.from_state(state, settings)
    outputs = gate.handle(record)
    return gate.to_state(), outputs

