"""The ``webhook`` target: hand the rollback to a system that does it (a CD pipeline, a ChatOps bot).

Target: ``{"kind": "webhook", "url": "https://deploy.example.com/hooks/rollback"}``. The
executor POSTs the decision exactly as published (``backout.contracts.encode``), with

* ``X-Backout-Signature-256: sha256=<hex HMAC-SHA256 of the body with BACKOUT_WEBHOOK_SECRET>``,
  so the receiver can tell the body came from Backout unchanged (compare in constant time);
* ``X-Backout-Incident: <incident_id>``, so a receiver that gets a retried POST twice
  (an answer lost on the way back) can drop the second.

A 2xx answer is done; 5xx, 429 and connection errors are retried with backoff
(:mod:`actions.delivery`); any other answer fails the step. A webhook cannot say what
runs on the target, so :meth:`WebhookExecutor.current_version` is ``None``.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from actions.delivery import SIGNATURE_HEADER, Poster, RetryPolicy, check_url, origin, signature
from actions.executors.base import Outcome, Rollback
from backout.contracts import Target, encode, validate
from backout.errors import ConfigError, ContractError

INCIDENT_HEADER = "X-Backout-Incident"
_HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,256}")  # visible ASCII: nothing that could end a header


class WebhookSettings(BaseSettings):
    """Settings of the ``webhook`` target, from ``BACKOUT_WEBHOOK_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="BACKOUT_WEBHOOK_", frozen=True, extra="ignore",
                                      use_attribute_docstrings=True)

    secret: SecretStr | None = None
    """``BACKOUT_WEBHOOK_SECRET``: the key of the body's HMAC-SHA256 signature. Required: Backout
    sends no unsigned rollback."""

    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    """``BACKOUT_WEBHOOK_ALLOWED_HOSTS``: host names a target's URL may name, comma-separated,
    matched exactly and case-insensitively; empty (the default) allows any host."""

    attempts: int = Field(default=5, ge=1, le=20)
    """``BACKOUT_WEBHOOK_ATTEMPTS``: tries in all before the step fails (5xx, 429, no answer)."""

    backoff_s: float = Field(default=1.0, ge=0)
    """``BACKOUT_WEBHOOK_BACKOFF_S``: wait after the first failed try; doubled after each next one."""

    backoff_max_s: float = Field(default=30.0, ge=0)
    """``BACKOUT_WEBHOOK_BACKOFF_MAX_S``: the longest wait between tries (a ``Retry-After`` too)."""

    timeout_s: float = Field(default=10.0, gt=0)
    """``BACKOUT_WEBHOOK_TIMEOUT_S``: how long one try may take to connect, and then to answer."""

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(h.strip().lower() for h in value.split(",") if h.strip())
        return value

    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.attempts, self.backoff_s, self.backoff_max_s, self.timeout_s)


class WebhookTarget(BaseModel):
    """The fields of a ``webhook`` target."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: Literal["webhook"]
    url: str


class WebhookExecutor:
    """POSTs the signed decision to the target's URL."""

    kind: ClassVar[str] = "webhook"

    def __init__(self, settings: WebhookSettings | None = None) -> None:
        self.settings = settings if settings is not None else WebhookSettings()
        self._poster = Poster(self.settings.retry())

    def current_version(self, target: Target) -> str | None:
        """``None``: a webhook cannot tell what runs behind it."""
        self._url(target)
        return None

    def plan(self, rollback: Rollback) -> list[str]:
        url, _, _ = self._request(rollback)
        return [f"POST the decision of {rollback.incident_id} ({len(encode(rollback.decision))} bytes, "
                f"signed with BACKOUT_WEBHOOK_SECRET) to {url}, asking it to roll {rollback.service} back "
                f"to {rollback.to_version}; up to {self.settings.attempts} attempts, retrying 5xx, 429 "
                "and connection errors"]

    def execute(self, rollback: Rollback) -> Outcome:
        url, body, headers = self._request(rollback)
        delivery = self._poster.post(url, body, headers)
        tries = f"{delivery.attempts} attempt{'s' if delivery.attempts > 1 else ''}"
        if delivery.ok:
            return Outcome("executed", f"{origin(url)} accepted the rollback of {rollback.service} to "
                                       f"{rollback.to_version} ({delivery.detail}, {tries})",
                           version=rollback.to_version)
        return Outcome("failed", f"{origin(url)} did not accept the rollback of {rollback.service}: "
                                 f"{delivery.detail} after {tries}")

    def _request(self, rollback: Rollback) -> tuple[str, bytes, dict[str, str]]:
        """URL, body and headers, all checked: :class:`ContractError` or :class:`ConfigError` and nothing is sent."""
        url = self._url(rollback.target)
        if not _HEADER_SAFE.fullmatch(rollback.incident_id):
            raise ContractError(f"incident_id {rollback.incident_id[:80]!r} cannot go into the "
                                f"{INCIDENT_HEADER} header: expected 1-256 visible ASCII characters")
        if self.settings.secret is None or not self.settings.secret.get_secret_value():
            raise ConfigError("BACKOUT_WEBHOOK_SECRET is not set: Backout does not send a rollback "
                              "the receiver cannot authenticate")
        body = encode(rollback.decision)
        headers = {SIGNATURE_HEADER: signature(body, self.settings.secret.get_secret_value()),
                   INCIDENT_HEADER: rollback.incident_id}
        return url, body, headers

    def _url(self, target: Target) -> str:
        fields = validate(WebhookTarget, target.model_dump(), "webhook target")
        return check_url(fields.url, self.settings.allowed_hosts, what="webhook target url")
