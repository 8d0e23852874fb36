"""Time ``backout demo`` against its targets: deploy → rollback ≤ 60 s, deploy → verified ≤ 120 s.

    .venv/bin/python bench/demo.py                 # 3 bad, 3 approval (--yes), 3 good runs
    .venv/bin/python bench/demo.py --runs 5 --json

Each run is the real demo (``backout demo --json`` in a subprocess: its own embedded broker,
two service versions, nginx, worker and executor), so every figure is wall time on this
machine, including the demo's one-minute warm-up only in ``wall_s``. A bad run meets the
targets when it ends ``verified`` within them; a good run when it ends ``no_action``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import click

ROLLBACK_TARGET_S = 60.0
VERIFIED_TARGET_S = 120.0
KINDS = {"bad": (), "approval": ("--mode", "approval", "--yes"), "good": ("--good",)}


def run(args: tuple[str, ...]) -> dict:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "backout.cli", "demo", "--json", *args], capture_output=True,
                          text=True, timeout=900, check=False)
    lines = done.stdout.strip().splitlines()
    out = json.loads(lines[-1]) if lines else {"status": f"no output (exit {done.returncode})"}
    return {**out, "exit": done.returncode, "wall_s": round(time.monotonic() - started, 1)}


def meets(kind: str, out: dict) -> bool:
    if kind == "good":
        return bool(out["status"] == "no_action")
    return bool(out["status"] == "verified" and out["deploy_to_rollback_s"] <= ROLLBACK_TARGET_S
                and out["deploy_to_verified_s"] <= VERIFIED_TARGET_S)


@click.command()
@click.option("--runs", default=3, show_default=True, type=click.IntRange(1, 50), help="Runs of each kind.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(sorted(KINDS)),
              help="Which runs (repeatable; default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def main(runs: int, kinds: tuple[str, ...], as_json: bool) -> None:
    results = {kind: [run(KINDS[kind]) for _ in range(runs)] for kind in kinds or KINDS}
    figures = {kind: {"runs": [{k: r.get(k) for k in ("status", "deploy_to_rollback_s", "deploy_to_verified_s",
                                                       "wall_s")} for r in rs],
                      "met": sum(meets(kind, r) for r in rs)} for kind, rs in results.items()}
    if as_json:
        click.echo(json.dumps(figures))
    else:
        for kind, f in figures.items():
            for r in f["runs"]:
                click.echo(f"{kind:<8} {r['status']:<10} deploy→rollback {r['deploy_to_rollback_s']} s, "
                           f"deploy→verified {r['deploy_to_verified_s']} s, whole run {r['wall_s']} s")
            click.echo(f"{kind:<8} targets met in {f['met']}/{len(f['runs'])} runs")
    sys.exit(0 if all(f["met"] == len(f["runs"]) for f in figures.values()) else 1)


if __name__ == "__main__":
    main()
