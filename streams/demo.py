"""``backout demo``: a bad deploy caught, rolled back and verified, on real parts started here.

Two real versions of a small HTTP service behind a real nginx, real users sending requests
through it, the service's exporter, the worker and the executor, on an embedded broker
(:mod:`streams.demo_stack`). After a warm-up long enough for the monitors to learn the
baseline, the demo deploys v2.15.1 by switching nginx to it and publishes the deploy event;
then it only watches (:mod:`streams.demo_timeline`): Backout notices, decides, switches nginx
back and verifies the recovery on its own. With ``--mode approval`` the worker asks instead,
and the demo puts the question to the terminal; ``--good`` deploys a healthy v2.15.2, which
must be left alone. Exit code 0: the run ended as it should (``verified``; ``no_action``
with ``--good``; ``denied`` when the answer was no).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

import click
import yaml
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape

from backout.errors import BackoutError
from backout.settings import load_config
from streams.demo_service import VERSIONS
from streams.demo_stack import GOOD_VERSION, SERVICE, DemoStack
from streams.demo_story import Story, play
from streams.demo_timeline import Timeline, result, watch

WARMUP_MARGIN_SAMPLES = 3  # samples past the monitors' warm-up, so that they test before the deploy
SUCCESS = {"verified", "no_action", "denied"}


@click.command()
@click.option("--mode", type=click.Choice(["auto", "approval"]), default="auto", show_default=True,
              help="The worker's policy mode: roll back on its own, or ask first (the demo asks you).")
@click.option("--yes", is_flag=True, help="With --mode approval: answer yes for you.")
@click.option("--good", is_flag=True, help="Deploy a healthy v2.15.2 instead: nothing must be rolled back.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON object on stdout (timeline on stderr).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Policy and detector YAML for the worker (default: built-in defaults).")
@click.option("--rate", "rate_per_s", default=80.0, show_default=True, type=click.FloatRange(1, 500),
              help="Requests a second the demo's users send through nginx.")
@click.option("--interval-s", default=2.0, show_default=True, type=click.FloatRange(0.5, 60),
              help="The exporter's interval: one sample of each metric this often.")
@click.option("--observe-s", default=60.0, show_default=True, type=click.FloatRange(1),
              help="With --good: how long to watch the healthy deploy before ending with no_action.")
@click.option("--plot", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Also draw the incident's metrics to this PNG (backout incident report --plot).")
@click.option("--timeout-s", default=240.0, show_default=True, type=click.FloatRange(1),
              help="Give up this long after the deploy (status timeout).")
def demo(mode: str, yes: bool, good: bool, as_json: bool, config_path: Path | None, rate_per_s: float,
         interval_s: float, observe_s: float, plot: Path | None, timeout_s: float) -> None:
    """Deploy a bad version behind a real nginx and watch Backout roll it back and verify it."""
    if mode == "approval" and not yes and not sys.stdin.isatty():
        raise click.UsageError("--mode approval asks in the terminal: run it in one, or add --yes")
    console = Console(stderr=as_json, highlight=False)
    signal.signal(signal.SIGTERM, _interrupt)  # a kill stops the stack as Ctrl-C does
    timeline = Timeline(console)
    tmp = Path(tempfile.mkdtemp(prefix="backout-demo-"))
    status = "error"
    try:
        status = _play(tmp, timeline, mode, config_path, good, yes, rate_per_s, interval_s, observe_s,
                       timeout_s, plot)
    except KeyboardInterrupt:
        status = "interrupted"
        console.print("[bold red]interrupted[/bold red]: everything the demo started is stopped")
    except BackoutError as exc:
        if as_json:
            sys.stdout.write(json.dumps({**result("error", timeline), "error": str(exc)}) + "\n")
        raise
    finally:
        if status in SUCCESS or status == "interrupted":
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            console.print(f"the logs of every part are kept in {tmp}")
    summary = result(status, timeline)
    console.print(_verdict(summary, good))
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    sys.exit(0 if status in SUCCESS else 130 if status == "interrupted" else 1)


def _play(tmp: Path, timeline: Timeline, mode: str, config_path: Path | None, good: bool, yes: bool,
          rate_per_s: float, interval_s: float, observe_s: float, timeout_s: float, plot: Path | None) -> str:
    """Start the stack in ``tmp``, play the story, print the report, stop the stack; the status."""
    console = timeline.console
    config = _config(tmp, config_path, mode)
    warmup_s = _warmup_s(config, interval_s)
    console.print("[bold]Backout demo[/bold]: starting the broker, two versions of checkout, nginx, "
                  "the worker and the executor …")
    with DemoStack(tmp, "v2.15.2" if good else "v2.15.1", rate_per_s, interval_s, config) as stack:
        _introduce(console, stack, warmup_s)
        stop = threading.Event()
        watcher = threading.Thread(target=watch, args=(stack.kafka, timeline, stop), daemon=True)
        watcher.start()
        try:
            status = play(stack, timeline, Story(good, yes, warmup_s, observe_s, timeout_s))
            _report(console, stack, timeline, plot)
        finally:
            stop.set()
            watcher.join(timeout=5)
        console.print("stopping everything the demo started …")
    return status


def _report(console: Console, stack: DemoStack, timeline: Timeline, plot: Path | None) -> None:
    """The incident's story as Backout tells it afterwards: ``backout incident report``."""
    decision = timeline.first("decision")
    if decision is None:
        return
    argv = [sys.executable, "-m", "backout.cli", "incident", "report", decision.record["incident_id"]]
    argv += ["--plot", str(plot)] if plot is not None else []
    console.rule(f"backout incident report {decision.record['incident_id']}")
    done = subprocess.run(argv, env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.broker.bootstrap},
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        console.print(f"[red]the incident report failed:[/red] {escape(done.stderr.strip())}")
        return
    console.print(Markdown(done.stdout))
    if done.stderr.strip():
        console.print(escape(done.stderr.strip()), style="dim")
    console.rule()


