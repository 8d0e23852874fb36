"""Prometheus remote write 1.0: snappy + protobuf in, one metric record per sample out."""

from __future__ import annotations

import struct

import cramjam
import pytest

from backout.errors import ContractError
from streams.feeds.remote_write import STALE_NAN, RemoteWriteMapping, encode, to_records

T0 = 1_700_000_000_000
STALE = struct.unpack("<d", struct.pack("<Q", STALE_NAN))[0]
DEFAULT = RemoteWriteMapping()


@pytest.mark.parametrize("series, mapping, records, refused, skipped", [
    ([({"__name__": "backout:error_rate", "service": "checkout"}, [(T0, 0.01), (T0 + 10_000, 0.02)])], DEFAULT,
     [(1.7e9, "checkout", "error_rate", 0.01, {}), (1.7e9 + 10, "checkout", "error_rate", 0.02, {})], [], {}),
    ([({"__name__": "queue_depth", "job": "worker", "env": "prod"}, [(T0, 7.0)])], DEFAULT,
     [(1.7e9, "worker", "queue_depth", 7.0, {"env": "prod"})], [], {}),
    ([({"__name__": "rps", "app": "cart", "job": "k8s"}, [(T0, 3.0)])],
     RemoteWriteMapping(service_labels=["app"], metrics={"rps": "requests"}),
     [(1.7e9, "cart", "requests", 3.0, {"job": "k8s"})], [], {}),
    ([({"__name__": "up", "instance": "a:9100"}, [(T0, 1.0)])], DEFAULT,
     [], [('series up{instance="a:9100"}', "field 'labels': got ['instance'], expected one of the service labels service, job")], {}),
    ([({"__name__": "backout:error_rate", "service": "x; rm -rf /"}, [(T0, 1.0)])], DEFAULT,
     [], [('series backout:error_rate{service="x; rm -rf /"}', "service 'x; rm -rf /' is not a valid service")], {}),
    ([({"__name__": "backout:health", "service": "cart"}, [(T0, STALE), (T0 + 1, float("nan")), (T0 + 2, 1.0)])],
     DEFAULT, [(1.7e9 + 0.002, "cart", "health", 1.0, {})], [], {"stale marker": 1, "NaN value": 1}),
    ([({"__name__": "backout:requests", "service": "cart"}, [(T0, float("inf")), (T0 + 1000, 5.0)])], DEFAULT,
     [(1.7e9 + 1, "cart", "requests", 5.0, {})],
     [('series backout:requests{service="cart"}', "field 'sample': got (1700000000000, inf), expected a finite value")], {}),
    ([({"service": "cart"}, [(T0, 1.0)])], DEFAULT, [], [('series {service="cart"}', "metric None is not a valid metric")], {}),
], ids=["mapped", "job-as-service-passthrough", "custom-rules", "no-service-label", "hostile-service",
        "stale-and-nan-skipped", "inf-refused", "no-name"])
def test_series_to_records(series, mapping, records, refused, skipped):
    parsed = to_records(encode(series), mapping)
    assert [(r.ts, r.service, r.metric, r.value, r.labels) for r in parsed.records] == records
    assert [r.where for r in parsed.refusals] == [w for w, _ in refused]
    for refusal, (_, reason) in zip(parsed.refusals, refused, strict=True):
        assert reason in refusal.reason and refusal.raw.startswith(b'{"labels"')
    assert dict(parsed.skipped) == skipped


@pytest.mark.parametrize("body, message", [
    (b"not snappy at all \xff\xff\xff\xff", "snappy"),
    (bytes(cramjam.snappy.compress_raw(b"\xff\xff\xff")), "not a protobuf WriteRequest"),
    (b"\xff\xff\xff\xff\x0f", "uncompressed size"),  # a header claiming 4 GB
], ids=["not-snappy", "not-protobuf", "bomb"])
def test_bodies_that_are_not_remote_write(body, message):
    with pytest.raises(ContractError, match=message):
        to_records(body, DEFAULT)


def test_unknown_keys_in_the_mapping_are_refused():
    with pytest.raises(ValueError, match="service_label"):
        RemoteWriteMapping.model_validate({"service_label": "app"})
