"""Topic names (the only place they are spelled) and their provisioning."""

from __future__ import annotations

from dataclasses import dataclass

METRICS = "backout.metrics"
DEPLOYS = "backout.deploys"
ANOMALIES = "backout.anomalies"
ACTIONS = "backout.actions"
APPROVALS = "backout.approvals"
VERIFICATIONS = "backout.verifications"
ALERTS = "backout.alerts"
DEADLETTER = "backout.deadletter"

ALL = (METRICS, DEPLOYS, ANOMALIES, ACTIONS, APPROVALS, VERIFICATIONS, ALERTS, DEADLETTER)

PARTITIONS = 8  # per public topic, by default
RETENTION_HOURS = 168.0  # how long the broker keeps records, by default

# Internal: anomalies, deploys and watermarks in one ordered stream for the decider.
DECIDER = "backout.internal.decider"

# The public topic of each record type (a JSON Lines file without a topic per line goes by these).
OF_TYPE = {"metric": METRICS, "deploy": DEPLOYS, "anomaly": ANOMALIES, "decision": ACTIONS,
           "approval": APPROVALS, "verification": VERIFICATIONS, "alert": ALERTS, "deadletter": DEADLETTER}


def key_of(record: dict[str, object]) -> bytes | None:
    """The partition key of a record: its service (per-service order for the worker), else its
    incident (per-incident order for the gate and the executor), else none."""
    for field in ("service", "incident_id"):
        value = record.get(field)
        if isinstance(value, str) and value:
            return value.encode()
    return None


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int  # ignored when compacted: the last record of each key is kept, whatever its age
    compacted: bool = False


def specs(partitions: int = PARTITIONS, retention_hours: float = RETENTION_HOURS) -> list[TopicSpec]:
    """Every public topic, plus the single-partition internal decider topic."""
    retention_ms = int(retention_hours * 3600 * 1000)
    public = [TopicSpec(name, partitions, retention_ms) for name in ALL]
    return public + [TopicSpec(DECIDER, 1, retention_ms)]
