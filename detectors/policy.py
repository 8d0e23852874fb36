"""Policy: from a blamed deploy and the size of the shift to the outcome.

:func:`assess` grades one shift. Confidence weighs the two things an engineer
looks at: how soon after the deploy the shift began (``timing``: 1 within
``clear_within_s``, falling to 0.5 at the end of the correlation window) and
how big it is (``size``: the adverse factor on a log scale, 1 at
``clear_ratio``)::

    confidence = timing × (0.5 + 0.5 × size) × 0.75 ^ (number of ambiguities)

A shift is acted on at all (*actionable*) from ``act_ratio``; when it began
later than ``clear_within_s`` after the deploy, from a factor that grows to
``clear_ratio`` over ``late_ramp_s`` (:func:`ask_ratio`), and only if it also
reaches ``min_delta``: the further from the deploy a shift began, the likelier
something else caused it.

A case is *clear-cut* when the factor reaches ``clear_ratio`` (and the
absolute change ``min_delta``), the onset is within ``clear_within_s`` of the
deploy, and nothing makes the blame ambiguous.

:func:`outcome` is every rule between the graded shift and what is published,
in this order: an incident decided for good stays decided; a pending question
becomes a rollback only when it turned clear-cut in ``auto`` mode, on the same
version, with a target (else it stands); below ``act_ratio`` the shift is
watched, as is one first confirmed longer than the correlation window after
the deploy (``stale``: its onset estimate is too old to pin on it) and one
that is not clear-cut while the service's own traffic grew enough to explain it
(``load``, :func:`explained_by_load`);
a service that already runs a good version again needs nothing; no
known-good target escalates to a human; then, by mode:

======== ================== ===================== ==================
mode     clear-cut          ambiguous             below act_ratio
======== ================== ===================== ==================
auto     rollback           request_approval      alert only
approval request_approval   request_approval      alert only
off      alert only         alert only            alert only
======== ================== ===================== ==================

Mode ``off`` is decided here only: the outcome still says what Backout would
do, but publishes no decision.

>>> from detectors.config import MetricPolicy
>>> p = MetricPolicy(act_ratio=1.5, clear_ratio=5.0, clear_within_s=300.0)
>>> a = assess(factor=10.0, delta=0.045, lag_s=90.0, ambiguity=[], policy=p, window_s=1800.0)
>>> a.would, a.clear, round(a.confidence, 2)
('rollback', True, 1.0)
>>> outcome(a, "auto")
Outcome(kind='rollback', action='rollback', publish=True, record='rollback', marks_bad=True)
>>> outcome(assess(10.0, 0.045, 900.0, [], p, 1800.0), "auto").action
'request_approval'
>>> off = outcome(a, "off"); (off.action, off.publish, off.severity)
('rollback', False, 'critical')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from backout.contracts import Action, Severity
from detectors import wording
from detectors.config import MetricPolicy, Mode

Recorded = Action | Literal["none"]  # what an incident records: "none" decided, nothing to do
OutcomeKind = Literal["decided", "kept_asking", "upgrade", "watch", "stale", "load", "reverted", "redeployed",
                      "no_target", "shared", "off", "rollback", "request_approval"]
SEVERITY: dict[Action, Severity] = {"rollback": "critical", "escalate": "critical", "request_approval": "warning"}


@dataclass(frozen=True)
class Assessment:
    """One shift graded against its metric's policy."""

    would: Action | None  # what auto mode would do; None below act_ratio
    clear: bool
    actionable: bool  # above act_ratio
    confidence: float
    why_not_clear: tuple[str, ...]
    factor: float = 1.0  # the adverse factor graded
    clear_sized: bool = False  # large and early enough to be clear-cut, whatever else makes it ambiguous


@dataclass(frozen=True)
class Outcome:
    """What to do about a blamed deploy, mode applied."""

    kind: OutcomeKind
    action: Action | None = None  # what Backout does, or would do (off); None: nothing to decide
    publish: bool = False  # a Decision goes out (else an alert at most)
    record: Recorded | None = None  # what the incident records from now on; None: unchanged
    marks_bad: bool = False  # the blamed version is never a target again (a rollback of it was decided)

    @property
    def severity(self) -> Severity | None:
        """Of the alert that goes with it; None: nothing is said."""
        if self.kind in ("watch", "stale", "load", "reverted", "redeployed"):
            return "info"
        return None if self.action is None else SEVERITY[self.action]


def ask_ratio(policy: MetricPolicy, lag_s: float, late_ramp_s: float) -> float:
    """The factor a shift that began ``lag_s`` after the deploy needs to be acted on at all:
    ``act_ratio`` up to ``clear_within_s``, then growing geometrically to ``clear_ratio`` over
    ``late_ramp_s``."""
    if lag_s <= policy.clear_within_s or policy.clear_ratio <= policy.act_ratio:
        return policy.act_ratio
    frac = min(1.0, (lag_s - policy.clear_within_s) / late_ramp_s)
    return float(policy.act_ratio * (policy.clear_ratio / policy.act_ratio) ** frac)


