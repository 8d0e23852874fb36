"""The image target: a configured command template, run without a shell, on checked values only.

The "orchestrator" is a small script that records its argv; ``update --image REF NAME`` makes
it run REF, ``inspect NAME`` prints what it runs. ``FAKE_EXIT`` / ``FAKE_SLEEP_S`` make
``update`` fail or hang.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from actions.executors.base import Rollback
from actions.executors.image import ImageExecutor, ImageSettings, tag_of
from backout.contracts import Decision, Target
from backout.errors import ConfigError, ContractError
from tests.fakes import unchecked

IMAGE = "registry.example.com:5000/shop/checkout"
SCRIPT = """\
#!{python}
import json, os, sys, time
from pathlib import Path
root = Path(__file__).parent
with open(root / "calls.jsonl", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1] == "inspect":
    print((root / "running").read_text())
elif sys.argv[1] == "update":
    time.sleep(float(os.environ.get("FAKE_SLEEP_S", "0")))
    if os.environ.get("FAKE_EXIT", "0") != "0":
        print("Error: service checkout not found", file=sys.stderr)
        sys.exit(int(os.environ["FAKE_EXIT"]))
    if not os.environ.get("FAKE_NO_EFFECT"):
        (root / "running").write_text(sys.argv[sys.argv.index("--image") + 1])
