"""Throughput of the HTTP receiver on one core: ``POST /records`` and ``POST /api/v1/write``.

Runs ``backout ingest http`` pinned to one core (``os.sched_setaffinity``) in
front of the embedded broker; client threads on the other core post
ready-made batches over keep-alive connections, backing off on 503 as a real
sender does. A figure is samples taken per second from the first request
until the receiver's buffer is empty again (everything on the broker).

    .venv/bin/python bench/feeds.py --json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

# run as a script, bench/ is first on the path and bench/detectors.py would shadow the package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backout.settings import KafkaSettings  # noqa: E402
from streams.admin import create_topics  # noqa: E402
from streams.broker import EmbeddedBroker, free_port, wait_for_port  # noqa: E402
from streams.feeds.remote_write import encode  # noqa: E402
from streams.topics import specs  # noqa: E402


def records_batch(batch: int, size: int) -> bytes:
    return "\n".join(json.dumps({"type": "metric", "ts": 1.7e9 + batch * size + i, "service": f"svc-{i % 50}",
                                 "metric": "error_rate", "value": 0.01, "count": 100})
                     for i in range(size)).encode()


def remote_write_batch(batch: int, series: int, samples: int) -> bytes:
    base_ms = int(1.7e12) + batch * samples * 1000
    return encode([({"__name__": "backout:error_rate", "service": f"svc-{s}"},
                    [(base_ms + k * 1000, 0.01) for k in range(samples)]) for s in range(series)])


def run(port: int, path: str, bodies: list[bytes], per_body: int, headers: dict[str, str],
        threads: int) -> dict[str, float]:
    """Post every body once from ``threads`` clients; samples/s until the buffer is empty."""
    lock, todo = threading.Lock(), list(range(len(bodies)))
    refused = [0]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if not todo:
                    break
                index = todo.pop()
            while True:
                conn.request("POST", path, bodies[index], headers)
                answer = conn.getresponse()
                answer.read()
                if answer.status != 503:
                    assert answer.status in (200, 204), (answer.status, path)
                    break
                with lock:
                    refused[0] += 1
                time.sleep(0.05)
        conn.close()

    start = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    posted = time.perf_counter() - start
    while _buffered(port):
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    samples = len(bodies) * per_body
    return {"samples": samples, "seconds": round(elapsed, 2), "samples_per_s": round(samples / elapsed),
            "accepted_per_s": round(samples / posted), "answered_503": refused[0]}


def _buffered(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/health")
    buffered = int(json.loads(conn.getresponse().read())["buffered"])
    conn.close()
    return buffered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--batches", type=int, default=200, help="bodies posted per path")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    receiver_core, client_cores = cores[0], set(cores[1:] or cores)
    with EmbeddedBroker() as broker:
        create_topics(KafkaSettings(bootstrap_servers=broker.bootstrap), specs(8))
        port = free_port()
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap}
        server = subprocess.Popen([sys.executable, "-m", "backout.cli", "ingest", "http", "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, stderr=subprocess.DEVNULL,
                                  preexec_fn=lambda: os.sched_setaffinity(0, {receiver_core}))
        os.sched_setaffinity(0, client_cores)
        try:
            assert wait_for_port("127.0.0.1", port, 30), "the receiver did not start"
            records = run(port, "/records", [records_batch(b, 1000) for b in range(args.batches)], 1000,
                          {"Content-Type": "application/x-ndjson"}, threads=2)
            remote = run(port, "/api/v1/write", [remote_write_batch(b, 100, 10) for b in range(args.batches)],
                         1000, {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                                "X-Prometheus-Remote-Write-Version": "0.1.0"}, threads=2)
        finally:
            server.terminate()
            server.wait(30)
    figures = {"receiver_cores": 1, "records_batch": 1000, "remote_write_batch": "100 series x 10 samples",
               "post_records": records, "remote_write": remote}
    if args.json:
        print(json.dumps(figures))
    else:
        for name in ("post_records", "remote_write"):
            f = figures[name]
            print(f"{name}: {f['samples_per_s']:,} samples/s to the broker ({f['accepted_per_s']:,}/s accepted), "
                  f"{f['samples']:,} samples in {f['seconds']} s")


if __name__ == "__main__":
    main()
