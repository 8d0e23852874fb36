"""Message contracts: one encoding, clear errors, extras kept."""

from __future__ import annotations

import pytest

from backout.contracts import (
    DEAD_LETTER_KEEP_BYTES,
    Alert,
    Anomaly,
    Approval,
    Decision,
    Deploy,
    Metric,
    Verification,
    Watermark,
    dead_letter,
    decode,
    encode,
)
from backout.errors import ContractError

EXAMPLES = [
    Metric(ts=1.7e9, service="checkout", metric="error_rate", value=0.0051, count=1180, labels={"env": "prod"}),
    Deploy(ts=1.7e9, service="checkout", deploy_id="d-17", version="v2.15.1", previous_version="v2.15.0",
           status="finished", target={"kind": "kubernetes", "namespace": "shop", "name": "checkout"}),
    Anomaly(ts=1.7e9, service="checkout", metric="error_rate", detector="binomial_cusum", onset_ts=1.7e9 - 30,
            detected_ts=1.7e9, baseline=0.005, current=0.05, ratio=10.0, score=3.2),
    Decision(ts=1.7e9, incident_id="inc-1", service="checkout", deploy_id="d-17", action="rollback",
             from_version="v2.15.1", to_version="v2.15.0", confidence=0.97, reason="Error rate 10x.",
             evidence=[{"metric": "error_rate", "ratio": 10.0}]),
    Approval(ts=1.7e9, incident_id="inc-1", approved=True, by="alice"),
    Verification(ts=1.7e9, incident_id="inc-1", status="verified", detail="recovered",
                 before={"error_rate": 0.05}, after={"error_rate": 0.005}),
    Alert(ts=1.7e9, incident_id="inc-1", severity="critical", text="Rolled back checkout.", links=["http://x"]),
    Watermark(ts=1.7e9, partition=3, services=12),
]


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: r.type)
def test_round_trip(record):
    assert decode(encode(record)) == record
    assert decode(encode(record).decode()) == record


def test_an_anomaly_without_the_monitor_fields_still_decodes():
    raw = (b'{"type":"anomaly","ts":5,"service":"a","metric":"m","detector":"d","onset_ts":1,"detected_ts":5,'
           b'"baseline":1,"current":2,"ratio":2,"score":1}')
    record = decode(raw)
    assert (record.direction, record.kind, record.samples, record.worsened) == (None, None, 0, False)
    assert decode(encode(record)) == record


def test_extra_fields_are_kept():
    raw = b'{"type":"metric","ts":5,"service":"a","metric":"m","value":1,"region":"eu"}'
    record = decode(raw)
    assert record.model_extra == {"region": "eu"}
    assert b'"region":"eu"' in encode(record)


@pytest.mark.parametrize("raw, message", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (b'{"ts": 1}', "field 'type': got None, expected one of metric"),
    (b'{"type":"metric","ts":1,"service":"a","metric":"m","value":"high"}', "field 'value': got 'high', expected a valid number"),
    (b'{"type":"metric","ts":1,"service":"a","value":1}', "field 'metric': missing"),
    (b'{"type":"metric","ts":-4,"service":"a","metric":"m","value":1}', "field 'ts': got -4, expected greater than 0"),
    (b'{"type":"metric","ts":1,"service":"a","metric":"m","value":1,"count":-3}', "field 'count': got -3"),
    (b'{"type":"metric","ts":1,"service":"a","metric":"m","value":NaN}', "field 'value': got nan, expected a finite number"),
    (b'{"type":"deploy","ts":1,"service":"a","deploy_id":"d","version":"v","status":"done"}', "field 'status': got 'done', expected 'started', 'finished', 'failed' or 'rolled_back'"),
    (b'{"type":"decision","ts":1,"incident_id":"i","service":"a","action":"nuke","confidence":0.5,"reason":"r"}', "field 'action': got 'nuke'"),
    (b'\xff\xfe', "not JSON"),
])
def test_errors_name_field_value_and_expectation(raw, message):
    with pytest.raises(ContractError, match=None) as info:
        decode(raw)
    assert message in str(info.value)


def test_expect_rejects_other_types_on_a_topic():
    with pytest.raises(ContractError, match="expected 'metric' on this topic"):
        decode(encode(EXAMPLES[1]), expect=Metric)


def test_a_huge_dead_letter_is_cut_to_fit_the_broker():
    big = dead_letter(b"\xff" * (DEAD_LETTER_KEEP_BYTES * 4), "bad", "backout.metrics", 0, 1, 5.0)
    assert big.truncated_from_bytes == DEAD_LETTER_KEEP_BYTES * 4 and big.encoding == "base64"
    assert len(big.value) < 2 * DEAD_LETTER_KEEP_BYTES and len(encode(big)) < 1_000_000
    small = dead_letter(b"{oops", "bad", "backout.metrics", 0, 1, 5.0)
    assert small.truncated_from_bytes is None and decode(encode(small)) == small
