"""OTLP/HTTP metrics (``ExportMetricsServiceRequest``, protobuf or JSON) as Backout records.

What an OpenTelemetry SDK or Collector exports becomes metric records by
:class:`OtlpMapping`:

* the service is the resource attribute ``service.name`` (``service_attribute``);
  the resource attributes in ``label_attributes`` become labels;
* a histogram named in ``histograms`` gives, per export, the p95 of its
  observations (``latency_p95``, linear interpolation within the explicit
  buckets, as PromQL's ``histogram_quantile``), the observations per second
  (``requests``) and the fraction whose status-code attribute is
  ``error_status_min`` or more (``error_rate``), each with ``count`` = the
  observations behind it. The data points of one export (one per status
  code, route…) are merged first. Time units (``ms``, ``us``, ``ns``) are
  converted to seconds. Any other histogram gives ``<name>_p95``;
* a gauge, or a sum that is not monotonic, gives its value; a monotonic sum
  gives its rate per second. Their names are looked up in ``rename``, else
  sanitised into Backout's metric format (``http.server.active_requests`` →
  ``http_server_active_requests``).

Cumulative streams are turned into per-interval increases by
:class:`~streams.feeds.cumulative.Cumulatives` (the first point of each
stream only primes it); delta streams are used as they are. Exponential
histograms and summaries are skipped and counted.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from pydantic import BaseModel, ConfigDict, Field, field_validator

from backout.contracts import Metric
from backout.errors import ContractError
from backout.names import FORMATS, valid
from streams.feeds.cumulative import Cumulatives
from streams.feeds.parsed import Parsed

NANOS = 1e9
NO_RECORDED_VALUE = 1  # DataPointFlags.FLAG_NO_RECORDED_VALUE
TIME_UNITS_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "μs": 1e-6, "ns": 1e-9}


class HistogramRule(BaseModel):
    """What one histogram becomes; a ``None`` name leaves that metric out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p95: str | None = "latency_p95"
    rate: str | None = "requests"
    error_rate: str | None = "error_rate"

    @field_validator("p95", "rate", "error_rate")
    @classmethod
    def _metric_name(cls, name: str | None) -> str | None:
        if name is not None and not valid("metric", name):
            raise ValueError(f"metric {name!r} is not a valid metric: {FORMATS['metric'][2]}")
        return name


class OtlpMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    service_attribute: str = "service.name"
    label_attributes: list[str] = ["deployment.environment.name", "deployment.environment"]
    status_attributes: list[str] = Field(default=["http.response.status_code", "http.status_code"],
                                         description="the first present on a point is its status code")
    error_status_min: int = 500
    histograms: dict[str, HistogramRule] = {
        "http.server.request.duration": HistogramRule(),  # semantic conventions >= 1.20, seconds
        "http.server.duration": HistogramRule(),  # older conventions, milliseconds
    }
    rename: dict[str, str] = Field(default={}, description="gauge or sum name -> Backout metric")
    max_streams: int = Field(default=100_000, ge=1, description="cumulative streams remembered")

    @field_validator("rename")
    @classmethod
    def _metric_names(cls, rename: dict[str, str]) -> dict[str, str]:
        for name in rename.values():
            HistogramRule._metric_name(name)
        return rename


def decode(body: bytes, content_type: str) -> ExportMetricsServiceRequest:
    """The request in ``body`` (``application/x-protobuf`` or ``application/json``)."""
    request = ExportMetricsServiceRequest()
    if content_type.split(";")[0].strip().lower() == "application/json":
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ContractError(f"body: expected a JSON object, got {type(data).__name__}")
            json_format.ParseDict(_without_exemplars(data), request, ignore_unknown_fields=True)
        except (UnicodeDecodeError, json.JSONDecodeError, json_format.ParseError) as exc:
            raise ContractError(f"body: not an OTLP JSON ExportMetricsServiceRequest ({exc})") from None
    else:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise ContractError(f"body: not a protobuf ExportMetricsServiceRequest ({exc})") from None
    return request


def response(rejected: int, message: str, as_json: bool) -> bytes:
    """The ``ExportMetricsServiceResponse`` body, with a partial success when points were rejected."""
    reply = ExportMetricsServiceResponse()
    if rejected:
        reply.partial_success.rejected_data_points = rejected
        reply.partial_success.error_message = message
    return json_format.MessageToJson(reply).encode() if as_json else reply.SerializeToString()


