"""The demo's load balancer: a real nginx in a temporary directory, and the deploy's switch.

nginx runs on its own configuration under ``root`` — pid file, logs, temp paths all inside
it — in the foreground (``daemon off``), so the demo owns the master and stops it. Its
upstream takes its ``server`` lines from an include file in ``include_dir``, the one directory
the ``bluegreen`` executor is allowed to write (``BACKOUT_NGINX_INCLUDE_DIR``):
:meth:`Nginx.executor_env` gives the executor exactly this nginx.

A deploy switches traffic the way the executor switches it back (the same include, written
atomically by :func:`actions.executors.bluegreen.replace`, then ``nginx -t`` and a reload
that is proven by the master's new workers), so the rollback undoes precisely what the
deploy did.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

from actions.executors.bluegreen import include_text, replace, workers
from backout.errors import DemoError
from streams.broker import free_port, wait_for_port

CONF = """\
daemon off;
{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    upstream {upstream} {{ include {include}; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://{upstream}; proxy_next_upstream off; }}
    }}
}}
"""


class Nginx:
    """A real nginx in ``root`` whose upstream ``upstream`` lists the servers of ``include``."""

    def __init__(self, root: Path, upstream: str = "checkout") -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise DemoError("nginx is not installed; `make system-deps` installs it (apt-get install nginx)")
        self.binary = binary
        self.root = root
        self.upstream = upstream
        self.include_dir = root / "include"
        self.include = self.include_dir / f"{upstream}.conf"
        self.conf = root / "nginx.conf"
        self.pid_file = root / "nginx.pid"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def start(self, environment: str, version: str, address: str, timeout_s: float = 30.0) -> Nginx:
        """Start nginx sending traffic to ``environment`` (running ``version`` at ``address``)."""
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        self.include_dir.mkdir(parents=True, exist_ok=True)
        self.include.write_bytes(include_text(environment, version, (address,)))
        user = "user root;" if os.geteuid() == 0 else ""  # workers must reach the temp dir
        self.conf.write_text(CONF.format(user=user, root=self.root, upstream=self.upstream,
                                         include=self.include, port=self.port))
        self._stderr = (self.root / "stderr.log").open("wb")
        self._process = subprocess.Popen([self.binary, "-c", str(self.conf), "-e", str(self.root / "error.log")],
                                         stdout=subprocess.DEVNULL, stderr=self._stderr, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise DemoError(f"nginx exited with code {self._process.returncode}: {self.log()}")
            if self.pid_file.exists() and self.pid_file.read_text().strip() and \
                    wait_for_port("127.0.0.1", self.port, 0.2):
                return self
            time.sleep(0.05)
        raise DemoError(f"nginx did not listen on 127.0.0.1:{self.port} within {timeout_s:.0f} s: {self.log()}")

    def switch(self, environment: str, version: str, address: str, timeout_s: float = 30.0) -> None:
        """Send traffic to ``environment``: rewrite the include, ``nginx -t``, reload, wait for it."""
        old = self.include.read_bytes()
        replace(self.include, include_text(environment, version, (address,)))
        tested = subprocess.run([self.binary, "-t", "-c", str(self.conf), "-e", str(self.root / "error.log")],
                                capture_output=True, text=True, timeout=timeout_s, check=False)
        if tested.returncode != 0:
            replace(self.include, old)
            raise DemoError(f"nginx -t refused the switch to {environment}: {tested.stderr.strip()}")
        master = self._master()
        before = workers(master)
        os.kill(master, signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while not workers(master) - before:
            if time.monotonic() > deadline:
                raise DemoError(f"nginx started no new worker within {timeout_s:.0f} s of the reload: {self.log()}")
            time.sleep(0.02)

    def executor_env(self) -> dict[str, str]:
        """The ``BACKOUT_NGINX_*`` settings that give the ``bluegreen`` executor this nginx."""
        return {"BACKOUT_NGINX_INCLUDE_DIR": str(self.include_dir), "BACKOUT_NGINX_BINARY": self.binary,
                "BACKOUT_NGINX_CONF": str(self.conf), "BACKOUT_NGINX_PID_FILE": str(self.pid_file)}

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()  # SIGTERM: fast shutdown
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._stderr is not None:
            self._stderr.close()

    def log(self) -> str:
        parts = [p.read_text(errors="replace")[-2000:] for p in (self.root / "stderr.log", self.root / "error.log")
                 if p.exists()]
        return " ".join(" ".join(parts).split())

    def _master(self) -> int:
        if self._process is None or self._process.poll() is not None:
            raise DemoError(f"nginx is not running: {self.log()}")
        return self._process.pid
