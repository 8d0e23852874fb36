"""docker-compose.yml can't run here (no Docker engine); check it is coherent instead."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from backout.cli import COMMANDS, cli

ROOT = Path(__file__).resolve().parent.parent


def _in_sandbox(svc: dict, args: list[str], root: Path) -> list[str]:
    """Point arguments that live on a mounted volume at an equivalent file under root."""
    mounts = [v.split(":")[1] for v in svc.get("volumes", [])]
    out = []
    for arg in args:
        for mount in mounts:
            if arg.startswith(mount + "/"):
                local = root / arg.lstrip("/")
                local.parent.mkdir(parents=True, exist_ok=True)
                local.touch()
                arg = str(local)
        out.append(arg)
    return out


def test_every_backout_service_runs_a_real_subcommand(tmp_path):
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
        args = _in_sandbox(svc, list(command[1:]), tmp_path)
        if isinstance(sub, click.Group):  # resolve the subcommand and parse its options for real
            name_, leaf, rest = sub.resolve_command(sub.make_context(command[0], args[:1]), args)
            assert leaf is not None, f"{name}: {args[0]} is not a '{command[0]}' subcommand"
            leaf.make_context(name_ or args[0], rest).close()
        else:
            sub.make_context(command[0], args).close()  # parses the options for real


def test_the_executor_service_is_configured_as_its_settings_read_it() -> None:
    from actions.settings import ExecutorSettings

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    svc = compose["services"]["executor"]
    env = {k: v for k, v in svc["environment"].items() if k.startswith("BACKOUT_") and "${" not in str(v)}
    settings = ExecutorSettings()
    for name in env:
        assert any(f"``{name}``" in (field.description or "") for field in ExecutorSettings.model_fields.values()) \
            or name.startswith(("BACKOUT_WEBHOOK_", "BACKOUT_KUBERNETES_")), f"{name} is not a setting"
    assert settings.web_host == "127.0.0.1", "loopback unless told otherwise"
    assert "--web-host" in svc["command"] and svc["ports"] == ["127.0.0.1:6067:6067"]
    assert set(env["BACKOUT_EXECUTOR_TARGETS"].split(",")) <= {"kubernetes", "argo-rollout", "bluegreen", "image",
                                                               "webhook"}
