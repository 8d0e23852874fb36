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
