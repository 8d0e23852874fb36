"""Prometheus remote write 1.0: a snappy block holding a protobuf ``WriteRequest``.

Prometheus (or Grafana Agent, vmagent, the OpenTelemetry Collector) pushes
every sample of the series it is told to send. Each series becomes metric
records of one service: the service is the first of ``service_labels`` the
series has, the metric its ``__name__`` looked up in ``metrics`` (a name not
in the table keeps its own, a valid Backout metric name already). Backout
wants one series per (service, metric): aggregate in a recording rule and
send only those with ``write_relabel_configs`` (the README shows how).

A stale marker (the NaN Prometheus writes when a series disappears) and a
plain NaN (``errors / requests`` with no requests) carry no value: they are
skipped and counted, not dead-lettered. Anything else that cannot be a
record is refused with the series' labels in ``where``.

The four message types of ``prompb`` that remote write 1.0 uses are declared
below for the ``protobuf`` runtime (no generated code, no version coupling);
fields Backout does not read (exemplars, native histograms, metadata) are
skipped by the parser.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from pydantic import BaseModel, ConfigDict, Field

from backout.contracts import Metric
from backout.errors import ContractError
from backout.names import check
from streams.feeds.parsed import Parsed, Refusal

STALE_NAN = 0x7FF0000000000002  # Prometheus' staleness marker, value.StaleNaN
MAX_UNCOMPRESSED_BYTES = 64 * 1024 * 1024  # a snappy block says its size first: refuse a bomb unread


class RemoteWriteMapping(BaseModel):
    """Which label names the service and which ``__name__`` is which Backout metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service_labels: list[str] = Field(default=["service", "job"], min_length=1,
                                      description="the first of these labels a series has is its service")
    metrics: dict[str, str] = Field(default={
        "backout:error_rate": "error_rate", "backout:latency_p95": "latency_p95",
        "backout:requests": "requests", "backout:health": "health",
    }, description="__name__ -> Backout metric; other names pass through unchanged")


def _declare() -> Any:
    T = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="backout/prompb_remote.proto", package="prometheus",
                                               syntax="proto3")
    fields: dict[str, list[tuple[str, int, Any, str | None]]] = {
        "Label": [("name", 1, T.TYPE_STRING, None), ("value", 2, T.TYPE_STRING, None)],
        "Sample": [("value", 1, T.TYPE_DOUBLE, None), ("timestamp", 2, T.TYPE_INT64, None)],
        "TimeSeries": [("labels", 1, T.TYPE_MESSAGE, ".prometheus.Label"),
                       ("samples", 2, T.TYPE_MESSAGE, ".prometheus.Sample")],
        "WriteRequest": [("timeseries", 1, T.TYPE_MESSAGE, ".prometheus.TimeSeries")],
    }
    for name, specs in fields.items():
        message = proto.message_type.add(name=name)
        for field, number, kind, type_name in specs:
            repeated = type_name is not None
            message.field.add(name=field, number=number, type=kind,
                              label=T.LABEL_REPEATED if repeated else T.LABEL_OPTIONAL,
                              **({"type_name": type_name} if repeated else {}))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


WriteRequest = _declare()


def decode(body: bytes) -> Any:
    """The ``WriteRequest`` in a snappy-compressed body; :class:`ContractError` if it is none."""
    try:
        size = cramjam.snappy.decompress_raw_len(body)
    except Exception:  # cramjam raises its own DecompressionError
        raise ContractError("body: not a snappy block (remote write 1.0 sends Content-Encoding: snappy)") from None
    if size > MAX_UNCOMPRESSED_BYTES:
        raise ContractError(f"body: uncompressed size {size} bytes, expected at most {MAX_UNCOMPRESSED_BYTES}")
    try:
        raw = bytes(cramjam.snappy.decompress_raw(body))
    except Exception:
        raise ContractError("body: not a valid snappy block") from None
    request = WriteRequest()
    try:
        request.ParseFromString(raw)
    except DecodeError as exc:
        raise ContractError(f"body: not a protobuf WriteRequest ({exc})") from None
    return request


def encode(series: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> bytes:
    """A snappy-compressed ``WriteRequest`` of (labels, [(timestamp_ms, value)]) series, as a sender makes it."""
    request = WriteRequest()
    for labels, samples in series:
        ts = request.timeseries.add()
        for name, text in sorted(labels.items()):
            ts.labels.add(name=name, value=text)
        for when, value in samples:
            ts.samples.add(timestamp=when, value=value)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def to_records(body: bytes, mapping: RemoteWriteMapping) -> Parsed:
    """Metric records of every sample in a remote-write body; :class:`ContractError` if the body is not one."""
    return from_request(decode(body), mapping)


def from_request(request: Any, mapping: RemoteWriteMapping) -> Parsed:
    parsed = Parsed()
    for series in request.timeseries:
        labels = {label.name: label.value for label in series.labels}
        name = labels.pop("__name__", None)
        service_label = next((k for k in mapping.service_labels if labels.get(k)), None)
        where = f"series {_selector(name, labels)}"
        if service_label is None:
            parsed.refuse(where, "labels", sorted(labels),
                          f"one of the service labels {', '.join(mapping.service_labels)}", _raw(series))
            continue
        service = labels.pop(service_label)
        metric = mapping.metrics.get(name or "", name)
        try:
            check("service", service)
            check("metric", metric)
        except ContractError as exc:
            parsed.refusals.append(Refusal(where, str(exc), _raw(series)))
            continue
        for sample in series.samples:
            value = sample.value
            if math.isnan(value):
                parsed.skip("stale marker" if _bits(value) == STALE_NAN else "NaN value")
            elif math.isinf(value) or sample.timestamp <= 0:
                parsed.refuse(where, "sample", (sample.timestamp, value),
                              "a finite value at a positive timestamp (ms)", _raw(series))
            else:
                parsed.records.append(Metric(ts=sample.timestamp / 1000, service=service, metric=metric,
                                             value=value, labels=labels))
    return parsed


def _raw(series: Any) -> bytes:
    """The series as JSON, for the dead letter."""
    return json.dumps({"labels": {label.name: label.value for label in series.labels},
                       "samples": [[s.timestamp, _json_number(s.value)] for s in series.samples]}).encode()


def _selector(name: str | None, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name or ''}{{{inner}}}"


def _bits(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)
