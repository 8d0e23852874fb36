"""The executor service's ``/metrics``: what it did, how long it took, what it refused."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# decision -> executed spans a rollout (seconds to minutes); -> verified adds the recovery test (minutes)
EXECUTED_BUCKETS_S = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200)
VERIFIED_BUCKETS_S = (10, 30, 60, 120, 180, 300, 450, 600, 900, 1800)


class ExecutorTelemetry:
    """Prometheus metrics of one executor replica; ``pending`` counts open questions when scraped."""

    def __init__(self, pending: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self._pending = pending
        self.records = Counter("backout_executor_records_consumed", "Records consumed", ["topic"],
                               registry=self.registry)
        self.executions = Counter("backout_executor_executions", "Rollbacks carried out, by target kind and "
                                  "outcome (executed, skipped: already in place, failed, refused: bad input, "
                                  "dry_run)", ["kind", "outcome"], registry=self.registry)
        self.verdicts = Counter("backout_executor_verdicts", "Recovery verdicts (verified, not_recovered)",
                                ["status"], registry=self.registry)
        self.ignored = Counter("backout_executor_ignored", "Records the gate took as no-ops (redeliveries, "
                               "late answers)", registry=self.registry)
        self.dead_letters = Counter("backout_executor_dead_letters", "Records sent to the dead letter topic, "
                                    "by the topic they came from", ["topic"], registry=self.registry)
        self.approvals_pending = Gauge("backout_executor_approvals_pending", "Questions waiting for an answer "
                                       "on the partitions this replica owns", registry=self.registry)
        self.to_executed = Histogram("backout_executor_decision_to_executed_seconds", "Wall seconds from a "
                                     "decision's timestamp to its rollback recorded executed",
                                     buckets=EXECUTED_BUCKETS_S, registry=self.registry)
        self.to_verified = Histogram("backout_executor_decision_to_verified_seconds", "Wall seconds from a "
                                     "decision's timestamp to its rollback verified or not_recovered",
                                     buckets=VERIFIED_BUCKETS_S, registry=self.registry)

    def exposition(self) -> tuple[bytes, str]:
        self.approvals_pending.set(self._pending())
        return generate_latest(self.registry), "text/plain; version=0.0.4"
