"""Backout's configuration: detector specs, decision policy, event-time settings.

One frozen pydantic model; :func:`backout.settings.load_config` reads it from
YAML (``examples/backout.yaml`` shows every key). Unknown keys are rejected,
so that a typo never silently falls back to a default.

Policy is resolved per (service, metric): ``services.<name>`` overrides the
global ``policy`` (its ``mode`` and any per-metric threshold), and metrics the
policy does not list use :data:`GENERIC_METRIC_POLICY`.

>>> cfg = BackoutConfig()
>>> cfg.mode_for("checkout", "error_rate"), cfg.metric_policy("checkout", "error_rate").clear_ratio
('auto', 5.0)
>>> cfg.require_spec("cpu_temp")
Traceback (most recent call last):
...
backout.errors.UnknownMetric: unknown metric 'cpu_temp': not in the configuration (known: error_rate, health, latency_p95, requests)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backout.errors import UnknownMetric
from detectors.spec import DEFAULT_SPECS, MetricSpec

Mode = Literal["approval", "auto", "off"]
CLEAN_S = 600.0  # the default of PolicyConfig.clean_s, for the parts that take it as an argument


def _yaml_off(value: Any) -> Any:
    """YAML 1.1 reads a bare ``off`` as false; in a mode it means the mode "off"."""
    return "off" if value is False else value


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricPolicy(_Frozen):
    """When a shift of one metric is worth acting on, and when it is clear-cut.

    Sizes are *adverse factors*: current/baseline for metrics where up is bad,
    baseline/current where down is bad (health 100% → 50% is a factor 2).
    """

    act_ratio: float = Field(default=1.2, ge=1.0, description="below this factor: alert only, no decision")
    clear_ratio: float = Field(default=3.0, ge=1.0, description="at or above: clear-cut (auto rolls back)")
    clear_within_s: float = Field(default=300.0, gt=0, description="onset at most this long after the deploy to be clear-cut")
    min_delta: float = Field(default=0.0, ge=0, description="absolute change needed to be clear-cut (e.g. 0.002 = 0.2 points of error rate)")

    @model_validator(mode="after")
    def _ordered(self) -> MetricPolicy:
        if self.clear_ratio < self.act_ratio:
            raise ValueError(f"clear_ratio ({self.clear_ratio}) must be >= act_ratio ({self.act_ratio})")
        return self


class MetricPolicyOverride(_Frozen):
    """A per-service override: only the fields given replace the global ones."""

    act_ratio: float | None = Field(default=None, ge=1.0)
    clear_ratio: float | None = Field(default=None, ge=1.0)
    clear_within_s: float | None = Field(default=None, gt=0)
    min_delta: float | None = Field(default=None, ge=0)


GENERIC_METRIC_POLICY = MetricPolicy()
DEFAULT_METRIC_POLICIES: dict[str, MetricPolicy] = {
    # "10x error rate within 5 minutes of the deploy" is clear; 5x of a visible rate already is
    "error_rate": MetricPolicy(act_ratio=1.5, clear_ratio=5.0, clear_within_s=300.0, min_delta=0.005),
    # moderate latency growth might be traffic: ask; 3x p95 right after a deploy is not traffic
    "latency_p95": MetricPolicy(act_ratio=1.2, clear_ratio=3.0, clear_within_s=300.0),
    # a health collapse: a fifth of the instances unhealthy
    "health": MetricPolicy(act_ratio=1.05, clear_ratio=1.25, clear_within_s=600.0, min_delta=0.1),
}


class SharedIncident(_Frozen):
    """When a shift is everybody's (shared dependency, traffic surge) rather than one deploy's.

    Shared when at least ``max(min_services, min_fraction × services)`` services
    (the candidate included) shifted on the same metric with onsets within
    ``within_s`` of the candidate's. When ``suspect_services`` or more shifted
    together but not yet enough, the decision waits until ``hold_s`` after
    detection for the others to show (once; it is deterministic in event time).
    """

    min_services: int = Field(default=3, ge=2)
    min_fraction: float = Field(default=0.5, gt=0, le=1)
    within_s: float = Field(default=120.0, gt=0)
    suspect_services: int = Field(default=3, ge=2)
    hold_s: float = Field(default=60.0, ge=0)
    own_within_s: float = Field(default=120.0, gt=0, description="a deploy's own trouble begins as its first new "
        "pods take traffic: a shift that began later than this after the deploy, no earlier than shifts of services "
        "nobody deployed, is taken as theirs (a shared cause), and cannot lead a cascade")
    prompt_s: float = Field(default=60.0, ge=0, description="a deployed service's shift that began later than "
        "this after its deploy waits hold_s after its detection before it is decided (once), for the shifts of "
        "other services to show: its anchored test sees a shared incident sooner than the monitors of services "
        "nobody deployed see theirs")

    def needed(self, services: int) -> int:
        """How many services (the candidate included) make a shift shared in a fleet of ``services``."""
        return max(self.min_services, math.ceil(self.min_fraction * services))


class PolicyConfig(_Frozen):
    """The decision policy: correlation windows, thresholds, and what to do."""

    mode: Mode = "auto"
    _mode_off = field_validator("mode", mode="before")(_yaml_off)
    window_s: float = Field(default=1800.0, gt=0, description="a deploy is blamed for onsets up to this long after it")
    onset_slack_s: float = Field(default=10.0, ge=0, description="onset estimates up to this long before the deploy still count as after it (clock skew, sample quantisation)")
    clean_s: float = Field(default=CLEAN_S, gt=0, description="a version that ran this long without blame is known good")
    succession_s: float = Field(default=120.0, ge=0, description="two deploys of a service this close: blame is ambiguous")
    follow_s: float = Field(default=30.0, ge=0, description="a service whose shift started up to this long after another deployed service's is its caller, not the cause (cascades reach callers within a few samples; unrelated services in a large fleet deploy minutes apart all the time)")
    depends_on: dict[str, tuple[str, ...]] = Field(default_factory=dict, description="optional call graph, "
        "caller: [callees]; with it a shift is excused as a caller's only when the service calls the first mover "
        "(directly or through others); without it, only when it is on the same metric and not much larger")
    follow_ratio: float = Field(default=2.0, ge=1.0, description="without depends_on, a caller's shift is at most "
        "this many times its callee's (in the metric's units: errors and latency a callee adds to its callers "
        "cannot much exceed its own); a larger one is the service's own")
    late_ramp_s: float = Field(default=600.0, gt=0, description="a shift that began later than clear_within_s after "
        "the deploy is asked about only if larger: the factor needed grows from act_ratio to clear_ratio over this long")
    load_power: float = Field(default=0.5, gt=0, le=1, description="a shift below the clear-cut size, or late, is "
        "taken as load when the service's own requests grew at the same time at least factor**load_power times "
        "(near saturation, p95 latency and errors grow faster than the load: queueing); a larger one only when "
        "they grew as much as it did")
    shared: SharedIncident = Field(default_factory=SharedIncident)
    context_metrics: tuple[str, ...] = Field(default=("requests",), description="metrics that are context, not harm: never blamed on a deploy; a shift of "
        "one on the same service at the same time makes the blame ambiguous (it might be traffic)")
    metrics: dict[str, MetricPolicy] = Field(default_factory=lambda: dict(DEFAULT_METRIC_POLICIES))

    @field_validator("metrics", mode="before")
    @classmethod
    def _merge_metrics(cls, value: Any) -> Any:
        """Listed metrics override the defaults field by field; the others keep theirs."""
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = {k: v.model_dump() for k, v in DEFAULT_METRIC_POLICIES.items()}
        for name, fields in value.items():
            base = merged.get(name, {})
            merged[name] = {**base, **fields} if isinstance(fields, dict) else fields
        return merged


class ServicePolicy(_Frozen):
    """Per-service overrides of the global policy."""

    mode: Mode | None = None
    _mode_off = field_validator("mode", mode="before")(_yaml_off)
    metrics: dict[str, MetricPolicyOverride] = Field(default_factory=dict)


class BackoutConfig(_Frozen):
    """Everything the core needs; the live worker and the backtest load the same file."""

    metrics: dict[str, MetricSpec] = Field(default_factory=lambda: dict(DEFAULT_SPECS))
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    services: dict[str, ServicePolicy] = Field(default_factory=dict)
    watermark_interval_s: float = Field(default=0.5, gt=0, description="each metrics partition reports its event-time progress this often: the floor of decision latency")
    hold_s: float = Field(default=10.0, ge=0, description="an anomaly is decided this long (event time) after "
                          "detection, so that other services' simultaneous shifts are confirmed too")
    stall_s: float | None = Field(default=None, gt=0, description="optional backstop: a metrics partition this far "
                                  "behind the others (event time) stops holding time back; by default every "
                                  "partition is waited for, and quiet ones are released by the worker's idle marks")
    deploy_lateness_s: float = Field(default=15.0, ge=0, description="how late a deploy record may be read, behind "
                                     "the metrics: a decision due at T counts the deploys stamped up to T minus this, "
                                     "and is never due before onset + onset_slack_s + this")
    max_future_skew_s: float = Field(default=600.0, gt=0, description="a sample stamped further ahead of its metrics "
                                     "partition's event time is refused (a clock or unit error must not move time)")
    max_lateness_s: float = Field(default=3600.0, gt=0, description="a new stream's first sample stamped further "
                                  "behind its partition's event time is refused; more than max_future_skew_s, so that "
                                  "one service with a fast clock cannot lock the others out")

    @field_validator("metrics", mode="before")
    @classmethod
    def _merge_specs(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = dict(DEFAULT_SPECS)
        for name, fields in value.items():
            if isinstance(fields, dict) and name in DEFAULT_SPECS:
                merged[name] = _merge_spec(DEFAULT_SPECS[name], fields)
            else:
                merged[name] = fields
        return merged

    def spec_for(self, metric: str) -> MetricSpec | None:
        """The detector spec of ``metric``, or None if it is not configured (the sample is rejected)."""
        return self.metrics.get(metric)

    def require_spec(self, metric: str) -> MetricSpec:
        """The detector spec of ``metric``; :class:`UnknownMetric` if it is not configured."""
        spec = self.metrics.get(metric)
        if spec is None:
            raise UnknownMetric(f"unknown metric {metric!r}: not in the configuration "
                                f"(known: {', '.join(sorted(self.metrics))})")
        return spec

    def mode_for(self, service: str, metric: str) -> Mode:
        override = self.services.get(service)
        return override.mode if override is not None and override.mode is not None else self.policy.mode

    def metric_policy(self, service: str, metric: str) -> MetricPolicy:
        base = self.policy.metrics.get(metric, GENERIC_METRIC_POLICY)
        override = self.services.get(service)
        if override is None or metric not in override.metrics:
            return base
        changes = {k: v for k, v in override.metrics[metric].model_dump().items() if v is not None}
        return MetricPolicy.model_validate({**base.model_dump(), **changes})


def _merge_spec(default: Any, fields: dict[str, Any]) -> Any:
    if isinstance(default, BaseModel):
        return {**default.model_dump(), **fields}
    if dataclasses.is_dataclass(default):
        return {**dataclasses.asdict(default), **fields}  # type: ignore[arg-type]
    return fields
