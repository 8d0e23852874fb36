"""The ``bluegreen`` target: send traffic back to the environment that runs the good version.

Two environments run side by side; a load balancer sends traffic to one of them. The
``nginx`` switch (the only one so far) owns one small file, the *include*, that holds the
``server`` lines of an upstream block the SRE wrote::

    upstream checkout { include /etc/nginx/backout/checkout.conf; keepalive 32; }

Target: ``{"kind": "bluegreen", "switch": "nginx", "include": "checkout.conf",
"environments": {...}, "versions": {...}}`` where ``environments`` maps a name to its
address (``host:port``) or list of addresses, and ``versions``, optional, maps a version to
an environment name. Without ``versions`` the environments are named by the version they
run: ``{"v2.15.0": "10.0.1.5:8080", "v2.15.1": "10.0.2.5:8080"}``. ``include`` is a file
name in ``BACKOUT_NGINX_INCLUDE_DIR`` (or an absolute path inside it): a message never
chooses which file is written.

A switch, under a lock on that directory: write the new include to a temporary file in the
same directory, fsync, ``os.replace`` (nginx never reads half a file); ``nginx -t``; then
reload (``nginx -s reload``, or SIGHUP to the master in ``BACKOUT_NGINX_PID_FILE`` and a
wait for its new workers, which proves the reload took). If the test or the reload fails,
the old include is put back the same way. :meth:`BlueGreenExecutor.current_version` reads
the include back and names the environment whose addresses it lists.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from actions.executors.base import ExecutionFailed, Outcome, Rollback
from backout import names
from backout.contracts import Target, validate
from backout.errors import ConfigError, ContractError

log = logging.getLogger(__name__)

INCLUDE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}")
MAX_INCLUDE_BYTES = 64 * 1024
_SHOWN_OUTPUT_CHARS = 500


class NginxSettings(BaseSettings):
    """Settings of the ``nginx`` blue/green switch, from ``BACKOUT_NGINX_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="BACKOUT_NGINX_", frozen=True, extra="ignore",
                                      use_attribute_docstrings=True)

    include_dir: Path = Path("/etc/nginx/backout")
    """``BACKOUT_NGINX_INCLUDE_DIR``: the only directory whose files Backout rewrites; a target's
    ``include`` must name a file directly in it (symbolic links leading out are refused)."""

    binary: str = "nginx"
    """``BACKOUT_NGINX_BINARY``: the nginx program, for ``nginx -t`` and ``nginx -s reload``."""

    conf: Path | None = None
    """``BACKOUT_NGINX_CONF``: the main configuration, passed as ``-c``; unset, nginx's compiled-in
    default (``/etc/nginx/nginx.conf`` on Debian)."""

    pid_file: Path | None = None
    """``BACKOUT_NGINX_PID_FILE``: the master's pid file. Set, a reload is a SIGHUP to that pid and
    the switch waits until the master has started new workers (the new configuration is live);
    unset, it runs ``nginx -s reload`` and trusts its exit code."""

    timeout_s: float = Field(default=30.0, gt=0)
    """``BACKOUT_NGINX_TIMEOUT_S``: how long ``nginx -t``, the reload, and the wait for new workers
    may each take before the switch is undone and the step fails."""


