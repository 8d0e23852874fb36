"""docker-compose.yml can't run here (no Docker engine); check it is coherent instead."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from backout.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parent.parent


def test_every_backout_service_runs_a_real_subcommand():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    backout = {name: svc for name, svc in services.items() if svc.get("image") == "backout:latest"}
    assert {"worker", "executor", "metric-bridge", "topics"} <= set(backout)
    for name, svc in backout.items():
        command = svc["command"]
        assert command[0] in COMMANDS, f"{name}: {command[0]} is not a backout subcommand"
        assert svc["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        sub = cli.get_command(None, command[0])  # type: ignore[arg-type]
        assert sub is not None
        with sub.make_context(command[0], list(command[1:])) as ctx:  # parses the options for real
            if isinstance(sub, click.Group):
                assert ctx.protected_args + ctx.args and (ctx.protected_args + ctx.args)[0] in sub.commands
