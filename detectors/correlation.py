"""Correlation: which deploy, if any, a sustained shift is the fault of.

The questions an on-call engineer asks, in order:

1. *Did many services shift together?* Then it is a shared dependency or a
   traffic surge, not one deploy: ``shared``, asked of every shift, deployed
   or not (the decider escalates a spared deploy and groups the alerts) —
   unless this deployed service moved first, when it may be the cause of a
   cascade to its callers: blamed, but never clear-cut.
2. *Did the shift start before the deploy?* Then that deploy did not cause it:
   ``before_deploy``. No deploy in the window before the onset: ``no_deploy``.
   An onset is an estimate (a CUSUM's last zero drifts early on noise, by
   minutes for a moderate shift), so a shift dated before a deploy but
   confirmed on at least ``min_samples`` samples taken after it is blamed on
   that deploy, never clear-cut: only a shift confirmed before the deploy
   certainly predates it.
3. *Did another service that also deployed move first?* Then this one is its
   caller, hurt by it: ``follower`` (the other service's own shift is blamed).
   Onsets within ``onset_slack_s`` of each other are the same moment: then
   this one is the follower if the other's deploy is already blamed, and the
   blame is ambiguous otherwise.
4. Otherwise blame the latest deploy before the onset: ``blame``, with the
   reasons that make it ambiguous (two deploys in quick succession, another
   deployed service moving at the same moment).

Only inputs stamped at or before the decision time are given to
:func:`correlate`; that is what makes the answer independent of read order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from backout.contracts import Anomaly
from detectors import wording
from detectors.config import PolicyConfig
from detectors.deploys import Change, ServiceView

VerdictKind = Literal["blame", "no_deploy", "before_deploy", "shared", "follower", "wait"]


def samples_since(anomaly: Anomaly, ts: float) -> float:
    """About how many of the excursion's samples were taken at or after ``ts`` (0 if unknown)."""
    if anomaly.samples < 2 or anomaly.detected_ts <= anomaly.onset_ts:
        return 0.0
    step_s = (anomaly.detected_ts - anomaly.onset_ts) / (anomaly.samples - 1)
    return max(0.0, (anomaly.detected_ts - ts) / step_s + 1)


@dataclass
class Verdict:
    kind: VerdictKind
    change: Change | None = None
    lag_s: float | None = None  # onset - deploy time
    ambiguity: list[str] = field(default_factory=list)  # why the blame is not clear-cut
    also_suspect: list[Change] = field(default_factory=list)  # other recent changes never to roll back to
    shared: list[str] = field(default_factory=list)  # services that shifted together (shared)
    leader: str | None = None  # the service that moved first (follower)
    later_change: Change | None = None  # the deploy that came after the onset (before_deploy)


def adverse_factor(shift: Anomaly, direction: str | None) -> float:
    """How many times worse the metric got: >1 is worse, whatever the direction."""
    if shift.baseline > 0 and shift.current > 0:
        up = shift.current / shift.baseline
    elif shift.ratio > 0:
        up = shift.ratio
    else:
        up = 1e3 if shift.current > shift.baseline else 1e-3
    if direction == "down":
        up = 1.0 / up
    elif direction is None:
        up = max(up, 1.0 / up)
    return min(up, 1e3)


def blameable(change: Change, onset_ts: float, policy: PolicyConfig) -> bool:
    """The onset falls after the deploy (within slack) and within the correlation window."""
    return change.ts <= onset_ts + policy.onset_slack_s and onset_ts - change.ts <= policy.window_s


