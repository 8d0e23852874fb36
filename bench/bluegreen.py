"""Time the nginx blue/green switch on a real nginx in front of two real local backends.

    .venv/bin/python bench/bluegreen.py --json          # the figures, as JSON on stdout
    .venv/bin/python bench/bluegreen.py --switches 40

The switch goes back and forth ``--switches`` times, each through
:meth:`BlueGreenExecutor.execute` (atomic write, ``nginx -t``, SIGHUP, the wait for new
workers). Per switch:

* ``execute_s``: from the call to its return (the step is ``executed``);
* ``traffic_s``: from the call until a request on a new connection lands on the new
  environment (nginx's old workers may still finish requests already in flight).

Needs Debian's nginx (``apt-get install nginx``) and a machine where it may run as root or
as the current user with the temporary directory it is given.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actions.executors.base import Rollback  # noqa: E402
from actions.executors.bluegreen import BlueGreenExecutor, NginxSettings  # noqa: E402
from backout.contracts import Decision, Target  # noqa: E402
from tests.nginx import NGINX, Backend, Nginx  # noqa: E402


def _rollback(target: dict, to_version: str) -> Rollback:
    return Rollback.of(Decision(ts=1.7e9, incident_id="inc-bench", service="checkout", action="rollback",
                                to_version=to_version, confidence=1.0, reason="bench", target=Target(**target)))


def _landed(nginx: Nginx, version: str, started: float, result: list[float]) -> None:
    while time.monotonic() - started < 30:
        if nginx.get() == version:
            result.append(time.monotonic() - started)
            return
        time.sleep(0.001)


@click.command()
@click.option("--switches", default=20, show_default=True, type=click.IntRange(2, 1000), help="Switches to time.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def main(switches: int, as_json: bool) -> None:
    execute_s: list[float] = []
    traffic_s: list[float] = []
    with tempfile.TemporaryDirectory() as root, Backend("v2.15.0") as blue, Backend("v2.15.1") as green, \
            Nginx(Path(root), [green.address], include_name="checkout.conf") as nginx:
        target = {"kind": "bluegreen", "include": "checkout.conf",
                  "environments": {"v2.15.0": blue.address, "v2.15.1": green.address}}
        executor = BlueGreenExecutor(NginxSettings(include_dir=nginx.include_dir, binary=NGINX, conf=nginx.conf,
                                                   pid_file=nginx.pid_file))
        nginx.wait_for("v2.15.1")
        for i in range(switches):
            version = "v2.15.0" if i % 2 == 0 else "v2.15.1"
            started = time.monotonic()
            landed: list[float] = []
            watcher = threading.Thread(target=_landed, args=(nginx, version, started, landed))
            watcher.start()
            outcome = executor.execute(_rollback(target, version))
            execute_s.append(time.monotonic() - started)
            watcher.join()
            if outcome.status != "executed" or not landed:
                raise SystemExit(f"switch {i} to {version}: {outcome.status} {outcome.detail}")
            traffic_s.append(landed[0])
            nginx.wait_for(version, in_a_row=5)
    figures = {"switches": switches, "execute_s": _summary(execute_s), "traffic_s": _summary(traffic_s)}
    if as_json:
        click.echo(json.dumps(figures))
        return
    for name, times in (("execute_s", execute_s), ("traffic_s", traffic_s)):
        f = _summary(times)
        click.echo(f"{name}: p50 {f['p50']:.3f} s, p95 {f['p95']:.3f} s, max {f['max']:.3f} s over {switches} switches")


def _summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"p50": round(statistics.median(ordered), 4), "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 4),
            "max": round(ordered[-1], 4)}

if __name__ == "__main__":
    main()