class BlueGreenTarget(BaseModel):
    """The fields of a ``bluegreen`` target, every name and address checked by :mod:`backout.names`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: Literal["bluegreen"]
    switch: Literal["nginx"] = "nginx"
    include: str = Field(min_length=1, max_length=4096)
    environments: dict[str, tuple[str, ...]] = Field(min_length=1, max_length=16)
    versions: dict[str, str] = Field(default_factory=dict, max_length=64)

    @field_validator("environments", mode="before")
    @classmethod
    def _addresses(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        out = {}
        for name, addresses in value.items():
            listed = [addresses] if isinstance(addresses, str) else addresses
            if not isinstance(listed, list) or not 1 <= len(listed) <= 64:
                raise ContractError(f"bluegreen target: environment {str(name)[:80]!r}: expected an "
                                    "address or a list of 1-64 addresses")
            try:
                out[names.check("version", name)] = tuple(names.check("address", a) for a in listed)
            except ContractError as exc:
                raise ContractError(f"bluegreen target: environments: {exc}") from None
        return out

    @model_validator(mode="after")
    def _versions_name_environments(self) -> BlueGreenTarget:
        for version, environment in self.versions.items():
            try:
                names.check("version", version)
            except ContractError as exc:
                raise ContractError(f"bluegreen target: versions: {exc}") from None
            if environment not in self.environments:
                raise ContractError(f"bluegreen target: versions maps {version!r} to {environment[:80]!r}, "
                                    f"which is not one of its environments ({', '.join(self.environments)})")
        if len(set(self.versions.values())) < len(self.versions):
            raise ContractError("bluegreen target: versions maps two versions to one environment; "
                                "an environment runs one version at a time")
        return self

    def environment_of(self, version: str) -> str | None:
        """The environment that runs ``version``."""
        if self.versions:
            return self.versions.get(version)
        return version if version in self.environments else None

    def version_in(self, environment: str) -> str | None:
        if not self.versions:
            return environment
        return next((v for v, e in self.versions.items() if e == environment), None)

    def environment_at(self, addresses: frozenset[str]) -> str | None:
        """The environment whose addresses are exactly ``addresses``."""
        return next((e for e, a in self.environments.items() if frozenset(a) == addresses), None)


class BlueGreenExecutor:
    """Switches an nginx upstream back to the environment that runs the good version."""

    kind: ClassVar[str] = "bluegreen"

    def __init__(self, settings: NginxSettings | None = None) -> None:
        self.settings = settings if settings is not None else NginxSettings()

    def current_version(self, target: Target) -> str | None:
        """The version of the environment the include lists; ``None`` if it lists none of them."""
        fields, path = self._target(target)
        listed = servers(_read(path))
        environment = fields.environment_at(listed) if listed is not None else None
        return fields.version_in(environment) if environment is not None else None

    def plan(self, rollback: Rollback) -> list[str]:
        _, path, environment, wanted = self._switch(rollback)
        listed = servers(_read(path))
        if listed == frozenset(wanted):
            return [f"nothing: {path} lists environment {environment} ({rollback.to_version}) already"]
        now = "nothing" if listed is None else " ".join(sorted(listed))
        return [f"write {path} (listing {now} now): " + " ".join(f"server {a};" for a in wanted)
                + f" (environment {environment}, {rollback.to_version})",
                f"test the configuration: {shlex.join(self._nginx('-t'))}; put the old include back if it fails",
                "reload: " + (f"SIGHUP to the nginx master in {self.settings.pid_file}, then wait up to "
                              f"{self.settings.timeout_s:g} s for its new workers"
                              if self.settings.pid_file else shlex.join(self._nginx("-s", "reload")))]

    def execute(self, rollback: Rollback) -> Outcome:
        _, path, environment, wanted = self._switch(rollback)
        where = f"environment {environment} ({rollback.to_version})"
        with _locked(path.parent):
            try:
                old = _read(path)
            except ExecutionFailed as exc:
                return Outcome("failed", str(exc))
            if servers(old) == frozenset(wanted):
                return Outcome("skipped", f"{path} lists {where} already", rollback.to_version)
            mode = path.stat().st_mode & 0o777 if old is not None else 0o644
            try:
                replace(path, include_text(environment, rollback.to_version, wanted), mode)
            except OSError as exc:
                return Outcome("failed", f"cannot write {path}: {exc}; it is unchanged")
            try:
                self._test()
                self._reload()
            except ExecutionFailed as exc:
                replace(path, old, mode)
                return Outcome("failed", f"{exc}; {path} is back as it was")
        return Outcome("executed", f"nginx sends {rollback.service} traffic to {where}: "
                                   + ", ".join(wanted), rollback.to_version)

    def _target(self, target: Target) -> tuple[BlueGreenTarget, Path]:
        fields = validate(BlueGreenTarget, target.model_dump(), "bluegreen target")
        return fields, self._include(fields.include)

    def _switch(self, rollback: Rollback) -> tuple[BlueGreenTarget, Path, str, tuple[str, ...]]:
        """The target, its include, and the environment to switch to; :class:`ContractError` if the
        target names no environment for the version to roll back to (nothing is written)."""
        fields, path = self._target(rollback.target)
        environment = fields.environment_of(names.check("version", rollback.to_version))
        if environment is None:
            raise ContractError(f"bluegreen target: no environment runs {rollback.to_version} "
                                f"(environments {', '.join(fields.environments)}"
                                + (f"; versions {', '.join(fields.versions)}" if fields.versions else "")
                                + ")")
        return fields, path, environment, fields.environments[environment]

    def _include(self, include: str) -> Path:
        """The include's path if it is a file directly in the allowed directory, links resolved."""
        allowed = self.settings.include_dir.resolve()
        if not allowed.is_dir():
            raise ConfigError(f"BACKOUT_NGINX_INCLUDE_DIR {self.settings.include_dir} is not a directory")
        given = Path(include)
        try:
            path = (given if given.is_absolute() else allowed / given).resolve()
        except (OSError, ValueError):  # a NUL byte, a loop of links
            path = Path("/")
        if path.parent != allowed or not INCLUDE_NAME.fullmatch(path.name) or ".." in include:
            shown = include if len(include) <= 80 else f"{include[:60]}… ({len(include)} chars)"
            raise ContractError(f"bluegreen target: include {shown!r} is not a file directly in "
                                f"BACKOUT_NGINX_INCLUDE_DIR ({allowed}); Backout writes nowhere else")
        return path

    def _nginx(self, *args: str) -> list[str]:
        conf = ["-c", str(self.settings.conf)] if self.settings.conf is not None else []
        return [self.settings.binary, *args, *conf]

    def _test(self) -> None:
        argv = self._nginx("-t")
        code, output = _run(argv, self.settings.timeout_s)
        if code != 0:
            raise ExecutionFailed(f"{shlex.join(argv)} refused the new include: {output}")

    def _reload(self) -> None:
        if self.settings.pid_file is None:
            argv = self._nginx("-s", "reload")
            code, output = _run(argv, self.settings.timeout_s)
            if code != 0:
                raise ExecutionFailed(f"{shlex.join(argv)} failed: {output}")
            return
        pid = _master_pid(self.settings.pid_file)
        if not _is_nginx_master(pid):  # a stale pid file may name another process by now
            raise ExecutionFailed(f"pid {pid} (from {self.settings.pid_file}) is not an nginx master; "
                                  "not signalled")
        before = workers(pid)
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            raise ExecutionFailed(f"cannot signal the nginx master (pid {pid}, from "
                                  f"{self.settings.pid_file}): {exc}") from None
        deadline = time.monotonic() + self.settings.timeout_s
        while time.monotonic() < deadline:
            if workers(pid) - before:
                return
            time.sleep(0.05)
        raise ExecutionFailed(f"the nginx master (pid {pid}) started no new worker within "
                              f"{self.settings.timeout_s:g} s of SIGHUP: it kept the old configuration "
                              "(its error log says why)")


