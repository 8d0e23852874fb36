"""The decider: anomalies, deploys and watermarks in; decisions and alerts out.

Stage 2 of the pipeline, on one ordered stream whose interleaving differs
between the backtest and the live, partitioned stream. To take the same
decisions either way it works in event time only:

* an anomaly becomes a *pending candidate*, due ``hold_s`` after its detection
  (the hold lets other services' simultaneous shifts be confirmed too;
  correlation puts off one that began late for its deploy for longer, see
  :mod:`detectors.correlation`; a member of a release train, other services
  deployed within ``succession_s`` of its deploy, waits a sampling interval of
  its stream, for a callee in the same train whose samples are stamped later), and
  never before ``onset + onset_slack_s + deploy_lateness_s`` (by then every
  deploy record that could be blamed for the onset has been read);
* when the global watermark (:class:`~detectors.watermark.EventClock`) passes
  a due time, the candidate is decided from inputs stamped at or before it
  only — anomalies with ``detected_ts <= due``, deploys with
  ``ts <= due - deploy_lateness_s`` (later ones may still be on their way) —
  and due candidates are released in (due, service, metric) order;
* a decision's ``ts`` is its due time.

Outputs: per blamed deploy, one :class:`Decision` (its ``incident_id`` hashes
service and deploy id, so redeliveries and restarts dedupe), always with an
:class:`Alert` carrying the sentence. A shift with no deploy to blame, one
that began before the deploy, a caller hurt by another service's deploy, or
one too small to act on gives an ``Alert`` only: there is nothing to roll
back, and a human should know. A shift shared by most services is one
*group*: one alert for the whole group, however many services join it, and an
``escalate`` decision for any deploy it spares (a human must look).

Escalation of an incident. An incident first decided ``request_approval`` is
upgraded to ``rollback`` when later evidence of the same deploy makes it
clear-cut under the policy (in ``auto`` mode): another metric of the service
shifts, or the monitor re-sends the shift with the same onset and a later
``detected_ts`` as it grows (say error rate 2x, then 10x). The upgrade is a
second decision with the *same* ``incident_id`` and action ``rollback``;
actions only ever go up (request_approval → rollback, never back, never
twice), and the service must still run the blamed version (if anyone deployed
since, a human is acting and the question stands). So downstream must:

* dedupe redeliveries on ``(incident_id, action)``, not on ``incident_id``
  alone, or the upgrade is dropped as a duplicate of the question;
* execute at most one rollback per ``incident_id`` (the approval gate closes
  the pending question as superseded when the rollback arrives, and an
  approval that arrives after it is a no-op).

Policy ``off`` decides and alerts but never emits a decision
(:func:`detectors.policy.outcome` decides that, as every other rule of what
to do about a blamed deploy). State version 3 keeps whole anomalies (version 2
kept their first ten fields; it loads, as does version 1).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from backout.contracts import Action, Alert, Anomaly, Decision, Deploy, Severity, Watermark
from backout.errors import UnexpectedRecord
from detectors import wording
from detectors.config import BackoutConfig
from detectors.correlation import Verdict, adverse_factor, blameable, calls, correlate, step_s
from detectors.deploys import (
    Change,
    DeployTracker,
    ServiceView,
    tracker_from_state,
    tracker_to_state,
)
from detectors.policy import Assessment, Outcome, Recorded, assess, escalation, outcome
from detectors.watermark import EventClock

Output = Decision | Alert
STATE_VERSION = 3  # 3: whole anomalies; 2: their first ten fields; 1: incidents without their action


def incident_id(service: str, deploy_id: str) -> str:
    """Stable id of the incident "this deploy broke this service"."""
    return "inc-" + hashlib.sha1(f"{service}\x1f{deploy_id}".encode()).hexdigest()[:16]


def shift_id(shift: Anomaly) -> str:
    key = f"{shift.service}\x1f{shift.metric}\x1f{shift.onset_ts!r}"
    return "shift-" + hashlib.sha1(key.encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)  # compared by identity: the very candidate taken off the list
class Candidate:
    """An anomaly waiting to be decided once event time passes ``due_ts``."""

    due_ts: float
    extended: bool  # it already waited once for other services' shifts to show
    anomaly: Anomaly

    def order(self) -> tuple[float, str, str, float, float]:
        """Release order: by due time, then a fixed order of the anomaly's identity."""
        a = self.anomaly
        return (self.due_ts, a.service, a.metric, a.onset_ts, a.detected_ts)


