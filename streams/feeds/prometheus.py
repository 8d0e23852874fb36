"""The Prometheus bridge's pure part: declared queries, when each is due, and results as records.

A :class:`BridgeConfig` declares PromQL queries, each giving one Backout
metric for many services: ``sum by (service) (...)`` returns one series per
service, and the query's ``service`` template (``"{service}"`` by default,
``"{namespace}-{app}"``, or a fixed name) names each series' service from its
labels. An optional ``count`` query with the same labels gives the
observations behind each sample (requests in the window), which the
detectors use to weigh evidence.

Every query is evaluated at times aligned to its interval (``time=`` on the
instant-query API), and each sample is stamped with that evaluation time, its
event time: evaluating the same query at the same time again gives the same
records, so a restarted bridge knows exactly which times it has published
(:func:`due`).
"""

from __future__ import annotations

import hashlib
import math
import re
import string
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from backout.contracts import Metric
from backout.errors import ConfigError, ContractError
from backout.names import FORMATS, valid
from streams.feeds.parsed import Parsed


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(description="the Backout metric every sample of the query is")
    query: str = Field(min_length=1, description="PromQL, one series per service")
    service: str = Field(default="{service}", description="the service of a series, from its labels")
    count: str | None = Field(default=None, description="PromQL giving the observations behind each sample")
    interval_s: float | None = Field(default=None, gt=0, description="default: the file's interval_s")

    @field_validator("metric")
    @classmethod
    def _metric(cls, metric: str) -> str:
        if not valid("metric", metric):
            raise ValueError(f"metric {metric!r} is not a valid metric: {FORMATS['metric'][2]}")
        return metric

    @field_validator("service")
    @classmethod
    def _template(cls, template: str) -> str:
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        except ValueError as exc:
            raise ValueError(f"service template {template!r}: {exc}") from None
        if any(not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) for name in fields):
            raise ValueError(f"service template {template!r}: expected {{label}} fields naming labels")
        return template

    @property
    def key(self) -> str:
        """Names the query in the bridge's state; a changed query starts afresh."""
        text = "\0".join([self.metric, self.query, self.service, self.count or ""])
        return f"{self.metric}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


class BridgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_s: float = Field(default=15.0, gt=0, description="how often each query is evaluated")
    max_catch_up_s: float = Field(default=300.0, ge=0,
                                  description="after a restart or an outage, how far back to evaluate missed times")
    timeout_s: float = Field(default=10.0, gt=0, description="for one query to Prometheus")
    queries: list[Query] = Field(min_length=1)

    def interval_of(self, query: Query) -> float:
        return query.interval_s or self.interval_s


def load_config(path: str | Path) -> BridgeConfig:
    """The bridge's YAML file; :class:`ConfigError` naming the key and the problem."""
    try:
        data = yaml.safe_load(Path(path).read_text())
        return BridgeConfig.model_validate(data)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML ({exc})") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<file>'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None


def due(last_ts: float | None, interval_s: float, now: float, max_catch_up_s: float) -> list[float]:
    """The evaluation times to publish now: multiples of ``interval_s`` after ``last_ts`` up to
    ``now``, none older than ``max_catch_up_s``; only the latest when nothing was published yet.

    >>> due(None, 15, 1000.0, 300)
    [990.0]
    >>> due(960.0, 15, 1000.0, 300)
    [975.0, 990.0]
    >>> due(0.0, 15, 1000.0, 40)  # long away: the last 40 s only
    [960.0, 975.0, 990.0]
    """
    latest = math.floor(now / interval_s) * interval_s
    if last_ts is None:
        return [float(latest)]
    first = math.floor(last_ts / interval_s) * interval_s + interval_s
    first = max(first, math.ceil((now - max_catch_up_s) / interval_s) * interval_s)
    count = int(round((latest - first) / interval_s)) + 1
    return [float(first + i * interval_s) for i in range(max(count, 0))]


def to_records(query: Query, result: dict[str, Any], eval_ts: float, counts: dict[str, Any] | None = None) -> Parsed:
    """The metric records of an instant-query API answer evaluated at ``eval_ts``.

    ``counts`` is the answer of the query's ``count`` query at the same time.
    :class:`ContractError` if the answer is Prometheus' error or not a vector.
    """
    parsed = Parsed()
    count_of = {}
    for labels, value, _ in _series(counts if counts is not None else _EMPTY, "count"):
        try:
            count_of[query.service.format_map(labels)] = value
        except KeyError:
            continue  # a count series without the service's labels counts nothing
    seen: set[str] = set()
    for labels, value, raw in _series(result, "query"):
        where = f"query {query.key} series {labels}"
        try:
            service = query.service.format_map(labels)
        except KeyError as exc:
            parsed.refuse(where, f"labels.{exc.args[0]}", None, f"a label for the service template {query.service!r}",
                          raw)
            continue
        if not valid("service", service):
            parsed.refuse(where, "service", service, FORMATS["service"][2], raw)
        elif service in seen:
            parsed.refuse(where, "service", service, "one series per service (aggregate with sum by (service))", raw)
        elif math.isnan(value):
            parsed.skip("NaN value")
        elif math.isinf(value):
            parsed.refuse(where, "value", value, "a finite number", raw)
        else:
            seen.add(service)
            count = count_of.get(service)
            valid_count = count is not None and math.isfinite(count) and count >= 0
            parsed.records.append(Metric(ts=eval_ts, service=service, metric=query.metric, value=value,
                                         count=count if valid_count else None, labels=_without(labels)))
    return parsed


_EMPTY = {"status": "success", "data": {"resultType": "vector", "result": []}}


def _series(answer: dict[str, Any], which: str) -> list[tuple[dict[str, str], float, bytes]]:
    if answer.get("status") != "success":
        raise ContractError(f"{which}: Prometheus answered {answer.get('errorType', 'an error')}: "
                            f"{answer.get('error', answer)}")
    data = answer.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list):
        return [({}, float(result[1]), repr(result).encode())]
    if kind != "vector" or not isinstance(result, list):
        raise ContractError(f"{which}: got resultType {kind!r}, expected a vector or a scalar (an instant query)")
    return [(dict(item.get("metric", {})), float(item["value"][1]), repr(item).encode()) for item in result]


def _without(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k != "__name__"}