def include_text(environment: str, version: str, addresses: tuple[str, ...]) -> bytes:
    """The include for ``environment``: a comment, then one ``server`` line per address.

    >>> print(include_text("blue", "v2.15.0", ("10.0.1.5:8080",)).decode(), end="")
    # Written by Backout: environment blue (v2.15.0). Rewritten on rollback.
    server 10.0.1.5:8080;
    """
    head = f"# Written by Backout: environment {environment} ({version}). Rewritten on rollback.\n"
    return (head + "".join(f"server {a};\n" for a in addresses)).encode()


def servers(text: bytes | None) -> frozenset[str] | None:
    """The addresses of the ``server`` lines of an include (``None`` if there is no include).

    >>> sorted(servers(b"# x\\nserver 10.0.1.5:8080 max_fails=3;  server 10.0.1.6:8080;\\n"))
    ['10.0.1.5:8080', '10.0.1.6:8080']
    """
    if text is None:
        return None
    found = set()
    for line in text.decode("utf-8", "replace").splitlines():
        for statement in line.partition("#")[0].split(";"):
            words = statement.split()
            if len(words) >= 2 and words[0] == "server":
                found.add(words[1])
    return frozenset(found)


def replace(path: Path, content: bytes | None, mode: int = 0o644) -> None:
    """Make ``path`` hold ``content`` (``None``: not exist) atomically: a temporary file in the same
    directory, fsync, ``os.replace``, fsync of the directory. A reader sees the old file or the new."""
    if content is None:
        path.unlink(missing_ok=True)
    else:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".backout-tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def workers(master: int) -> frozenset[int]:
    """The pids of ``master``'s children (nginx's workers), read from ``/proc``."""
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat.rpartition(")")[2].split()  # after "pid (comm)": state, ppid, ...
        if len(fields) > 1 and fields[1] == str(master):
            found.add(int(entry.name))
    return frozenset(found)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory``: one switch at a time per include directory on this host."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            text = f.read(MAX_INCLUDE_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(text) > MAX_INCLUDE_BYTES:
        raise ExecutionFailed(f"{path} is over {MAX_INCLUDE_BYTES} bytes: not an include Backout wrote")
    return text


def _master_pid(pid_file: Path) -> int:
    try:
        text = pid_file.read_text().strip()
    except OSError as exc:
        raise ExecutionFailed(f"cannot read the nginx pid file {pid_file}: {exc}") from None
    if not text.isdigit() or int(text) <= 1:
        raise ExecutionFailed(f"the nginx pid file {pid_file} holds {text[:40]!r}, not a pid")
    return int(text)


def _is_nginx_master(pid: int) -> bool:
    """Whether ``pid`` is an nginx master, which names itself ``nginx: master process …``."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"nginx: master process")
    except OSError:
        return False


def _run(argv: list[str], timeout_s: float) -> tuple[int, str]:
    """Exit code and the tail of the output of ``argv``, run without a shell."""
    log.info("running %s", shlex.join(argv))
    try:
        done = subprocess.run(argv, shell=False, timeout=timeout_s, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise ExecutionFailed(f"{shlex.join(argv)} did not finish within {timeout_s:g} s") from None
    except OSError as exc:
        raise ExecutionFailed(f"{shlex.join(argv)} could not start: {exc}") from None
    output = " ".join((done.stderr + done.stdout).split())
    return done.returncode, output[-_SHOWN_OUTPUT_CHARS:]
