"""``backout worker`` and ``backout executor`` child processes, for the demo, the benchmarks and the
fault tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from backout.errors import BrokerError
from streams.broker import free_port


class ChildProcess:
    """A Faust app of Backout (``command``) in a child process with its own web port and data dir;
    ``env`` adds environment variables (its settings)."""

    command = "worker"

    def __init__(self, bootstrap: str, data_dir: Path, app_id: str = "backout", partitions: int = 2,
                 store: str | None = "rocksdb://", config: str | None = None, log: Path | None = None,
                 env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.bootstrap = bootstrap
        self.data_dir = data_dir
        self.app_id = app_id
        self.partitions = partitions
        self.store = store
        self.config = config
        self.log = log
        self.env = dict(env or {})
        self.args = args
        self.web_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        args = [sys.executable, "-m", "backout.cli", self.command, "--app-id", self.app_id,
                "--partitions", str(self.partitions), *(["--store", self.store] if self.store else []),
                "--data-dir", str(self.data_dir), "--web-port", str(self.web_port),
                "--loglevel", os.environ.get("BACKOUT_LOGLEVEL", "warning"), *self.args]
        if self.config:
            args += ["--config", self.config]
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, **self.env}
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - lives with the child
        self._process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until /health answers 200: the worker owns its partitions and has their states."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise BrokerError(f"{self.command} exited with code {self._process.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise BrokerError(f"{self.command} not ready after {timeout_s:.0f} s; see {self.log}")

    def health(self) -> dict:
        """/health's answer, ready (200) or not (503)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/health", timeout=5) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:  # 503: starting or rebalancing; the body says which
            return dict(json.loads(exc.read()))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def kill(self) -> None:
        """kill -9: no shutdown, no final commit."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()

    def stop(self, timeout_s: float = 20.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None


class WorkerProcess(ChildProcess):
    """``backout worker`` in a child process."""

    command = "worker"


class ExecutorProcess(ChildProcess):
    """``backout executor`` in a child process (its target settings in ``env``)."""

    command = "executor"
