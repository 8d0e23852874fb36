"""Time ``backout executor`` on the nginx path, through the embedded broker.

    .venv/bin/python bench/executor.py --json          # the figures, as JSON on stdout
    .venv/bin/python bench/executor.py --runs 8

One executor process, one real nginx in front of two real backends. Each run publishes a
``rollback`` decision (a new incident of a new service behind the same upstream, alternately to
the blue and the green backend) and the service's samples from the onset to now at the shifted level; then, once
``executed`` is read, samples back at the baseline stamped after the rollback. Per run, in
wall seconds, observed by a consumer of ``backout.verifications``:

* ``decision_to_executed_s``: from publishing the decision to reading ``executed`` (the agent,
  the gate, ``executing`` acknowledged, the check of the topic, the switch: write, ``nginx -t``,
  SIGHUP and the wait for new workers, ``executed`` published);
* ``executed_to_verified_s``: from reading ``executed`` to reading ``verified``, the recovered
  samples being published at once: the verifier's own cost (reading ``backout.metrics`` from
  the onset, the recovery test). In production the test needs k + 1 = 3 samples at the
  baseline after the rollback: add 3 sampling intervals (30 s at 10 s) of event time.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backout.contracts import Target, decode  # noqa: E402
from backout.settings import KafkaSettings  # noqa: E402
from streams import topics  # noqa: E402
from streams.admin import create_topics  # noqa: E402
from streams.broker import EmbeddedBroker  # noqa: E402
from streams.kafka import consumer  # noqa: E402
from streams.topics import specs  # noqa: E402
from tests.executor_stack import (  # noqa: E402
    BASELINE,
    PARTITIONS,
    SHIFTED,
    decision,
    samples,
    send,
    start_executor,
)
from tests.nginx import NGINX, Backend, Nginx  # noqa: E402


def _wait(cons: object, incident: str, status: str, timeout_s: float = 120.0) -> float:
    """Wall time at which ``status`` of ``incident`` is read."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = cons.poll(0.05)  # type: ignore[attr-defined]
        if msg is None or msg.error() is not None:
            continue
        record = decode(msg.value())
        if record.incident_id == incident and record.status == status:
            return time.time()
    raise RuntimeError(f"no {status} for {incident} within {timeout_s:.0f} s (see backout.alerts)")


def _summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


@click.command()
@click.option("--runs", default=6, show_default=True, type=click.IntRange(1, 100))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def main(runs: int, as_json: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker, Backend("v1") as blue, \
            Backend("v2") as green, Nginx(Path(tmp) / "nginx", [green.address], include_name="checkout.conf") as nginx:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        create_topics(kafka, specs(PARTITIONS))
        env = {"BACKOUT_NGINX_INCLUDE_DIR": str(nginx.include_dir), "BACKOUT_NGINX_BINARY": NGINX,
               "BACKOUT_NGINX_CONF": str(nginx.conf), "BACKOUT_NGINX_PID_FILE": str(nginx.pid_file),
               "BACKOUT_EXECUTOR_TARGETS": "bluegreen"}
        executor = start_executor(broker.bootstrap, Path(tmp), env=env)
        cons = consumer(kafka, [topics.VERIFICATIONS], from_beginning=False)
        executed_s, verified_s = [], []
        try:
            time.sleep(3)  # the consumer's assignment
            for run in range(runs):
                # a service per run, all behind the one upstream: each has its own gate and metrics
                service = f"checkout-{run}"
                frm, to = ("v2", "v1") if run % 2 == 0 else ("v1", "v2")
                target = Target(kind="bluegreen", switch="nginx", include="checkout.conf",
                                environments={"v1": blue.address, "v2": green.address})
                bad = decision(service, target, incident=f"inc-bench-{run}", frm=frm, to=to)
                onset = bad.evidence[0]["onset_ts"]
                send(kafka, topics.METRICS, samples(service, onset + 1, bad.ts - 1, SHIFTED))
                started = time.time()
                send(kafka, topics.ACTIONS, [bad])
                executed_at = _wait(cons, bad.incident_id, "executed")
                nginx.wait_for(to, in_a_row=3)
                send(kafka, topics.METRICS, samples(service, executed_at + 1, executed_at + 40, BASELINE))
                verified_at = _wait(cons, bad.incident_id, "verified")
                executed_s.append(executed_at - started)
                verified_s.append(verified_at - executed_at)
        finally:
            cons.close()
            executor.stop()
    figures = {"runs": runs, "decision_to_executed_s": _summary(executed_s),
               "executed_to_verified_s": _summary(verified_s)}
    if as_json:
        print(json.dumps(figures))
    else:
        for name in ("decision_to_executed_s", "executed_to_verified_s"):
            f = figures[name]
            print(f"{name}: min {f['min']} s, median {f['median']} s, max {f['max']} s over {runs} runs")


if __name__ == "__main__":
    main()
