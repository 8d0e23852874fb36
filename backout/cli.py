"""The ``backout`` command line.

Every subcommand the product has is listed here with its one-line help; no
command is defined here: each lives beside its feature and is imported only
when it runs, so ``backout --help`` stays fast. Backout's own errors print one red line and exit 1.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from backout.errors import BackoutError, NotBuiltYet

# name -> (module:attribute of the click command, or None if not built yet; one-line help)
COMMANDS: dict[str, tuple[str | None, str]] = {
    "broker": ("streams.broker:broker", "Run the embedded Kafka-protocol broker (tansu) in the foreground."),
    "topics": ("streams.admin:topics", "Provision Backout's topics on the broker, idempotently."),
    "worker": ("streams.worker:worker", "Run the stream processor: metrics and deploys in, anomalies and decisions out."),
    "executor": ("actions.service:executor", "Run the rollback executor: approval gate, targets, verification."),
    "backtest": ("streams.backtest:backtest", "Replay a JSON Lines file through the core and print its decisions."),
    "simulate": ("streams.simulate:simulate", "Write realistic labelled scenarios as JSON Lines."),
    "demo": ("streams.demo:demo", "Deploy a bad version behind a real nginx; watch it rolled back and verified."),
    "approve": ("actions.approvals:approve", "Approve a pending rollback of an incident."),
    "deny": ("actions.approvals:deny", "Deny a pending rollback of an incident."),
    "deploy-event": ("streams.ingest:deploy_event", "Publish one deployment event to the deploys topic."),
    "ingest": ("streams.feeds.cli:ingest", "Feed records in: a JSON Lines file, the HTTP receiver (OTLP, remote write, webhooks) or Prometheus."),
    "watch": ("streams.feeds.kubernetes:watch", "Watch a platform (kubernetes) and publish its rollouts as deploys."),
    "incident": ("streams.incidents:incident", "Replay the topics into incident timelines and reports."),
    "notify": ("actions.notify:notify", "Post every alert to Slack and/or a JSON webhook, with approve/deny links."),
    "mcp": ("backout.mcp_server:mcp", "Serve incidents, decisions and backtests to AI assistants (MCP)."),
    "web": ("backout.web:serve", "Serve the web page: open incidents, their evidence, approve/deny, recent steps."),
}


class LazyGroup(click.Group):
    """A group whose commands (its ``table``, like :data:`COMMANDS`) are imported on first use."""

    table = COMMANDS

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.table)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.table:
            return None
        target, help_text = self.table[cmd_name]
        if target is None:
            return _not_built(cmd_name, help_text)
        module_name, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        command.short_help = help_text
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List commands from the table, without importing them."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_text) for name, (_, help_text) in self.table.items()])

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


def main() -> None:
    cli(prog_name="backout")


if __name__ == "__main__":
    main()
