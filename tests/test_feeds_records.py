"""Backout's own records over HTTP: three shapes, each bad item refused with where and why."""

from __future__ import annotations

import json

import pytest

from backout.contracts import encode
from streams.feeds.records import to_records

M1 = {"type": "metric", "ts": 1.7e9, "service": "checkout", "metric": "error_rate", "value": 0.01, "count": 100}
M2 = {**M1, "ts": 1.7e9 + 10, "value": 0.02}
D1 = {"type": "deploy", "ts": 1.7e9 + 5, "service": "checkout", "deploy_id": "d-1", "version": "v2"}


def lines(*items: object) -> bytes:
    return b"\n".join(i if isinstance(i, bytes) else json.dumps(i).encode() for i in items)


@pytest.mark.parametrize("payload, kept, refused", [
    (json.dumps(M1).encode(), [M1], []),
    (json.dumps(M1, indent=2).encode(), [M1], []),
    (json.dumps([M1, D1, M2]).encode(), [M1, D1, M2], []),
    (lines(M1, D1, M2), [M1, D1, M2], []),
    (lines(M1, b"", b"   ", M2) + b"\n", [M1, M2], []),  # blank lines and a final newline are fine
    (b"", [], []),
    (lines(M1, b"{oops", M2), [M1, M2], [("line 2", "not JSON")]),
    (lines(M1, {**M1, "value": "high"}), [M1],
     [("line 2", "invalid metric record: field 'value': got 'high', expected a valid number")]),
    (lines({**M1, "service": None}, M2), [M2],
     [("line 1", "field 'service': got None, expected a valid string")]),
    (json.dumps([M1, {**D1, "status": "done"}]).encode(), [M1],
     [("item 2", "field 'status': got 'done', expected 'started', 'finished', 'failed' or 'rolled_back'")]),
    (json.dumps([M1, 7]).encode(), [M1], [("item 2", "expected a JSON object, got int")]),
    (lines({"type": "decision", "ts": 1.0}), [], [("line 1", "field 'type'")]),
    (lines({**M1, "type": "alert", "severity": "info", "text": "x"}), [],
     [("line 1", "field 'type': got 'alert', expected 'metric' or 'deploy'")]),
    (lines({**M1, "service": "x; rm -rf /"}), [], [("line 1", "field 'service': got 'x; rm -rf /', expected letters")]),
    (lines({**M1, "metric": "error rate"}), [], [("line 1", "field 'metric': got 'error rate', expected letters")]),
    (lines({**D1, "version": "../v1"}), [], [("line 1", "field 'version': got '../v1', expected letters")]),
    (lines(M1, b"\xff\xfe", M2), [M1, M2], [("line 2", "not JSON")]),
], ids=["object", "pretty-object", "array", "lines", "blank-lines", "empty", "broken-json", "wrong-type",
        "null-service", "array-bad-status", "array-not-object", "not-an-input-type", "alert-type",
        "hostile-service", "bad-metric-name", "bad-version", "not-utf8"])
def test_records_kept_and_refused(payload, kept, refused):
    parsed = to_records(payload)
    assert [{k: json.loads(encode(r))[k] for k in want} for r, want in zip(parsed.records, kept, strict=True)] \
        == kept
    assert [r.where for r in parsed.refusals] == [where for where, _ in refused]
    for refusal, (_, reason) in zip(parsed.refusals, refused, strict=True):
        assert reason in refusal.reason


def test_a_refusal_keeps_the_bytes_as_received():
    bad = b'{"type":"metric","ts":"soon"}'
    parsed = to_records(lines(M1, bad))
    assert parsed.refusals[0].raw == bad
