"""The message contracts of DESIGN.md, defined once.

Every record has a ``type`` discriminator and ``ts`` (float unix seconds, event
time). The same JSON encoding (:func:`encode` / :func:`decode`) is used for Kafka
values, JSON Lines files and HTTP bodies. Unknown extra fields are kept.

Anyone who can produce to a topic writes these, so the contracts are strict:

* numbers are JSON numbers (``"0.5"`` is not one) and booleans JSON booleans;
  ``ts`` is unix seconds below :data:`MAX_TS` (2100-01-01), so a timestamp in
  milliseconds is refused instead of read as the year 58000;
* names (service, metric, version, ids, label keys, a Kubernetes target's
  namespace and name) have the formats of :mod:`backout.names`;
* free text, label values, lists and extra fields are bounded, and a whole
  record is at most :data:`MAX_RECORD_BYTES`, checked before it is parsed;
* a tombstone (a null Kafka value) is refused like any other bad record.

Every refusal is a :class:`~backout.errors.ContractError` naming the field,
the value (cut to 60 characters) and the rule.

>>> m = decode(b'{"type":"metric","ts":1.5,"service":"checkout","metric":"error_rate","value":0.01}')
>>> (m.service, m.value, m.count)
('checkout', 0.01, None)
>>> decode(encode(m)) == m
True
>>> decode(b'{"type":"metric","ts":1.5,"service":"checkout","metric":"error_rate","value":"0.01"}')
Traceback (most recent call last):
...
backout.errors.ContractError: invalid metric record: field 'value': got '0.01', expected a valid number
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from backout import names
from backout.errors import ContractError

MAX_RECORD_BYTES = 64 * 1024  # a metric sample is ~150 bytes; a decision with its evidence ~2 kB
MAX_TS = 4_102_444_800.0  # 2100-01-01 00:00 UTC: later "seconds" are milliseconds or a broken clock
MAX_EXTRA_FIELDS = 16  # unknown fields kept per record (and per target)
MAX_EXTRA_BYTES = 4096  # their JSON, together
MAX_LABELS = 32
MAX_LABEL_VALUE_CHARS = 1024
MAX_LINE_CHARS = 256  # a one-line free text: who approved
MAX_TEXT_CHARS = 4096  # a sentence for humans: reasons, alert texts, details
MAX_ITEMS = 256  # evidence entries, metrics of a verification (the size limit binds first)
MAX_DEPTH = 16  # nesting of JSON inside a field (evidence, extras): deeper cannot be encoded again
MAX_SOURCE_CHARS = 1024  # a dead letter's source: a topic, or file:<path>
DEAD_LETTER_KEEP_BYTES = 8 * 1024  # of a bad record, kept in its dead letter: escaped, still under MAX_RECORD_BYTES

Severity = Literal["info", "warning", "critical"]
DeployStatus = Literal["started", "finished", "failed", "rolled_back"]
Action = Literal["rollback", "request_approval", "escalate"]
VerificationStatus = Literal["executing", "executed", "verified", "not_recovered", "failed"]


def _format(kind: names.NameKind) -> Callable[[str], str]:
    rule = names.FORMATS[kind][2]

    def check(value: str) -> str:
        if not names.valid(kind, value):
            raise PydanticCustomError("name_format", rule)
        return value

    return check


def _one_line(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise PydanticCustomError("one_line", "printable text on one line (no control characters)")
    return value


Number = Annotated[float, Strict()]
Count = Annotated[int, Strict()]
Flag = Annotated[bool, Strict()]
Timestamp = Annotated[float, Strict(), Field(gt=0, lt=MAX_TS)]
Service = Annotated[str, Strict(), AfterValidator(_format("service"))]
MetricName = Annotated[str, Strict(), AfterValidator(_format("metric"))]
Version = Annotated[str, Strict(), AfterValidator(_format("version"))]
Id = Annotated[str, Strict(), AfterValidator(_format("id"))]
LabelName = Annotated[str, Strict(), AfterValidator(_format("label"))]
LabelValue = Annotated[str, Strict(), Field(max_length=MAX_LABEL_VALUE_CHARS)]
Line = Annotated[str, Strict(), Field(min_length=1, max_length=MAX_LINE_CHARS), AfterValidator(_one_line)]
Text = Annotated[str, Strict(), Field(min_length=1, max_length=MAX_TEXT_CHARS)]
Link = Annotated[str, Strict(), Field(min_length=1, max_length=2048), AfterValidator(_one_line)]


def _refuse(field: str, got: str, expected: str) -> PydanticCustomError:
    """An error about ``field`` found by a model-level check, which pydantic gives no location."""
    return PydanticCustomError("record_rule", "{expected}", {"field": field, "got": got, "expected": expected})


def _bounded_extras(model: BaseModel) -> None:
    extra = model.model_extra or {}
    if not extra:
        return
    if len(extra) > MAX_EXTRA_FIELDS:
        raise _refuse("<extra fields>", f"{len(extra)} fields ({_shown(', '.join(sorted(extra)[:5]))}, …)",
                      f"at most {MAX_EXTRA_FIELDS} fields the contract does not name")
    try:
        sizes = {key: len(json.dumps(value, separators=(",", ":"))) + len(key) for key, value in extra.items()}
    except (TypeError, ValueError, RecursionError):  # built in Python with something JSON cannot hold
        raise _refuse("<extra fields>", f"got {_shown(sorted(extra))}", "JSON values") from None
    if sum(sizes.values()) > MAX_EXTRA_BYTES:
        largest = max(sizes, key=lambda k: sizes[k])
        raise _refuse(largest, f"{sizes[largest]} bytes of JSON",
                      f"extra fields of at most {MAX_EXTRA_BYTES} bytes of JSON together")


class Record(BaseModel):
    """Fields every record carries."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, frozen=True)

    ts: Timestamp = Field(description="event time, unix seconds")

    @model_validator(mode="after")
    def _extras(self) -> Record:
        _bounded_extras(self)
        return self


