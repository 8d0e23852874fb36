"""Bridges that put records on the input topics: a JSON Lines file, or one deploy event."""

from __future__ import annotations

import json
import sys
import time
import uuid
from typing import IO, Any

import click

from backout.contracts import Deploy, dead_letter, decode, encode
from backout.errors import ContractError, UnexpectedRecord
from backout.settings import KafkaSettings
from detectors.engine import require_input
from streams import topics
from streams.feeds.targets import KINDS
from streams.feeds.targets import target as checked_target
from streams.kafka import publish, sender
from streams.replay import publish_inputs


@click.command()
@click.argument("source", type=click.File("r"), default="-")
def ingest(source: IO[str]) -> None:
    """Publish metric and deploy records from SOURCE (JSON Lines, '-' for stdin) to their topics.

    Metrics go to backout.metrics and deploys to backout.deploys, keyed by
    service and stamped with their event time (ts), so that an old file is
    replayed as it happened. A line that is not a valid metric or deploy
    record is reported on stderr with its line number and published to
    backout.deadletter.
    """
    out = sender(KafkaSettings())
    counts = {"metric": 0, "deploy": 0, "bad": 0}
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            record = require_input(decode(line))
        except (ContractError, UnexpectedRecord) as exc:
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
@click.option("--target", "target_kind", type=click.Choice(list(KINDS)),
              help="What a rollback acts on; each kind needs its fields below.")
@click.option("--namespace", help="kubernetes, argo-rollout: the namespace.")
@click.option("--name", help="kubernetes: the Deployment; argo-rollout: the Rollout; bluegreen: the switch; "
                             "image: the container.")
@click.option("--container", help="kubernetes, argo-rollout: the container whose image is the version.")
@click.option("--image", help="image: the repository, without a tag, e.g. registry.example.com/shop/checkout.")
@click.option("--url", help="webhook: where the decision is POSTed.")
@click.option("--target-opt", multiple=True, metavar="KEY=VALUE",
              help="Any other target field for the executor, repeatable.")
def deploy_event(service: str, version: str, previous_version: str | None, deploy_id: str | None,
                 status: str, ts: float | None, target_kind: str | None, namespace: str | None,
                 name: str | None, container: str | None, image: str | None, url: str | None,
                 target_opt: tuple[str, ...]) -> None:
    """Publish one deployment event to backout.deploys (for CD pipelines and scripts).

    \b
    e.g. --target kubernetes --namespace shop --name checkout [--container app]
         --target argo-rollout --namespace shop --name checkout
         --target bluegreen --name checkout
         --target image --image registry.example.com/shop/checkout [--name checkout]
         --target webhook --url https://deploy.example.com/rollback
    """
    target = None
    fields = {k: v for k, v in {"namespace": namespace, "name": name, "container": container, "image": image,
                                "url": url}.items() if v is not None}
    if target_kind:
        target = checked_target(target_kind, {**dict(_key_value(opt) for opt in target_opt), **fields})
    elif fields or target_opt:
        raise click.UsageError("target fields need --target KIND")
    record_fields: dict[str, Any] = {
        "type": "deploy", "ts": ts or time.time(), "service": service, "version": version,
        "deploy_id": deploy_id or f"d-{uuid.uuid4().hex[:12]}", "previous_version": previous_version,
        "status": status, "target": target.model_dump() if target is not None else None}
    record = decode(json.dumps(record_fields), expect=Deploy)  # the topic's own checks, as one red line
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
