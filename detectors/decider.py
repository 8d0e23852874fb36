"""The decider: anomalies, deploys and watermarks in; decisions and alerts out.

Stage 2 of the pipeline, on one ordered stream whose interleaving differs
between the backtest and the live, partitioned stream. To take the same
decisions either way it works in event time only:

* an anomaly becomes a *pending candidate*, due ``hold_s`` after its detection
  (the hold lets other services' simultaneous shifts be confirmed too), and
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

Policy ``off`` decides and alerts but never emits a decision.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from backout.contracts import Action, Alert, Anomaly, Decision, Deploy, Severity, Watermark
from detectors import wording
from detectors.config import BackoutConfig
from detectors.correlation import Shift, Verdict, adverse_factor, blameable, correlate
from detectors.deploys import (
    Change,
    DeployTracker,
    ServiceView,
    tracker_from_state,
    tracker_to_state,
)
from detectors.policy import assess
from detectors.watermark import EventClock

Output = Decision | Alert
SEVERITY: dict[str, Severity] = {"rollback": "critical", "escalate": "critical", "request_approval": "warning"}


def incident_id(service: str, deploy_id: str) -> str:
    """Stable id of the incident "this deploy broke this service"."""
    return "inc-" + hashlib.sha1(f"{service}\x1f{deploy_id}".encode()).hexdigest()[:16]


def shift_id(shift: Shift) -> str:
    key = f"{shift.service}\x1f{shift.metric}\x1f{shift.onset_ts!r}"
    return "shift-" + hashlib.sha1(key.encode()).hexdigest()[:16]


class Decider:
    """Joins anomalies to deploys and applies the policy, in event time."""

    def __init__(self, config: BackoutConfig) -> None:
        self.config = config
        policy = config.policy
        self._keep_s = max(policy.window_s, 2 * policy.shared.within_s + policy.shared.hold_s) + config.hold_s
        self._clock = EventClock(config.stall_s)
        self._deploys = DeployTracker(policy.clean_s, keep_s=2 * policy.window_s + policy.clean_s)
        self._shifts: list[Shift] = []
        self._pending: list[tuple[float, bool, Shift]] = []  # (due_ts, extended, shift)
        self._incidents: dict[str, tuple[float, str]] = {}  # incident id -> (decision ts, action)
        self._groups: list[tuple[str, float, str, float]] = []  # shared groups: (metric, onset, id, ts)
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
            extra = record.model_extra or {}
            samples, deploy_id = extra.get("samples"), extra.get("deploy_id")
            shift = Shift(record.service, record.metric, record.onset_ts, record.detected_ts,
                          record.baseline, record.current, record.ratio, record.score, record.detector,
                          samples if isinstance(samples, int) else 0,
                          deploy_id if isinstance(deploy_id, str) else "")
            if any(_same(shift, s) for s in self._shifts):
                return []  # a redelivery
            self._services.add(shift.service)
            self._shifts.append(shift)
            self._pending.append((self._due(shift), False, shift))
            return self._release() if self._clock.now > 0 else []
        raise TypeError(f"the decider takes anomaly, deploy and watermark records, got {type(record).__name__}")

    @property
    def now(self) -> float:
        return self._clock.now

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- deciding --------------------------------------------------------------------

    def _due(self, shift: Shift) -> float:
        config = self.config
        joined = shift.onset_ts + config.policy.onset_slack_s + config.deploy_lateness_s
        return max(shift.detected_ts + config.hold_s, joined)

    def _blamed(self, service: str, deploy_id: str) -> bool:
        decided = self._incidents.get(incident_id(service, deploy_id))
        return decided is not None and decided[1] in ("rollback", "request_approval")

    def _release(self) -> list[Output]:
        now = self._clock.now
        out: list[Output] = []
        while True:
            due = sorted((p for p in self._pending if p[0] < now), key=_order)
            if not due:
                break
            item = due[0]
            self._pending.remove(item)
            due_ts, extended, shift = item
            out += self._decide(shift, due_ts, extended)
        self._prune(now)
        return out

    def _decide(self, shift: Shift, due_ts: float, extended: bool) -> list[Output]:
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
        verdict = correlate(shift, view, known, view_of, total, policy, due_ts, extended,
                            self._blamed)
        if verdict.kind == "wait":
            wait_until = max(due_ts, shift.detected_ts + policy.shared.hold_s)
            self._pending.append((wait_until, True, shift))
            return []
        direction = spec.direction if spec is not None else None
        what = wording.change(shift.metric, shift.baseline, shift.current, direction)
        where = f"{what} on {shift.service}"
        if verdict.kind == "shared":
            return self._shared(shift, verdict, where, view, due_ts, total)
        if verdict.kind == "no_deploy":
            return [self._alert(due_ts, "warning", f"{where} (onset {_hhmm(shift.onset_ts)}); "
                                "no deploy of it in the last "
                                f"{wording.duration(policy.window_s)} to blame.", shift)]
        if verdict.kind == "before_deploy":
            later = verdict.later_change
            assert later is not None
            return [self._alert(due_ts, "warning", f"{where}, starting {wording.duration(later.ts - shift.onset_ts)} "
                                f"before the deployment of {later.version}: not that deploy's fault.", shift)]
        if verdict.kind == "follower":
            return [self._alert(due_ts, "warning", f"{where}; {verdict.leader}, deployed at the same time, "
                                "moved first: treating it as the cause, not this service's deploy.", shift)]
        change = verdict.change
        assert change is not None
        incident = incident_id(shift.service, change.deploy_id)
        decided = self._incidents.get(incident)
        if decided is not None and decided[1] != "request_approval":
            return []  # decided for good; only a question can still become a rollback
        return self._blame(shift, change, verdict, view, known, due_ts, incident, asked_ts=decided and decided[0])

    def _blame(self, shift: Shift, change: Change, verdict: Verdict, view: ServiceView,
               known: list[Shift], due_ts: float, incident: str, asked_ts: float | None = None) -> list[Output]:
        """Decide on a blamed deploy; ``asked_ts``: when approval was already requested (an upgrade)."""
        policy = self.config.policy
        service = shift.service
        # every shift of this service the deploy could explain; the worst one speaks for the incident
        mine = [s for s in known if s.service == service and s.metric not in policy.context_metrics
                and (blameable(change, s.onset_ts, policy) or s is shift)]
        graded = []
        for s in mine:
            spec = self.config.spec_for(s.metric)
            direction = spec.direction if spec is not None else None
            factor = adverse_factor(s, direction)
            lag_s = max(0.0, s.onset_ts - change.ts)
            a = assess(factor, s.current - s.baseline, lag_s, list(verdict.ambiguity),
                       self.config.metric_policy(service, s.metric), policy.window_s,
                       self.config.mode_for(service, s.metric), policy.late_ramp_s)
            graded.append((a.clear, a.confidence, -s.onset_ts, s.metric, s, a, direction, lag_s))
        graded.sort(key=lambda g: g[:4], reverse=True)
        _, _, _, _, primary, a, direction, lag_s = graded[0]
        what = wording.change(primary.metric, primary.baseline, primary.current, direction)
        evidence = [_shift_evidence(s) for s in mine] + [_change_evidence(change)]
        evidence += [_change_evidence(c, "earlier deploy") for c in verdict.also_suspect]
        mode = self.config.mode_for(service, primary.metric)
        exclude = (change.version, view.current, *(c.version for c in verdict.also_suspect))
        target = view.target(exclude=exclude)
        if asked_ts is not None:  # escalate the question only when it became clear-cut, on the same version
            if a.would != "rollback" or mode != "auto" or view.current != change.version or target is None:
                return []
            self._incidents[incident] = (due_ts, "rollback")
            self._deploys.mark_bad(service, change.version)
            text = wording.upgrade(what, lag_s, change.version, service, target, due_ts - asked_ts)
            return self._emit(incident, "rollback", service, change, view, target, a.confidence, text,
                              evidence, due_ts, mode)
        if not a.actionable:
            return [self._alert(due_ts, "info", f"{what} on {service} after the deployment of {change.version}, "
                                "below the rollback threshold: watching.", primary)]
        if shift.detected_ts - change.ts > policy.window_s:
            return [self._alert(due_ts, "info", f"{what} on {service}, confirmed "
                                f"{wording.duration(shift.detected_ts - change.ts)} after the deployment of "
                                f"{change.version}: too long after it to ask about it; watching.", primary)]
        traffic = verdict.traffic
        if traffic is not None and traffic >= adverse_factor(primary, direction) and not a.clear:
            return [self._alert(due_ts, "info", f"{what} on {service} after the deployment of {change.version}, "
                                f"but its traffic grew {wording.times(traffic)} at the same time: "
                                "load, not the deploy; watching.", primary)]
        if view.current is not None and view.current != change.version and view.current in view.known_good:
            self._incidents[incident] = (due_ts, "none")
            return [self._alert(due_ts, "info", f"{what} on {service} after the deployment of {change.version}; "
                                f"it already runs {view.current} again.", primary, incident)]
        if target is None:
            self._incidents[incident] = (due_ts, "escalate")
            text = (f"{what} {wording.duration(lag_s)} after the deployment of {change.version} to {service}, "
                    f"but no earlier version of {service} is known to be good: nothing safe to roll back to. "
                    "Escalating to a human.")
            return self._emit(incident, "escalate", service, change, view, None, a.confidence, text,
                              evidence, due_ts, mode)
        action: Action = a.would or "request_approval"
        if action == "rollback" and mode == "auto":  # a question, answered or not, leaves the version as it was
            self._deploys.mark_bad(service, change.version)
        if mode == "off":
            self._incidents[incident] = (due_ts, "none")
            verb = "roll back" if action == "rollback" else "ask to roll back"
            text = (f"{what} {wording.duration(lag_s)} after the deployment of {change.version} to {service}. "
                    f"Backout would {verb} to {target}; the policy is off here, so it is not acting.")
            return [Alert(ts=due_ts, incident_id=incident, severity=SEVERITY[action], text=text)]
        if action == "rollback" and mode == "auto":
            text = wording.rollback(what, lag_s, change.version, service, target)
        else:
            action = "request_approval"
            text = wording.approval(what, change.version, service, due_ts - change.ts, lag_s, target,
                                    a.why_not_clear)
        self._incidents[incident] = (due_ts, action)
        return self._emit(incident, action, service, change, view, target, a.confidence, text,
                          evidence, due_ts, mode)

    def _shared(self, shift: Shift, verdict: Verdict, where: str, view: ServiceView, due_ts: float,
                total: int) -> list[Output]:
        """One alert per group of services that shifted together; an escalation per deploy it spares."""
        within_s = self.config.policy.shared.within_s
        group = next((g for g in self._groups if g[0] == shift.metric and abs(g[1] - shift.onset_ts) <= within_s),
                     None)
        out: list[Output] = []
        together = (f"{len(verdict.shared)} of {total} services at the same time "
                    f"({', '.join(verdict.shared[:8])}{', …' if len(verdict.shared) > 8 else ''})")
        change = verdict.change
        if change is not None and incident_id(shift.service, change.deploy_id) not in self._incidents:
            incident = incident_id(shift.service, change.deploy_id)
            self._incidents[incident] = (due_ts, "escalate")
            text = (f"{where} {wording.duration(verdict.lag_s or 0)} after the deployment of {change.version}, "
                    f"but it shifted on {together}: a shared dependency or a traffic surge, not this deploy. "
                    "Escalating to a human.")
            evidence = [_shift_evidence(shift), _change_evidence(change),
                        {"kind": "shared", "services": verdict.shared, "of": total}]
            confidence = round(min(1.0, len(verdict.shared) / max(total, 1)), 3)
            mode = self.config.mode_for(shift.service, shift.metric)
            out += self._emit(incident, "escalate", shift.service, change, view, None, confidence, text,
                              evidence, due_ts, mode)
        if group is None:
            group_id = "shared-" + shift_id(shift)[6:]
            self._groups.append((shift.metric, shift.onset_ts, group_id, due_ts))
            if not out:
                label = wording.label(shift.metric)
                out.append(Alert(ts=due_ts, incident_id=group_id, severity="critical", text=(
                    f"{label} shifted on {together}: a shared dependency or a traffic surge, not a deploy; "
                    "nothing to roll back. A human should look.")))
        return out

    def _emit(self, incident: str, action: Action, service: str, change: Change, view: ServiceView,
              target: str | None, confidence: float, text: str, evidence: list[dict[str, Any]],
              due_ts: float, mode: str) -> list[Output]:
        if mode == "off":  # decide and alert, never act
            return [Alert(ts=due_ts, incident_id=incident, severity=SEVERITY[action], text=text)]
        decision = Decision(ts=due_ts, incident_id=incident, service=service, deploy_id=change.deploy_id,
                            action=action, from_version=view.current or change.version, to_version=target,
                            confidence=confidence, reason=text, evidence=evidence)
        return [decision, Alert(ts=due_ts, incident_id=incident, severity=SEVERITY[action], text=text)]

    def _alert(self, due_ts: float, severity: Severity, text: str, shift: Shift,
               incident: str | None = None) -> Alert:
        return Alert(ts=due_ts, incident_id=incident or shift_id(shift), severity=severity, text=text)

    def _prune(self, now: float) -> None:
        horizon = now - self._keep_s
        if any(s.detected_ts < horizon for s in self._shifts):
            waiting = {id(p[2]) for p in self._pending}
            self._shifts = [s for s in self._shifts if s.detected_ts >= horizon or id(s) in waiting]
        incident_horizon = now - 2 * self.config.policy.window_s
        if any(ts < incident_horizon for ts, _ in self._incidents.values()):
            self._incidents = {k: v for k, v in self._incidents.items() if v[0] >= incident_horizon}
        if any(g[3] < horizon for g in self._groups):
            self._groups = [g for g in self._groups if g[3] >= horizon]
        self._deploys.prune(now)

    # -- state -----------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Compact, JSON-serialisable state; old deploys, shifts and incidents are pruned by event time."""
        return {
            "v": 2,
            "clock": self._clock.to_state(),
            "deploys": tracker_to_state(self._deploys),
            "shifts": [s.to_list() for s in self._shifts],
            "pending": [[due, ext, s.to_list()] for due, ext, s in self._pending],
            "incidents": {k: list(v) for k, v in self._incidents.items()},
            "groups": [list(g) for g in self._groups],
            "services": sorted(self._services),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: BackoutConfig) -> Decider:
        decider = cls(config)
        decider._clock = EventClock.from_state(state["clock"], config.stall_s)
        decider._deploys = tracker_from_state(state["deploys"], decider._deploys.clean_s, decider._deploys.keep_s)
        decider._shifts = [Shift.from_list(row) for row in state["shifts"]]
        by_value = {s: s for s in decider._shifts}
        decider._pending = [(float(due), bool(ext), by_value.get(s, s))
                            for due, ext, s in ((d, e, Shift.from_list(r)) for d, e, r in state["pending"])]
        decider._incidents = {k: (float(v), "rollback") if isinstance(v, int | float) else (float(v[0]), str(v[1]))
                              for k, v in state["incidents"].items()}  # v1 kept no action: final
        decider._groups = [(g[0], float(g[1]), g[2], float(g[3])) for g in state.get("groups", [])]
        decider._services = set(state["services"])
        return decider


def _order(item: tuple[float, bool, Shift]) -> tuple:
    due, _, s = item
    return (due, s.service, s.metric, s.onset_ts, s.detected_ts)


def _same(a: Shift, b: Shift) -> bool:
    return (a.service, a.metric, a.onset_ts, a.detected_ts) == (b.service, b.metric, b.onset_ts, b.detected_ts)


def _shift_evidence(s: Shift) -> dict[str, Any]:
    return {"kind": "anomaly", "service": s.service, "metric": s.metric, "detector": s.detector,
            "onset_ts": s.onset_ts, "detected_ts": s.detected_ts, "baseline": s.baseline,
            "current": s.current, "ratio": s.ratio, "score": s.score}


def _change_evidence(c: Change, kind: str = "deploy") -> dict[str, Any]:
    return {"kind": kind, "deploy_id": c.deploy_id, "version": c.version,
            "previous_version": c.previous_version, "ts": c.ts}


def _hhmm(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%H:%M:%S UTC")
