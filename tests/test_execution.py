"""The executor service's decisions that need no broker: before acting, asking the target, the
registry of target kinds, and the web endpoint's checks (the integration tests run them for real)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from actions.execution import before_acting, carry_out
from actions.executors import Registry
from actions.executors.base import ExecutionFailed, Outcome, Rollback
from actions.web import authorised, by_of, page
from backout.contracts import Decision, Target, Verification
from backout.errors import ConfigError, ContractError


@dataclass
class FakeTarget:
    """An executor whose target runs ``running``; ``execute`` moves it to the rollback's version."""

    running: str | None
    fails: Exception | None = None
    calls: list[str] = field(default_factory=list)
    kind: ClassVar[str] = "fake"

    def current_version(self, target: Target) -> str | None:
        return self.running

    def plan(self, rollback: Rollback) -> list[str]:
        return [f"set {rollback.to_version}"]

    def execute(self, rollback: Rollback) -> Outcome:
        self.calls.append(rollback.to_version)
        if self.fails is not None:
            raise self.fails
        if self.running == rollback.to_version:
            return Outcome("skipped", "already there", rollback.to_version)
        self.running = rollback.to_version
        return Outcome("executed", f"now {rollback.to_version}", rollback.to_version)


ROLLBACK = Rollback.of(Decision(ts=1.0, incident_id="inc-1", service="checkout", action="rollback", from_version="v2",
                                to_version="v1", confidence=1.0, reason="r", target=Target(kind="fake")))


def v(status: str) -> Verification:
    return Verification(ts=1.0, incident_id="inc-1", status=status)  # type: ignore[arg-type]


@pytest.mark.parametrize("history,resume,step", [
    ([v("executing")], False, "act"),  # ours only: first attempt
    ([v("executing")], True, "ask"),  # resumed after a restart: ask the target
    ([v("executing"), v("executing")], False, "ask"),  # an earlier attempt's executing
    ([v("executing"), v("executed")], True, "done"),
    ([v("executing"), v("failed")], False, "done"),
    ([], True, "ask"),  # the executing never reached the broker, the table said executing
])
def test_before_acting(history: list[Verification], resume: bool, step: str) -> None:
    assert before_acting(history, resume)[0] == step


@pytest.mark.parametrize("running,step,status,outcome,ran,says", [
    ("v2", "act", "executed", "executed", ["v1"], "now v1"),
    ("v1", "act", "executed", "skipped", ["v1"], "already in place"),
    ("v1", "ask", "executed", "skipped", [], "nothing was run again"),
    ("v2", "ask", "executed", "executed", ["v1"], "now v1"),
    ("v3", "ask", "failed", "failed", [], "runs v3, neither v2 nor v1: a human must check"),
    (None, "ask", "failed", "failed", [], "cannot tell which version it runs"),
])
def test_carry_out_asks_the_target_after_an_interrupted_attempt(running: str | None, step: str, status: str,
                                                                  outcome: str, ran: list[str], says: str) -> None:
    target = FakeTarget(running)
    result = carry_out(ROLLBACK, target, step)  # type: ignore[arg-type]
    assert (result.verification.status, result.outcome, target.calls) == (status, outcome, ran)
    assert says in result.verification.detail and result.refusal is None


@pytest.mark.parametrize("error,outcome,refused", [
    (ContractError("namespace '../../etc' is not a valid namespace"), "refused", True),
    (ConfigError("BACKOUT_IMAGE_COMMAND is not set"), "failed", False),
    (ExecutionFailed("Deployment shop/checkout is paused"), "failed", False),
    (RuntimeError("bug"), "failed", False),
])
def test_carry_out_turns_every_error_into_a_failed_step(error: Exception, outcome: str, refused: bool) -> None:
    result = carry_out(ROLLBACK, FakeTarget("v2", fails=error), "act")  # type: ignore[arg-type]
    assert result.verification.status == "failed" and result.outcome == outcome
    assert (result.refusal is not None) == refused and str(error) in result.verification.detail


def test_registry_refuses_unknown_and_unconfigured_kinds() -> None:
    with pytest.raises(ConfigError, match="unknown target kind.*nomad"):
        Registry(["nomad"])
    registry = Registry(["webhook"])
    assert registry.kinds == ("webhook",)
    with pytest.raises(ConfigError, match="no executor for target kind 'kubernetes' is configured here"):
        registry.get("kubernetes")


@pytest.mark.parametrize("header,token,status", [
    ("Bearer s3cret", "s3cret", None),
    ("bearer s3cret", "s3cret", None),
    (None, None, 403), ("Bearer s3cret", None, 403), ("Bearer s3cret", "", 403),  # no token configured
    (None, "s3cret", 401), ("Bearer wrong", "s3cret", 401), ("Basic s3cret", "s3cret", 401), ("s3cret", "s3cret", 401),
])
def test_web_writes_need_the_configured_token(header: str | None, token: str | None, status: int | None) -> None:
    refused = authorised(header, token)
    assert (refused[0] if refused else None) == status
    if status == 403:
        assert refused is not None and "BACKOUT_API_TOKEN" in refused[1]


@pytest.mark.parametrize("body,by", [(b"", "web"), (b'{"by": " alice "}', "alice"), (b"{}", "web")])
def test_who_answers(body: bytes, by: str) -> None:
    assert by_of(body) == by


@pytest.mark.parametrize("body", [b'{"by": ""}', b'{"by": 3}', b'{"by": "a\\nb"}', b"[1]", b'{"by": "' + b"x" * 101 + b'"}'])
def test_a_bad_name_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match="field 'by'"):
        by_of(body)


def test_the_confirmation_page_escapes_the_incident() -> None:
    html = page("<script>alert(1)</script>", "deny")
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html and "Deny rollback" in html