def to_records(request: ExportMetricsServiceRequest, mapping: OtlpMapping, cumulatives: Cumulatives) -> Parsed:
    parsed = Parsed()
    for r, resource_metrics in enumerate(request.resource_metrics):
        attributes = _attributes(resource_metrics.resource.attributes)
        service = attributes.get(mapping.service_attribute)
        if not valid("service", service):
            parsed.refuse(f"resource {r}", f"resource.attributes.{mapping.service_attribute}", service,
                          "a service name (letters, digits, '.', '_', '-'; set OTEL_SERVICE_NAME)",
                          json_format.MessageToJson(resource_metrics.resource).encode())
            parsed.skip("data point of a resource without a valid service",
                        sum(_points(m) for s in resource_metrics.scope_metrics for m in s.metrics))
            continue
        labels = {k: str(attributes[k]) for k in mapping.label_attributes if k in attributes}
        stream = (service, tuple(sorted((k, str(v)) for k, v in attributes.items())))
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                context = _Context(str(service), labels, (*stream, scope_metrics.scope.name, metric.name))
                _metric(metric, mapping, cumulatives, context, parsed)
    return parsed


@dataclass
class _Context:
    service: str
    labels: dict[str, str]
    stream: tuple[Any, ...]


@dataclass
class _Merged:
    """The data points of one histogram at one time, added up."""

    bounds: tuple[float, ...]
    buckets: list[float]
    count: float = 0.0
    errors: float = 0.0
    rate: float = 0.0
    points: list[int] = field(default_factory=list)


def _metric(metric: Any, mapping: OtlpMapping, cumulatives: Cumulatives, ctx: _Context, parsed: Parsed) -> None:
    kind = metric.WhichOneof("data")
    name = metric.name
    if kind == "gauge" or (kind == "sum" and not metric.sum.is_monotonic):
        points = metric.gauge.data_points if kind == "gauge" else metric.sum.data_points
        target = _name(mapping.rename.get(name) or name, parsed, name)
        for i, point in enumerate(points):
            if target is not None and _recorded(point, parsed):
                _emit(parsed, ctx, target, point.time_unix_nano, _number(point), None, f"metric {name!r} point {i}")
    elif kind == "sum":
        target = _name(mapping.rename.get(name) or name, parsed, name)
        delta = metric.sum.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
        for i, point in enumerate(metric.sum.data_points):
            where = f"metric {name!r} point {i}"
            if target is None or not _recorded(point, parsed):
                continue
            got = _increase(point, (_number(point),), delta, cumulatives, ctx, where, parsed)
            if got is not None:
                interval_ns, (increase,) = got
                _emit(parsed, ctx, target, point.time_unix_nano, increase / (interval_ns / NANOS), None, where)
    elif kind == "histogram":
        _histogram(metric, mapping, cumulatives, ctx, parsed)
    else:
        parsed.skip(f"{kind or 'empty'} metric (not mapped)", max(_points(metric), 1))


def _histogram(metric: Any, mapping: OtlpMapping, cumulatives: Cumulatives, ctx: _Context, parsed: Parsed) -> None:
    name = metric.name
    rule = mapping.histograms.get(name)
    if rule is None:
        rule = HistogramRule(p95=_name(f"{name}_p95", parsed, name), rate=None, error_rate=None)
    scale = TIME_UNITS_S.get(metric.unit, 1.0)
    delta = metric.histogram.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    merged: dict[int, _Merged] = {}
    for i, point in enumerate(metric.histogram.data_points):
        where = f"metric {name!r} point {i}"
        if not _recorded(point, parsed):
            continue
        bounds = tuple(point.explicit_bounds)
        if len(point.bucket_counts) != len(bounds) + 1:
            parsed.refuse(where, "bucket_counts", len(point.bucket_counts),
                          f"len(explicit_bounds) + 1 = {len(bounds) + 1} counts", _json(point))
            continue
        got = _increase(point, (float(point.count), *map(float, point.bucket_counts)), delta, cumulatives, ctx,
                        where, parsed)
        if got is None:
            continue
        interval_ns, (count, *buckets) = got
        group = merged.setdefault(point.time_unix_nano, _Merged(bounds, [0.0] * len(buckets)))
        if bounds != group.bounds:
            parsed.refuse(where, "explicit_bounds", list(bounds),
                          f"the bounds of the other points at this time, {list(group.bounds)}", _json(point))
            continue
        group.buckets = [a + b for a, b in zip(group.buckets, buckets, strict=True)]
        group.count += count
        group.rate += count / (interval_ns / NANOS)
        group.errors += count if _status(point, mapping) >= mapping.error_status_min else 0.0
        group.points.append(i)
    for time_ns, group in merged.items():
        where = f"metric {name!r} points {group.points}"
        if rule.rate:
            _emit(parsed, ctx, rule.rate, time_ns, group.rate, group.count, where)
        if group.count <= 0:
            parsed.skip("histogram interval without observations", bool(rule.p95) + bool(rule.error_rate))
            continue
        if rule.p95:
            value = quantile(0.95, group.bounds, group.buckets)
            if value is None:
                parsed.skip("histogram without bucket bounds")
            else:
                _emit(parsed, ctx, rule.p95, time_ns, value * scale, group.count, where)
        if rule.error_rate:
            _emit(parsed, ctx, rule.error_rate, time_ns, group.errors / group.count, group.count, where)