def correlate(shift: Anomaly, view: ServiceView, shifts: Iterable[Anomaly],
              views: Callable[[str], ServiceView], services_total: int, policy: PolicyConfig,
              due_ts: float, extended: bool = False, min_samples: int = 3,
              blamed: Callable[[str, str], bool] = lambda service, deploy_id: False) -> Verdict:
    """Judge one shift; ``shifts`` are every known shift detected by ``due_ts`` (the candidate's too).

    ``min_samples``: the fewest samples a shift is ever confirmed on; ``blamed(service, deploy_id)``:
    whether a decision already blamed that deploy.
    """
    shifts = [s for s in shifts if s.detected_ts <= due_ts]
    candidates = [c for c in view.changes if blameable(c, shift.onset_ts, policy)]
    # deploys after the onset estimate, with enough of the evidence taken after them to be its cause
    candidates += [c for c in view.changes if shift.onset_ts + policy.onset_slack_s < c.ts < shift.detected_ts
                   and samples_since(shift, c.ts) >= min_samples]
    change = candidates[-1] if candidates else None
    dated_before = change is not None and not blameable(change, shift.onset_ts, policy)

    # 1. everybody's problem?
    cfg = policy.shared
    together = sorted({s.service for s in shifts if s.metric == shift.metric
                       and abs(s.onset_ts - shift.onset_ts) <= cfg.within_s} | {shift.service})
    needed = max(cfg.min_services, math.ceil(cfg.min_fraction * max(services_total, len(together))))
    # a deployed service that moved before all the others may be the cause of a cascade to its callers
    leader = change is not None and all(s.onset_ts >= shift.onset_ts for s in shifts if s.service in together
                                        and s.metric == shift.metric and s.service != shift.service)
    if len(together) >= needed and not leader:
        return Verdict("shared", change=change, shared=together,
                       lag_s=None if change is None else shift.onset_ts - change.ts)
    if cfg.suspect_services <= len(together) < needed and not extended and not leader:
        return Verdict("wait", change=change, shared=together)

    if change is None:
        later = [c for c in view.changes if shift.onset_ts + policy.onset_slack_s < c.ts <= due_ts]
        if later:
            return Verdict("before_deploy", later_change=later[0], lag_s=shift.onset_ts - later[0].ts)
        return Verdict("no_deploy")
    verdict = Verdict("blame", change=change, lag_s=max(0.0, shift.onset_ts - change.ts))
    if dated_before:
        verdict.ambiguity.append(wording.dated_before(change.ts - shift.onset_ts, shift.detected_ts - change.ts))
    if len(together) >= needed:
        verdict.ambiguity.append(wording.followed(len(together) - 1))

    # 2. did another service that deployed move first? Then we are its caller.
    own_first = _first_onset(shift.service, change, shifts, policy, default=None) or shift.onset_ts
    slack = policy.onset_slack_s
    for other in sorted({s.service for s in shifts} - {shift.service}):
        other_view = views(other)
        for other_change in reversed(other_view.changes):
            first = _first_onset(other, other_change, shifts, policy, default=None)
            if first is None or abs(first - own_first) > policy.follow_s:
                continue
            if first < own_first - slack or (first <= own_first + slack
                                             and blamed(other, other_change.deploy_id)):
                verdict.kind, verdict.leader = "follower", other
                return verdict
            if first <= own_first + slack:
                verdict.ambiguity.append(wording.same_moment(other))
            break

    # 3. blame the latest deploy; earlier ones in quick succession share the suspicion
    for earlier in reversed(candidates[:-1]):
        if change.ts - earlier.ts > policy.succession_s:
            break
        verdict.also_suspect.append(earlier)
        verdict.ambiguity.append(wording.succession(earlier.version, change.ts - earlier.ts, change.version))
    # the service's own traffic moved at the same time: the shift might be load, not the code
    for s in shifts:
        if (s.service == shift.service and s.metric in policy.context_metrics
                and abs(s.onset_ts - shift.onset_ts) <= cfg.within_s):
            verdict.ambiguity.append(wording.traffic_moved(s.metric, s.baseline, s.current))
            break
    # services that shifted no later than this one, for no deploy of theirs: something else may be going on
    # (those that shifted later are more likely its callers)
    before = sorted({s.service for s in shifts if s.metric == shift.metric and s.service != shift.service
                     and shift.onset_ts - cfg.within_s <= s.onset_ts <= shift.onset_ts
                     and not any(blameable(c, s.onset_ts, policy) for c in views(s.service).changes)})
    if before:
        verdict.ambiguity.append(wording.shifted_before(before))
    return verdict


def _first_onset(service: str, change: Change, shifts: list[Anomaly], policy: PolicyConfig,
                 default: float | None) -> float | None:
    """Earliest onset of the service's shifts that ``change`` could explain."""
    onsets = [s.onset_ts for s in shifts if s.service == service and blameable(change, s.onset_ts, policy)]
    return min(onsets) if onsets else default
