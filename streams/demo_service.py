"""The demo's service, ``checkout``, in the versions the demo deploys: a small real HTTP server.

Each version answers ``GET /`` with its version (body and ``X-Version`` header) after a
latency drawn from a log-normal around its median, and answers a fraction of requests with
500 instead. ``v2.15.0`` and ``v2.15.2`` are healthy (0.5% background errors, as real
services have); ``v2.15.1`` is the bad build: about 5% errors and 2.5 times slower. The demo
runs each environment as a child process on a free 127.0.0.1 port::

    python -m streams.demo_service v2.15.1 --port 40123
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click

from backout.errors import DemoError
from streams.broker import free_port, wait_for_port

LATENCY_SIGMA = 0.35  # log-normal spread: the p95 is about 1.8 times the median


@dataclass(frozen=True)
class Behaviour:
    """How one version of the service behaves."""

    error_rate: float  # fraction of requests answered with 500
    median_latency_s: float
    note: str


VERSIONS: dict[str, Behaviour] = {
    "v2.15.0": Behaviour(0.005, 0.012, "healthy"),
    "v2.15.1": Behaviour(0.05, 0.030, "fails 5% of requests with 500, 2.5x slower"),
    "v2.15.2": Behaviour(0.005, 0.012, "healthy"),
}


def serve(version: str, port: int, seed: int) -> None:
    """Answer requests as ``version`` on 127.0.0.1:``port`` until SIGTERM."""
    behaviour = VERSIONS[version]
    rng = random.Random(seed)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            with lock:
                fails = rng.random() < behaviour.error_rate
                latency_s = behaviour.median_latency_s * math.exp(rng.gauss(0.0, LATENCY_SIGMA))
            time.sleep(latency_s)
            body = f"checkout {version}\n".encode()
            self.send_response(500 if fails else 200)
            self.send_header("X-Version", version)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    server.server_close()


class ServiceProcess:
    """One environment: a version of the service in a child process on a free port."""

    def __init__(self, environment: str, version: str, seed: int, log: Path) -> None:
        if version not in VERSIONS:
            raise ValueError(f"unknown demo version {version!r}; expected one of {', '.join(VERSIONS)}")
        self.environment = environment
        self.version = version
        self.seed = seed
        self.log = log
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def note(self) -> str:
        return VERSIONS[self.version].note

    def start(self, timeout_s: float = 20.0) -> ServiceProcess:
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "streams.demo_service", self.version, "--port", str(self.port),
                 "--seed", str(self.seed)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if not wait_for_port("127.0.0.1", self.port, timeout_s):
            self.stop()
            raise DemoError(f"the {self.environment} service ({self.version}) did not listen on "
                              f"{self.address} within {timeout_s:.0f} s; see {self.log}")
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


@click.command()
@click.argument("version", type=click.Choice(sorted(VERSIONS)))
@click.option("--port", required=True, type=click.IntRange(1, 65535), help="Port on 127.0.0.1.")
@click.option("--seed", default=1, show_default=True, help="Seed of the errors and latencies.")
def main(version: str, port: int, seed: int) -> None:
    """Serve one version of the demo's checkout service."""
    serve(version, port, seed)


if __name__ == "__main__":
    main()
