"""The settings of ``backout executor``, from ``BACKOUT_*`` environment variables (options override).

Variables the worker reads too (``BACKOUT_PARTITIONS``, ``BACKOUT_CONFIG``) mean
the same thing for both and are meant to be shared. The executor's own consumer group, web port and
data directory have variables of their own (``BACKOUT_EXECUTOR_*``): a worker and an executor
started from one environment must not join one consumer group or bind one port.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from actions.executors import KINDS
from actions.gate import GateSettings
from streams.topics import PARTITIONS


class ExecutorSettings(BaseSettings):
    """``backout executor``'s settings (each field's docstring is its documentation)."""

    model_config = SettingsConfigDict(env_prefix="BACKOUT_", frozen=True, extra="ignore",
                                      use_attribute_docstrings=True, populate_by_name=True)

    app_id: str = Field(default="backout-executor", min_length=1, max_length=200,
                        validation_alias="BACKOUT_EXECUTOR_APP_ID")
    """``BACKOUT_EXECUTOR_APP_ID``: the consumer group, and the prefix of the gate table's changelog
    topic (``<app id>-gate-changelog``). Replicas with the same id share the partitions; a dry run
    adds ``-dry-run`` so it never takes partitions from the real executor."""

    partitions: int = Field(default=PARTITIONS, ge=1, le=1024)
    """``BACKOUT_PARTITIONS``: partitions of ``backout.actions``, ``.approvals``, ``.deploys`` and
    ``.verifications`` (they must all have this many: a service is on one partition number in each)."""

    data_dir: str = Field(default=".backout/executor", validation_alias="BACKOUT_EXECUTOR_DATA_DIR")
    """``BACKOUT_EXECUTOR_DATA_DIR``: Faust's data directory. The gate table itself is kept in memory
    and read back from its compacted changelog topic at start (a few hundred bytes per service)."""

    web_port: int = Field(default=6067, ge=1, le=65535, validation_alias="BACKOUT_EXECUTOR_WEB_PORT")
    """``BACKOUT_EXECUTOR_WEB_PORT``: the port of the approve/deny pages, ``/metrics`` and ``/health``."""

    web_host: str = Field(default="127.0.0.1", validation_alias="BACKOUT_EXECUTOR_WEB_HOST")
    """``BACKOUT_EXECUTOR_WEB_HOST``: the address the web port binds; ``0.0.0.0`` only behind a proxy
    that terminates TLS (the bearer token travels in a header)."""

    api_token: SecretStr | None = None
    """``BACKOUT_API_TOKEN``: the bearer token of ``POST /incidents/{id}/approve`` and ``/deny``.
    Unset (the default), those endpoints refuse every write with 403."""

    dry_run: bool = False
    """``BACKOUT_DRY_RUN``: log what each rollback would do (``executor.plan``) and touch no target;
    nothing is published on Backout's topics (see ``--dry-run``)."""

    targets: Annotated[tuple[str, ...], NoDecode] = Field(default=KINDS,
                                                          validation_alias="BACKOUT_EXECUTOR_TARGETS")
    """``BACKOUT_EXECUTOR_TARGETS``: the target kinds this executor acts on, comma-separated (default:
    all of kubernetes, argo-rollout, bluegreen, image, webhook); a decision for another kind fails with
    an alert. Each kind reads its own settings (``BACKOUT_KUBERNETES_*``, ``BACKOUT_NGINX_*``,
    ``BACKOUT_IMAGE_*``, ``BACKOUT_WEBHOOK_*``) at start-up."""

    config: str | None = None
    """``BACKOUT_CONFIG``: the YAML of the worker; the executor takes its metric specs (direction,
    kind) for the recovery test."""

    approval_timeout_s: float = Field(default=GateSettings().approval_timeout_s, gt=0)
    """``BACKOUT_APPROVAL_TIMEOUT_S``: an unanswered ``request_approval`` escalates after this (900 s);
    ``backout approve`` reads the same variable."""

    cooldown_s: float = Field(default=GateSettings().cooldown_s, ge=0)
    """``BACKOUT_COOLDOWN_S``: at most one automatic rollback of a service within this (3600 s); a
    rollback decision inside it becomes a question. 0: off."""

    verify_within_s: float = Field(default=GateSettings().verify_within_s, gt=0)
    """``BACKOUT_VERIFY_WITHIN_S``: the blamed metrics must be back at their baseline within this
    after the rollback (300 s), else ``not_recovered`` and a human is paged."""

    verify_lateness_s: float = Field(default=30.0, ge=0)
    """``BACKOUT_VERIFY_LATENESS_S``: when the metrics stop arriving, the verdict waits this long past
    the deadline for samples still on their way."""

    tick_s: float = Field(default=1.0, gt=0, le=60)
    """``BACKOUT_TICK_S``: how often the approval timeouts are checked."""

    @field_validator("targets", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

    @property
    def group(self) -> str:
        return f"{self.app_id}-dry-run" if self.dry_run else self.app_id

    def gate(self) -> GateSettings:
        return GateSettings(approval_timeout_s=self.approval_timeout_s, cooldown_s=self.cooldown_s,
                            verify_within_s=self.verify_within_s)