class Metric(Record):
    type: Literal["metric"] = "metric"
    service: Service
    metric: MetricName
    value: Number
    count: Number | None = Field(default=None, ge=0, description="observations behind the value")
    labels: dict[LabelName, LabelValue] = Field(default_factory=dict, max_length=MAX_LABELS)


KUBERNETES_FIELDS: dict[str, names.NameKind] = {"namespace": "namespace", "name": "k8s_name"}


class Target(BaseModel):
    """Where a deploy runs; ``kind`` picks the executor, the rest is the executor's.

    A ``kubernetes`` target needs ``namespace`` and ``name`` (a Deployment's or
    Rollout's); an ``image`` field, in any kind, is an OCI repository. Other
    fields are bounded like a record's extra fields.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: Annotated[str, Strict(), AfterValidator(_format("target_kind"))]

    @model_validator(mode="after")
    def _known_fields(self) -> Target:
        extra = self.model_extra or {}
        formats: dict[str, names.NameKind] = dict(KUBERNETES_FIELDS) if self.kind == "kubernetes" else {}
        if "image" in extra:
            formats["image"] = "image"
        for field, kind in formats.items():
            if field not in extra:
                raise _refuse(field, "missing", f"a value (required for a {self.kind} target)")
            if not names.valid(kind, extra[field]):
                raise _refuse(field, f"got {_shown(extra[field])}", names.FORMATS[kind][2])
        _bounded_extras(self)
        return self


class Deploy(Record):
    type: Literal["deploy"] = "deploy"
    service: Service
    deploy_id: Id
    version: Version
    previous_version: Version | None = None
    status: DeployStatus = "finished"
    target: Target | None = None


class Anomaly(Record):
    type: Literal["anomaly"] = "anomaly"
    service: Service
    metric: MetricName
    detector: Id
    onset_ts: Timestamp
    detected_ts: Timestamp
    baseline: Number
    current: Number
    ratio: Number
    score: Number


class Decision(Record):
    type: Literal["decision"] = "decision"
    incident_id: Id
    service: Service
    deploy_id: Id | None = None
    action: Action
    from_version: Version | None = None
    to_version: Version | None = None
    confidence: Number = Field(ge=0, le=1)
    reason: Text
    evidence: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_ITEMS)
    target: Target | None = None  # the blamed deploy's, so that an executor needs nothing else


class Approval(Record):
    type: Literal["approval"] = "approval"
    incident_id: Id
    approved: Flag
    by: Line


class Verification(Record):
    type: Literal["verification"] = "verification"
    incident_id: Id
    status: VerificationStatus
    detail: Annotated[str, Strict(), Field(max_length=MAX_TEXT_CHARS)] = ""
    before: dict[MetricName, Number] = Field(default_factory=dict, max_length=MAX_ITEMS)
    after: dict[MetricName, Number] = Field(default_factory=dict, max_length=MAX_ITEMS)


class Alert(Record):
    type: Literal["alert"] = "alert"
    incident_id: Id | None = None
    severity: Severity
    text: Text
    links: list[Link] = Field(default_factory=list, max_length=16)


class Watermark(Record):
    """Internal: stream ``partition`` of the metrics topic has reached event time ``ts``.

    ``services`` is how many services that partition has seen past their warm-up, so that the
    decider knows how many services exist when it asks "did every service shift?".
    ``partitions`` is how many partitions the metrics topic has (the decider
    waits for all of them); ``idle`` says the partition has gone quiet and
    should not hold event time back.
    """

    type: Literal["watermark"] = "watermark"
    partition: Count = Field(ge=0)
    partitions: Count = Field(default=1, ge=1)
    services: Count = Field(default=0, ge=0)
    idle: Flag = False


class DeadLetter(Record):
    """A record that could not be used, byte for byte, where it came from, and why.

    ``ts`` is when it was refused (the broker timestamp of the bad record when it
    has one). ``id`` is stable for one source record (its topic, partition and
    offset, or its file and line): dead letters are published at least once, and
    a consumer dedupes on ``id``.
    """

    type: Literal["deadletter"] = "deadletter"
    id: Annotated[str, Strict(), Field(min_length=1, max_length=2 * MAX_SOURCE_CHARS)]
    reason: Text
    topic: Annotated[str, Strict(), Field(max_length=MAX_SOURCE_CHARS)]
    partition: Count = Field(ge=-1)
    offset: Count
    value: Annotated[str, Strict(), Field(max_length=2 * DEAD_LETTER_KEEP_BYTES)]  # base64 is 4/3 of the bytes
    encoding: Literal["utf-8", "base64"] = "utf-8"
    truncated_from_bytes: Count | None = None


def dead_letter(raw: bytes | None, reason: str, topic: str, partition: int, offset: int, ts: float) -> DeadLetter:
    """The dead letter of ``raw``, read from ``topic[partition]`` at ``offset`` (a file: its name
    and line number, partition -1), refused at ``ts`` for ``reason``.

    Whatever came in, the result is a valid record of at most :data:`MAX_RECORD_BYTES`: the
    value is cut to :data:`DEAD_LETTER_KEEP_BYTES` and kept as text unless base64 is shorter
    (control characters, binary), the reason is cut to a text's length, and a ``ts`` that is
    not a plausible event time (a producer's clock) becomes the time of refusal.

    >>> letter = dead_letter(b"{oops", "not JSON", "backout.metrics", 2, 17, 1.5)
    >>> letter.id, letter.value, letter.encoding
    ('dl-backout.metrics-2-17', '{oops', 'utf-8')
    """
    data = raw or b""
    size = len(data)
    data = data[:DEAD_LETTER_KEEP_BYTES]
    value, encoding = base64.b64encode(data).decode(), "base64"
    try:
        text = data.decode()
        if len(json.dumps(text, ensure_ascii=False).encode()) <= len(value):  # not mostly escapes
            value, encoding = text, "utf-8"
    except UnicodeDecodeError:
        pass
    topic = topic[:MAX_SOURCE_CHARS]
    return DeadLetter(ts=ts if 0 < ts < MAX_TS else time.time(), id=f"dl-{topic}-{partition}-{offset}",
                      reason=reason[:MAX_TEXT_CHARS] or "no reason given", topic=topic, partition=partition,
                      offset=offset, value=value, encoding=encoding,  # type: ignore[arg-type]
                      truncated_from_bytes=size if size > DEAD_LETTER_KEEP_BYTES else None)


AnyRecord = Annotated[
    Metric | Deploy | Anomaly | Decision | Approval | Verification | Alert | Watermark | DeadLetter,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyRecord)
RECORD_TYPES = ("metric", "deploy", "anomaly", "decision", "approval", "verification", "alert", "watermark",
                "deadletter")


def encode(record: Record) -> bytes:
    """The one JSON encoding of a record (UTF-8, compact, fields in contract order)."""
    return record.model_dump_json().encode()


def decode(raw: bytes | str | None, expect: type[Record] | None = None,
           max_bytes: int = MAX_RECORD_BYTES) -> Any:
    """Parse and validate one record; raise :class:`ContractError` naming field, value and expectation.

    ``raw`` is a Kafka value, a line or a body; ``None`` is a tombstone. A record
    longer than ``max_bytes`` is refused before it is parsed.
    """
    if raw is None:
        raise ContractError("a tombstone (null value): expected a JSON record; no Backout topic is "
                            "deleted from by key")
    size = len(raw) if isinstance(raw, bytes | bytearray) else len(raw.encode(errors="surrogatepass"))
    if size > max_bytes:
        raise ContractError(f"record of {size} bytes: expected at most {max_bytes} bytes (the record size limit)")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, and ints past Python's digit limit
        raise ContractError(f"not JSON: {exc}") from None
    except RecursionError:
        raise ContractError("not JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise ContractError(f"expected a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    deep = _too_deep(data)
    if deep is not None:
        raise ContractError(f"field '{_cut(deep)}': nested deeper than {MAX_DEPTH} levels, expected at most "
                            f"{MAX_DEPTH}")
    if kind not in RECORD_TYPES:
        raise ContractError(f"field 'type': got {_shown(kind)}, expected one of {', '.join(RECORD_TYPES)}")
    try:
        record = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ContractError(_describe(kind, exc)) from None
    if expect is not None and not isinstance(record, expect):
        wanted = expect.model_fields["type"].default
        raise ContractError(f"field 'type': got {kind!r}, expected {wanted!r} on this topic")
    return record


def _too_deep(data: dict[str, Any]) -> str | None:
    """The first field whose value nests lists or objects more than :data:`MAX_DEPTH` deep."""
    for field, value in data.items():
        if isinstance(value, dict | list) and not _within(value, MAX_DEPTH):
            return field
    return None


def _within(value: dict[str, Any] | list[Any], depth: int) -> bool:
    if depth == 0:
        return False
    for item in value.values() if isinstance(value, dict) else value:
        if isinstance(item, dict | list) and not _within(item, depth - 1):
            return False
    return True


def _describe(kind: str, exc: ValidationError) -> str:
    errors = exc.errors()
    parts = []
    for err in errors[:5]:
        loc = [_cut(str(p)) for p in err["loc"]]
        if loc and loc[0] == kind:  # the discriminator's own level
            loc = loc[1:]
        ctx = err.get("ctx") or {}
        if err["type"] == "record_rule":  # a model-level check: the field is in the context
            loc.append(_cut(ctx["field"]))
            got = ctx["got"]
        else:
            got = "missing" if err["type"] == "missing" else f"got {_shown(err['input'])}"
        field = ".".join(loc) or "<record>"
        parts.append(f"field '{field}': {got}, expected {_expected(err)}")
    more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
    return f"invalid {kind} record: " + "; ".join(parts) + more


def _cut(name: str) -> str:
    return name if len(name) <= 80 else f"{name[:60]}… ({len(name)} chars)"


def _shown(value: Any) -> str:
    """``repr(value)``, cut so that a 100 kB name does not make a 100 kB message."""
    if isinstance(value, str) and len(value) > 80:
        return f"{value[:60]!r}… ({len(value)} chars)"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}… ({len(text)} chars)"


def _expected(err: Any) -> str:
    msg: str = err["msg"]
    if err["type"] == "missing":
        return "a value (required)"
    if err["type"] == "less_than" and err["loc"] and str(err["loc"][-1]).endswith("ts"):
        return f"unix seconds before 2100 (less than {MAX_TS:.0f}), not milliseconds"
    for prefix in ("Input should be ", "Value should be ", "Input should have ", "Dictionary should have ",
                   "List should have ", "String should have "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg[0].lower() + msg[1:]