def assess(factor: float, delta: float, lag_s: float, ambiguity: list[str], policy: MetricPolicy,
           window_s: float, late_ramp_s: float = 600.0) -> Assessment:
    """Grade a shift of ``factor`` (adverse) that began ``lag_s`` after its deploy."""
    timing = 1.0
    if lag_s > policy.clear_within_s:
        span = max(window_s - policy.clear_within_s, 1.0)
        timing = max(0.5, 1.0 - 0.5 * (lag_s - policy.clear_within_s) / span)
    size = 1.0 if policy.clear_ratio <= 1.0 else min(1.0, max(0.0, math.log(factor) / math.log(policy.clear_ratio)))
    confidence = round(timing * (0.5 + 0.5 * size) * 0.75 ** len(ambiguity), 3)
    reasons = list(ambiguity)
    if factor < policy.clear_ratio:
        reasons.append(wording.below_clear(factor, policy.clear_ratio))
    elif abs(delta) < policy.min_delta:
        reasons.append(wording.small_change())
    if lag_s > policy.clear_within_s:
        reasons.append(wording.late_onset(lag_s, policy.clear_within_s))
    clear = not reasons
    actionable = factor >= ask_ratio(policy, lag_s, late_ramp_s) and (
        lag_s <= policy.clear_within_s or abs(delta) >= policy.min_delta)
    would: Action | None = None
    if actionable:
        would = "rollback" if clear else "request_approval"
    clear_sized = factor >= policy.clear_ratio and lag_s <= policy.clear_within_s
    return Assessment(would, clear, actionable, confidence, tuple(reasons), factor, clear_sized)


def explained_by_load(graded: Assessment, traffic: float | None, load_power: float) -> bool:
    """Whether the service's own traffic growth (``traffic``, a factor; None: unknown) explains the shift.

    Traffic explains a shift as large as itself; one of a size and timing that would not be
    clear-cut anyway already when it grew ``factor ** load_power`` times (queueing makes latency
    grow faster than load).
    """
    if traffic is None:
        return False
    return traffic >= graded.factor ** (1.0 if graded.clear_sized else load_power)


def outcome(graded: Assessment, mode: Mode, *, decided: Recorded | None = None, reverted: bool = False,
            still_runs: bool = True, has_target: bool = True, stale: bool = False,
            traffic: float | None = None, load_power: float = 1.0, worsened: bool = False) -> Outcome:
    """The final outcome for a blamed deploy whose worst shift was ``graded``.

    ``decided``: what the incident recorded so far (None: new); ``reverted``: the service already
    runs a known-good version again; ``still_runs``: it runs the blamed version; ``has_target``: a
    known-good version to roll back to exists; ``stale``: the shift was first confirmed longer than
    the correlation window after the deploy; ``traffic``: how many times the service's own
    requests grew at the same moment (:func:`explained_by_load`, ``PolicyConfig.load_power``). Only a rollback marks the version bad:
    a question, answered or not, leaves it as it was (if someone rolls it back, the deploy record
    says so). ``worsened``: the shift is a re-report, grown since it was first confirmed; if the
    service was deployed again in between (``still_runs`` False), the growth is no evidence against
    this deploy (the newer one's own tests judge it): ``redeployed``, an alert.
    """
    if decided == "request_approval":  # escalate the question only when it became clear-cut, on the same version
        if graded.would != "rollback" or mode != "auto" or not still_runs or not has_target:
            return Outcome("kept_asking")
        return Outcome("upgrade", "rollback", publish=True, record="rollback", marks_bad=True)
    if decided is not None:
        return Outcome("decided")  # for good: only a question can still become a rollback
    if not graded.actionable:
        return Outcome("watch")
    if worsened and not still_runs:
        return Outcome("redeployed")
    if stale:
        return Outcome("stale")
    if not graded.clear and explained_by_load(graded, traffic, load_power):
        return Outcome("load")
    if reverted:
        return Outcome("reverted", record="none")
    if not has_target:
        return escalation(mode, "no_target")
    action = graded.would or "request_approval"
    if mode == "off":
        return Outcome("off", action, record="none")
    if action == "rollback" and mode == "auto":
        return Outcome("rollback", "rollback", publish=True, record="rollback", marks_bad=True)
    return Outcome("request_approval", "request_approval", publish=True, record="request_approval")


def escalation(mode: Mode, kind: Literal["no_target", "shared"]) -> Outcome:
    """A human must look: no safe target, or a shared shift that spares this deploy."""
    return Outcome(kind, "escalate", publish=mode != "off", record="escalate")