@dataclass(frozen=True)
class Incident:
    """What was decided about one (service, deploy), and when."""

    ts: float
    action: Recorded


@dataclass(frozen=True)
class Group:
    """Services that shifted together on one metric: one alert for them all."""

    metric: str
    onset_ts: float
    group_id: str
    ts: float  # when it was first decided


@dataclass(frozen=True)
class Graded:
    """One shift a blamed deploy could explain, graded by the policy."""

    anomaly: Anomaly
    assessment: Assessment
    direction: str | None
    lag_s: float

    def rank(self) -> tuple[bool, float, float, str]:
        """The worst shift speaks for the incident: clear-cut first, then confident, early, by name."""
        return (self.assessment.clear, self.assessment.confidence, -self.anomaly.onset_ts, self.anomaly.metric)


class Decider:
    """Joins anomalies to deploys and applies the policy, in event time."""

    def __init__(self, config: BackoutConfig) -> None:
        self.config = config
        policy = config.policy
        self._keep_s = max(policy.window_s, 2 * policy.shared.within_s + policy.shared.hold_s) + config.hold_s
        self._clock = EventClock(config.stall_s)
        self._deploys = DeployTracker(policy.clean_s, keep_s=2 * policy.window_s + policy.clean_s)
        self._shifts: list[Anomaly] = []
        self._pending: list[Candidate] = []
        self._incidents: dict[str, Incident] = {}
        self._groups: list[Group] = []
        self._services: set[str] = set()

    # -- stream interface -------------------------------------------------------------

    def handle(self, record: Anomaly | Deploy | Watermark) -> list[Output]:
        """Take one input record; return the decisions and alerts that became due."""
        if isinstance(record, Watermark):
            if self._clock.advance(record) is None:
                return []
            return self._release()
        if isinstance(record, Deploy):
            self._deploys.add(record)
            return []
        if isinstance(record, Anomaly):
            if any(_same(record, s) for s in self._shifts):
                return []  # a redelivery
            self._services.add(record.service)
            self._shifts.append(record)
            self._pending.append(Candidate(self._due(record), False, record))
            return self._release() if self._clock.now > 0 else []
        raise UnexpectedRecord(f"the decider takes anomaly, deploy and watermark records, "
                               f"got {type(record).__name__}")

    # -- deciding --------------------------------------------------------------------

    def _due(self, shift: Anomaly) -> float:
        config = self.config
        joined = shift.onset_ts + config.policy.onset_slack_s + config.deploy_lateness_s
        return max(shift.detected_ts + config.hold_s, joined)

    def _blamed(self, service: str, deploy_id: str) -> bool:
        decided = self._incidents.get(incident_id(service, deploy_id))
        return decided is not None and decided.action in ("rollback", "request_approval")

    def _release(self) -> list[Output]:
        now = self._clock.now
        out: list[Output] = []
        while True:
            due = sorted((p for p in self._pending if p.due_ts < now), key=Candidate.order)
            if not due:
                break
            item = due[0]
            self._pending.remove(item)
            out += self._decide(item.anomaly, item.due_ts, item.extended)
        self._prune(now)
        return out

    def _decide(self, shift: Anomaly, due_ts: float, extended: bool) -> list[Output]:
        policy = self.config.policy
        if shift.metric in policy.context_metrics:
            return []  # context for the other shifts (traffic), never harm in itself
        deploys_as_of = due_ts - self.config.deploy_lateness_s
        views: dict[str, ServiceView] = {}

        def view_of(service: str) -> ServiceView:
            if service not in views:
                views[service] = self._deploys.view(service, deploys_as_of)
            return views[service]

        view = view_of(shift.service)
        known = [s for s in self._shifts if s.detected_ts <= due_ts]
        total = max(self._clock.services, len(self._services))
        spec = self.config.spec_for(shift.metric)
        verdict = correlate(shift, view, known, view_of, total, policy, due_ts, extended, self._blamed)
        if verdict.kind == "wait":
            wait_until = max(due_ts, shift.detected_ts + policy.shared.hold_s)
            self._pending.append(Candidate(wait_until, True, shift))
            return []
        direction = spec.direction if spec is not None else None
        what = wording.change(shift.metric, shift.baseline, shift.current, direction)
        if verdict.kind == "shared":
            return self._shared(shift, verdict, what, view, due_ts, total)
        if verdict.kind == "no_deploy":
            return [self._alert(due_ts, "warning", wording.no_deploy(what, shift.service, shift.onset_ts,
                                                                     policy.window_s), shift)]
        if verdict.kind == "before_deploy":
            later = verdict.later_change
            assert later is not None
            text = wording.before_deploy(what, shift.service, later.ts - shift.onset_ts, later.version)
            return [self._alert(due_ts, "warning", text, shift)]
        if verdict.kind == "follower":
            assert verdict.leader is not None
            return [self._alert(due_ts, "warning", wording.follower(what, shift.service, verdict.leader), shift)]
        if verdict.kind == "echo":
            assert verdict.leader is not None
            return [self._alert(due_ts, "warning", wording.echo(what, shift.service, verdict.leader), shift)]
        if verdict.kind == "alongside":
            text = wording.alongside(what, shift.service, verdict.shared, verdict.lag_s or 0.0)
            return [self._alert(due_ts, "warning", text, shift)]
        if verdict.kind == "surge":
            text = wording.surge(what, shift.service, verdict.shared, total, verdict.lag_s or 0.0)
            return [self._alert(due_ts, "warning", text, shift)]
        change = verdict.change
        assert change is not None
        until = self._release_wait(shift, change, due_ts) if not extended else due_ts
        if until > due_ts:
            self._pending.append(Candidate(until, True, shift))
            return []
        return self._blame(shift, change, verdict, view, known, due_ts)

    def _release_wait(self, shift: Anomaly, change: Change, due_ts: float) -> float:
        """When a shift of a release train's member may be decided: a sampling interval after its
        detection. The callee of this service may be in the same train, its samples stamped up to an
        interval later: at 1-min samples its shift is seen after the caller's, larger by the ratio.
        With a call graph only its callees in the train count."""
        policy = self.config.policy
        others = self._deploys.deployed_near(change.ts, policy.succession_s,
                                             due_ts - self.config.deploy_lateness_s, shift.service)
        if policy.depends_on:
            others = [o for o in others if calls(policy, shift.service, o)]
        return shift.detected_ts + step_s(shift) if others else due_ts

    def _grade(self, shift: Anomaly, change: Change, verdict: Verdict) -> Graded:
        spec = self.config.spec_for(shift.metric)
        direction = spec.direction if spec is not None else None
        lag_s = max(0.0, shift.onset_ts - change.ts)
        doubts = list(verdict.ambiguity)
        if shift.earliest_onset_ts is not None and shift.earliest_onset_ts < change.ts - self.config.policy.onset_slack_s:
            doubts.append(wording.may_predate(change.ts - shift.earliest_onset_ts))
        graded = assess(adverse_factor(shift, direction), shift.current - shift.baseline, lag_s,
                        doubts, self.config.metric_policy(shift.service, shift.metric),
                        self.config.policy.window_s, self.config.policy.late_ramp_s)
        return Graded(shift, graded, direction, lag_s)

    def _blame(self, shift: Anomaly, change: Change, verdict: Verdict, view: ServiceView,
               known: list[Anomaly], due_ts: float) -> list[Output]:
        """Decide on a blamed deploy: the policy's outcome for its worst shift, said and published."""
        policy = self.config.policy
        service = shift.service
        incident = incident_id(service, change.deploy_id)
        decided = self._incidents.get(incident)
        # every shift of this service the deploy could explain; the worst one speaks for the incident
        mine = [s for s in known if s.service == service and s.metric not in policy.context_metrics
                and (blameable(change, s.onset_ts, policy) or s is shift)]
        graded = sorted((self._grade(s, change, verdict) for s in mine), key=Graded.rank, reverse=True)
        worst = graded[0]
        primary, lag_s = worst.anomaly, worst.lag_s
        mode = self.config.mode_for(service, primary.metric)
        target = view.target(exclude=(change.version, view.current, *(c.version for c in verdict.also_suspect)))
        reverted = view.current is not None and view.current != change.version and view.current in view.known_good
        o = outcome(worst.assessment, mode, decided=None if decided is None else decided.action,
                    reverted=reverted, still_runs=view.current == change.version, has_target=target is not None,
                    stale=shift.detected_ts - change.ts > policy.window_s,
                    traffic=verdict.traffic, load_power=policy.load_power, worsened=primary.worsened)
        if o.kind in ("decided", "kept_asking"):
            return []
        what = wording.change(primary.metric, primary.baseline, primary.current, worst.direction)
        version = change.version
        if o.kind == "upgrade":
            assert decided is not None and target is not None
            text = wording.upgrade(what, lag_s, version, service, target, due_ts - decided.ts)
        elif o.kind == "watch":
            text = wording.watching(what, service, version)
        elif o.kind == "stale":
            text = wording.stale(what, service, shift.detected_ts - change.ts, version)
        elif o.kind == "load":
            assert verdict.traffic is not None
            text = wording.load(what, service, version, verdict.traffic)
        elif o.kind == "reverted":
            text = wording.reverted(what, service, version, view.current)
        elif o.kind == "redeployed":
            text = wording.grew_after_redeploy(what, service, version, view.current)
        elif o.kind == "no_target":
            text = wording.no_target(what, lag_s, version, service)
        elif o.kind == "off":
            assert o.action is not None
            text = wording.policy_off(what, lag_s, version, service, o.action, target)
        elif o.kind == "rollback":
            assert target is not None
            text = wording.rollback(what, lag_s, version, service, target)
        else:
            assert target is not None
            text = wording.approval(what, version, service, due_ts - change.ts, lag_s, target,
                                    worst.assessment.why_not_clear)
        if o.marks_bad:
            self._deploys.mark_bad(service, version)
        evidence = [_shift_evidence(s) for s in mine] + [_change_evidence(change)]
        evidence += [_change_evidence(c, "earlier deploy") for c in verdict.also_suspect]
        alert_id = shift_id(primary) if o.kind in ("watch", "stale", "load", "redeployed") else incident
        return self._emit(o, incident, alert_id, service, change, view, target, worst.assessment.confidence,
                          text, evidence, due_ts)

    def _shared(self, shift: Anomaly, verdict: Verdict, what: str, view: ServiceView, due_ts: float,
                total: int) -> list[Output]:
        """One alert per group of services that shifted together; an escalation per deploy it spares."""
        within_s = self.config.policy.shared.within_s
        group = next((g for g in self._groups
                      if g.metric == shift.metric and abs(g.onset_ts - shift.onset_ts) <= within_s), None)
        out: list[Output] = []
        change = verdict.change
        if change is not None and incident_id(shift.service, change.deploy_id) not in self._incidents:
            incident = incident_id(shift.service, change.deploy_id)
            lag_s = verdict.lag_s or 0.0
            text = wording.shared_deploy(what, shift.service, lag_s, change.version, verdict.shared, total,
                                         soon=lag_s <= self.config.policy.shared.own_within_s)
            evidence = [_shift_evidence(shift), _change_evidence(change),
                        {"kind": "shared", "services": verdict.shared, "of": total}]
            confidence = round(min(1.0, len(verdict.shared) / max(total, 1)), 3)
            o = escalation(self.config.mode_for(shift.service, shift.metric), "shared")
            out += self._emit(o, incident, incident, shift.service, change, view, None, confidence, text,
                              evidence, due_ts)
        if group is None:
            group_id = "shared-" + shift_id(shift)[6:]
            self._groups.append(Group(shift.metric, shift.onset_ts, group_id, due_ts))
            if not out:
                out.append(Alert(ts=due_ts, incident_id=group_id, severity="critical",
                                 text=wording.shared(shift.metric, verdict.shared, total)))
        return out

    def _emit(self, o: Outcome, incident: str, alert_id: str, service: str, change: Change, view: ServiceView,
              target: str | None, confidence: float, text: str, evidence: list[dict[str, Any]],
              due_ts: float) -> list[Output]:
        """Record the outcome on the incident; its decision (if published) and its alert."""
        if o.record is not None:
            self._incidents[incident] = Incident(due_ts, o.record)
        out: list[Output] = []
        action: Action | None = o.action
        if o.publish and action is not None:
            out.append(Decision(ts=due_ts, incident_id=incident, service=service, deploy_id=change.deploy_id,
                                action=action, from_version=view.current or change.version, to_version=target,
                                confidence=confidence, reason=text, evidence=evidence))
        severity = o.severity
        if severity is not None:
            out.append(Alert(ts=due_ts, incident_id=alert_id, severity=severity, text=text))
        return out

    def _alert(self, due_ts: float, severity: Severity, text: str, shift: Anomaly) -> Alert:
        return Alert(ts=due_ts, incident_id=shift_id(shift), severity=severity, text=text)

    def _prune(self, now: float) -> None:
        horizon = now - self._keep_s
        if any(s.detected_ts < horizon for s in self._shifts):
            waiting = {id(p.anomaly) for p in self._pending}
            self._shifts = [s for s in self._shifts if s.detected_ts >= horizon or id(s) in waiting]
        incident_horizon = now - 2 * self.config.policy.window_s
        if any(i.ts < incident_horizon for i in self._incidents.values()):
            self._incidents = {k: i for k, i in self._incidents.items() if i.ts >= incident_horizon}
        if any(g.ts < horizon for g in self._groups):
            self._groups = [g for g in self._groups if g.ts >= horizon]
        self._deploys.prune(now)

    # -- state -----------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Compact, JSON-serialisable state; old deploys, shifts and incidents are pruned by event time."""
        return {
            "v": STATE_VERSION,
            "clock": self._clock.to_state(),
            "deploys": tracker_to_state(self._deploys),
            "shifts": [_row(s) for s in self._shifts],
            "pending": [[p.due_ts, p.extended, _row(p.anomaly)] for p in self._pending],
            "incidents": {k: [i.ts, i.action] for k, i in self._incidents.items()},
            "groups": [[g.metric, g.onset_ts, g.group_id, g.ts] for g in self._groups],
            "services": sorted(self._services),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: BackoutConfig) -> Decider:
        decider = cls(config)
        decider._clock = EventClock.from_state(state["clock"], config.stall_s)
        decider._deploys = tracker_from_state(state["deploys"], decider._deploys.clean_s, decider._deploys.keep_s)
        decider._shifts = [_anomaly(row) for row in state["shifts"]]
        kept = {_identity(s): s for s in decider._shifts}  # a pending anomaly is the very one kept
        pending = [(float(due), bool(ext), _anomaly(row)) for due, ext, row in state["pending"]]
        decider._pending = [Candidate(due, ext, kept.get(_identity(a), a)) for due, ext, a in pending]
        decider._incidents = {k: Incident(float(v), "rollback") if isinstance(v, int | float)
                              else Incident(float(v[0]), v[1])
                              for k, v in state["incidents"].items()}  # v1 kept no action: final
        decider._groups = [Group(g[0], float(g[1]), g[2], float(g[3])) for g in state.get("groups", [])]
        decider._services = set(state["services"])
        return decider


