"""Kafka client settings, read once from the environment.

``KAFKA_BOOTSTRAP_SERVERS`` (default ``127.0.0.1:9092``), ``KAFKA_SECURITY_PROTOCOL``,
``KAFKA_SASL_MECHANISM``, ``KAFKA_SASL_USERNAME``, ``KAFKA_SASL_PASSWORD``,
``KAFKA_SSL_CAFILE`` and ``KAFKA_CLIENT_ID`` reach both confluent-kafka
(:meth:`KafkaSettings.confluent`) and Faust (:meth:`KafkaSettings.faust`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
