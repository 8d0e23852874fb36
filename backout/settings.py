"""Settings read from outside: the environment and the YAML configuration file.

* :func:`load_config`: the core's :class:`~detectors.config.BackoutConfig` from a
  YAML file; errors name the file, line, field, value and expectation.
* :class:`WorkerSettings`: ``BACKOUT_*`` variables of ``backout worker``.
* :class:`KafkaSettings`: Kafka client settings, read once from the environment.
  ``KAFKA_BOOTSTRAP_SERVERS`` (default ``127.0.0.1:9092``), ``KAFKA_SECURITY_PROTOCOL``,
``KAFKA_SASL_MECHANISM``, ``KAFKA_SASL_USERNAME``, ``KAFKA_SASL_PASSWORD``,
``KAFKA_SSL_CAFILE`` and ``KAFKA_CLIENT_ID`` reach both confluent-kafka
  (:meth:`KafkaSettings.confluent`) and Faust (:meth:`KafkaSettings.faust`).

>>> load_config(None).mode_for("checkout", "error_rate")
'auto'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from backout.errors import ConfigError
from detectors.config import BackoutConfig
from streams.topics import PARTITIONS


class WorkerSettings(BaseSettings):
    """Worker settings from ``BACKOUT_*`` environment variables (CLI options override)."""

    model_config = SettingsConfigDict(env_prefix="BACKOUT_", frozen=True, extra="ignore")

    app_id: str = "backout"
    partitions: int = PARTITIONS
    store: str = "rocksdb://"
    data_dir: str = ".backout/worker"
    web_port: int = 6066
    config: str | None = None
    idle_after_s: float = 10.0  # a caught-up metrics partition this long without a sample is declared idle
    checkpoint_s: float = 5.0  # how often the metrics stage writes changed monitor states (and commits)
    state_ttl_s: float = 900.0  # a (service, metric) this long without a sample leaves memory (not the changelog)
    max_keys: int = 20_000  # monitors held in memory at most (4-10 kB each); samples of other streams are dead-lettered


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KAFKA_", frozen=True, extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    client_id: str = "backout"

    def confluent(self, **extra: Any) -> dict[str, Any]:
        """Configuration dict for confluent-kafka clients."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            conf["sasl.password"] = self.sasl_password.get_secret_value() if self.sasl_password else ""
        if self.ssl_cafile:
            conf["ssl.ca.location"] = self.ssl_cafile
        conf.update(extra)
        return conf

    def producer(self, **extra: Any) -> dict[str, Any]:
        """:meth:`confluent` for a producer: keys are hashed with murmur2, as the Java clients and
        Faust (aiokafka) do, so that every producer puts a service on the same partition of every
        topic keyed by service (librdkafka's own default, CRC32, would not). The executor reads
        the actions, approvals, deploys and verifications of a service from one partition number."""
        return self.confluent(**{"partitioner": "murmur2_random", **extra})

    def faust(self) -> dict[str, Any]:
        """Keyword arguments for ``faust.App`` carrying the same settings."""
        kwargs: dict[str, Any] = {
            "broker": ";".join(f"kafka://{h.strip()}" for h in self.bootstrap_servers.split(",")),
            "broker_client_id": self.client_id,
        }
        if self.security_protocol == "PLAINTEXT":
            return kwargs
        import ssl

        import faust

        context = ssl.create_default_context(cafile=self.ssl_cafile) if "SSL" in self.security_protocol else None
        if self.sasl_mechanism:
            password = self.sasl_password.get_secret_value() if self.sasl_password else ""
            if self.sasl_mechanism == "PLAIN":
                kwargs["broker_credentials"] = faust.SASLCredentials(
                    username=self.sasl_username, password=password, ssl_context=context)
            else:
                kwargs["broker_credentials"] = faust.SASLCredentials(
                    username=self.sasl_username, password=password, ssl_context=context,
                    mechanism=self.sasl_mechanism)
        elif context is not None:
            kwargs["broker_credentials"] = faust.SSLCredentials(context)
        return kwargs


def load_config(path: str | Path | None) -> BackoutConfig:
    """Load and validate a YAML configuration; ``None`` gives the defaults."""
    if path is None:
        return BackoutConfig()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(data).__name__}")
    try:
        return BackoutConfig.model_validate(data)
    except ValidationError as exc:
        lines = _lines(node)
        parts = []
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"] if not str(p).startswith("function-"))
            where = _nearest(lines, loc)
            field = ".".join(loc) or "<top level>"
            if err["type"] == "extra_forbidden":
                what = "unknown key (check the spelling; see examples/backout.yaml)"
            elif err["type"] == "missing":
                what = "missing, a value is required"
            else:
                what = f"got {err.get('input')!r}, expected {_lower(err['msg'])}"
            parts.append(f"{path}{f':{where}' if where else ''}: field '{field}': {what}")
        raise ConfigError("; ".join(parts)) from None


def _lower(msg: str) -> str:
    for prefix in ("Input should be ", "Value error, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg[:1].lower() + msg[1:]


def _lines(node: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """Line number (1-based) of every key path in a composed YAML document."""
    out: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = prefix + (str(key.value),)
            out[path] = key.start_mark.line + 1
            out.update(_lines(value, path))
    return out


def _nearest(lines: dict[tuple[str, ...], int], loc: tuple[str, ...]) -> int | None:
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None
