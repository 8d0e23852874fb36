"""The webhook target against a local receiver that checks the signature with the shared secret."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time

import pytest

from actions.executors.base import Outcome, Rollback
from actions.executors.webhook import WebhookExecutor, WebhookSettings
from backout.contracts import Decision, Target, decode, encode
from backout.errors import ConfigError, ContractError
from tests.fakes import unchecked
from tests.receiver import Receiver

SECRET = "correct horse battery staple"


def rollback(url: str, incident_id: str = "inc-5f0c2d6a9b1e4c3d") -> Rollback:
    return Rollback.of(unchecked(
        Decision, ts=1.7e9, incident_id=incident_id, service="checkout", action="rollback", from_version="v2.15.1",
        to_version="v2.15.0", confidence=0.97, reason="Error rate went from 0.5% to 5% (10x). Rolling back.",
        evidence=[{"kind": "anomaly", "metric": "error_rate", "baseline": 0.005, "current": 0.05}],
        target=unchecked(Target, kind="webhook", url=url)))


def executor(**kw) -> WebhookExecutor:
    settings = {"secret": SECRET, "backoff_s": 0.05, "backoff_max_s": 0.2, "timeout_s": 5.0, **kw}
    return WebhookExecutor(WebhookSettings(**settings))


def signed_by_secret(body: bytes, header: str) -> bool:
    """What a receiver does: recompute the HMAC with its copy of the secret, compare in constant time."""
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


def test_posts_the_decision_signed():
    with Receiver([200]) as receiver:
        r = rollback(receiver.url)
        outcome = executor().execute(r)
    assert (outcome.status, outcome.version) == ("executed", "v2.15.0"), outcome.detail
    [got] = receiver.requests
    assert got.path == "/hooks/rollback"
    assert got.body == encode(r.decision) and decode(got.body) == r.decision
    assert signed_by_secret(got.body, got.headers["X-Backout-Signature-256"])
    assert not signed_by_secret(got.body + b" ", got.headers["X-Backout-Signature-256"])
    assert got.headers["X-Backout-Incident"] == "inc-5f0c2d6a9b1e4c3d"
    assert got.headers["Content-Type"] == "application/json"


def test_5xx_is_retried_until_accepted():
    with Receiver([503, 500, 200]) as receiver:
        outcome = executor().execute(rollback(receiver.url))
    assert outcome.status == "executed" and "3 attempts" in outcome.detail
    assert len(receiver.requests) == 3
    assert len({(r.body, r.headers["X-Backout-Signature-256"]) for r in receiver.requests}) == 1, "the same POST"


def test_429_waits_for_retry_after_then_succeeds():
    with Receiver([429, 200], headers={"Retry-After": "1"}) as receiver:
        started = time.monotonic()
        outcome = executor(backoff_max_s=5.0).execute(rollback(receiver.url))
    assert outcome.status == "executed" and len(receiver.requests) == 2
    assert time.monotonic() - started >= 1.0


@pytest.mark.parametrize("statuses,attempts,requests,detail", [
    ([400], 5, 1, "HTTP 400 rejected"),
    ([404], 5, 1, "HTTP 404 rejected"),
    ([307], 5, 1, "HTTP 307"),  # a redirect is not followed
    ([503], 3, 3, "HTTP 503 rejected after 3 attempts"),
    ([500, 500, 422], 5, 3, "HTTP 422 rejected after 3 attempts"),
], ids=["400 fails at once", "404 fails at once", "redirect fails at once", "5xx until attempts run out",
        "4xx after 5xx"])
def test_failures(statuses, attempts, requests, detail):
    with Receiver(statuses, reply=b"rejected", headers={"Location": "http://127.0.0.1:1/"}) as receiver:
        outcome = executor(attempts=attempts).execute(rollback(receiver.url))
    assert outcome.status == "failed" and detail in outcome.detail, outcome.detail
    assert len(receiver.requests) == requests


def test_connection_refused_is_retried_until_the_receiver_is_up(caplog):
    caplog.set_level(logging.WARNING, logger="actions.delivery")
    receiver = Receiver([200])  # bound, not listening: connections are refused
    result: list[Outcome] = []
    try:
        worker = threading.Thread(target=lambda: result.append(
            executor(attempts=8, backoff_s=0.3, backoff_max_s=1.0).execute(rollback(receiver.url))))
        worker.start()
        deadline = time.monotonic() + 30
        while not any("attempt 1 of 8 failed" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the first attempt was never refused"
            time.sleep(0.01)
        assert "refused" in caplog.records[0].getMessage().lower()
        receiver.listen()
        worker.join(timeout=30)
    finally:
        receiver.close()
    assert result and result[0].status == "executed", result
    assert len(receiver.requests) == 1


def test_nothing_answers():
    receiver = Receiver()
    receiver.close()  # the port is free again: nothing listens
    outcome = executor(attempts=2).execute(rollback(receiver.url))
    assert outcome.status == "failed" and "refused" in outcome.detail.lower() and "2 attempts" in outcome.detail


@pytest.mark.parametrize("url,message", [
    ("ftp://deploy.example.com/hook", "expected http:// or https://"),
    ("file:///etc/passwd", "expected http:// or https://"),
    ("javascript:alert(1)", "expected http:// or https://"),
    ("http://admin:hunter2@deploy.example.com/hook", "credentials"),
    ("http://deploy.example.com/a b", "spaces"),
    ("http://deploy.example.com/\r\nX-Injected: 1", "control characters"),
    ("http://deploy.example.com:99999/hook", "not a URL"),
    ("https://" + "a" * 10_000 + ".example.com/", "10021 chars"),
    ("http://evil.example.net/hook", "not in the allowed hosts"),
])
def test_bad_urls_are_refused(url, message):
    ex = executor(allowed_hosts=("deploy.example.com", "127.0.0.1"))
    with pytest.raises(ContractError, match=message):
        ex.execute(rollback(url))
    with pytest.raises(ContractError, match=message):
        ex.plan(rollback(url))


def test_refusals_send_nothing():
    with Receiver([200]) as receiver:
        with pytest.raises(ConfigError, match="BACKOUT_WEBHOOK_SECRET is not set"):
            WebhookExecutor(WebhookSettings()).execute(rollback(receiver.url))
        with pytest.raises(ContractError, match="X-Backout-Incident"):
            executor().execute(rollback(receiver.url, incident_id="inc-1\r\nX-Forged: yes"))
        with pytest.raises(ContractError, match="not in the allowed hosts"):
            executor(allowed_hosts=("deploy.example.com",)).execute(rollback(receiver.url))
    assert receiver.requests == []


def test_plan_and_current_version(monkeypatch):
    ex = executor()
    [step] = ex.plan(rollback("https://deploy.example.com/hooks/rollback"))
    assert "https://deploy.example.com/hooks/rollback" in step and "signed" in step
    assert ex.current_version(Target(kind="webhook", url="https://deploy.example.com/x")) is None


def test_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("BACKOUT_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("BACKOUT_WEBHOOK_ALLOWED_HOSTS", "deploy.example.com, CD.example.com")
    monkeypatch.setenv("BACKOUT_WEBHOOK_ATTEMPTS", "3")
    settings = WebhookSettings()
    assert settings.allowed_hosts == ("deploy.example.com", "cd.example.com")
    assert settings.attempts == 3 and SECRET not in repr(settings)
    monkeypatch.setenv("BACKOUT_WEBHOOK_ATTEMPTS", "0")
    with pytest.raises(ValueError, match="attempts"):
        WebhookSettings()
