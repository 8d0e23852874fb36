"""The HTTP receiver (``backout ingest http``): every push feed on one port.

==========================  ==============================================  =====================================
path                        body                                            answers
==========================  ==============================================  =====================================
``POST /records``           Backout's records: a JSON object, an array or   200; 400 listing each refused item
                            JSON Lines                                      (the valid ones are published)
``POST /v1/metrics``        OTLP/HTTP ``ExportMetricsServiceRequest``,      200 + ``ExportMetricsServiceResponse``
                            ``application/x-protobuf`` or ``/json``         (``partial_success`` for refusals)
``POST /api/v1/write``      Prometheus remote write 1.0 (snappy+protobuf)   204; 400 listing refused series
``POST /webhooks/github``   ``deployment_status`` events, signed            200; 401 on a bad signature
``POST /webhooks/argocd``   Backout's Argo CD template, bearer token        200; 401 without the token
``GET /health``, ``/metrics``  buffer state; counts (Prometheus text)
==========================  ==============================================  =====================================

Every write path takes ``Authorization: Bearer $BACKOUT_INGEST_TOKEN`` when
that is set (GitHub signs instead: it cannot send the header; Argo CD always
needs the token). A body larger than ``BACKOUT_INGEST_MAX_BODY_BYTES`` (8 MiB;
after gzip decoding) is refused with 413. When the publish buffer is full (the
broker is away), writes are refused with 503 and ``Retry-After``, which
Prometheus and the OpenTelemetry exporters retry; nothing of that body is kept.
"""

from __future__ import annotations

import hmac
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml
from aiohttp import web
from prometheus_client import generate_latest
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from backout.errors import ConfigError, ContractError
from streams.feeds import argocd, github, otlp, records, remote_write
from streams.feeds.argocd import ArgoMapping
from streams.feeds.cumulative import Cumulatives
from streams.feeds.github import GithubMapping
from streams.feeds.otlp import OtlpMapping
from streams.feeds.parsed import Parsed
from streams.feeds.publish import Publisher
from streams.feeds.remote_write import RemoteWriteMapping

MAX_BODY_BYTES = 8 * 1024 * 1024
RETRY_AFTER_S = 5
DELIVERIES_REMEMBERED = 10_000
REFUSALS_SHOWN = 100
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ReceiverSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("BACKOUT_INGEST_TOKEN"))
    github_secret: SecretStr | None = Field(default=None, validation_alias=AliasChoices("GITHUB_WEBHOOK_SECRET"))
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1024,
                                validation_alias=AliasChoices("BACKOUT_INGEST_MAX_BODY_BYTES"))


