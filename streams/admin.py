"""Topic provisioning on whatever broker ``KAFKA_BOOTSTRAP_SERVERS`` names; ``backout topics`` (create here; dump and replay in streams/dump.py)."""

from __future__ import annotations

import click
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from backout.cli import LazyGroup
from backout.errors import BrokerError
from backout.settings import KafkaSettings
from streams.topics import PARTITIONS, RETENTION_HOURS, TopicSpec, specs


def existing_topics(admin: AdminClient, timeout_s: float = 10.0) -> dict[str, int]:
    """Topic name -> partition count, as the broker reports them."""
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach the broker: {exc.args[0].str()}; is KAFKA_BOOTSTRAP_SERVERS right?") from None
    return {name: len(meta.partitions) for name, meta in metadata.topics.items()}


def create_topics(settings: KafkaSettings, topics: list[TopicSpec], timeout_s: float = 15.0) -> dict[str, str]:
    """Create the topics that are missing, safe to run again; name -> "created" or "exists (N partitions)"."""
    admin = AdminClient(settings.confluent())
    present = existing_topics(admin, timeout_s)
    report = {t.name: f"exists ({present[t.name]} partitions)" for t in topics if t.name in present}
    wanted = [t for t in topics if t.name not in present]
    if not wanted:
        return report
    futures = admin.create_topics(
        [NewTopic(t.name, num_partitions=t.partitions, replication_factor=-1,
                  config={"cleanup.policy": "compact"} if t.compacted else {"retention.ms": str(t.retention_ms)})
         for t in wanted],
        operation_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            report[name] = "created"
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):  # else a concurrent provisioner won the race
                raise BrokerError(f"cannot create topic {name}: {exc}") from None
            report[name] = "exists"
    return report


# the subcommands of 'backout topics', imported when they run
TOPICS_COMMANDS: dict[str, tuple[str | None, str]] = {
    "create": ("streams.admin:topics_create", "Create every topic Backout uses; existing ones are left alone."),
    "dump": ("streams.dump:dump", "Write the topics to JSON Lines on stdout, in event-time order."),
    "replay": ("streams.dump:replay", "Publish a JSON Lines dump back to its topics."),
}


class TopicsGroup(LazyGroup):
    table = TOPICS_COMMANDS


@click.group(cls=TopicsGroup)
def topics() -> None:
    """Manage Backout's topics on the broker at KAFKA_BOOTSTRAP_SERVERS."""


@click.command("create")
@click.option("--partitions", default=PARTITIONS, show_default=True, type=click.IntRange(1, 1024),
              help="Partitions per public topic (the internal decider topic always has one).")
@click.option("--retention-hours", default=RETENTION_HOURS, show_default=True, type=click.FloatRange(min=0.01),
              help="How long the broker keeps records.")
def topics_create(partitions: int, retention_hours: float) -> None:
    """Create every topic Backout uses; existing topics are left alone."""
    report = create_topics(KafkaSettings(), specs(partitions, retention_hours))
    for name, state in report.items():
        click.echo(f"{name}\t{state}")
