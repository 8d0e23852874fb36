"""Policy: from a blamed deploy and the size of the shift to an action.

Confidence weighs the two things an engineer looks at: how soon after the
deploy the shift began (``timing``: 1 within ``clear_within_s``, falling to
0.5 at the end of the correlation window) and how big it is (``size``: the
adverse factor on a log scale, 1 at ``clear_ratio``)::

    confidence = timing × (0.5 + 0.5 × size) × 0.75 ^ (number of ambiguities)

A shift is acted on at all (*actionable*) from ``act_ratio``, or, when it
began later than ``clear_within_s`` after the deploy, from a factor that grows
to ``clear_ratio`` over ``late_ramp_s`` (:func:`ask_ratio`), and it must then
reach ``min_delta`` too.

A case is *clear-cut* when the factor reaches ``clear_ratio`` (and the
absolute change ``min_delta``), the onset is within ``clear_within_s`` of the
deploy, and nothing makes the blame ambiguous. Then, by mode:

======== ================== ===================== ==================
mode     clear-cut          ambiguous             below act_ratio
======== ================== ===================== ==================
auto     rollback           request_approval      alert only
approval request_approval   request_approval      alert only
off      alert only         alert only            alert only
======== ================== ===================== ==================

>>> from detectors.config import MetricPolicy
>>> p = MetricPolicy(act_ratio=1.5, clear_ratio=5.0, clear_within_s=300.0)
>>> a = assess(factor=10.0, delta=0.045, lag_s=90.0, ambiguity=[], policy=p, window_s=1800.0, mode="auto")
>>> a.action, a.clear, round(a.confidence, 2)
('rollback', True, 1.0)
>>> assess(10.0, 0.045, 900.0, [], p, 1800.0, "auto").action
'request_approval'
>>> assess(10.0, 0.045, 90.0, [], p, 1800.0, "off").action is None
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from backout.contracts import Action
from detectors.config import MetricPolicy, Mode


@dataclass(frozen=True)
class Assessment:
    action: Action | None  # None: alert only
    would: Action | None  # what auto mode would do (for "off" alerts)
    clear: bool
    actionable: bool  # above act_ratio
    confidence: float
    why_not_clear: tuple[str, ...]


def ask_ratio(policy: MetricPolicy, lag_s: float, late_ramp_s: float) -> float:
    """The factor a shift that began ``lag_s`` after the deploy needs to be acted on at all.

    ``act_ratio`` up to ``clear_within_s``; then it grows geometrically to ``clear_ratio`` over
    ``late_ramp_s``: the further from the deploy a shift began, the likelier something else
    caused it, and the larger it must be before a person is asked about the deploy.
    """
    if lag_s <= policy.clear_within_s or policy.clear_ratio <= policy.act_ratio:
        return policy.act_ratio
    frac = min(1.0, (lag_s - policy.clear_within_s) / late_ramp_s)
    return float(policy.act_ratio * (policy.clear_ratio / policy.act_ratio) ** frac)


def assess(factor: float, delta: float, lag_s: float, ambiguity: list[str], policy: MetricPolicy,
           window_s: float, mode: Mode, late_ramp_s: float = 600.0) -> Assessment:
    """Decide what to do about a shift of ``factor`` (adverse) that began ``lag_s`` after its deploy."""
    timing = 1.0
    if lag_s > policy.clear_within_s:
        span = max(window_s - policy.clear_within_s, 1.0)
        timing = max(0.5, 1.0 - 0.5 * (lag_s - policy.clear_within_s) / span)
    size = 1.0 if policy.clear_ratio <= 1.0 else min(1.0, max(0.0, math.log(factor) / math.log(policy.clear_ratio)))
    confidence = round(timing * (0.5 + 0.5 * size) * 0.75 ** len(ambiguity), 3)
    reasons = list(ambiguity)
    if factor < policy.clear_ratio:
        reasons.append(f"a {factor:.1f}x change is below the {policy.clear_ratio:g}x that is clear-cut")
    elif abs(delta) < policy.min_delta:
        reasons.append("the absolute change is small")
    if lag_s > policy.clear_within_s:
        reasons.append(f"it began {lag_s / 60:.0f} min after the deploy, later than the "
                       f"{policy.clear_within_s / 60:g} min that is clear-cut")
    clear = not reasons
    # a late shift must also be visible in absolute terms: 0.05% -> 0.5% half an hour on is not the deploy's
    actionable = factor >= ask_ratio(policy, lag_s, late_ramp_s) and (
        lag_s <= policy.clear_within_s or abs(delta) >= policy.min_delta)
    would: Action | None = None
    if actionable:
        would = "rollback" if clear else "request_approval"
    action: Action | None = would
    if mode == "approval" and would is not None:
        action = "request_approval"
    elif mode == "off":
        action = None
    return Assessment(action, would, clear, actionable, confidence, tuple(reasons))
