"""The nginx blue/green switch against a real nginx in front of two real HTTP backends."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from actions.executors.base import Rollback
from actions.executors.bluegreen import BlueGreenExecutor, NginxSettings
from backout.contracts import Decision, Target
from backout.errors import ConfigError, ContractError
from tests.fakes import unchecked
from tests.nginx import NGINX, Backend, Nginx


def rollback(target: dict, to_version: str = "v2.15.0", from_version: str = "v2.15.1") -> Rollback:
    return Rollback.of(unchecked(
        Decision, ts=1.7e9, incident_id="inc-1", service="checkout", action="rollback", from_version=from_version,
        to_version=to_version, confidence=1.0, reason="Error rate went from 0.5% to 5% (10x).",
        target=unchecked(Target, **target)))


@pytest.fixture
def backends() -> Iterator[tuple[Backend, Backend]]:
    with Backend("v2.15.0") as blue, Backend("v2.15.1") as green:
        yield blue, green


@pytest.fixture
def nginx(tmp_path, backends) -> Iterator[Nginx]:
    """nginx sending traffic to green (v2.15.1, the blamed deploy)."""
    with Nginx(tmp_path, [backends[1].address], include_name="checkout.conf") as server:
        server.wait_for("v2.15.1")
        yield server


def by_version(backends, include="checkout.conf") -> dict:
    blue, green = backends
    return {"kind": "bluegreen", "switch": "nginx", "include": include,
            "environments": {"v2.15.0": blue.address, "v2.15.1": green.address}}


def by_name(backends, include="checkout.conf") -> dict:
    blue, green = backends
    return {"kind": "bluegreen", "include": include, "environments": {"blue": [blue.address], "green": green.address},
            "versions": {"v2.15.0": "blue", "v2.15.1": "green"}}


def settings_for(nginx: Nginx, with_pid_file: bool, **kw) -> NginxSettings:
    return NginxSettings(include_dir=nginx.include_dir, binary=NGINX, conf=nginx.conf,
                         pid_file=nginx.pid_file if with_pid_file else None, **kw)


@pytest.mark.parametrize("style,with_pid_file", [(by_version, False), (by_name, True)],
                         ids=["versions as environments, nginx -s reload", "named environments, SIGHUP + new workers"])
def test_switch_sends_traffic_back_to_the_good_environment(nginx, backends, style, with_pid_file):
    executor = BlueGreenExecutor(settings_for(nginx, with_pid_file))
    target = style(backends)
    assert executor.current_version(Target(**target)) == "v2.15.1"

    before = nginx.include.read_bytes()
    steps = executor.plan(rollback(target))
    assert nginx.include.read_bytes() == before, "plan changes nothing"
    assert str(nginx.include) in steps[0] and backends[0].address in steps[0]
    assert "-t" in steps[1] and str(nginx.conf) in steps[1]
    nginx.wait_for("v2.15.1", in_a_row=3)

    outcome = executor.execute(rollback(target))
    assert (outcome.status, outcome.version) == ("executed", "v2.15.0"), outcome.detail
    nginx.wait_for("v2.15.0")
    assert executor.current_version(Target(**target)) == "v2.15.0"
    assert f"server {backends[0].address};" in nginx.include.read_text()
    assert sorted(p.name for p in nginx.include_dir.iterdir()) == ["checkout.conf"], "no temp file left"

    written = nginx.include.stat()
    again = executor.execute(rollback(target))
    assert again.status == "skipped", again.detail
    assert nginx.include.stat().st_mtime_ns == written.st_mtime_ns, "an idempotent switch writes nothing"


def test_include_refused_by_nginx_t_is_put_back(nginx, backends):
    executor = BlueGreenExecutor(settings_for(nginx, with_pid_file=True))
    target = by_version(backends)
    target["environments"]["v2.14.0"] = "no-such-host.invalid:8080"  # a valid name nginx cannot resolve
    before = nginx.include.read_bytes()

    outcome = executor.execute(rollback(target, to_version="v2.14.0"))
    assert outcome.status == "failed"
    assert "-t" in outcome.detail and "no-such-host.invalid" in outcome.detail, outcome.detail
    assert nginx.include.read_bytes() == before
    assert nginx.running
    nginx.wait_for("v2.15.1")
    assert sorted(p.name for p in nginx.include_dir.iterdir()) == ["checkout.conf"]


def test_reload_that_starts_no_worker_is_undone(nginx, backends, tmp_path):
    """The pid file names a process that calls itself an nginx master and ignores SIGHUP, as a
    master that kept its old configuration would (it starts no new worker)."""
    deaf = subprocess.Popen(["bash", "-c", 'exec -a "nginx: master process" "$0" -c "$1"', sys.executable,
                             "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
                             "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    try:
        assert deaf.stdout is not None and deaf.stdout.readline() == b"ready\n"
        (tmp_path / "deaf.pid").write_text(f"{deaf.pid}\n")
        settings = NginxSettings(include_dir=nginx.include_dir, binary=NGINX, conf=nginx.conf,
                                 pid_file=tmp_path / "deaf.pid", timeout_s=1.0)
        before = nginx.include.read_bytes()
        outcome = BlueGreenExecutor(settings).execute(rollback(by_version(backends)))
        assert outcome.status == "failed" and "no new worker" in outcome.detail, outcome.detail
        assert nginx.include.read_bytes() == before
        assert deaf.poll() is None
    finally:
        deaf.kill()
        deaf.wait()


# -- refusals: nothing is written and nothing runs (no nginx needed) ------------------------------


@pytest.fixture
def sandbox(tmp_path) -> tuple[BlueGreenExecutor, Path, Path]:
    """An executor whose 'nginx' records that it ran; an include dir with one include."""
    ran = tmp_path / "ran"
    recorder = tmp_path / "fake-nginx"
    recorder.write_text(f"#!/bin/sh\necho \"$@\" >> {ran}\n")
    recorder.chmod(0o755)
    include_dir = tmp_path / "backout"
    include_dir.mkdir()
    (include_dir / "checkout.conf").write_text("server 127.0.0.1:8082;\n")
    (tmp_path / "outside.conf").write_text("server 127.0.0.1:9;\n")
    (include_dir / "escape.conf").symlink_to(tmp_path / "outside.conf")
    return BlueGreenExecutor(NginxSettings(include_dir=include_dir, binary=str(recorder))), include_dir, ran


TARGET = {"kind": "bluegreen", "include": "checkout.conf",
          "environments": {"v2.15.0": "127.0.0.1:8081", "v2.15.1": "127.0.0.1:8082"}}
REFUSED = [
    ("include climbs out", {"include": "../../etc/passwd"}, "v2.15.0", "BACKOUT_NGINX_INCLUDE_DIR"),
    ("include elsewhere, absolute", {"include": "/etc/nginx/nginx.conf"}, "v2.15.0", "BACKOUT_NGINX_INCLUDE_DIR"),
    ("include in a subdirectory", {"include": "sub/checkout.conf"}, "v2.15.0", "BACKOUT_NGINX_INCLUDE_DIR"),
    ("include is a link leading out", {"include": "escape.conf"}, "v2.15.0", "BACKOUT_NGINX_INCLUDE_DIR"),
    ("include of 10 kB", {"include": "a" * 10_000}, "v2.15.0", "10000 chars"),
    ("address that would end the line", {"environments": {"v2.15.0": "127.0.0.1:8081; } server {"}}, "v2.15.0",
     "not a valid address"),
    ("address without a port", {"environments": {"v2.15.0": "127.0.0.1"}}, "v2.15.0", "not a valid address"),
    ("shell in an environment name", {"environments": {"x; rm -rf /": "127.0.0.1:8081"}}, "v2.15.0",
     "not a valid version"),
    ("version climbs out", {}, "../../etc", "not a valid version"),
    ("10 kB version", {}, "v" * 10_000, "10000 chars"),
    ("no environment runs the version", {}, "v2.14.0", "no environment runs v2.14.0"),
    ("versions name an unknown environment",
     {"environments": {"blue": "127.0.0.1:8081"}, "versions": {"v2.15.0": "green"}}, "v2.15.0",
     "not one of its environments"),
    ("another switch", {"switch": "haproxy"}, "v2.15.0", "field 'switch'"),
]


@pytest.mark.parametrize("case,change,to_version,message", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_before_anything_runs(sandbox, case, change, to_version, message):
    executor, include_dir, ran = sandbox
    before = {p.name: p.read_bytes() for p in include_dir.iterdir()}
    target = {**TARGET, **change}
    with pytest.raises(ContractError, match=message):
        executor.execute(rollback(target, to_version=to_version))
    with pytest.raises(ContractError, match=message):
        executor.plan(rollback(target, to_version=to_version))
    assert {p.name: p.read_bytes() for p in include_dir.iterdir()} == before
    assert not ran.exists(), "nginx was not run"


def test_a_stale_pid_file_is_not_signalled(nginx, backends, tmp_path):
    """The pid in the file belongs to some other process now: it is left alone, the switch undone."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "stale.pid").write_text(f"{other.pid}\n")
        settings = NginxSettings(include_dir=nginx.include_dir, binary=NGINX, conf=nginx.conf,
                                 pid_file=tmp_path / "stale.pid")
        before = nginx.include.read_bytes()
        outcome = BlueGreenExecutor(settings).execute(rollback(by_version(backends)))
        assert outcome.status == "failed" and "not an nginx master" in outcome.detail, outcome.detail
        assert nginx.include.read_bytes() == before
        assert other.poll() is None, "not signalled"
    finally:
        other.kill()
        other.wait()


