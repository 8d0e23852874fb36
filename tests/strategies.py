"""Hypothesis strategies for every message contract: valid records, and records broken in one way.

``records()`` draws a valid record of any type. ``broken()`` draws ``(raw, field)``: the JSON of
a valid record with exactly one thing wrong (a number given as a string, a hostile name, a
field missing, a size past its bound, ...), and the field a refusal must name; ``field`` is
``None`` where the refusal is about the whole record (its size, a tombstone).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from backout import contracts as c
from backout import names

# -- valid ------------------------------------------------------------------------------------


def name(kind: names.NameKind) -> st.SearchStrategy[str]:
    pattern, limit, _ = names.FORMATS[kind]
    return st.from_regex(pattern, fullmatch=True).filter(lambda v: names.valid(kind, v))


timestamps = st.floats(min_value=1.0, max_value=c.MAX_TS, exclude_max=True, allow_nan=False)
numbers = st.floats(allow_nan=False, allow_infinity=False)
counts = st.none() | st.floats(min_value=0, allow_nan=False, allow_infinity=False)
texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=200)
lines = st.text(st.characters(codec="utf-8", min_codepoint=32).filter(lambda ch: ch != "\x7f"),
                min_size=1, max_size=80)
labels = st.dictionaries(name("label"), st.text(max_size=40), max_size=4)
scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | numbers | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=8), inner, max_size=3), max_leaves=8)
extras = st.dictionaries(name("label").filter(lambda k: k not in _ALL_FIELDS), json_values, max_size=3)
targets = st.one_of(
    st.builds(lambda ns, n: c.Target.model_validate({"kind": "kubernetes", "namespace": ns, "name": n}),
              name("namespace"), name("k8s_name")),
    st.builds(lambda k, image: c.Target.model_validate({"kind": k, "image": image}),
              name("target_kind").filter(lambda k: k != "kubernetes"), name("image")),
)
_ALL_FIELDS = {f for m in (c.Metric, c.Deploy, c.Anomaly, c.Decision, c.Approval, c.Verification, c.Alert,
                           c.Watermark, c.DeadLetter) for f in m.model_fields}


def _with_extras(model: type[c.Record], **fields: Any) -> st.SearchStrategy[c.Record]:
    return st.builds(lambda extra, **kw: model(**kw, **extra), extras, **fields)


metrics = _with_extras(c.Metric, ts=timestamps, service=name("service"), metric=name("metric"), value=numbers,
                       count=counts, labels=labels)
deploys = _with_extras(c.Deploy, ts=timestamps, service=name("service"), deploy_id=name("id"),
                       version=name("version"), previous_version=st.none() | name("version"),
                       status=st.sampled_from(["started", "finished", "failed", "rolled_back"]),
                       target=st.none() | targets)
anomalies = _with_extras(c.Anomaly, ts=timestamps, service=name("service"), metric=name("metric"),
                         detector=name("id"), onset_ts=timestamps, detected_ts=timestamps, baseline=numbers,
                         current=numbers, ratio=numbers, score=numbers)
decisions = _with_extras(c.Decision, ts=timestamps, incident_id=name("id"), service=name("service"),
                         deploy_id=st.none() | name("id"),
                         action=st.sampled_from(["rollback", "request_approval", "escalate"]),
                         from_version=st.none() | name("version"), to_version=st.none() | name("version"),
                         confidence=st.floats(0, 1), reason=texts,
                         evidence=st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=3),
                                           max_size=3),
                         target=st.none() | targets)
approvals = _with_extras(c.Approval, ts=timestamps, incident_id=name("id"), approved=st.booleans(), by=lines)
verifications = _with_extras(c.Verification, ts=timestamps, incident_id=name("id"),
                             status=st.sampled_from(["executing", "executed", "verified", "not_recovered",
                                                     "failed"]),
                             detail=st.text(max_size=100),
                             before=st.dictionaries(name("metric"), numbers, max_size=3),
                             after=st.dictionaries(name("metric"), numbers, max_size=3))
alerts = _with_extras(c.Alert, ts=timestamps, incident_id=st.none() | name("id"),
                      severity=st.sampled_from(["info", "warning", "critical"]), text=texts,
                      links=st.lists(lines, max_size=3))
watermarks = _with_extras(c.Watermark, ts=timestamps, partition=st.integers(0, 1023),
                          partitions=st.integers(1, 1024), services=st.integers(0, 10**6), idle=st.booleans())
dead_letters = st.builds(c.dead_letter, st.none() | st.binary(max_size=20_000), texts, lines,
                         st.integers(-1, 1023), st.integers(0, 10**12), timestamps | st.floats(-1e12, 1e13))

RECORDS = {"metric": metrics, "deploy": deploys, "anomaly": anomalies, "decision": decisions,
           "approval": approvals, "verification": verifications, "alert": alerts, "watermark": watermarks,
           "deadletter": dead_letters}


def records() -> st.SearchStrategy[c.Record]:
    return st.one_of(*RECORDS.values())


# -- broken in one way ------------------------------------------------------------------------

HOSTILE_NAMES = ["", " ", "../../etc/passwd", "$(touch /tmp/pwned);", "a;rm -rf /", "a b", "a\nb", "a\x00b",
                 "'quoted'", "é", "a/b", ".hidden", "-flag", "x" * 300, "a..b", "\u202eevil", "ａ"]
NUMERIC = {  # numeric fields of each type, strict: a string, a bool or null is refused
    "metric": ["ts", "value"], "deploy": ["ts"], "anomaly": ["ts", "onset_ts", "detected_ts", "baseline",
                                                            "current", "ratio", "score"],
    "decision": ["ts", "confidence"], "approval": ["ts"], "verification": ["ts"], "alert": ["ts"],
    "watermark": ["ts", "partition", "partitions", "services"], "deadletter": ["ts", "partition", "offset"],
}
NAMED = {  # fields with a name format: (field, kind)
    "metric": [("service", "service"), ("metric", "metric")],
    "deploy": [("service", "service"), ("deploy_id", "id"), ("version", "version"),
               ("previous_version", "version")],
    "anomaly": [("service", "service"), ("metric", "metric"), ("detector", "id")],
    "decision": [("incident_id", "id"), ("service", "service"), ("deploy_id", "id"), ("from_version", "version"),
                 ("to_version", "version")],
    "approval": [("incident_id", "id")], "verification": [("incident_id", "id")], "alert": [("incident_id", "id")],
    "watermark": [], "deadletter": [],
}
REQUIRED = {kind: [f for f, info in model.model_fields.items() if info.is_required()]
            for kind, model in (("metric", c.Metric), ("deploy", c.Deploy), ("anomaly", c.Anomaly),
                                ("decision", c.Decision), ("approval", c.Approval),
                                ("verification", c.Verification), ("alert", c.Alert), ("watermark", c.Watermark),
                                ("deadletter", c.DeadLetter))}


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data, allow_nan=True).encode()


@st.composite
def broken(draw: st.DrawFn) -> tuple[bytes | None, str | None]:
    """A valid record's JSON with one thing wrong, and the field its refusal must name."""
    kind = draw(st.sampled_from(sorted(RECORDS)))
    data = json.loads(c.encode(draw(RECORDS[kind])))
    how = draw(st.sampled_from([how for how, kinds in MUTATIONS.items() if kinds is None or kind in kinds]))
    if how == "number":
        field = draw(st.sampled_from(NUMERIC[kind]))
        data[field] = draw(st.sampled_from([str(data[field]), True, None, [data[field]], {"v": 1}, "NaN"]))
        return _dump(data), field
    if how == "name":
        field, name_kind = draw(st.sampled_from(NAMED[kind]))
        refused = [n for n in HOSTILE_NAMES if not names.valid(name_kind, n)]  # 300 x's is a valid id
        data[field] = draw(st.sampled_from(refused) | st.integers())
        return _dump(data), field
    if how == "missing":
        field = draw(st.sampled_from(REQUIRED[kind]))
        del data[field]
        return _dump(data), field
    if how == "size":
        data["padding"] = "x" * draw(st.integers(c.MAX_RECORD_BYTES, 2 * c.MAX_RECORD_BYTES))
        return _dump(data), None
    if how == "tombstone":
        return None, None
    if how == "extras":
        if draw(st.booleans()):
            for i in range(c.MAX_EXTRA_FIELDS + 1):
                data[f"extra_{i}"] = i
            return _dump(data), "<extra fields>"
        data["blob"] = "y" * draw(st.integers(c.MAX_EXTRA_BYTES, 4 * c.MAX_EXTRA_BYTES))
        return _dump(data), "blob"
    if how == "depth":
        deep: Any = []
        for _ in range(c.MAX_DEPTH + draw(st.integers(1, 100))):
            deep = [deep]
        data["nested"] = deep
        return _dump(data), "nested"
    if how == "choice":
        field = {"deploy": "status", "decision": "action", "verification": "status", "alert": "severity"}[kind]
        data[field] = draw(st.sampled_from(["done", "nuke", "", "ROLLBACK", 1]))
        return _dump(data), field
    if how == "labels":
        bad = draw(st.sampled_from(["key", "value", "many"]))
        if bad == "key":
            data["labels"] = {draw(st.sampled_from(["0bad", "a b", "", "x" * 200, "a\nb", "-lead"])): "v"}
        elif bad == "value":
            data["labels"] = {"env": "v" * (c.MAX_LABEL_VALUE_CHARS + 1)}
        else:
            data["labels"] = {f"l{i}": "v" for i in range(c.MAX_LABELS + 1)}
        return _dump(data), "labels"
    if how == "target":
        target = draw(st.sampled_from([
            ({"kind": "kubernetes", "name": "checkout"}, "target.namespace"),
            ({"kind": "kubernetes", "namespace": "../../etc", "name": "checkout"}, "target.namespace"),
            ({"kind": "kubernetes", "namespace": "shop", "name": "$(reboot)"}, "target.name"),
            ({"kind": "Kubernetes; rm", "namespace": "shop", "name": "checkout"}, "target.kind"),
            ({"kind": "image", "image": "Registry/UPPER:tag"}, "target.image"),
        ]))
        data["target"] = target[0]
        return _dump(data), target[1]
    if how == "flag":
        field = "approved" if kind == "approval" else "idle"
        data[field] = draw(st.sampled_from(["true", 1, 0, "yes", None]))
        return _dump(data), field
    if how == "time":
        data["ts"] = draw(st.sampled_from([0, -1, c.MAX_TS, data["ts"] * 1000 + c.MAX_TS, 1e308, float("inf")]))
        return _dump(data), "ts"
    data["type"] = draw(st.sampled_from([None, "metrics", "", 1, ["metric"]]))
    return _dump(data), "type"


MUTATIONS: dict[str, set[str] | None] = {  # how a record is broken, and the types it applies to (None: all)
    "number": None, "name": {k for k, fields in NAMED.items() if fields}, "missing": None, "type": None,
    "size": None, "tombstone": None, "extras": set(RECORDS) - {"deadletter"}, "depth": None,
    "choice": {"deploy", "decision", "verification", "alert"}, "labels": {"metric"},
    "target": {"deploy", "decision"}, "flag": {"approval", "watermark"}, "time": None,
}
