"""Correlation: which deploy, if any, a sustained shift is the fault of.

The questions an on-call engineer asks, in order:

1. *Did many services shift together?* Then it is a shared dependency or a
   traffic surge, not one deploy: ``shared`` (the decider escalates) — unless
   this service moved first, when it may be the cause of a cascade to its
   callers: blamed, but never clear-cut.
2. *Did the shift start before the deploy?* Then that deploy did not cause it:
   ``before_deploy``. No deploy in the window before the onset: ``no_deploy``.
3. *Did another service that also deployed move first?* Then this one is its
   caller, hurt by it: ``follower`` (the other service's own shift is blamed).
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

from detectors.config import PolicyConfig
from detectors.deploys import Change, ServiceView

VerdictKind = Literal["blame", "no_deploy", "before_deploy", "shared", "follower", "wait"]


@dataclass(frozen=True)
class Shift:
    """A sustained shift of one (service, metric): the part of an anomaly the decider keeps."""

    service: str
    metric: str
    onset_ts: float
    detected_ts: float
    baseline: float
    current: float
    ratio: float
    score: float
    detector: str

    def to_list(self) -> list:
        return [self.service, self.metric, self.onset_ts, self.detected_ts, self.baseline,
                self.current, self.ratio, self.score, self.detector]

    @classmethod
    def from_list(cls, row: list) -> Shift:
        return cls(row[0], row[1], float(row[2]), float(row[3]), float(row[4]), float(row[5]),
                   float(row[6]), float(row[7]), row[8])


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


def adverse_factor(shift: Shift, direction: str | None) -> float:
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


def correlate(shift: Shift, view: ServiceView, shifts: Iterable[Shift],
              views: Callable[[str], ServiceView], services_total: int, policy: PolicyConfig,
              due_ts: float, extended: bool = False) -> Verdict:
    """Judge one shift; ``shifts`` are every known shift detected by ``due_ts`` (the candidate's too)."""
    shifts = [s for s in shifts if s.detected_ts <= due_ts]
    candidates = [c for c in view.changes if blameable(c, shift.onset_ts, policy)]
    if not candidates:
        later = [c for c in view.changes if shift.onset_ts + policy.onset_slack_s < c.ts <= due_ts]
        if later:
            return Verdict("before_deploy", later_change=later[0], lag_s=shift.onset_ts - later[0].ts)
        return Verdict("no_deploy")
    change = candidates[-1]
    verdict = Verdict("blame", change=change, lag_s=max(0.0, shift.onset_ts - change.ts))

    # 1. everybody's problem?
    cfg = policy.shared
    together = sorted({s.service for s in shifts if s.metric == shift.metric
                       and abs(s.onset_ts - shift.onset_ts) <= cfg.within_s} | {shift.service})
    needed = max(cfg.min_services, math.ceil(cfg.min_fraction * max(services_total, len(together))))
    # a deployed service that moved before all the others may be the cause of a cascade to its callers
    leader = all(s.onset_ts >= shift.onset_ts for s in shifts
                 if s.service in together and s.metric == shift.metric and s.service != shift.service)
    if len(together) >= needed:
        if not leader:
            verdict.kind, verdict.shared = "shared", together
            return verdict
        verdict.ambiguity.append(f"{len(together) - 1} other services shifted right after it: "
                                 "its callers, or a shared cause")
    elif len(together) >= cfg.suspect_services and not extended and not leader:
        verdict.kind, verdict.shared = "wait", together
        return verdict

    # 2. did another service that deployed move first? Then we are its caller.
    own_first = _first_onset(shift.service, change, shifts, policy, default=None) or shift.onset_ts
    for other in sorted({s.service for s in shifts} - {shift.service}):
        other_view = views(other)
        for other_change in reversed(other_view.changes):
            first = _first_onset(other, other_change, shifts, policy, default=None)
            if first is None or abs(first - own_first) > policy.follow_s:
                continue
            if first < own_first:
                verdict.kind, verdict.leader = "follower", other
                return verdict
            if first == own_first:
                verdict.ambiguity.append(f"{other} (also just deployed) moved at the same moment")
            break

    # 3. blame the latest deploy; earlier ones in quick succession share the suspicion
    for earlier in reversed(candidates[:-1]):
        if change.ts - earlier.ts > policy.succession_s:
            break
        verdict.also_suspect.append(earlier)
        verdict.ambiguity.append(f"{earlier.version} was deployed only {change.ts - earlier.ts:.0f} s before {change.version}")
    # the service's own traffic moved at the same time: the shift might be load, not the code
    for s in shifts:
        if (s.service == shift.service and s.metric in policy.context_metrics
                and abs(s.onset_ts - shift.onset_ts) <= cfg.within_s):
            verdict.ambiguity.append(f"{s.metric} moved too ({s.baseline:.3g} → {s.current:.3g}): it might be traffic")
            break
    # services that shifted no later than this one, for no deploy of theirs: something else may be going on
    # (those that shifted later are more likely its callers)
    before = sorted({s.service for s in shifts if s.metric == shift.metric and s.service != shift.service
                     and shift.onset_ts - cfg.within_s <= s.onset_ts <= shift.onset_ts})
    if before:
        verdict.ambiguity.append(f"{', '.join(before)} shifted at the same time or earlier")
    return verdict


def _first_onset(service: str, change: Change, shifts: list[Shift], policy: PolicyConfig,
                 default: float | None) -> float | None:
    """Earliest onset of the service's shifts that ``change`` could explain."""
    onsets = [s.onset_ts for s in shifts if s.service == service and blameable(change, s.onset_ts, policy)]
    return min(onsets) if onsets else default
