"""``backout demo``: a bad deploy caught end to end, on a broker and worker it starts itself.

It streams a simulated scenario — a few services, one bad deploy, one good
deploy, a spike — through the real topics in accelerated event time, shows
the timeline live as the worker publishes anomalies and decisions, then stops
everything it started. Exit code 0 means the bad deploy was rolled back and
nothing else was.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from backout.contracts import Deploy, Metric, decode
from backout.settings import KafkaSettings
from streams import topics
from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.kafka import consumer, sender
from streams.processes import WorkerProcess
from streams.replay import replay_paced
from streams.simulate import demo_scenario as _simulated

WATCHED = (topics.ANOMALIES, topics.ACTIONS, topics.ALERTS, topics.DEADLETTER)
STYLE = {"deploy": "cyan", "anomaly": "yellow", "decision": "bold red", "alert": "magenta", "deadletter": "dim"}


def demo_scenario(seed: int = 7) -> list[Metric | Deploy]:
    """The demo's records in event-time order (see :func:`streams.simulate.demo_scenario`)."""
    return sorted(_simulated(seed), key=lambda r: r.ts)


class Timeline:
    """Collects what the worker publishes and prints each item as it arrives."""

    def __init__(self, console: Console, t0: float) -> None:
        self.console = console
        self.t0 = t0
        self.items: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def show(self, kind: str, ts: float, text: str) -> None:
        offset = ts - self.t0
        self.console.print(f"[dim]{offset / 60:+7.1f} min[/dim]  [{STYLE.get(kind, '')}]{kind:<10}[/] {text}")

    def add(self, topic: str, value: bytes) -> None:
        data = json.loads(value)
        with self._lock:
            self.items.append(data)
        kind = data.get("type", "?")
        if kind == "anomaly":
            text = (f"{data['service']} {data['metric']}: {data['baseline']:.4g} → {data['current']:.4g} "
                    f"({data['ratio']:.1f}x), onset {(data['onset_ts'] - self.t0) / 60:+.1f} min")
        elif kind == "decision":
            text = f"{data['action'].upper()} {data['service']} ({data['incident_id']}): {data['reason']}"
        elif kind == "alert":
            return  # the decision line already carries the sentence
        else:  # a dead letter: its envelope's ts is the broker's clock; show the record's own event time
            self.show(kind, _event_ts(data) or self.t0, str(data.get("reason", "")).split(";")[0])
            return
        self.show(kind, float(data.get("ts", self.t0)), text)

    def decisions(self) -> list[dict[str, Any]]:
        with self._lock:
            return [i for i in self.items if i.get("type") == "decision"]


def _event_ts(envelope: dict[str, Any]) -> float | None:
    try:
        return float(json.loads(envelope.get("value", ""))["ts"])
    except (ValueError, KeyError, TypeError):
        return None


def _watch(kafka: KafkaSettings, timeline: Timeline, stop: threading.Event) -> None:
    cons = consumer(kafka, list(WATCHED))
    try:
        while not stop.is_set():
            msg = cons.poll(0.2)
            if msg is None or msg.error():
                continue
            topic, value = msg.topic(), msg.value()
            if topic is not None and value is not None:
                timeline.add(topic, value)
    finally:
        cons.close()


@click.command()
@click.option("--speed", default=120.0, show_default=True, type=click.FloatRange(min=1),
              help="Event seconds streamed per wall second after the warm-up.")
@click.option("--seed", default=7, show_default=True, help="Seed of the simulated scenario.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON summary on stdout (timeline on stderr).")
@click.option("--timeout", "timeout_s", default=120.0, show_default=True,
              help="Give up waiting for the decision after this many wall seconds.")
def demo(speed: float, seed: int, as_json: bool, timeout_s: float) -> None:
    """Catch a bad deploy end to end: embedded broker, worker, simulated traffic, live timeline."""
    console = Console(stderr=as_json, highlight=False)
    records = demo_scenario(seed)
    deploys = [r for r in records if r.type == "deploy"]
    labels = {d.deploy_id: d.model_extra.get("label", "") for d in deploys if d.model_extra}
    first_deploy = min(d.ts for d in deploys)
    t0 = records[0].ts
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="backout-demo-") as tmp, EmbeddedBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        create_topics(kafka, topics_for_demo())
        console.print(f"[bold]Backout demo[/bold]: broker {broker.bootstrap}, "
                      f"{len({r.service for r in records})} services, {len(records)} records")
        worker = WorkerProcess(broker.bootstrap, Path(tmp) / "worker", partitions=2, store="memory://",
                               log=Path(tmp) / "worker.log").start()
        stop = threading.Event()
        timeline = Timeline(console, t0)
        watcher = threading.Thread(target=_watch, args=(kafka, timeline, stop), daemon=True)
        try:
            worker.wait_ready()
            watcher.start()
            console.print(f"warm-up: {(first_deploy - 600 - t0) / 60:.0f} min of normal traffic, fast-forwarded")
            shown: set[str] = set()

            def on_tick(ts: float) -> None:
                for d in deploys:
                    if d.deploy_id not in shown and d.ts <= ts:
                        shown.add(d.deploy_id)
                        timeline.show("deploy", d.ts, f"{d.service} {d.previous_version} → {d.version} "
                                                      f"({d.deploy_id}) {labels.get(d.deploy_id, '')}")

            replay_paced(sender(kafka), records, speed, from_ts=first_deploy - 600, on_tick=on_tick)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not any(
                    d["action"] == "rollback" for d in timeline.decisions()):
                time.sleep(0.2)
            time.sleep(2)  # anything else the worker still had to say
        finally:
            stop.set()
            worker.stop()
            watcher.join(timeout=5)
    summary = summarise(deploys, timeline.decisions(), time.monotonic() - started)
    console.print(f"[bold]{summary['verdict']}[/bold]")
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    sys.exit(0 if summary["ok"] else 1)


def topics_for_demo() -> list:
    from streams.topics import specs

    return specs(partitions=2, retention_hours=1)


def summarise(deploys: list[Deploy], decisions: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """What was decided, and how long after the bad deploy (event seconds)."""
    by_deploy: dict[str, Deploy] = {}
    for d in deploys:  # a slow rollout sends several records; the first is when it landed
        by_deploy.setdefault(d.deploy_id, d)
    bad = [d for d in by_deploy.values() if (d.model_extra or {}).get("label") == "bad"]
    rollbacks = [x for x in decisions if x["action"] == "rollback"]
    caught = [x for x in rollbacks if x.get("deploy_id") in {d.deploy_id for d in bad}]
    false = [x for x in rollbacks if x not in caught]
    ok = bool(bad) and len(caught) == len(bad) and not false
    after = [x["ts"] - by_deploy[x["deploy_id"]].ts for x in caught]
    verdict = (f"bad deploy rolled back {after[0]:.0f} s (event time) after it landed; no other rollback"
               if ok else f"demo FAILED: {len(caught)}/{len(bad)} bad deploys rolled back, {len(false)} false")
    return {"ok": ok, "verdict": verdict, "decisions": [decode(json.dumps(x)).model_dump() for x in decisions],
            "bad_deploys": [d.deploy_id for d in bad], "rolled_back_after_deploy_s": after,
            "false_rollbacks": len(false), "wall_s": round(wall_s, 1)}
