"""The message contracts of DESIGN.md, defined once.

Every record has a ``type`` discriminator and ``ts`` (float unix seconds, event
time). The same JSON encoding (:func:`encode` / :func:`decode`) is used for Kafka
values, JSON Lines files and HTTP bodies. Unknown extra fields are kept.

>>> m = decode(b'{"type":"metric","ts":1.5,"service":"checkout","metric":"error_rate","value":0.01}')
>>> (m.service, m.value, m.count)
('checkout', 0.01, None)
>>> decode(encode(m)) == m
True
"""

from __future__ import annotations

import base64
import json
import time
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from backout.errors import ContractError

Severity = Literal["info", "warning", "critical"]
DeployStatus = Literal["started", "finished", "failed", "rolled_back"]
Action = Literal["rollback", "request_approval", "escalate"]
VerificationStatus = Literal["executing", "executed", "verified", "not_recovered", "failed"]
MetricKind = Literal["rate", "gauge", "health"]

NonEmpty = Annotated[str, Field(min_length=1)]


class Record(BaseModel):
    """Fields every record carries."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, frozen=True)

    ts: float = Field(gt=0, description="event time, unix seconds")


class Metric(Record):
    type: Literal["metric"] = "metric"
    service: NonEmpty
    metric: NonEmpty
    value: float
    count: float | None = Field(default=None, ge=0, description="observations behind the value")
    labels: dict[str, str] = Field(default_factory=dict)


class Target(BaseModel):
    """Where a deploy runs; ``kind`` picks the executor, the rest is the executor's."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: NonEmpty


class Deploy(Record):
    type: Literal["deploy"] = "deploy"
    service: NonEmpty
    deploy_id: NonEmpty
    version: NonEmpty
    previous_version: str | None = None
    status: DeployStatus = "finished"
    target: Target | None = None


class Anomaly(Record):
    """A sustained shift of one (service, metric); the monitor re-sends it, ``worsened``, as it grows."""

    type: Literal["anomaly"] = "anomaly"
    service: NonEmpty
    metric: NonEmpty
    detector: NonEmpty
    onset_ts: float
    detected_ts: float
    baseline: float
    current: float
    ratio: float
    score: float
    direction: Literal["up", "down"] | None = Field(default=None, description="the way it moved (None: not said)")
    kind: MetricKind | None = Field(default=None, description="the metric's kind, as its spec says")
    samples: int = Field(default=0, ge=0, description="length of the excursion in samples (0: unknown)")
    worsened: bool = Field(default=False, description="a re-report: the shift got markedly worse")
    deploy_id: str | None = Field(default=None, description="the deploy whose anchored test found it "
                                  "(detectors.anchored); None: the unconditional monitor's")


class Decision(Record):
    type: Literal["decision"] = "decision"
    incident_id: NonEmpty
    service: NonEmpty
    deploy_id: str | None = None
    action: Action
    from_version: str | None = None
    to_version: str | None = None
    confidence: float = Field(ge=0, le=1)
    reason: NonEmpty
    evidence: list[dict[str, Any]] = Field(default_factory=list)
    target: Target | None = None  # the blamed deploy's, so that an executor needs nothing else


class Approval(Record):
    type: Literal["approval"] = "approval"
    incident_id: NonEmpty
    approved: bool
    by: NonEmpty
    service: str | None = None  # the incident's: approvals are keyed (partitioned) by it, as decisions are


class Verification(Record):
    type: Literal["verification"] = "verification"
    incident_id: NonEmpty
    status: VerificationStatus
    detail: str = ""
    before: dict[str, float] = Field(default_factory=dict)
    after: dict[str, float] = Field(default_factory=dict)


class Alert(Record):
    type: Literal["alert"] = "alert"
    incident_id: str | None = None
    severity: Severity
    text: NonEmpty
    links: list[str] = Field(default_factory=list)


class Watermark(Record):
    """Internal: stream ``partition`` of the metrics topic has reached event time ``ts``.

    ``services`` is how many services that partition has seen, so that the
    decider knows how many services exist when it asks "did every service shift?".
    ``partitions`` is how many partitions the metrics topic has (the decider
    waits for all of them); ``idle`` says the partition has gone quiet and
    should not hold event time back.
    """

    type: Literal["watermark"] = "watermark"
    partition: int = Field(ge=0)
    partitions: int = Field(default=1, ge=1)
    services: int = Field(default=0, ge=0)
    idle: bool = False


