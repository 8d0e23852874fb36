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
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

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
MAX_DEPTH = 16  # nesting of JSON in free-form fields (evidence, extras): deeper cannot be encoded again
MAX_SOURCE_CHARS = 1024  # a dead letter's source: a topic, or file:<path>
DEAD_LETTER_KEEP_BYTES = 8 * 1024  # of a bad record, kept in its dead letter: escaped, still under MAX_RECORD_BYTES

Severity = Literal["info", "warning", "critical"]
DeployStatus = Literal["started", "finished", "failed", "rolled_back"]
Action = Literal["rollback", "request_approval", "escalate"]
VerificationStatus = Literal["executing", "executed", "verified", "not_recovered", "failed"]
MetricKind = Literal["rate", "gauge", "health"]


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
    for key, value in extra.items():
        if not _within(value, MAX_DEPTH):
            raise _refuse(key, f"lists and objects nested deeper than {MAX_DEPTH}",
                          f"at most {MAX_DEPTH} levels (deeper cannot be encoded again)")
    if sum(sizes.values()) > MAX_EXTRA_BYTES:
        largest = max(sizes, key=lambda k: sizes[k])
        raise _refuse(largest, f"{sizes[largest]} bytes of JSON",
                      f"extra fields of at most {MAX_EXTRA_BYTES} bytes of JSON together")


def _within(value: object, depth: int) -> bool:
    """Whether ``value`` nests lists and objects at most ``depth`` levels deep."""
    if not isinstance(value, dict | list):
        return True
    if depth == 0:
        return False
    return all(_within(item, depth - 1) for item in (value.values() if isinstance(value, dict) else value))


def _shallow(value: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not _within(value, MAX_DEPTH):
        raise PydanticCustomError("too_deep", f"at most {MAX_DEPTH} levels of lists and objects "
                                  "(deeper cannot be encoded again)")
    return value


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


# kind -> field -> (required, format (None: an http(s) URL), what it is): the fields the executors read
TARGET_FIELDS: dict[str, dict[str, tuple[bool, names.NameKind | None, str]]] = {
    "kubernetes": {"namespace": (True, "namespace", "the Deployment's namespace"),
                   "name": (True, "k8s_name", "the Deployment"),
                   "container": (False, "k8s_name", "the container whose image is the version")},
    "argo-rollout": {"namespace": (True, "namespace", "the Rollout's namespace"),
                     "name": (True, "k8s_name", "the Rollout"),
                     "container": (False, "k8s_name", "the container whose image is the version")},
    "bluegreen": {"name": (False, "k8s_name", "the switch (the service's upstream pair)")},
    "image": {"image": (True, "image", "the image repository, without a tag"),
              "name": (False, "k8s_name", "the container or job to redeploy")},
    "webhook": {"url": (True, None, "an http(s) URL to POST the decision to")},
}


def http_url(url: object) -> bool:
    """An http(s) URL with a host and no whitespace: what a webhook target may name."""
    if not isinstance(url, str) or len(url) > 2048:
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in url)


class Target(BaseModel):
    """Where a deploy runs; ``kind`` picks the executor, the rest is the executor's.

    The fields an executor reads (:data:`TARGET_FIELDS`: a kubernetes target's
    namespace and name, an image target's repository, a webhook's URL, ...) are
    required and checked in the format of the system that receives them; other
    fields, and the fields of kinds no executor here knows, are bounded like a
    record's extra fields.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: Annotated[str, Strict(), AfterValidator(_format("target_kind"))]

    @model_validator(mode="after")
    def _known_fields(self) -> Target:
        extra = self.model_extra or {}
        for field, (required, kind, what) in TARGET_FIELDS.get(self.kind, {}).items():
            if field not in extra:
                if required:
                    raise _refuse(field, "missing", f"a value ({what}, required for a {self.kind} target)")
            elif kind is None and not http_url(extra[field]):
                raise _refuse(field, f"got {_shown(extra[field])}", "an http(s) URL with a host")
            elif kind is not None and not names.valid(kind, extra[field]):
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
    """A sustained shift of one (service, metric); the monitor re-sends it, ``worsened``, as it grows."""

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
    direction: Literal["up", "down"] | None = Field(default=None, description="the way it moved (None: not said)")
    kind: MetricKind | None = Field(default=None, description="the metric's kind, as its spec says")
    samples: Count = Field(default=0, ge=0, description="length of the excursion in samples (0: unknown)")
    worsened: Flag = Field(default=False, description="a re-report: the shift got markedly worse")
    deploy_id: Id | None = Field(default=None, description="the deploy whose anchored test found it "
                                  "(detectors.anchored); None: the unconditional monitor's")
    earliest_onset_ts: Timestamp | None = Field(default=None, description="the shift may have begun as early as "
                                                "this, before the deploy: the samples cannot tell (never clear-cut)")
    latest_onset_ts: Timestamp | None = Field(default=None, description="the shift may have begun as late as "
                                              "this: at a few events a sample the samples cannot tell")


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
    evidence: Annotated[list[dict[str, Any]], AfterValidator(_shallow)] = Field(default_factory=list,
                                                                                max_length=MAX_ITEMS)
    target: Target | None = None  # the blamed deploy's, so that an executor needs nothing else


class Approval(Record):
    type: Literal["approval"] = "approval"
    incident_id: Id
    approved: Flag
    by: Line
    service: Service | None = None  # the incident's: approvals are keyed (partitioned) by it, as decisions are


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
    should not hold event time back; ``empty`` that it had no sample since its
    worker took it, so ``ts`` is that worker's guess, not event time.
    """

    type: Literal["watermark"] = "watermark"
    partition: Count = Field(ge=0)
    partitions: Count = Field(default=1, ge=1)
    services: Count = Field(default=0, ge=0)
    idle: Flag = False
    empty: Flag = False


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
    if expect is not None:  # a valid record of the topic's type: parsed and validated in one pass (3x faster)
        try:
            fast = expect.model_validate_json(raw)
        except ValidationError:
            pass
        else:
            if "type" in fast.model_fields_set:
                return fast
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, and ints past Python's digit limit
        raise ContractError(f"not JSON: {exc}") from None
    except RecursionError:
        raise ContractError("not JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise ContractError(f"expected a JSON object, got {type(data).__name__}")
    kind = data.get("type")
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
    errors = exc.errors()
    parts = []
    for err in errors[:5]:
        loc = [_cut(str(p)) for p in err["loc"]]
        if loc and loc[0] == level:  # the discriminator's own level
            loc = loc[1:]
        ctx = err.get("ctx") or {}
        if err["type"] == "record_rule":  # a model-level check: the field is in the context
            loc.append(_cut(ctx["field"]))
            got = ctx["got"]
        else:
            got = "missing" if err["type"] == "missing" else f"got {_shown(err['input'])}"
        field = ".".join(loc) or "<record>"
        parts.append(f"field '{field}': {got}, expected {_expected(err)}")
    return "; ".join(parts) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")


def _cut(name: str) -> str:
    return name if len(name) <= 80 else f"{name[:60]}… ({len(name)} chars)"


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
    if err["type"] == "less_than" and err["loc"] and str(err["loc"][-1]).endswith("ts"):
        return f"unix seconds before 2100 (less than {MAX_TS:.0f}), not milliseconds"
    for prefix in ("Input should be ", "Value should be ", "Input should have ", "Dictionary should have ",
                   "List should have ", "String should have "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg[0].lower() + msg[1:]
