"""Backout's own metric and deploy records, as one JSON object, a JSON array or JSON Lines.

Each record is validated by :func:`backout.contracts.decode`, so a refusal
says what the contract says (field, value, expectation), prefixed with where
it was: ``line N`` for JSON Lines, ``item N`` for an array. The contract
checks the names too (service, metric, version: :mod:`backout.names`), since
they become Kafka keys and, later, API paths. Valid records are kept
whatever their neighbours are.

>>> p = to_records(b'{"type":"metric","ts":1.7e9,"service":"checkout","metric":"requests","value":12}\\n'
...                b'{"type":"metric","ts":"soon","service":"checkout","metric":"requests","value":1}\\n')
>>> [r.value for r in p.records]
[12.0]
>>> print(p.refusals[0])
line 2: invalid metric record: field 'ts': got 'soon', expected a valid number
"""

from __future__ import annotations

import json

from backout.contracts import Deploy, Metric, decode
from backout.errors import ContractError
from streams.feeds.parsed import Parsed, Refusal


def to_records(payload: bytes) -> Parsed:
    """The metric and deploy records of ``payload``, and a refusal for each item that is not one."""
    parsed = Parsed()
    items = _items(payload)
    for where, raw in items:
        try:
            parsed.records.append(_record(raw))
        except ContractError as exc:
            parsed.refusals.append(Refusal(where, str(exc), raw))
    return parsed


def _items(payload: bytes) -> list[tuple[str, bytes]]:
    """(where, raw) for each record of the payload, whichever of the three shapes it has."""
    stripped = payload.strip()
    if stripped.startswith(b"["):
        try:
            array = json.loads(stripped)
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass  # JSON Lines whose first record is an array, or broken JSON: line by line
        else:
            return [(f"item {n}", json.dumps(item).encode()) for n, item in enumerate(array, start=1)]
    elif stripped.startswith(b"{") and b"\n" in stripped:
        try:  # one object pretty-printed over several lines?
            obj = json.loads(stripped)
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
        else:
            return [("line 1", json.dumps(obj).encode())]
    return [(f"line {n}", line) for n, line in enumerate(payload.split(b"\n"), start=1) if line.strip()]


def _record(raw: bytes) -> Metric | Deploy:
    try:
        record = decode(raw)
    except ContractError as exc:
        if str(exc).startswith("invalid "):  # a decision missing its fields is first of all not an input
            _check_type(json.loads(raw).get("type"))
        raise
    _check_type(record.type)
    return record  # type: ignore[no-any-return]  # _check_type made sure


def _check_type(kind: str) -> None:
    if kind not in ("metric", "deploy"):
        raise ContractError(f"field 'type': got {kind!r}, expected 'metric' or 'deploy'")
