"""``backout demo`` end to end: real services, nginx, broker, worker and executor, as a user runs it.

Each run takes a couple of minutes (the monitors' warm-up is a minute of real traffic), so the
timed targets are measured by ``bench/demo.py``; here only the outcome and the order of the steps
are asserted. The demo starts its own embedded broker, as ``make demo`` does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.demo_load import Traffic

pytestmark = pytest.mark.integration

DEMO_TIMEOUT_S = 600  # a loaded 2-core machine; a run takes about 2.5 minutes


def run_demo(*args: str) -> tuple[int, dict, str]:
    done = subprocess.run([sys.executable, "-m", "backout.cli", "demo", "--json", *args], capture_output=True,
                          text=True, timeout=DEMO_TIMEOUT_S, check=False)
    lines = done.stdout.strip().splitlines()
    assert lines, f"no JSON on stdout; stderr:\n{done.stderr[-3000:]}"
    return done.returncode, json.loads(lines[-1]), done.stderr


def test_a_bad_deploy_is_rolled_back_and_the_recovery_verified() -> None:
    code, out, err = run_demo()
    assert (code, out["status"]) == (0, "verified"), err[-3000:]
    assert out["action"] == "rollback"
    assert out["deploy_ts"] < out["decision_ts"] <= out["rollback_ts"] < out["verified_ts"]
    assert 0 < out["deploy_to_rollback_s"] < out["deploy_to_verified_s"]
    assert out["deadletters"] == 0
    # the timeline names the steps, and the report of the incident followed
    for step in ("deploy", "first 500s from v2.15.1", "anomaly", "decision", "executed", "verified",
                 f"backout incident report {out['incident_id']}"):
        assert step in err


def test_in_approval_mode_the_rollback_waits_for_the_answer() -> None:
    code, out, err = run_demo("--mode", "approval", "--yes")
    assert (code, out["status"]) == (0, "verified"), err[-3000:]
    assert out["action"] == "request_approval"
    assert out["decision_ts"] <= out["approval_ts"] <= out["rollback_ts"] < out["verified_ts"]


def test_a_healthy_deploy_is_left_alone() -> None:
    code, out, err = run_demo("--good", "--observe-s", "45")
    assert (code, out["status"]) == (0, "no_action"), err[-3000:]
    assert out["decision_ts"] is None and out["rollback_ts"] is None
    assert out["deploy_ts"] is not None


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_demo_stops_everything_it_started(signum: int) -> None:
    demo = subprocess.Popen([sys.executable, "-m", "backout.cli", "demo", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    assert demo.stderr is not None
    started = []
    for line in demo.stderr:  # the stack is up once the warm-up starts
        if line.startswith("warm-up"):
            break
    started = descendants(demo.pid)
    assert len(started) >= 6, started  # broker, blue, green, nginx (master and worker), worker, executor
    demo.send_signal(signum)
    out, _ = demo.communicate(timeout=120)
    assert demo.returncode == 130
    assert json.loads(out.strip().splitlines()[-1])["status"] == "interrupted"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in started):
        time.sleep(0.2)
    assert not [p for p in started if Path(f"/proc/{p}").exists()]


def test_traffic_counts_what_users_saw_per_second() -> None:
    traffic = Traffic()
    for i in range(100):
        traffic.add(1000.0 + i / 100, ok=True, latency_s=0.010 + i / 10_000, version="v2.15.0")
    traffic.add(1001.2, ok=True, latency_s=0.050, version="v2.15.1")
    traffic.add(1001.5, ok=False, latency_s=0.070, version="v2.15.1")
    seen = traffic.between(1000, 1002)
    assert (seen.requests, seen.errors, seen.versions) == (102, 1, ("v2.15.0", "v2.15.1"))
    assert seen.p95_s == pytest.approx(0.0196)  # nearest rank: the 97th of 102 latencies
    assert traffic.first_error("v2.15.0", after_ts=0) is None
    first_ts, counts = traffic.first_error("v2.15.1", after_ts=1000.5)
    assert (first_ts, counts.requests, counts.error_versions["v2.15.1"]) == (1001.5, 2, 1)
    assert traffic.first_error("v2.15.1", after_ts=1001.6) is None
