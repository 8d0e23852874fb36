"""The ``backout`` command line.

Every subcommand the product has is listed here with its one-line help; the
command itself lives beside its feature and is imported only when it runs, so
``backout --help`` stays fast. Backout's own errors print one red line and exit 1.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from backout.errors import BackoutError, NotBuiltYet

# name -> (module:attribute of the click command, or None if not built yet; one-line help)
COMMANDS: dict[str, tuple[str | None, str]] = {
    "broker": ("backout.cli:broker", "Run the embedded Kafka-protocol broker (tansu) in the foreground."),
    "topics": ("backout.cli:topics", "Provision Backout's topics on the broker, idempotently."),
    "worker": ("streams.worker:worker", "Run the stream processor: metrics and deploys in, anomalies and decisions out."),
    "executor": (None, "Run the rollback executor: approval gate, targets, verification."),
    "backtest": ("streams.backtest:backtest", "Replay a JSON Lines file through the core and print its decisions."),
    "simulate": ("streams.simulate:simulate", "Write realistic labelled scenarios as JSON Lines."),
    "demo": ("streams.demo:demo", "Catch a bad deploy end to end on an embedded broker."),
    "approve": (None, "Approve a pending rollback of an incident."),
    "deny": (None, "Deny a pending rollback of an incident."),
    "deploy-event": ("streams.ingest:deploy_event", "Publish one deployment event to the deploys topic."),
    "ingest": ("streams.ingest:ingest", "Publish a JSON Lines file of metric and deploy records to their topics."),
    "incident": (None, "Replay the topics into the timeline of one incident."),
    "notify": ("actions.notify:notify", "Post every alert to Slack and/or a JSON webhook, with approve/deny links."),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        target, help_text = COMMANDS[cmd_name]
        if target is None:
            return _not_built(cmd_name, help_text)
        module_name, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        command.short_help = help_text
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List commands from the table, without importing them."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_text) for name, (_, help_text) in COMMANDS.items()])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BackoutError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(1)


def _not_built(name: str, help_text: str) -> click.Command:
    def run(**_: Any) -> None:
        raise NotBuiltYet(f"'backout {name}' is not built yet; see the open issues")

    return click.Command(name, callback=run, help=f"{help_text} (not built yet)",
                         short_help=help_text, context_settings={"ignore_unknown_options": True},
                         params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backout")
def cli() -> None:
    """Backout: catch a bad deploy from its metrics, roll it back, verify recovery.

    Every command that talks to Kafka connects to KAFKA_BOOTSTRAP_SERVERS
    (default 127.0.0.1:9092); KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and
    KAFKA_SSL_CAFILE configure authentication.
    """


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on and advertise.")
@click.option("--port", default=9092, show_default=True, type=click.IntRange(1, 65535), help="TCP port to listen on.")
def broker(host: str, port: int) -> None:
    """Run the embedded Kafka-protocol broker (tansu, in-memory storage) until interrupted."""
    import signal

    from streams.broker import EmbeddedBroker

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the child on SIGTERM too
    embedded = EmbeddedBroker(host, port, quiet=False).start()
    click.echo(f"broker listening on {embedded.bootstrap} (in-memory; Ctrl-C stops it)", err=True)
    try:
        code = embedded.wait()
    except (KeyboardInterrupt, SystemExit):
        code = 0
    finally:
        embedded.stop()
    sys.exit(code)


@click.group()
def topics() -> None:
    """Manage Backout's topics on the broker at KAFKA_BOOTSTRAP_SERVERS."""


@topics.command("create")
@click.option("--partitions", default=8, show_default=True, type=click.IntRange(1, 1024),
              help="Partitions per public topic (the internal decider topic always has one).")
@click.option("--retention-hours", default=168.0, show_default=True, type=click.FloatRange(min=0.01),
              help="How long the broker keeps records.")
def topics_create(partitions: int, retention_hours: float) -> None:
    """Create every topic Backout uses; existing topics are left alone."""
    from backout.settings import KafkaSettings
    from streams.admin import create_topics
    from streams.topics import specs

    report = create_topics(KafkaSettings(), specs(partitions, retention_hours))
    for name, state in report.items():
        click.echo(f"{name}\t{state}")


def main() -> None:
    cli(prog_name="backout")


if __name__ == "__main__":
    main()
