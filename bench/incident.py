"""How long the post-incident tools take on a realistic day of topics.

    .venv/bin/python bench/incident.py --json        # the figures, as JSON on stdout
    .venv/bin/python bench/incident.py --hours 24    # a longer day

A ``backout simulate`` scenario (8 services, 10 s sampling, every event kind)
and the decisions, anomalies and alerts its backtest gives are published to
Backout's topics on an embedded broker; then, timed by wall clock:

* ``dump_s``: ``backout topics dump`` of every topic (records/s in ``dump_rps``);
* ``replay_s``: ``backout topics replay`` of that dump into fresh topics;
* ``report_all_s`` / ``report_one_s``: ``backout incident report`` from the topics,
  every incident / one incident, Markdown (the small topics, then only the samples
  the fold wants);
* ``report_file_s``: the same for every incident, from the dump file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import Producer  # noqa: E402

from backout.contracts import encode  # noqa: E402
from backout.settings import KafkaSettings, load_config  # noqa: E402
from streams import topics  # noqa: E402
from streams.admin import create_topics  # noqa: E402
from streams.backtest import replay  # noqa: E402
from streams.broker import EmbeddedBroker  # noqa: E402
from streams.simulate import scenario  # noqa: E402
from streams.topics import TopicSpec, specs  # noqa: E402


def backout(args: list[str], env: dict[str, str], stdout: int | None = subprocess.DEVNULL,
            stdin: int | None = None) -> tuple[float, bytes]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "backout.cli", *args], env=env, stdout=stdout, stdin=stdin,
                          stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        raise SystemExit(f"backout {' '.join(args)} failed: {done.stderr.decode()[-2000:]}")
    return time.perf_counter() - started, done.stdout or b""


@click.command()
@click.option("--hours", default=4.0, show_default=True, help="Length of the simulated scenario.")
@click.option("--seed", default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def main(hours: float, seed: int, as_json: bool) -> None:
    records, _ = scenario(seed, hours=hours)
    outputs = list(replay([encode(r) for r in records], load_config(None)))
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        create_topics(kafka, specs(2))
        prod = Producer(kafka.confluent(**{"linger.ms": 20}))
        for record in [*records, *outputs]:
            while True:
                try:
                    prod.produce(topics.OF_TYPE[record.type], encode(record), key=topics.key_of(record.model_dump()))
                    break
                except BufferError:
                    prod.poll(0.1)
        assert prod.flush(60) == 0
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap}
        dump_path = Path(tmp) / "dump.jsonl"
        with dump_path.open("wb") as out:
            dump_s, _ = backout(["topics", "dump"], env, stdout=out.fileno())
        lines = sum(1 for _ in dump_path.open("rb"))
        fresh = {name: f"{name}.replayed" for name in topics.ALL}
        create_topics(kafka, [TopicSpec(n, 2, 3_600_000) for n in fresh.values()])
        renames = [a for old, new in fresh.items() for a in ("--rename", f"{old}={new}")]
        replay_s, _ = backout(["topics", "replay", str(dump_path), *renames], env)
        report_all_s, md = backout(["incident", "report"], env, stdout=subprocess.PIPE)
        incidents = md.count(b"\n# Incident ") + md.startswith(b"# Incident ")
        first = next(o.incident_id for o in outputs if o.type == "decision")
        report_one_s, _ = backout(["incident", "report", first], env)
        report_file_s, _ = backout(["incident", "report", "--from", str(dump_path)], env)
    figures = {"hours": hours, "records": lines, "incidents": incidents, "dump_s": round(dump_s, 2),
               "dump_rps": round(lines / dump_s), "replay_s": round(replay_s, 2),
               "report_all_s": round(report_all_s, 2), "report_one_s": round(report_one_s, 2),
               "report_file_s": round(report_file_s, 2)}
    if as_json:
        click.echo(json.dumps(figures))
    else:
        for name, value in figures.items():
            click.echo(f"{name:>14}  {value}")


if __name__ == "__main__":
    main()
