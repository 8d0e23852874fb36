"""Bridges that put records on the input topics: a JSON Lines file, or one deploy event."""

from __future__ import annotations

import sys
import time
import uuid
from typing import IO

import click

from backout.contracts import Deploy, Target, dead_letter, decode, encode
from backout.errors import ContractError
from backout.settings import KafkaSettings
from streams import topics
from streams.kafka import publish, sender
from streams.replay import INPUT_TOPICS, publish_inputs


@click.command()
@click.argument("source", type=click.File("r"), default="-")
def ingest(source: IO[str]) -> None:
    """Publish metric and deploy records from SOURCE (JSON Lines, '-' for stdin) to their topics.

    Metrics go to backout.metrics and deploys to backout.deploys, keyed by
    service. A line that is not a valid metric or deploy record is reported on
    stderr with its line number and published to backout.deadletter.
    """
    out = sender(KafkaSettings())
    counts = {"metric": 0, "deploy": 0, "bad": 0}
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            record = decode(line)
            if record.type not in INPUT_TOPICS:
                raise ContractError(f"field 'type': got {record.type!r}, expected 'metric' or 'deploy'")
        except ContractError as exc:
            counts["bad"] += 1
            click.echo(f"line {number}: {exc}", err=True)
            out.send(topics.DEADLETTER, encode(dead_letter(line.encode(), str(exc), f"file:{source.name}", -1,
                                                           number, time.time())))
            continue
        publish_inputs(out, [record])
        counts[record.type] += 1
    out.flush(30)
    click.echo(f"published {counts['metric']} metrics, {counts['deploy']} deploys; "
               f"{counts['bad']} bad lines dead-lettered", err=True)


@click.command("deploy-event")
@click.option("--service", required=True, help="Service that was deployed.")
@click.option("--version", "version", required=True, help="Version now running.")
@click.option("--previous-version", help="Version it replaced (the rollback candidate).")
@click.option("--deploy-id", help="Stable id of this deployment (default: a new uuid).")
@click.option("--status", type=click.Choice(["started", "finished", "failed", "rolled_back"]),
              default="finished", show_default=True, help="Deployment status.")
@click.option("--ts", type=float, help="Event time in unix seconds (default: now).")
@click.option("--target", "target_kind", help="Target kind for rollbacks, e.g. kubernetes, bluegreen, webhook.")
@click.option("--target-opt", multiple=True, metavar="KEY=VALUE",
              help="Target detail, repeatable, e.g. --target-opt namespace=shop --target-opt name=checkout.")
def deploy_event(service: str, version: str, previous_version: str | None, deploy_id: str | None,
                 status: str, ts: float | None, target_kind: str | None, target_opt: tuple[str, ...]) -> None:
    """Publish one deployment event to backout.deploys (for CD pipelines and scripts)."""
    target = None
    if target_kind:
        options = dict(_key_value(opt) for opt in target_opt)
        target = Target(kind=target_kind, **options)
    record = Deploy(ts=ts or time.time(), service=service, deploy_id=deploy_id or f"d-{uuid.uuid4().hex[:12]}",
                    version=version, previous_version=previous_version, status=status,  # type: ignore[arg-type]
                    target=target)
    out = sender(KafkaSettings())
    publish(out, topics.DEPLOYS, [record])
    out.flush(30)
    sys.stdout.write(record.model_dump_json() + "\n")


def _key_value(option: str) -> tuple[str, str]:
    key, sep, value = option.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"expected KEY=VALUE, got {option!r}", param_hint="--target-opt")
    return key, value


__all__ = ["ingest", "deploy_event"]