def _introduce(console: Console, stack: DemoStack, warmup_s: float) -> None:
    console.print(f"  broker  {stack.broker.bootstrap} (embedded, in memory)")
    for env in (stack.blue, stack.green):
        console.print(f"  {env.environment:<6}  {env.address}  {SERVICE} {env.version}: {VERSIONS[env.version].note}")
    console.print(f"  nginx   {stack.nginx.url} → blue ({GOOD_VERSION}); upstream include {stack.nginx.include}")
    console.print(f"  users   {stack.rate_per_s:.0f} requests/s through nginx; the exporter publishes requests, "
                  f"error_rate and latency_p95 every {stack.interval_s:g} s")
    console.print(f"warm-up: {warmup_s:.0f} s of traffic on blue, so that the monitors learn the baseline")


def _verdict(summary: dict, good: bool) -> str:
    status = summary["status"]
    if status == "verified":
        return (f"[bold green]verified[/bold green]: rolled back {summary['deploy_to_rollback_s']} s after the "
                f"deploy, recovery verified {summary['deploy_to_verified_s']} s after it")
    if status == "no_action":
        return "[bold green]no_action[/bold green]: the healthy deploy was left alone"
    if status == "denied":
        return "[bold]denied[/bold]: you said no, so nothing was rolled back"
    return f"[bold red]{status}[/bold red]: the demo did not end as it should" + (" (--good)" if good else "")


def _config(tmp: Path, given: Path | None, mode: str) -> Path | None:
    """The worker's configuration: the one given, with ``policy.mode: approval`` if asked."""
    if mode == "auto":
        return given
    data = yaml.safe_load(given.read_text()) if given is not None else {}
    data = data or {}
    data.setdefault("policy", {})["mode"] = mode
    path = tmp / "backout.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _warmup_s(config: Path | None, interval_s: float) -> float:
    """Long enough for every monitor of the exporter's metrics to have learnt its baseline."""
    specs = load_config(config).metrics
    samples = max(specs[m].warmup_samples for m in ("error_rate", "latency_p95"))
    return (samples + WARMUP_MARGIN_SAMPLES) * interval_s


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
