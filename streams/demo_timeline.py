"""The demo's live timeline: what Backout published, as it arrives, and the run's result.

A thread reads the topics Backout writes (anomalies, decisions, approvals, verifications,
dead letters) from their beginning and prints each record as one line, stamped with the
wall-clock time the demo read it and its offset from the deploy. The first record of each
step is kept as a milestone, and :func:`result` turns the milestones into the JSON the
demo ends with; every ``*_ts`` there is that read time (unix seconds), so the durations
are wall time as a user would measure them, delivery through the broker included.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape

from backout.settings import KafkaSettings
from streams import topics
from streams.kafka import consumer

WATCHED = (topics.ANOMALIES, topics.ACTIONS, topics.APPROVALS, topics.VERIFICATIONS, topics.DEADLETTER)
STYLE = {"deploy": "bold cyan", "traffic": "dim", "errors": "yellow", "anomaly": "yellow", "decision": "bold red",
         "approval": "bold magenta", "executing": "cyan", "executed": "bold cyan", "verified": "bold green",
         "not_recovered": "bold red", "failed": "bold red", "deadletter": "red"}


@dataclass(frozen=True)
class Milestone:
    seen_ts: float  # wall clock when the demo read it
    record: dict[str, Any]


class Timeline:
    """Prints the demo's steps as they happen and remembers the first of each kind."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.deploy_ts: float | None = None
        self.deadletters = 0
        self._first: dict[str, Milestone] = {}
        self._lock = threading.Lock()

    def show(self, kind: str, text: str, ts: float | None = None) -> None:
        ts = time.time() if ts is None else ts
        clock = datetime.fromtimestamp(ts).strftime("%H:%M:%S")
        offset = f"{ts - self.deploy_ts:+6.1f} s" if self.deploy_ts is not None else " " * 8
        self.console.print(f"[dim]{clock}[/dim] {offset}  [{STYLE.get(kind, '')}]{kind:<13}[/] {escape(text)}",
                           soft_wrap=True)

    def mark(self, kind: str, record: dict[str, Any], seen_ts: float | None = None) -> Milestone:
        """Remember the first ``kind``; return the first one (this or an earlier one)."""
        with self._lock:
            return self._first.setdefault(kind, Milestone(time.time() if seen_ts is None else seen_ts, record))

    def first(self, kind: str) -> Milestone | None:
        with self._lock:
            return self._first.get(kind)

    def add(self, value: bytes) -> None:
        """One record read from a watched topic."""
        seen = time.time()
        data = json.loads(value)
        kind = data.get("type")
        if kind == "anomaly":
            self.mark("anomaly", data, seen)
            onset = (f", onset {data['onset_ts'] - self.deploy_ts:+.0f} s from the deploy"
                     if self.deploy_ts is not None else "")
            self.show("anomaly", f"{data['service']} {data['metric']}: {_level(data['metric'], data['baseline'])} → "
                                 f"{_level(data['metric'], data['current'])} ({data['ratio']:.1f}x){onset}", seen)
        elif kind == "decision":
            self.mark("decision", data, seen)
            self.show("decision", f"{data['action'].upper()} {data['service']} ({data['incident_id']}): "
                                  f"{data['reason']}", seen)
        elif kind == "approval":
            self.mark("approval", data, seen)
            self.show("approval", f"{'approved' if data['approved'] else 'denied'} by {data['by']}", seen)
        elif kind == "verification":
            status = str(data["status"])
            self.mark(status, data, seen)
            self.show(status, str(data.get("detail") or status), seen)
        elif kind == "deadletter":
            self.deadletters += 1
            self.show("deadletter", str(data.get("reason", "")), seen)


def watch(kafka: KafkaSettings, timeline: Timeline, stop: threading.Event) -> None:
    """Feed ``timeline`` from the watched topics until ``stop`` is set."""
    cons = consumer(kafka, list(WATCHED))
    try:
        while not stop.is_set():
            msg = cons.poll(0.2)
            if msg is None or msg.error():
                continue
            value = msg.value()
            if value is not None:
                timeline.add(value)
    finally:
        cons.close()


def result(status: str, timeline: Timeline) -> dict[str, Any]:
    """The demo's JSON summary: the status, when each step was seen, and the two durations."""
    def seen(*kinds: str) -> float | None:
        for kind in kinds:
            milestone = timeline.first(kind)
            if milestone is not None:
                return round(milestone.seen_ts, 3)
        return None

    deploy_ts = timeline.deploy_ts
    rollback_ts, verified_ts = seen("executed"), seen("verified")
    decision = timeline.first("decision")
    return {"status": status, "deploy_ts": None if deploy_ts is None else round(deploy_ts, 3),
            "decision_ts": seen("decision"), "approval_ts": seen("approval"), "rollback_ts": rollback_ts, "verified_ts": verified_ts,
            "deploy_to_rollback_s": _after(deploy_ts, rollback_ts),
            "deploy_to_verified_s": _after(deploy_ts, verified_ts),
            "incident_id": decision.record.get("incident_id") if decision else None,
            "action": decision.record.get("action") if decision else None,
            "deadletters": timeline.deadletters}


def _after(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round(end - start, 1)


def _level(metric: str, value: float) -> str:
    if metric == "error_rate":
        return f"{value:.1%}"
    if metric.startswith("latency"):
        return f"{value * 1000:.0f} ms"
    return f"{value:.4g}"
