"""A real nginx for tests, and real HTTP backends to put behind it.

:class:`Nginx` runs Debian's nginx (``apt-get install nginx``) on its own configuration
in a temporary directory — pid file, logs and temp paths all inside it — listening on a
free 127.0.0.1 port, in the foreground (``daemon off``) so that the test owns the master
process. Its one upstream, ``app``, takes its ``server`` lines from an include file, the
file a blue/green switch rewrites. :class:`Backend` is an HTTP server on a thread that
answers every request with its version.

    with Backend("v1") as blue, Nginx(tmp_path, [blue.address]) as nginx:
        assert nginx.get() == "v1"
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

CONF = """\
daemon off;
{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    upstream app {{ include {include}; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://app; proxy_next_upstream off; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Backend:
    """An HTTP server on a thread, answering every GET with ``version``."""

    def __init__(self, version: str) -> None:
        self.version = version
        body = version.encode()

        class Answer(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"backend-{version}",
                                        daemon=True)

    def __enter__(self) -> Backend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class Nginx:
    """A real nginx in ``root``, its upstream ``app`` listing ``servers`` from ``include``."""

    def __init__(self, root: Path, servers: list[str], include_dir: Path | None = None,
                 include_name: str = "app.conf") -> None:
        self.root = root
        self.include_dir = include_dir or root / "backout"
        self.include = self.include_dir / include_name
        self.conf = root / "nginx.conf"
        self.pid_file = root / "nginx.pid"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._servers = servers
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> Nginx:
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        self.include_dir.mkdir(parents=True, exist_ok=True)
        self.include.write_text("".join(f"server {s};\n" for s in self._servers))
        user = "user root;" if os.geteuid() == 0 else ""  # workers must reach the temp dir under /tmp
        self.conf.write_text(CONF.format(user=user, root=self.root, include=self.include, port=self.port))
        self._stderr = (self.root / "stderr.log").open("wb")
        self._process = subprocess.Popen([NGINX, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                         stderr=self._stderr)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self._process.returncode}: {self.log()}")
            if self.pid_file.exists() and self.pid_file.read_text().strip() and self._accepts():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"nginx did not listen on 127.0.0.1:{self.port} within {timeout_s} s: {self.log()}")

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

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def get(self, timeout_s: float = 10.0) -> str:
        """The body nginx answers ``GET /`` with (a new connection each time)."""
        with urllib.request.urlopen(self.url, timeout=timeout_s) as response:
            return response.read().decode()

    def wait_for(self, version: str, timeout_s: float = 30.0, in_a_row: int = 10) -> None:
        """Wait until ``in_a_row`` requests in a row land on ``version`` (old workers finish first)."""
        deadline = time.monotonic() + timeout_s
        row, seen = 0, ""
        while time.monotonic() < deadline:
            seen = self.get()
            row = row + 1 if seen == version else 0
            if row >= in_a_row:
                return
            time.sleep(0.02)
        raise AssertionError(f"requests still land on {seen!r}, not {version!r}, after {timeout_s} s")

    def log(self) -> str:
        parts = [p.read_text(errors="replace")[-2000:] for p in (self.root / "stderr.log", self.root / "error.log")
                 if p.exists()]
        return "\n".join(parts)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False
