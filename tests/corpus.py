"""A corpus of hostile input records: what a careless or malicious producer can put on the input
topics, each with the reason its dead letter must give.

Every entry is built around a real stream (``service`` at event time ``ts``), so that the ones
that are well-formed but wrong (far ahead, far behind, on the wrong partition) are wrong only in
the way their kind says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from backout.contracts import MAX_DEPTH, MAX_EXTRA_BYTES, MAX_LABELS, MAX_RECORD_BYTES
from streams import topics

DAY = 86_400.0


@dataclass(frozen=True)
class Hostile:
    kind: str
    topic: str
    value: bytes | None
    key: bytes | None
    reason: str  # a fragment the dead letter's reason must contain
    backtest: bool = True  # the backtest refuses it too (a file has no Kafka keys)


def _metric(service: str, ts: float) -> dict:
    return {"type": "metric", "ts": ts, "service": service, "metric": "latency_p95", "value": 0.25}


def _deploy(service: str, ts: float) -> dict:
    return {"type": "deploy", "ts": ts, "service": service, "deploy_id": "d-hostile", "version": "v9.9.9",
            "previous_version": "v9.9.8", "status": "finished",
            "target": {"kind": "kubernetes", "namespace": "shop", "name": service}}


def _raw(data: dict) -> bytes:
    return json.dumps(data).encode()


def metrics(service: str, ts: float) -> list[Hostile]:
    """Hostile records for ``backout.metrics`` around ``service``'s stream at ``ts``."""
    key = service.encode()

    def bad(kind: str, reason: str, raw: bytes | None = None, backtest: bool = True, **changes: object) -> Hostile:
        if raw is None and kind != "tombstone":
            raw = _raw({**_metric(service, ts), **changes})
        named = changes.get("service")  # keyed by the name it gives, as a producer would
        return Hostile(kind, topics.METRICS, raw, named.encode(errors="replace") if isinstance(named, str) else key,
                       reason, backtest)

    deep: list = []
    for _ in range(MAX_DEPTH + 4):
        deep = [deep]
    return [
        bad("not_json", "not JSON", b"{oops"),
        bad("binary", "not JSON", b"\xff\xfe\x00\x01"),
        bad("empty_value", "not JSON", b""),
        bad("tombstone", "tombstone", None, backtest=False),
        bad("json_array", "expected a JSON object", b"[1, 2]"),
        bad("json_string", "expected a JSON object", b'"metric"'),
        bad("json_nested_too_deep_to_parse", "not JSON", b"[" * 30_000 + b"]" * 30_000),
        bad("integer_of_5000_digits", "not JSON", b'{"type":"metric","ts":1' + b"0" * 5000 + b"}"),
        bad("no_type", "field 'type'", type=None),
        bad("unknown_type", "field 'type'", type="metrics"),
        bad("deploy_on_metrics_topic", "expected 'metric' on this topic", _raw(_deploy(service, ts))),
        bad("ts_as_string", "field 'ts'", ts=str(ts)),
        bad("value_as_string", "field 'value'", value="0.5"),
        bad("count_as_string", "field 'count'", count="1200"),
        bad("value_as_bool", "field 'value'", value=True),
        bad("value_null", "field 'value'", value=None),
        bad("value_nan", "field 'value'", value=float("nan")),
        bad("value_400_digits", "field 'value'", b'{"type":"metric","ts":%r,"service":"%s","metric":"latency_p95",'
            b'"value":1%s}' % (ts, key, b"0" * 400)),
        bad("ts_milliseconds", "not milliseconds", ts=ts * 1000),
        bad("ts_year_3000", "not milliseconds", ts=32503680000.0),
        bad("ts_negative", "field 'ts'", ts=-ts),
        bad("count_negative", "field 'count'", count=-5),
        bad("service_path_traversal", "field 'service'", service="../../etc/passwd"),
        bad("service_shell", "field 'service'", service="$(touch /tmp/pwned);"),
        bad("service_control_chars", "field 'service'", service="check\x00out\n"),
        bad("service_1kB", "field 'service'", service="s" * 1000),
        bad("service_100kB", "record of", service="s" * 100_000),
        bad("service_empty", "field 'service'", service=""),
        bad("service_homoglyph", "field 'service'", service="сheckout"),  # a Cyrillic "с"
        bad("service_space", "field 'service'", service="check out"),
        bad("service_number", "field 'service'", service=42),
        bad("metric_bad_name", "field 'metric'", metric="latency p95"),
        bad("metric_unknown", "unknown metric", metric="made_up_metric"),
        bad("label_key_bad", "field 'labels", labels={"0-bad key": "x"}),
        bad("label_value_long", "field 'labels", labels={"env": "p" * 5000}),
        bad("labels_too_many", "field 'labels'", labels={f"l{i}": "v" for i in range(MAX_LABELS + 1)}),
        bad("labels_not_a_dict", "field 'labels'", labels=["env", "prod"]),
        bad("extra_fields_too_many", "field '<extra fields>'", **{f"x{i}": i for i in range(20)}),
        bad("extra_field_too_big", "field 'padding'", padding="p" * (MAX_EXTRA_BYTES + 1)),
        bad("padded_to_900kB", "record of", padding="p" * (900 * 1024)),
        bad("just_over_the_size_limit", "record of", padding="p" * MAX_RECORD_BYTES),
        bad("nested_extra", "field 'nested'", nested=deep),
        bad("duplicate_field_last_wins", "field 'service'",
            b'{"type":"metric","ts":%r,"service":"%s","service":"../x","metric":"latency_p95","value":1}' % (ts, key)),
        bad("a_day_ahead", "ahead of partition", ts=ts + DAY),
        bad("new_stream_a_day_behind", "behind partition", service="ghost-service", ts=ts - DAY),
        Hostile("key_differs_from_service", topics.METRICS, _raw(_metric(service, ts + 0.001)), b"payments",
                "Kafka key: got b'payments'", backtest=False),
        Hostile("no_key", topics.METRICS, _raw(_metric(service, ts + 0.002)), None, "Kafka key: got none",
                backtest=False),
    ]


def deploys(service: str, ts: float) -> list[Hostile]:
    """Hostile records for ``backout.deploys``."""
    key = service.encode()

    def bad(kind: str, reason: str, raw: bytes | None = None, **changes: object) -> Hostile:
        if raw is None and kind != "tombstone":
            raw = _raw({**_deploy(service, ts), **changes})
        return Hostile(kind, topics.DEPLOYS, raw, key, reason, backtest=kind != "tombstone")

    return [
        bad("tombstone", "tombstone", None),
        bad("not_json", "not JSON", b"deploy checkout v2"),
        bad("version_10kB", "field 'version'", version="v" * 10_000),
        bad("version_shell", "field 'version'", version="v1;reboot"),
        bad("previous_version_traversal", "field 'previous_version'", previous_version="../v1"),
        bad("deploy_id_control_chars", "field 'deploy_id'", deploy_id="d-1\r\nX-Injected: yes"),
        bad("namespace_traversal", "field 'target.namespace'",
            target={"kind": "kubernetes", "namespace": "../kube-system", "name": service}),
        bad("kubernetes_without_name", "field 'target.name'", target={"kind": "kubernetes", "namespace": "shop"}),
        bad("status_unknown", "field 'status'", status="done"),
        bad("ts_as_string", "field 'ts'", ts=str(ts)),
        bad("metric_on_deploys_topic", "expected 'deploy' on this topic", _raw(_metric(service, ts))),
    ]