class ReceiverConfig(BaseModel):
    """``--config FILE``: how each source maps to services and metrics (every section optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    otlp: OtlpMapping = OtlpMapping()
    remote_write: RemoteWriteMapping = RemoteWriteMapping()
    github: GithubMapping = GithubMapping()
    argocd: ArgoMapping = ArgoMapping()


def load_config(path: str | Path | None) -> ReceiverConfig:
    if path is None:
        return ReceiverConfig()
    try:
        return ReceiverConfig.model_validate(yaml.safe_load(Path(path).read_text()) or {})
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML ({exc})") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None


def application(publisher: Publisher, config: ReceiverConfig, settings: ReceiverSettings) -> web.Application:
    receiver = Receiver(publisher, config, settings)
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[receiver.authenticate])
    app.add_routes([
        web.post("/records", receiver.records),
        web.post("/v1/metrics", receiver.otlp),
        web.post("/api/v1/write", receiver.remote_write),
        web.post("/webhooks/github", receiver.github),
        web.post("/webhooks/argocd", receiver.argocd),
        web.get("/health", receiver.health),
        web.get("/metrics", receiver.metrics),
    ])
    return app


class Receiver:
    def __init__(self, publisher: Publisher, config: ReceiverConfig, settings: ReceiverSettings) -> None:
        self.publisher = publisher
        self.config = config
        self.settings = settings
        self.cumulatives = Cumulatives(config.otlp.max_streams)
        self.deliveries: OrderedDict[str, None] = OrderedDict()  # GitHub deliveries taken, oldest first

    @web.middleware
    async def authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "POST" and request.path != "/webhooks/github":
            token = self.settings.token.get_secret_value() if self.settings.token else None
            if token is None and request.path == "/webhooks/argocd":
                raise web.HTTPUnauthorized(text="the Argo CD webhook needs BACKOUT_INGEST_TOKEN set on the receiver")
            given = request.headers.get("Authorization", "")
            if token is not None and not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                raise web.HTTPUnauthorized(text="expected Authorization: Bearer <BACKOUT_INGEST_TOKEN>",
                                           headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    async def records(self, request: web.Request) -> web.Response:
        parsed = records.to_records(await request.read())
        return self._publish(parsed, "http:/records") or self._answer(parsed)

    async def otlp(self, request: web.Request) -> web.Response:
        as_json = request.content_type == "application/json"
        try:
            message = otlp.decode(await request.read(), request.content_type)
        except ContractError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        parsed = otlp.to_records(message, self.config.otlp, self.cumulatives)
        full = self._publish(parsed, "http:/v1/metrics")
        if full is not None:
            return full
        body = otlp.response(len(parsed.refusals), "; ".join(map(str, parsed.refusals[:REFUSALS_SHOWN])), as_json)
        return web.Response(body=body, content_type="application/json" if as_json else "application/x-protobuf")

    async def remote_write(self, request: web.Request) -> web.Response:
        try:
            parsed = remote_write.to_records(await request.read(), self.config.remote_write)
        except ContractError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return self._publish(parsed, "http:/api/v1/write") or \
            (self._answer(parsed) if parsed.refusals else web.Response(status=204))

    async def github(self, request: web.Request) -> web.Response:
        body = await request.read()
        secret = self.settings.github_secret.get_secret_value() if self.settings.github_secret else ""
        if not github.signature_ok(secret, body, request.headers.get("X-Hub-Signature-256")):
            raise web.HTTPUnauthorized(text="X-Hub-Signature-256 is not the HMAC-SHA256 of the body with "
                                            "GITHUB_WEBHOOK_SECRET" if secret else "GITHUB_WEBHOOK_SECRET is not set")
        delivery = request.headers.get("X-GitHub-Delivery", "")
        if delivery and delivery in self.deliveries:
            self.publisher.counts.skipped.labels("http:/webhooks/github", "redelivery").inc()
            return web.json_response({"accepted": 0, "duplicate": delivery})
        parsed = github.to_records(request.headers.get("X-GitHub-Event", ""), body, self.config.github)
        answer = self._publish(parsed, "http:/webhooks/github", delivery or None)
        if answer is not None:
            return answer
        if delivery:
            self.deliveries[delivery] = None
            if len(self.deliveries) > DELIVERIES_REMEMBERED:
                self.deliveries.popitem(last=False)
        return self._answer(parsed)

    async def argocd(self, request: web.Request) -> web.Response:
        parsed = argocd.to_records(await request.read(), self.config.argocd)
        return self._publish(parsed, "http:/webhooks/argocd") or self._answer(parsed)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"buffered": self.publisher.buffered, "max_buffered": self.publisher.max_buffered})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.publisher.counts.registry), content_type="text/plain")

    def _publish(self, parsed: Parsed, source: str, request_id: str | None = None) -> web.Response | None:
        """``None`` once the publisher took the payload; else the 503 that makes the sender come back."""
        if self.publisher.offer(parsed, source, request_id=request_id):
            return None
        return web.Response(status=503, text="the publish buffer is full (is the broker up?); retry later",
                            headers={"Retry-After": str(RETRY_AFTER_S)})

    @staticmethod
    def _answer(parsed: Parsed) -> web.Response:
        summary: dict[str, object] = {"accepted": len(parsed.records)}
        if parsed.skipped:
            summary["skipped"] = dict(parsed.skipped)
        if not parsed.refusals:
            return web.json_response(summary)
        summary["refused"] = [{"where": r.where, "reason": r.reason} for r in parsed.refusals[:REFUSALS_SHOWN]]
        if len(parsed.refusals) > REFUSALS_SHOWN:
            summary["refused_not_shown"] = len(parsed.refusals) - REFUSALS_SHOWN
        return web.Response(status=400, text=json.dumps(summary, indent=1), content_type="application/json")