def _identity(a: Anomaly) -> tuple[str, str, float, float]:
    return (a.service, a.metric, a.onset_ts, a.detected_ts)


def _same(a: Anomaly, b: Anomaly) -> bool:
    return _identity(a) == _identity(b)


def _row(a: Anomaly) -> list[Any]:
    """An anomaly in the decider's state: its fields in contract order, without the type."""
    return [a.service, a.metric, a.onset_ts, a.detected_ts, a.baseline, a.current, a.ratio, a.score,
            a.detector, a.samples, a.ts, a.direction, a.kind, a.worsened]


def _anomaly(row: list[Any]) -> Anomaly:
    """Read a row of :func:`_row`; the ten-field rows of version 2 (nine: version 1) load too."""
    detected_ts = float(row[3])
    return Anomaly(service=row[0], metric=row[1], onset_ts=float(row[2]), detected_ts=detected_ts,
                   baseline=float(row[4]), current=float(row[5]), ratio=float(row[6]), score=float(row[7]),
                   detector=row[8], samples=int(row[9]) if len(row) > 9 else 0,
                   ts=float(row[10]) if len(row) > 10 else detected_ts,
                   direction=row[11] if len(row) > 11 else None, kind=row[12] if len(row) > 12 else None,
                   worsened=bool(row[13]) if len(row) > 13 else False)


def _shift_evidence(s: Anomaly) -> dict[str, Any]:
    return {"kind": "anomaly", "service": s.service, "metric": s.metric, "detector": s.detector,
            "onset_ts": s.onset_ts, "detected_ts": s.detected_ts, "baseline": s.baseline,
            "current": s.current, "ratio": s.ratio, "score": s.score}


def _change_evidence(c: Change, kind: str = "deploy") -> dict[str, Any]:
    return {"kind": kind, "deploy_id": c.deploy_id, "version": c.version,
            "previous_version": c.previous_version, "ts": c.ts}