"""


@pytest.fixture
def orchestrator(tmp_path) -> Path:
    script = tmp_path / "orchestrator"
    script.write_text(SCRIPT.format(python=sys.executable))
    script.chmod(0o755)
    (tmp_path / "running").write_text(f"{IMAGE}:v2.15.1@sha256:{'b' * 64}")
    return script


def calls(orchestrator: Path) -> list[list[str]]:
    log = orchestrator.parent / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def executor(orchestrator: Path, inspect: bool = True, **kw) -> ImageExecutor:
    return ImageExecutor(ImageSettings(
        command=(str(orchestrator), "update", "--image", "{image}:{version}", "{service}"),
        inspect_command=(str(orchestrator), "inspect", "{service}") if inspect else (), **kw))


def rollback(target: dict | None = None, to_version: str = "v2.15.0", from_version: str = "v2.15.1") -> Rollback:
    return Rollback.of(unchecked(
        Decision, ts=1.7e9, incident_id="inc-1", service="checkout", action="rollback", from_version=from_version,
        to_version=to_version, confidence=1.0, reason="Error rate went from 0.5% to 5% (10x).",
        target=unchecked(Target, **(target or {"kind": "image", "image": IMAGE, "service": "checkout"}))))


def test_redeploys_the_good_tag_then_skips(orchestrator):
    ex = executor(orchestrator)
    assert ex.current_version(rollback().target) == "v2.15.1"
    assert calls(orchestrator) == [["inspect", "checkout"]]

    outcome = ex.execute(rollback())
    assert (outcome.status, outcome.version) == ("executed", "v2.15.0"), outcome.detail
    assert calls(orchestrator)[1:] == [["inspect", "checkout"],
                                       ["update", "--image", f"{IMAGE}:v2.15.0", "checkout"],
                                       ["inspect", "checkout"]]
    again = ex.execute(rollback())
    assert again.status == "skipped"
    assert calls(orchestrator)[-1] == ["inspect", "checkout"] and len(calls(orchestrator)) == 5


def test_plan_names_the_exact_command_and_runs_nothing(orchestrator):
    steps = executor(orchestrator).plan(rollback())
    assert any(f"{orchestrator} update --image {IMAGE}:v2.15.0 checkout" in s for s in steps)
    assert calls(orchestrator) == []


def test_optional_fields_fill_a_kubectl_like_template(orchestrator):
    ex = ImageExecutor(ImageSettings(command=(
        str(orchestrator), "set", "-n", "{namespace}", "deployment/{service}", "{container}={image}:{version}",
        "--from={from_version}")))
    target = {"kind": "image", "image": IMAGE, "service": "checkout", "namespace": "shop", "container": "app"}
    outcome = ex.execute(rollback(target))
    assert outcome.status == "executed" and ex.current_version(Target(**target)) is None  # no inspect command
    assert calls(orchestrator) == [["set", "-n", "shop", "deployment/checkout", f"app={IMAGE}:v2.15.0",
                                    "--from=v2.15.1"]]
    with pytest.raises(ContractError, match="no namespace"):
        ex.execute(rollback({"kind": "image", "image": IMAGE, "service": "checkout", "container": "app"}))
    assert len(calls(orchestrator)) == 1


HOSTILE = "x; rm -rf /"
BAD = [
    ("version with a shell command", {}, HOSTILE, "version 'x; rm -rf /' is not a valid version"),
    ("version climbing out", {}, "../../etc", "not a valid version"),
    ("version of 10 kB", {}, "v" * 10_000, r"10000 chars\)' is not a valid version"),
    ("version that is an option", {}, "--privileged", "not a valid version"),
    ("image with a shell command", {"image": HOSTILE}, "v2.15.0", "not a valid image"),
    ("image climbing out", {"image": "../../etc"}, "v2.15.0", "not a valid image"),
    ("image of 10 kB", {"image": "a" * 10_000}, "v2.15.0", r"10000 chars\)' is not a valid image"),
    ("service with a shell command", {"service": HOSTILE}, "v2.15.0", "not a valid service"),
    ("service that is an option", {"service": "-rf"}, "v2.15.0", "not a valid service"),
    ("namespace climbing out", {"namespace": "../../etc"}, "v2.15.0", "not a valid namespace"),
    ("image missing", {"image": None}, "v2.15.0", "field 'image'"),
    ("image not a string", {"image": ["a", "b"]}, "v2.15.0", "not a valid image"),
]


@pytest.mark.parametrize("case,change,to_version,message", BAD, ids=[c[0] for c in BAD])
def test_a_bad_name_is_refused_and_nothing_runs(orchestrator, case, change, to_version, message):
    target = {"kind": "image", "image": IMAGE, "service": "checkout", **change}
    target = {k: v for k, v in target.items() if v is not None}
    ex = executor(orchestrator)
    with pytest.raises(ContractError, match=message):
        ex.execute(rollback(target, to_version=to_version))
    with pytest.raises(ContractError, match=message):
        ex.plan(rollback(target, to_version=to_version))
    assert calls(orchestrator) == [], "nothing ran, not even the inspect command"


@pytest.mark.parametrize("command,message", [
    (("docker", "{image.__class__}"), "placeholder {image.__class__} is not one of"),
    (("docker", "{image[0]}"), "placeholder {image[0]} is not one of"),
    (("docker", "{image!r}"), "placeholder {image} is not one of"),
    (("docker", "{version:>200}"), "placeholder {version} is not one of"),
    (("docker", "{secret}"), "placeholder {secret} is not one of"),
    (("docker", "{image"), "expected '}'"),
    (("{image}", "update"), "must be spelled out"),
])
def test_a_bad_template_is_refused_at_start(command, message):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("[", r"\[")):
        ImageExecutor(ImageSettings(command=command))


def test_inspect_command_may_use_the_target_only():
    with pytest.raises(ConfigError, match="BACKOUT_IMAGE_INSPECT_COMMAND.*{version}"):
        ImageExecutor(ImageSettings(command=("docker", "x"), inspect_command=("docker", "{version}")))


def test_without_a_command_nothing_runs():
    with pytest.raises(ConfigError, match="BACKOUT_IMAGE_COMMAND is not set"):
        ImageExecutor(ImageSettings()).execute(rollback())


def test_failures_fail_the_step(orchestrator, monkeypatch):
    monkeypatch.setenv("FAKE_EXIT", "3")
    outcome = executor(orchestrator).execute(rollback())
    assert outcome.status == "failed" and "exited with 3" in outcome.detail
    assert "service checkout not found" in outcome.detail

    monkeypatch.setenv("FAKE_EXIT", "0")
    monkeypatch.setenv("FAKE_NO_EFFECT", "1")
    outcome = executor(orchestrator).execute(rollback())
    assert outcome.status == "failed" and "runs v2.15.1, not v2.15.0" in outcome.detail

    monkeypatch.setenv("FAKE_SLEEP_S", "30")
    outcome = executor(orchestrator, inspect=False, timeout_s=0.5).execute(rollback())
    assert outcome.status == "failed" and "did not finish within 0.5 s" in outcome.detail

    missing = ImageExecutor(ImageSettings(command=(str(orchestrator.parent / "nope"), "{image}:{version}")))
    outcome = missing.execute(rollback())
    assert outcome.status == "failed" and "could not start" in outcome.detail


def test_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("BACKOUT_IMAGE_COMMAND", '["docker", "service", "update", "--image", "{image}:{version}", '
                                                '"{service}"]')
    monkeypatch.setenv("BACKOUT_IMAGE_TIMEOUT_S", "120")
    settings = ImageSettings()
    assert settings.command[-1] == "{service}" and settings.timeout_s == 120
    assert "docker service update --image" in ImageExecutor(settings).plan(rollback())[0]


@pytest.mark.parametrize("printed,tag", [
    (f"{IMAGE}:v2.15.0\n", "v2.15.0"),
    (f"{IMAGE}:v2.15.0@sha256:{'a' * 64}", "v2.15.0"),
    ("checkout:1.2.3", "1.2.3"),
    ("v2.15.0", "v2.15.0"),
    (IMAGE, None),  # no tag: the colon is the registry's port
    ("", None),
    ("checkout:$(reboot)", None),
])
def test_tag_of(printed, tag):
    assert tag_of(printed) == tag
