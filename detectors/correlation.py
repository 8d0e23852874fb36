"""Correlation: which deploy, if any, a sustained shift is the fault of.

The questions an on-call engineer asks, in order:

1. *Did many services shift together?* Then it is a shared dependency or a
   traffic surge, not one deploy: ``shared``, asked of every shift, deployed
   or not (the decider escalates a spared deploy and groups the alerts) —
   unless this deployed service led, when it may be the cause of a cascade to
   its callers: blamed, but never clear-cut. It leads when it began within
   ``shared.own_within_s`` of its deploy (a cascade starts as the new pods
   take traffic) and every other shift could be a caller's (per
   ``depends_on``, or at most ``follow_ratio`` times its own) and began after
   it (or less than a sampling interval before it: a caller's samples may be
   stamped before its callee's), or at the same moment and smaller.
   A deployed service's shift that began more than ``shared.prompt_s`` (or two
   sampling intervals) after its deploy is first put off (``wait``) until
   ``shared.hold_s`` after its detection: its anchored test sees a shared
   incident sooner than the monitors of services nobody deployed see theirs.
2. *Did the shift start before the deploy?* Then that deploy did not cause it:
   ``before_deploy``. No deploy in the window before the onset: ``no_deploy``.
   A deploy's own shifts are found and dated by its anchored test
   (:mod:`detectors.anchored`), which dates one before the deploy only when
   the data clearly favour it: so an onset before the deploy, from either
   detector, means the shift was already there.
3. *Did another service that also deployed move first?* Then this one may be
   its caller, hurt by it: ``follower`` (the other service's own shift is
   blamed) — if it calls it (``depends_on``, the optional call graph) or,
   without a graph, if its shift is on the same metric and at most
   ``follow_ratio`` times as large (a callee's extra errors and latency reach
   its callers diluted). A shift on another metric, or much larger, is this
   service's own: two bad deploys a few seconds apart are both blamed.
   Onsets within ``onset_slack_s`` (or two sampling intervals, if longer) of
   each other are the same moment: then this one is the follower if the
   other's deploy is already blamed, if the graph says it calls it, or,
   without a graph, if its shift is the smaller; otherwise the blame is
   ambiguous.
4. *Did a service nobody deployed move by far more, at the same moment or
   earlier?* Then the trouble began there and this shift is its echo
   (``echo``: an alert, no question) when it is at most 1/``follow_ratio``
   of that one's. Other services without a deploy that moved no later (or,
   when there are enough of them to be ``suspect_services`` with this one,
   at the same moment) make the blame ambiguous — or, for a shift that began more than
   ``shared.own_within_s`` after the deploy, take it: ``alongside`` (an
   alert naming them, no question).
5. Otherwise blame the latest deploy before the onset: ``blame``, with the
   reasons that make it ambiguous (two deploys in quick succession, another
   deployed service moving at the same moment, the service's own traffic
   rising since the deploy: ``traffic``, which the decider takes as load). A
   shift that began more than ``shared.own_within_s`` after its deploy while
   the traffic of as many services as make a shared shift surged is the
   surge's: ``surge`` (an alert, no question).

At a few events a sample an onset is an interval (``latest_onset_ts``, the
latest the samples cannot tell from the best): grouping shifts into a shared
one, a deployed service's lead (within ``shared.own_within_s`` at the latest)
and the wait of a late shift take the whole interval, so that stray errors
just after a deploy do not make a later shared shift the deploy's.

Only inputs stamped at or before the decision time are given to
:func:`correlate`; that is what makes the answer independent of read order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from backout.contracts import Anomaly
from detectors import wording
from detectors.config import PolicyConfig
from detectors.deploys import Change, ServiceView

VerdictKind = Literal["blame", "no_deploy", "before_deploy", "shared", "follower", "echo", "alongside", "surge",
                      "wait"]


@dataclass
class Verdict:
    kind: VerdictKind
    change: Change | None = None
    lag_s: float | None = None  # onset - deploy time
    ambiguity: list[str] = field(default_factory=list)  # why the blame is not clear-cut
    also_suspect: list[Change] = field(default_factory=list)  # other recent changes never to roll back to
    shared: list[str] = field(default_factory=list)  # services that shifted together (shared, alongside, surge)
    leader: str | None = None  # the service that moved first (follower, echo)
    later_change: Change | None = None  # the deploy that came after the onset (before_deploy)
    traffic: float | None = None  # the service's own traffic grew this many times at the same moment


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
              due_ts: float, extended: bool = False,
              blamed: Callable[[str, str], bool] = lambda service, deploy_id: False) -> Verdict:
    """Judge one shift; ``shifts`` are every known shift detected by ``due_ts`` (the candidate's too).

    ``blamed(service, deploy_id)``: whether a decision already blamed that deploy.
    """
    shifts = [s for s in shifts if s.detected_ts <= due_ts]
    candidates = [c for c in view.changes if blameable(c, shift.onset_ts, policy)]
    change = candidates[-1] if candidates else None

    # 1. everybody's problem?
    cfg = policy.shared
    together = sorted({s.service for s in shifts if s.metric == shift.metric
                       and _apart(s, shift) <= cfg.within_s} | {shift.service})
    needed = cfg.needed(max(services_total, len(together)))
    # a deployed service that moved before all the others may be the cause of a cascade to its callers, as
    # long as they could be its callers: per the graph, or with shifts at most follow_ratio times its own (a
    # caller that calls it twice per request waits twice); a caller's samples may be stamped up to an
    # interval before its callee's, and at the same moment a smaller shift is a caller's
    # (_echo_at_same_moment)
    others = [s for s in shifts if s.metric == shift.metric and s.service != shift.service
              and _apart(s, shift) <= cfg.within_s]
    slack = _same_moment_s(shift, others, policy)
    near = change is not None and _latest(shift) - change.ts <= cfg.own_within_s
    # another service deployed just before its shift, within an interval of this one, that this one could
    # follow: which of the two leads is not known from onsets stamped less than an interval apart
    rival = near and any(_could_follow(shift, s, policy) and abs(s.onset_ts - shift.onset_ts) < max(step_s(shift), step_s(s))
                and _own_deploy(s, views(s.service), policy) for s in others)
    leader = near and all(_could_follow(s, shift, policy) and (
        s.onset_ts >= shift.onset_ts or _echo_at_same_moment(s, shift, slack, policy)
        or (s.onset_ts >= shift.onset_ts - max(step_s(shift), step_s(s)) and not rival)) for s in others)
    if len(together) >= needed and not leader:
        return Verdict("shared", change=change, shared=together,
                       lag_s=None if change is None else shift.onset_ts - change.ts)
    if cfg.suspect_services <= len(together) < needed and not extended:  # a leader too: are they its callers?
        return Verdict("wait", change=change, shared=together)
    # late for its deploy, is it everybody's? (onsets are quantised to the sampling interval: two is "at once")
    if not extended and change is not None and _latest(shift) - change.ts > max(cfg.prompt_s, 2.0 * step_s(shift)):
        return Verdict("wait", change=change, shared=together)

    if change is None:
        later = [c for c in view.changes if shift.onset_ts + policy.onset_slack_s < c.ts <= due_ts]
        if later:
            return Verdict("before_deploy", later_change=later[0], lag_s=shift.onset_ts - later[0].ts)
        return Verdict("no_deploy")
    verdict = Verdict("blame", change=change, lag_s=max(0.0, shift.onset_ts - change.ts))
    if len(together) >= needed:
        verdict.ambiguity.append(wording.followed(len(together) - 1))

    # 2. did another service that deployed move first? Then we are its caller.
    own_first = _first_onset(shift.service, change, shifts, policy, default=None) or shift.onset_ts
    for other in sorted({s.service for s in shifts} - {shift.service}):
        other_view = views(other)
        slack = _same_moment_s(shift, [s for s in shifts if s.service == other], policy)
        for other_change in reversed(other_view.changes):
            first = _first_onset(other, other_change, shifts, policy, default=None)
            if first is None or abs(first - own_first) > max(policy.follow_s, 2.0 * slack):
                continue
            theirs = [s for s in shifts if s.service == other and blameable(other_change, s.onset_ts, policy)
                      and s.onset_ts <= own_first + slack]
            if not any(_could_follow(shift, s, policy) for s in theirs):
                break  # whenever it moved, this shift is not one a caller of it would show
            # at the same moment, the cause is the one already blamed, the callee per the graph or,
            # without one, the larger shift (a callee's errors reach its callers diluted)
            if first < own_first - slack or (first <= own_first + slack and (
                    blamed(other, other_change.deploy_id) or any(_echo_at_same_moment(shift, s, slack, policy) for s in theirs))):
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
    # the service's own traffic moved at the same time, or since the deploy and before the shift:
    # the shift might be load, not the code
    since = min(shift.onset_ts - cfg.within_s, change.ts - policy.onset_slack_s)
    for s in shifts:
        if (s.service == shift.service and s.metric in policy.context_metrics
                and since <= s.onset_ts <= shift.onset_ts + cfg.within_s):
            verdict.ambiguity.append(wording.traffic_moved(s.metric, s.baseline, s.current))
            if s.current > s.baseline > 0:
                verdict.traffic = max(verdict.traffic or 0.0, s.current / s.baseline)
    # the fleet's traffic surged at the same moment (as many services' as make a shared shift): a shift
    # that began late for its deploy is the surge's
    surged = sorted({s.service for s in shifts if s.metric in policy.context_metrics and s.current > s.baseline
                     and abs(s.onset_ts - shift.onset_ts) <= cfg.within_s})
    if not near and len(surged) >= cfg.needed(services_total):
        verdict.kind, verdict.shared = "surge", surged
        return verdict
    # services that shifted no later than this one, for no deploy of theirs (none, or none within
    # shared.own_within_s before: a deploy's own trouble begins as it rolls out): something else may be
    # going on (those that shifted later are more likely its callers); one that moved by far more, at
    # the same moment or earlier, is where the trouble began, and this shift its echo
    undeployed = [s for s in shifts if s.metric == shift.metric and s.service != shift.service
                  and shift.onset_ts - cfg.within_s <= s.onset_ts <= shift.onset_ts + slack
                  and not _own_deploy(s, views(s.service), policy)]
    source = max((s for s in undeployed if _could_follow(shift, s, policy)
                  and policy.follow_ratio * _size(shift) <= _size(s)), key=_size, default=None)
    if source is not None:
        verdict.kind, verdict.leader = "echo", source.service
        return verdict
    # at the same moment, one could be this service's caller; enough of them to be a fleet's trouble are not
    same = {s.service for s in undeployed}
    many = len(same) + 1 >= cfg.suspect_services
    before = sorted(same if many else {s.service for s in undeployed if s.onset_ts <= shift.onset_ts})
    if before and not near:
        verdict.kind, verdict.shared = "alongside", before
        return verdict
    if before:
        verdict.ambiguity.append(wording.shifted_before(before))
    return verdict


def _same_moment_s(shift: Anomaly, others: list[Anomaly], policy: PolicyConfig) -> float:
    """Onset estimates are quantised to the sampling interval, each within a sample or so: two of
    them closer than two intervals (or ``onset_slack_s``) are the same moment."""
    quantum = max([step_s(shift)] + [step_s(s) for s in others])
    return max(policy.onset_slack_s, 2.0 * quantum)


def _latest(a: Anomaly) -> float:
    """The latest the shift may have begun (its onset, unless the samples cannot tell)."""
    return a.latest_onset_ts if a.latest_onset_ts is not None and a.latest_onset_ts > a.onset_ts else a.onset_ts


def _apart(a: Anomaly, b: Anomaly) -> float:
    """Seconds between the onsets of two shifts, each as early as its onset and as late as it may be."""
    return max(0.0, max(a.onset_ts, b.onset_ts) - min(_latest(a), _latest(b)))


def _own_deploy(shift: Anomaly, view: ServiceView, policy: PolicyConfig) -> bool:
    """Did the service deploy within ``shared.own_within_s`` before this shift began?"""
    return any(blameable(c, shift.onset_ts, policy) and shift.onset_ts - c.ts <= policy.shared.own_within_s
               for c in view.changes)


def _size(a: Anomaly) -> float:
    return abs(a.current - a.baseline)


def _echo_at_same_moment(caller: Anomaly, callee: Anomaly, slack: float, policy: PolicyConfig) -> bool:
    """Is ``caller``'s shift, which began within ``slack`` of ``callee``'s, its echo? If it calls it
    per the graph or, without one, if it could follow it and is the smaller of the two."""
    if abs(caller.onset_ts - callee.onset_ts) > slack or not _could_follow(caller, callee, policy):
        return False
    return bool(policy.depends_on) or _size(caller) < _size(callee)


def step_s(a: Anomaly) -> float:
    """The sampling interval of the anomaly's stream, from its excursion (0 if unknown)."""
    if a.samples < 2 or a.detected_ts <= a.onset_ts:
        return 0.0
    return (a.detected_ts - a.onset_ts) / (a.samples - 1)


def calls(policy: PolicyConfig, caller: str, callee: str) -> bool:
    """Does ``caller`` call ``callee``, directly or through others, per ``policy.depends_on``?"""
    seen, todo = {caller}, [caller]
    while todo:
        for nxt in policy.depends_on.get(todo.pop(), ()):
            if nxt == callee:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def _could_follow(caller: Anomaly, callee: Anomaly, policy: PolicyConfig) -> bool:
    """Could ``caller``'s shift be the echo of ``callee``'s? With a call graph: if it calls it.
    Without one: the same metric, and no more than ``follow_ratio`` times its size in the metric's
    units (a callee's extra errors or latency reach its callers diluted, not multiplied)."""
    if policy.depends_on:
        return calls(policy, caller.service, callee.service)
    return caller.metric == callee.metric and _size(caller) <= policy.follow_ratio * _size(callee)


def _first_onset(service: str, change: Change, shifts: list[Anomaly], policy: PolicyConfig,
                 default: float | None) -> float | None:
    """Earliest onset of the service's shifts that ``change`` could explain."""
    onsets = [s.onset_ts for s in shifts if s.service == service and blameable(change, s.onset_ts, policy)]
    return min(onsets) if onsets else default