class DeadLetter(Record):
    """A record that could not be used, byte for byte, where it came from, and why.

    ``ts`` is when it was refused (the broker timestamp of the bad record when it
    has one). ``id`` is stable for one source record (its topic, partition and
    offset, or its file and line): dead letters are published at least once, and
    a consumer dedupes on ``id``.
    """

    type: Literal["deadletter"] = "deadletter"
    id: NonEmpty
    reason: NonEmpty
    topic: str
    partition: int
    offset: int
    value: str
    encoding: Literal["utf-8", "base64"] = "utf-8"
    truncated_from_bytes: int | None = None


DEAD_LETTER_KEEP_BYTES = 256 * 1024  # a bigger record is cut: its dead letter must fit the broker's 1 MB default


def dead_letter(raw: bytes | None, reason: str, topic: str, partition: int, offset: int, ts: float) -> DeadLetter:
    """The dead letter of ``raw``, read from ``topic[partition]`` at ``offset`` (a file: its name
    and line number, partition -1), refused at ``ts`` for ``reason``.

    >>> letter = dead_letter(b"{oops", "not JSON", "backout.metrics", 2, 17, 1.5)
    >>> letter.id, letter.value, letter.encoding
    ('dl-backout.metrics-2-17', '{oops', 'utf-8')
    """
    data = raw or b""
    size = len(data)
    data = data[:DEAD_LETTER_KEEP_BYTES]
    try:
        value, encoding = data.decode(), "utf-8"
    except UnicodeDecodeError:
        value, encoding = base64.b64encode(data).decode(), "base64"
    return DeadLetter(ts=ts if ts > 0 else time.time(), id=f"dl-{topic}-{partition}-{offset}", reason=reason,
                      topic=topic, partition=partition, offset=offset, value=value, encoding=encoding,  # type: ignore[arg-type]
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


def decode(raw: bytes | str, expect: type[Record] | None = None) -> Any:
    """Parse and validate one record; raise :class:`ContractError` naming field, value and expectation.

    With ``expect`` (the record type of a topic) a valid record is parsed and validated in one
    pass (pydantic's JSON parser: about 3x faster on the hot path); anything else takes the
    general path, which says exactly what is wrong.
    """
    if expect is not None:
        try:
            fast = expect.model_validate_json(raw)
        except ValidationError:
            pass
        else:
            if "type" in fast.model_fields_set:
                return fast
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ContractError(f"expected a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    if kind not in RECORD_TYPES:
        raise ContractError(f"field 'type': got {kind!r}, expected one of {', '.join(RECORD_TYPES)}")
    try:
        record = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ContractError(_describe(kind, exc)) from None
    if expect is not None and not isinstance(record, expect):
        wanted = expect.model_fields["type"].default
        raise ContractError(f"field 'type': got {kind!r}, expected {wanted!r} on this topic")
    return record


Part = TypeVar("Part", bound=BaseModel)


def validate(model: type[Part], data: object, what: str) -> Part:
    """``data`` as ``model`` (a part of a record, such as a target's fields), with :func:`decode`'s
    messages: :class:`ContractError` naming ``what``, the field, the value and the expectation."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ContractError(f"invalid {what}: {_problems(exc)}") from None


def _describe(kind: str, exc: ValidationError) -> str:
    return f"invalid {kind} record: " + _problems(exc, kind)


def _problems(exc: ValidationError, level: str | None = None) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] == level:  # the discriminator's own level
            loc = loc[1:]
        field = ".".join(loc) or "<record>"
        got = "missing" if err["type"] == "missing" else f"got {_shown(err['input'])}"
        parts.append(f"field '{field}': {got}, expected {_expected(err)}")
    return "; ".join(parts)


def _shown(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: a 10 kB value must not make a 10 kB message."""
    text = repr(value)
    if len(text) <= limit:
        return text
    if isinstance(value, str):
        return f"{value[:limit - 20]!r}… ({len(value)} chars)"
    return f"{text[:limit - 20]}… ({len(text)} chars of {type(value).__name__})"


def _expected(err: Any) -> str:
    msg: str = err["msg"]
    if err["type"] == "missing":
        return "a value (required)"
    for prefix in ("Input should be ", "Value should be ", "Input should have "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg[0].lower() + msg[1:]
