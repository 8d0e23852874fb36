"""What each metric is and how its shifts are tested: :class:`MetricSpec`.

A spec lives in the YAML configuration under ``metrics: {name: {...}}``; the
defaults below cover the well-known metrics of DESIGN.md.

Conventions:

* ``direction`` is the bad way: ``"up"`` (higher is bad, e.g. error rate and
  latency), ``"down"`` (lower is bad, e.g. health) or ``"both"`` (either way,
  for generic series such as the TCPDBench run).
* ``min_ratio`` (>= 1) is the smallest relative effect worth reporting, always
  given as a number >= 1 whatever the direction: an "up" shift must reach
  ``current >= baseline * min_ratio``; a "down" shift must reach
  ``current <= baseline / min_ratio`` (health 1.0 with ``min_ratio=1.12``
  must fall to 0.893 or below). For linear-scale gauges whose baseline may be
  zero or negative the same floor is applied to the difference:
  ``|current - baseline| >= |baseline| * (min_ratio - 1)`` (up) or
  ``|baseline| * (1 - 1 / min_ratio)`` (down). ``min_ratio = 1`` disables the floor.
* ``arl0`` is the target mean number of samples between false alarms of one
  stream; every threshold is derived from it (see :mod:`detectors.calibration`).
* ``trend_halflife_samples`` (gauges only, off by default): for series that
  trend by nature (backlogs, disk used, business counts, the TCPDBench series)
  the baseline is a local line, so a steady ramp is normal and a change of
  level *or of slope* is a shift. Off for the service metrics: there a ramp
  (a leak, a slow rollout) is exactly what must be caught.
* ``spike_samples`` (k): a shift is never confirmed on the evidence of k samples
  or fewer; the k strongest samples of an excursion are left out of its evidence.

>>> spec_for("latency_p95").min_ratio
1.2
>>> spec_for("cpu_temp") is None
True
>>> MetricSpec(kind="gauge", direction="sideways", min_ratio=1.2)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for MetricSpec
direction
  Input should be 'up', 'down' or 'both' [type=literal_error, input_value='sideways', input_type=str]
    For further information visit ...
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backout.contracts import MetricKind


class MetricSpec(BaseModel):
    """How one metric is tested; frozen, validated, safe to share between monitors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: MetricKind = Field(
        description="rate: fraction with a count (error_rate); gauge: latency etc.; health: fraction healthy")
    direction: Literal["up", "down", "both"] = Field(description="which way is bad")
    min_ratio: float = Field(ge=1.0, description="smallest relative effect reported (>= 1, see module doc)")
    arl0: float = Field(default=1e5, ge=10.0, description="target samples between false alarms")
    spike_samples: int = Field(default=2, ge=0, le=10, description="k: never confirm on runs of <= k samples")
    enabled: bool = Field(default=True, description="False: samples are accepted and checked, never tested")
    log_scale: bool = Field(default=True, description="gauges: test log(value) (multiplicative noise)")
    min_sigma: float = Field(default=0.01, ge=0.0,
                             description="floor of the noise scale, in tested units (log units if log_scale)")
    min_shift_sigma: float = Field(default=1.0, gt=0.0,
                                   description="smallest design shift of a gauge test, in noise sigmas")
    shift_grid: tuple[float, ...] = Field(default=(1.0, 2.5, 6.0), min_length=1, max_length=4,
                                          description="design shifts as multiples of the smallest one")
    warmup_samples: int = Field(default=30, ge=3, description="samples learnt before any test runs")
    baseline_halflife_samples: float = Field(default=360.0, gt=1.0,
                                             description="half-life of the exponentially weighted baseline")
    trend_halflife_samples: float | None = Field(
        default=None, gt=1.0,
        description="gauges that trend by nature: test departures from a local line fitted over this half-life "
                    "(detectors.stats.EWLine); None: from a level")
    trend_slope_t: float = Field(default=2.5, ge=0.0,
                                 description="a line's slope counts once its t-statistic passes this")
    max_gap_s: float = Field(default=900.0, gt=0.0,
                             description="a gap longer than this restarts the evidence of pending shifts")
    accept_s: float = Field(default=3600.0, ge=0.0,
                            description="a confirmed shift lasting this long becomes the new normal")
    default_count: float = Field(default=100.0, gt=0.0,
                                 description="rate samples without count, before any count was seen")
    anchor_alpha: float = Field(default=0.003, gt=0.0, lt=0.5,
                                description="deploy-anchored test (detectors.anchored): the chance that a good "
                                            "deploy is ever flagged on this metric while the test runs")
    anchor_horizon_s: float = Field(default=600.0, gt=0.0,
                                    description="the anchored test runs this long after a deploy starts "
                                                "(and half of it past the end of a longer rollout)")
    anchor_onset_half_s: float = Field(default=60.0, gt=0.0,
                                       description="the anchored test's prior: half of the onsets it looks for "
                                                   "fall within this long after the deploy")

    @field_validator("shift_grid")
    @classmethod
    def _grid_increasing(cls, grid: tuple[float, ...]) -> tuple[float, ...]:
        if grid[0] != 1.0 or any(b <= a for a, b in zip(grid, grid[1:], strict=False)):
            raise ValueError(f"shift_grid must start at 1.0 and increase, got {grid}")
        return grid

    def impossible(self, value: float) -> str | None:
        """Why ``value`` cannot be a sample of this metric (None: it can): a fraction outside
        [0, 1], a negative value of a log-scale gauge (a latency below zero is an exporter's bug,
        and its logarithm would be read as a collapse of the metric)."""
        if self.kind in ("rate", "health") and not 0.0 <= value <= 1.0:
            return f"a {self.kind} is a fraction in [0, 1], got {value!r}"
        if self.kind == "gauge" and self.log_scale and value < 0.0:
            return (f"a log-scale gauge cannot be negative, got {value!r} "
                    "(set log_scale: false in the metric's spec for a series that can be)")
        return None

    @model_validator(mode="after")
    def _trend_is_for_gauges(self) -> MetricSpec:
        if self.trend_halflife_samples is not None and self.kind == "rate":
            raise ValueError("trend_halflife_samples applies to gauges and health, not to rates")
        return self


DEFAULT_SPECS: dict[str, MetricSpec] = {
    # errors out of requests: count-aware binomial CUSUM; +50% errors is the smallest effect worth a look
    "error_rate": MetricSpec(kind="rate", direction="up", min_ratio=1.5),
    # p95 latency, log scale (multiplicative noise): +20%
    "latency_p95": MetricSpec(kind="gauge", direction="up", min_ratio=1.2, min_sigma=0.02),
    # fraction healthy: a drop to 89% of the baseline (2 pods of 12, 1 of 8), sustained over more than 3 checks
    "health": MetricSpec(kind="health", direction="down", min_ratio=1.12, spike_samples=3,
                         log_scale=False, min_sigma=0.02),
    # traffic is context, not a fault: its shifts (a surge) go to the decider, which never blames a deploy
    # for them, but excuses a shift that traffic explains
    "requests": MetricSpec(kind="gauge", direction="both", min_ratio=1.5),
}


def spec_for(metric: str) -> MetricSpec | None:
    """The default spec of ``metric``, or None (a configuration's own: ``BackoutConfig.require_spec``)."""
    return DEFAULT_SPECS.get(metric)