def quantile(q: float, bounds: Iterable[float], counts: list[float]) -> float | None:
    """The ``q`` quantile of explicit-bucket counts, linearly interpolated within its bucket.

    Bucket ``i`` holds values in ``(bounds[i-1], bounds[i]]``; the first bucket's
    lower edge is 0 (or its upper edge if that is negative), and a quantile in
    the overflow bucket is the highest bound, as PromQL's ``histogram_quantile``.

    >>> quantile(0.95, [0.1, 0.2, 0.5], [50, 40, 10, 0])  # rank 95 lies halfway into (0.2, 0.5]
    0.35
    >>> quantile(0.95, [0.1], [0, 3])
    0.1
    """
    edges = list(bounds)
    total = sum(counts)
    if not edges or total <= 0:
        return None
    rank, below = q * total, 0.0
    for i, count in enumerate(counts):
        if count > 0 and below + count >= rank:
            if i == len(edges):
                return edges[-1]
            upper = edges[i]
            lower = edges[i - 1] if i > 0 else min(0.0, upper)
            return lower + (upper - lower) * (rank - below) / count
        below += count
    return edges[-1]


def sanitise(name: str) -> str:
    """An OpenTelemetry metric name in Backout's (Prometheus') metric format.

    >>> sanitise("http.server.active_requests"), sanitise("2xx.rate")
    ('http_server_active_requests', '_2xx_rate')
    """
    clean = re.sub(r"[^A-Za-z0-9_:]+", "_", name)
    return f"_{clean}" if clean[:1].isdigit() else clean


def _name(name: str, parsed: Parsed, source: str) -> str | None:
    clean = sanitise(name)
    if valid("metric", clean):
        return clean
    parsed.refuse(f"metric {source!r}", "name", name, "a name of at most 128 letters, digits, '_', ':'")
    return None


def _increase(point: Any, values: tuple[float, ...], delta: bool, cumulatives: Cumulatives, ctx: _Context,
              where: str, parsed: Parsed) -> tuple[int, tuple[float, ...]] | None:
    """The interval and increases a sum or histogram point stands for, or ``None`` (counted)."""
    if delta:
        if not 0 < point.start_time_unix_nano < point.time_unix_nano:
            parsed.refuse(where, "start_time_unix_nano", point.start_time_unix_nano,
                          f"a start before time_unix_nano {point.time_unix_nano} (a delta point's interval)",
                          _json(point))
            return None
        return point.time_unix_nano - point.start_time_unix_nano, values
    stream = (*ctx.stream, tuple(sorted((a.key, str(_value(a.value))) for a in point.attributes)))
    got = cumulatives.delta(stream, point.start_time_unix_nano, point.time_unix_nano, values)
    if got is None:
        parsed.skip("first point of a cumulative stream (or not newer than the last)")
    return got


def _emit(parsed: Parsed, ctx: _Context, metric: str, time_ns: int, value: float, count: float | None,
          where: str) -> None:
    if time_ns <= 0 or not math.isfinite(value):
        parsed.refuse(where, "time_unix_nano, value", (time_ns, value), "a positive time and a finite value")
        return
    parsed.records.append(Metric(ts=time_ns / NANOS, service=ctx.service, metric=metric, value=value,
                                 count=count, labels=ctx.labels))


def _recorded(point: Any, parsed: Parsed) -> bool:
    if point.flags & NO_RECORDED_VALUE:
        parsed.skip("data point flagged as having no recorded value")
        return False
    return True


def _status(point: Any, mapping: OtlpMapping) -> int:
    attributes = _attributes(point.attributes)
    for key in mapping.status_attributes:
        if key in attributes:
            try:
                return int(attributes[key])
            except (TypeError, ValueError):
                return 0
    return 0


def _number(point: Any) -> float:
    return float(point.as_double if point.WhichOneof("value") == "as_double" else point.as_int)


def _points(metric: Any) -> int:
    kind = metric.WhichOneof("data")
    return len(getattr(metric, kind).data_points) if kind else 0


def _attributes(pairs: Iterable[Any]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind in ("string_value", "bool_value", "int_value", "double_value") else None


def _json(point: Any) -> bytes:
    return json_format.MessageToJson(point, indent=None).encode()


def _without_exemplars(data: Any) -> Any:
    """OTLP JSON writes exemplar trace ids in hex, protobuf's JSON in base64: Backout reads no exemplars."""
    if isinstance(data, dict):
        return {k: _without_exemplars(v) for k, v in data.items() if k != "exemplars"}
    if isinstance(data, list):
        return [_without_exemplars(v) for v in data]
    return data
