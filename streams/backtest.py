"""``backout backtest``: replay a JSON Lines file through the core, print the decisions.

The records go, in file order, through :class:`detectors.engine.Engine` — the
same monitor, watermark and decider code the live worker runs — so a file
replayed here gives the decisions the stream gave. Stdout carries exactly one
JSON decision per line; everything else (bad lines, the summary) goes to
stderr. Bad lines never stop the replay: each is reported with its line
number and counted.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import IO

import click

from backout.contracts import Decision, decode, encode
from backout.errors import ContractError, SampleRejected
from backout.settings import load_config
from detectors.config import BackoutConfig
from detectors.engine import Engine, Output


def replay(lines: Iterable[str | bytes], config: BackoutConfig,
           on_bad: Callable[[int, str], None] | None = None) -> Iterator[Output]:
    """Feed each line to a fresh engine; yield its outputs. ``on_bad(line_no, reason)`` for bad lines."""
    engine = Engine(config)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield from engine.feed(decode(line))
        except (ContractError, SampleRejected) as exc:
            if on_bad is not None:
                on_bad(number, str(exc))
    yield from engine.finish()


@click.command()
@click.argument("file", type=click.File("rb"), metavar="FILE.jsonl")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Policy and detector YAML (default: built-in defaults); see examples/backout.yaml.")
@click.option("--alerts", is_flag=True,
              help="Also print the alerts (human sentences) on stderr as they are raised.")
def backtest(file: IO[bytes], config_path: str | None, alerts: bool) -> None:
    """Replay FILE.jsonl (metric and deploy records; '-' reads stdin) and print one decision per line.

    Stdout is JSON Lines of decisions only. Bad lines are reported on stderr as
    'line N: reason' and counted; a one-line summary ends stderr.
    """
    config = load_config(config_path)
    started = time.perf_counter()
    bad = Counter[str]()
    kinds = Counter[str]()
    out = sys.stdout.buffer if hasattr(sys.stdout, "buffer") else None

    def on_bad(number: int, reason: str) -> None:
        bad[reason.split(":")[0]] += 1
        click.echo(f"line {number}: {reason}", err=True)

    for item in replay(file, config, on_bad):
        kinds[item.type] += 1
        if isinstance(item, Decision):
            if out is not None:
                out.write(encode(item) + b"\n")
            else:
                click.echo(encode(item).decode())
        elif alerts and item.type == "alert":
            click.echo(f"alert [{item.severity}] {item.text}", err=True)
    if out is not None:
        out.flush()
    elapsed = time.perf_counter() - started
    click.echo(f"backtest: {kinds['decision']} decisions, {kinds['anomaly']} anomalies, "
               f"{kinds['alert']} alerts, {sum(bad.values())} bad lines in {elapsed:.2f} s", err=True)