def test_current_version_of_an_include_it_cannot_name(sandbox):
    executor, include_dir, _ = sandbox
    target = Target(**TARGET)
    assert executor.current_version(target) == "v2.15.1"
    (include_dir / "checkout.conf").write_text("server 10.9.9.9:80;\n")
    assert executor.current_version(target) is None
    os.unlink(include_dir / "checkout.conf")
    assert executor.current_version(target) is None


def test_a_new_include_is_created_then_removed_when_refused(sandbox):
    """No include yet (a first switch): if nginx -t fails, the switch leaves no include behind."""
    executor, include_dir, ran = sandbox
    failing = include_dir.parent / "failing-nginx"
    failing.write_text(f"#!/bin/sh\necho \"$@\" >> {ran}\necho 'emerg: test failed' >&2\nexit 1\n")
    failing.chmod(0o755)
    executor = BlueGreenExecutor(NginxSettings(include_dir=include_dir, binary=str(failing)))
    outcome = executor.execute(rollback({**TARGET, "include": "new.conf"}))
    assert outcome.status == "failed" and "emerg: test failed" in outcome.detail
    assert not (include_dir / "new.conf").exists()
    assert ran.read_text().split("\n")[0] == "-t"


def test_an_include_dir_that_does_not_exist_is_a_config_error(tmp_path):
    executor = BlueGreenExecutor(NginxSettings(include_dir=tmp_path / "missing", binary="/bin/false"))
    with pytest.raises(ConfigError, match="BACKOUT_NGINX_INCLUDE_DIR .*missing is not a directory"):
        executor.plan(rollback(TARGET))
