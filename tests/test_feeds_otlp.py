"""OTLP metrics: gauges, sums as rates, histograms as p95 / rate / error ratio, mapped to services."""

from __future__ import annotations

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from backout.errors import ContractError
from streams.feeds.cumulative import Cumulatives
from streams.feeds.otlp import OtlpMapping, decode, quantile, response, to_records

S = 1_000_000_000  # ns per s
T0 = 1_700_000_000 * S
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
BOUNDS = [0.1, 0.2, 0.5, 1.0]


def request(metrics: list[dict], service: str | None = "checkout", **resource: str) -> ExportMetricsServiceRequest:
    """A request of one resource; each metric dict is the OTLP JSON of one metric."""
    attributes = {**({"service.name": service} if service else {}), **resource}
    data = {"resourceMetrics": [{
        "resource": {"attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()]},
        "scopeMetrics": [{"scope": {"name": "test"}, "metrics": metrics}],
    }]}
    return json_format.ParseDict(data, ExportMetricsServiceRequest())


def gauge(name: str, value: float, at: int = T0) -> dict:
    return {"name": name, "gauge": {"dataPoints": [{"timeUnixNano": str(at), "asDouble": value}]}}


def counter(name: str, value: int, at: int, start: int = T0 - 60 * S, temporality=CUMULATIVE,
            monotonic: bool = True) -> dict:
    return {"name": name, "sum": {"aggregationTemporality": temporality, "isMonotonic": monotonic,
                                  "dataPoints": [{"startTimeUnixNano": str(start), "timeUnixNano": str(at),
                                                  "asInt": str(value)}]}}


def histogram(name: str, points: list[tuple[int, list[int]]], at: int, unit: str = "s",
              start: int = T0 - 60 * S, temporality=CUMULATIVE, bounds=BOUNDS) -> dict:
    """``points``: (status code, bucket counts) pairs, one data point each."""
    return {"name": name, "unit": unit, "histogram": {"aggregationTemporality": temporality, "dataPoints": [{
        "startTimeUnixNano": str(start), "timeUnixNano": str(at), "count": str(sum(counts)),
        "bucketCounts": [str(c) for c in counts], "explicitBounds": bounds,
        "attributes": [{"key": "http.response.status_code", "value": {"intValue": str(code)}}],
    } for code, counts in points]}}


def parse(*requests: ExportMetricsServiceRequest, mapping: OtlpMapping | None = None):
    """The records and refusals of the last request, after the earlier ones primed the state."""
    mapping, state = mapping or OtlpMapping(), Cumulatives()
    for earlier in requests[:-1]:
        to_records(earlier, mapping, state)
    return to_records(requests[-1], mapping, state)


def rows(parsed) -> list[tuple]:
    return [(r.ts, r.service, r.metric, round(r.value, 6), r.count, r.labels) for r in parsed.records]


DUR = "http.server.request.duration"
TS0, TS1 = T0 / S, T0 / S + 10
CASES = [
    ("gauge", [request([gauge("queue.depth", 7.0)], **{"deployment.environment": "prod"})],
     [(TS0, "checkout", "queue_depth", 7.0, None, {"deployment.environment": "prod"})], [], {}),
    ("gauge-renamed", [request([gauge("app.healthy_fraction", 0.5)])],
     [(TS0, "checkout", "health", 0.5, None, {})], [], {}),
    ("cumulative-sum-primes-then-rates",
     [request([counter("app.orders", 100, T0)]), request([counter("app.orders", 150, T0 + 10 * S)])],
     [(TS1, "checkout", "app_orders", 5.0, None, {})], [], {}),
    ("cumulative-sum-first-point-only-primes", [request([counter("app.orders", 100, T0)])],
     [], [], {"first point of a cumulative stream (or not newer than the last)": 1}),
    ("cumulative-sum-reset",
     [request([counter("app.orders", 100, T0)]), request([counter("app.orders", 20, T0 + 10 * S, start=T0 + 6 * S)])],
     [(TS1, "checkout", "app_orders", 5.0, None, {})], [], {}),
    ("delta-sum", [request([counter("app.orders", 30, T0 + 10 * S, start=T0, temporality=DELTA)])],
     [(TS1, "checkout", "app_orders", 3.0, None, {})], [], {}),
    ("delta-sum-without-start", [request([counter("app.orders", 30, T0, start=0, temporality=DELTA)])],
     [], ["metric 'app.orders' point 0"], {}),
    ("updown-sum-is-a-level", [request([counter("db.connections", 12, T0, monotonic=False)])],
     [(TS0, "checkout", "db_connections", 12.0, None, {})], [], {}),
    # two status codes merged: 100 new observations in 10 s, 10 of them 500s, p95 at rank 95
    ("histogram-cumulative",
     [request([histogram(DUR, [(200, [10, 10, 0, 0, 0]), (500, [0, 0, 0, 0, 0])], T0)]),
      request([histogram(DUR, [(200, [65, 45, 0, 0, 0]), (500, [0, 0, 5, 5, 0])], T0 + 10 * S)])],
     [(TS1, "checkout", "requests", 10.0, 100.0, {}), (TS1, "checkout", "latency_p95", 0.5, 100.0, {}),
      (TS1, "checkout", "error_rate", 0.1, 100.0, {})], [], {}),
    ("histogram-delta-in-ms",
     [request([histogram("http.server.duration", [(200, [0, 0, 50, 50, 0])], T0 + 10 * S, unit="ms",
                         start=T0, temporality=DELTA, bounds=[100, 200, 500, 1000])])],
     [(TS1, "checkout", "requests", 10.0, 100.0, {}), (TS1, "checkout", "latency_p95", 0.95, 100.0, {}),
      (TS1, "checkout", "error_rate", 0.0, 100.0, {})], [], {}),
    ("histogram-passthrough",
     [request([histogram("db.query.time", [(0, [0, 100, 0, 0, 0])], T0 + 10 * S, start=T0, temporality=DELTA)])],
     [(TS1, "checkout", "db_query_time_p95", 0.195, 100.0, {})], [], {}),
    ("histogram-no-observations",
     [request([histogram(DUR, [(200, [0, 0, 0, 0, 0])], T0 + 10 * S, start=T0, temporality=DELTA)])],
     [(TS1, "checkout", "requests", 0.0, 0.0, {})], [], {"histogram interval without observations": 2}),
    ("histogram-bounds-differ",
     [request([{"name": DUR, "unit": "s", "histogram": {"aggregationTemporality": DELTA, "dataPoints": [
         histogram(DUR, [(200, [0, 10, 0, 0, 0])], T0 + 10 * S, start=T0, temporality=DELTA)["histogram"]
         ["dataPoints"][0],
         histogram(DUR, [(500, [10, 0])], T0 + 10 * S, start=T0, temporality=DELTA, bounds=[1.0])["histogram"]
         ["dataPoints"][0]]}}])],
     [(TS1, "checkout", "requests", 1.0, 10.0, {}), (TS1, "checkout", "latency_p95", 0.195, 10.0, {}),
      (TS1, "checkout", "error_rate", 0.0, 10.0, {})], ["metric 'http.server.request.duration' point 1"], {}),
    ("histogram-counts-mismatch",
     [request([histogram(DUR, [(200, [1, 2])], T0 + 10 * S, start=T0, temporality=DELTA)])],
     [], ["metric 'http.server.request.duration' point 0"], {}),
    ("no-service-name", [request([gauge("queue.depth", 1.0), gauge("x", 2.0)], service=None)],
     [], ["resource 0"], {"data point of a resource without a valid service": 2}),
    ("sdk-default-service-name", [request([gauge("queue.depth", 1.0)], service="unknown_service:python")],
     [], ["resource 0"], {"data point of a resource without a valid service": 1}),
    ("summary-not-mapped", [request([{"name": "rpc.latency", "summary": {"dataPoints": [{"timeUnixNano": str(T0)}]}}])],
     [], [], {"summary metric (not mapped)": 1}),
]


@pytest.mark.parametrize("requests, records, refused, skipped", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_otlp_to_records(requests, records, refused, skipped):
    parsed = parse(*requests, mapping=OtlpMapping(rename={"app.healthy_fraction": "health"}))
    assert rows(parsed) == records
    assert [r.where for r in parsed.refusals] == refused
    assert dict(parsed.skipped) == skipped


def test_json_and_protobuf_bodies_decode_to_the_same_request():
    sent = request([histogram(DUR, [(200, [1, 2, 3, 4, 5])], T0)])
    as_json = json_format.MessageToJson(sent).encode()
    assert decode(sent.SerializeToString(), "application/x-protobuf") == sent
    assert decode(as_json, "application/json; charset=utf-8") == sent


def test_otlp_json_exemplars_with_hex_trace_ids_are_ignored():
    data = json_format.MessageToDict(request([gauge("queue.depth", 7.0)]))
    point = data["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0]
    point["exemplars"] = [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
                           "asDouble": 1.0, "timeUnixNano": str(T0)}]
    import json

    parsed = to_records(decode(json.dumps(data).encode(), "application/json"), OtlpMapping(), Cumulatives())
    assert rows(parsed) == [(TS0, "checkout", "queue_depth", 7.0, None, {})]


@pytest.mark.parametrize("body, content_type, message", [
    (b"\xff\xff\xff", "application/x-protobuf", "not a protobuf"),
    (b"{nope", "application/json", "not an OTLP JSON"),
    (b"[1]", "application/json", "expected a JSON object, got list"),
    (b'{"resourceMetrics": 3}', "application/json", "not an OTLP JSON"),
])
def test_bodies_that_are_not_otlp(body, content_type, message):
    with pytest.raises(ContractError, match=message):
        decode(body, content_type)


def test_partial_success_response_says_how_many_points_were_rejected():
    reply = ExportMetricsServiceResponse.FromString(response(3, "resource 0: no service", as_json=False))
    assert (reply.partial_success.rejected_data_points, reply.partial_success.error_message) == \
        (3, "resource 0: no service")
    assert response(0, "", as_json=True) == b"{}"


def test_cumulative_streams_are_bounded():
    state = Cumulatives(max_streams=2)
    for n in range(5):  # five services, each one cumulative stream
        to_records(request([counter("app.orders", 1, T0)], service=f"s{n}"), OtlpMapping(), state)
    assert (len(state), state.evicted) == (2, 3)
    later = parse(request([counter("app.orders", 1, T0)], service="s4"),
                  request([counter("app.orders", 11, T0 + 10 * S)], service="s4"))
    assert rows(later) == [(TS1, "s4", "app_orders", 1.0, None, {})]


@pytest.mark.parametrize("q, bounds, counts, expected", [
    (0.95, [0.1, 0.2, 0.5], [50, 40, 10, 0], 0.35),
    (0.5, [0.1, 0.2, 0.5], [50, 40, 10, 0], 0.1),
    (0.95, [1.0], [0, 7], 1.0),  # in the overflow bucket: the highest bound
    (0.95, [1.0, 2.0], [0, 0, 0], None),
    (0.95, [], [9], None),
    (0.95, [-1.0, 0.0], [10, 0, 0], -1.0),
])
def test_quantile(q, bounds, counts, expected):
    got = quantile(q, bounds, counts)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_mapping_refuses_a_bad_metric_name_and_unknown_keys():
    with pytest.raises(ValueError, match="not a valid metric"):
        OtlpMapping.model_validate({"rename": {"x": "error rate"}})
    with pytest.raises(ValueError, match="service_attr"):
        OtlpMapping.model_validate({"service_attr": "app"})
