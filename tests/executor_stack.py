"""What the executor's integration tests and benchmark share: an embedded broker with Backout's
topics, ``backout executor`` child processes, decisions and samples to publish, and readers.

The ``image`` target's "orchestrator" is :data:`ORCHESTRATOR`: it appends its argv to
``<dir>/<service>.argv``, writes the version to ``<dir>/<service>.version`` (what the inspect
command prints), then sleeps ``SLEEP_S`` (a rollout that takes time: a kill -9 lands in it).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actions.approvals import IncidentTopics, answer
from backout.contracts import Decision, Metric, Record, Target, decode
from backout.settings import KafkaSettings
from streams import topics
from streams.kafka import publish, read_to_end, sender
from streams.processes import ExecutorProcess
from tests.fakes import unchecked

PARTITIONS = 2
T_ONSET_AGO_S = 120.0
BASELINE, SHIFTED = 0.005, 0.05

ORCHESTRATOR = """\
import sys, time
from pathlib import Path
argv_file, version_file, version, sleep_s = sys.argv[1:5]
with open(argv_file, "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
Path(version_file).write_text(version)
time.sleep(float(sleep_s))
"""
INSPECT = "import sys, pathlib; print(pathlib.Path(sys.argv[1]).read_text())"


def image_env(root: Path, sleep_s: float = 0.0) -> dict[str, str]:
    """``BACKOUT_IMAGE_*`` for the recording orchestrator in ``root``."""
    script = root / "orchestrator.py"
    script.write_text(ORCHESTRATOR)
    command = [sys.executable, str(script), f"{root}/{{service}}.argv", f"{root}/{{service}}.version", "{version}",
               str(sleep_s)]
    inspect = [sys.executable, "-c", INSPECT, f"{root}/{{service}}.version"]
    return {"BACKOUT_IMAGE_COMMAND": json.dumps(command), "BACKOUT_IMAGE_INSPECT_COMMAND": json.dumps(inspect)}


def image_target(service: str) -> Target:
    return Target(kind="image", image="registry.example.com/shop/" + service.lower(), service=service)


def evidence(service: str, version: str, onset_ts: float) -> list[dict[str, Any]]:
    return [{"kind": "anomaly", "service": service, "metric": "error_rate", "detector": "binomial_cusum",
             "onset_ts": onset_ts, "detected_ts": onset_ts + 30, "baseline": BASELINE, "current": SHIFTED,
             "ratio": 10.0, "score": 3.0},
            {"kind": "deploy", "deploy_id": f"d-{version}", "version": version, "previous_version": "v1",
             "ts": onset_ts - 10}]


def decision(service: str, target: Target | None, action: str = "rollback", incident: str | None = None,
             frm: str = "v2", to: str = "v1", ts: float | None = None, **fields: Any) -> Decision:
    now = time.time() if ts is None else ts
    # unchecked: the tests also publish decisions the contract refuses, to see them dead-lettered
    return unchecked(Decision, ts=now, incident_id=incident or f"inc-{service}", service=service,
                     action=action, from_version=frm, to_version=to, confidence=0.99, target=target,
                     reason=f"Error rate increased 10x (0.5% → 5.0%) after deployment of {frm}; rolling back to {to}.",
                     evidence=evidence(service, frm, now - T_ONSET_AGO_S), **fields)


def send(kafka: KafkaSettings, topic: str, records: list[Record]) -> None:
    out = sender(kafka)
    publish(out, topic, records)
    out.flush(30)


def samples(service: str, start_ts: float, stop_ts: float, value: float, every_s: float = 10.0) -> list[Metric]:
    n = int((stop_ts - start_ts) // every_s)
    return [Metric(ts=start_ts + i * every_s, service=service, metric="error_rate", value=value, count=2000)
            for i in range(n)]


def records(kafka: KafkaSettings, topic: str) -> list[Any]:
    """Every valid record on ``topic`` now, with its key: [(key, record)]."""
    out = []
    for msg in read_to_end(kafka, topic, timeout_s=30):
        try:
            out.append(((msg.key() or b"").decode(), decode(msg.value() or b"")))
        except Exception:  # noqa: BLE001 - a test reads what is there
            out.append(((msg.key() or b"").decode(), msg.value()))
    return out


def statuses(kafka: KafkaSettings, incident: str) -> list[str]:
    return [r.status for _, r in records(kafka, topics.VERIFICATIONS) if r.incident_id == incident]


def wait_until(what: str, check: Callable[[], Any], timeout_s: float = 60.0, every_s: float = 0.3) -> Any:
    """``check()``'s first truthy value; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"{what}: not after {timeout_s:.0f} s (last: {last!r})")


def start_executor(bootstrap: str, root: Path, name: str = "executor", env: dict[str, str] | None = None,
                   args: tuple[str, ...] = (), app_id: str = "backout-executor") -> ExecutorProcess:
    proc = ExecutorProcess(bootstrap, root / name, app_id=app_id, partitions=PARTITIONS, store=None,
                           log=root / f"{name}.log",
                           env={"BACKOUT_TICK_S": "0.5", **(env or {})}, args=args).start()
    proc.wait_ready(90)
    return proc


def approve(kafka: KafkaSettings, incident: str, approved: bool, by: str = "alice") -> None:
    answer(kafka, IncidentTopics(), incident, approved, by)
