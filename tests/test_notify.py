"""Notifications: the Slack rendering (a table), the pairing of alerts with decisions, and the
sink on the real broker posting to local receivers."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time

import pytest
from click.testing import CliRunner

from actions.delivery import Poster, RetryPolicy
from actions.notify import JsonSink, Pairing, SlackSink, Tally, Topics, run
from actions.slack import render_slack
from backout.cli import cli
from backout.contracts import Alert, Decision, decode, encode
from streams.admin import create_topics
from streams.kafka import consumer, messages, sender
from streams.topics import TopicSpec
from tests.receiver import Receiver

ASKED = ("Error rate went from 0.5% to 1.1% after the deployment of v2.15.1 to checkout 4 minutes ago. "
         "I recommend rolling back to v2.15.0. Should I proceed?")
EVIDENCE = [{"kind": "anomaly", "service": "checkout", "metric": "error_rate", "baseline": 0.005, "current": 0.05,
             "ratio": 10.0}, {"kind": "deploy", "deploy_id": "d-17", "version": "v2.15.1"}]


def decision(action: str = "rollback", incident_id: str = "inc-1", checked: bool = True, **kw) -> Decision:
    fields = {"ts": 1.7e9, "incident_id": incident_id, "service": "checkout", "action": action,
              "from_version": "v2.15.1", "to_version": "v2.15.0" if action != "escalate" else None,
              "confidence": 0.97, "reason": "Error rate went from 0.5% to 5% (10x).", "evidence": EVIDENCE, **kw}
    # checked=False: what the contract would refuse on a topic, built in code, for the renderer's own defence
    return Decision(**fields) if checked else Decision.model_construct(**fields)


def alert(text: str = "Error rate went from 0.5% to 5% (10x) 90 seconds after the deployment of v2.15.1 to "
          "checkout. Rolling back to v2.15.0.", severity: str = "critical", incident_id: str | None = "inc-1",
          checked: bool = True, **kw) -> Alert:
    fields = {"ts": 1.7e9, "incident_id": incident_id, "severity": severity, "text": text, **kw}
    return Alert(**fields) if checked else Alert.model_construct(**fields)


def texts(message: dict, kind: str) -> list[str]:
    """The texts of every block of ``kind`` (fields, elements and buttons included)."""
    out = []
    for block in message["blocks"]:
        if block["type"] != kind:
            continue
        if "text" in block:
            out.append(block["text"]["text"])
        out += [f["text"] for f in block.get("fields", [])]
        out += [e.get("url") or e.get("text") for e in block.get("elements", [])]
    return out


BASE = "https://backout.example.com"
# (case, alert, decision, executor_url, header, fields, buttons, context has)
RENDERED = [
    ("alert with no decision", alert("Traffic fell on 7 of 8 services.", "warning", "shared-1"), None, BASE,
     ":large_orange_circle: Warning", [], [], "incident `shared-1`"),
    ("rollback: versions, confidence, the shift", alert(), decision(), BASE,
     ":red_circle: Critical · checkout rolling back v2.15.1 → v2.15.0",
     ["*Action*\nrollback", "*Versions*\n`v2.15.1` → `v2.15.0`", "*Confidence*\n97%",
      "*Error rate*\n0.5% → 5% (10x)"], [], "incident `inc-1`"),
    ("question with an executor: buttons", alert(ASKED, "warning"), decision("request_approval"), BASE,
     ":large_orange_circle: Warning · checkout asks to roll back v2.15.1 → v2.15.0",
     ["*Action*\nrequest approval", "*Versions*\n`v2.15.1` → `v2.15.0`", "*Confidence*\n97%",
      "*Error rate*\n0.5% → 5% (10x)"],
     [f"{BASE}/incidents/inc-1/approve", f"{BASE}/incidents/inc-1/deny"], "`backout approve inc-1` / `backout deny inc-1`"),
    ("question without an executor URL: the commands only", alert(ASKED, "warning"), decision("request_approval"),
     None, ":large_orange_circle: Warning · checkout asks to roll back v2.15.1 → v2.15.0",
     ["*Action*\nrequest approval", "*Versions*\n`v2.15.1` → `v2.15.0`", "*Confidence*\n97%",
      "*Error rate*\n0.5% → 5% (10x)"], [], "`backout approve inc-1`"),
    ("escalation: no versions in the header", alert("No earlier version is known to be good."),
     decision("escalate", confidence=0.5, evidence=[]), BASE, ":red_circle: Critical · checkout needs a human",
     ["*Action*\nescalate", "*Versions*\n`v2.15.1` → `?`", "*Confidence*\n50%"], [], "incident `inc-1`"),
    ("a rollback that superseded the question: no buttons", alert(ASKED, "warning"), decision("rollback"), BASE,
     ":large_orange_circle: Warning · checkout rolling back v2.15.1 → v2.15.0",
     ["*Action*\nrollback", "*Versions*\n`v2.15.1` → `v2.15.0`", "*Confidence*\n97%",
      "*Error rate*\n0.5% → 5% (10x)"], [], "incident `inc-1`"),
    ("evidence that is not numbers is left out", alert(), decision(evidence=[
        {"kind": "anomaly", "metric": "error_rate", "baseline": "0.5%", "current": 0.05},
        {"kind": "anomaly", "metric": "latency_p95", "baseline": 0.2, "current": True},
        {"kind": "anomaly", "metric": ["x"], "baseline": 0.2, "current": 0.4},
        {"kind": "anomaly", "metric": "latency_p95", "baseline": 0.2, "current": 0.9}]), BASE,
     ":red_circle: Critical · checkout rolling back v2.15.1 → v2.15.0",
     ["*Action*\nrollback", "*Versions*\n`v2.15.1` → `v2.15.0`", "*Confidence*\n97%",
      "*p95 latency*\n200 ms → 900 ms (4.5x)"], [], "incident `inc-1`"),
]


@pytest.mark.parametrize("case,alert_,decision_,executor_url,header,fields,buttons,context", RENDERED,
                         ids=[r[0] for r in RENDERED])
def test_render_slack(case, alert_, decision_, executor_url, header, fields, buttons, context):
    message = render_slack(alert_, decision_, executor_url)
    assert message["text"] == f"[{alert_.severity}] {alert_.text}"
    assert texts(message, "header") == [header]
    assert texts(message, "section")[0] == alert_.text
    assert texts(message, "section")[1:] == fields
    assert texts(message, "actions") == buttons
    assert context in texts(message, "context")[0]


def test_render_slack_escapes_what_a_message_could_forge():
    hostile = alert("<!channel> deploy <https://evil.example|your bank> & more", incident_id="inc/../x?y=<z>",
                    links=["https://grafana.example.com/d/abc?from=now-1h", "javascript:alert(1)"], checked=False)
    message = render_slack(hostile, decision("request_approval", incident_id="inc/../x?y=<z>", checked=False), BASE)
    dumped = json.dumps(message)
    assert "<!channel>" not in dumped and "<https://evil" not in dumped
    assert texts(message, "section")[0] == "&lt;!channel&gt; deploy &lt;https://evil.example|your bank&gt; &amp; more"
    assert texts(message, "actions")[0] == f"{BASE}/incidents/inc%2F..%2Fx%3Fy%3D%3Cz%3E/approve"
    assert texts(message, "section")[-1] == "<https://grafana.example.com/d/abc?from=now-1h> · javascript:alert(1)"


def test_render_slack_keeps_within_slack_limits():
    long = alert("&" * 5000, checked=False)
    message = render_slack(long, decision(service="s" * 63), BASE)
    section = texts(message, "section")[0]
    assert len(section) <= 3000 and section.endswith("&amp;…")
    assert len(message["text"]) <= 3000 and len(texts(message, "header")[0]) <= 150


def test_pairing_holds_an_alert_for_its_decision_then_lets_it_go():
    pairing: Pairing[str] = Pairing(hold_s=3.0)
    pairing.add(0, "inc-1", "a1", now=0.0)
    pairing.add(0, None, "behind a1", now=0.1)
    pairing.add(1, None, "other partition", now=0.2)
    assert pairing.due(now=1.0) == [("other partition", None)]
    assert pairing.due(now=2.9) == []
    assert pairing.due(now=3.0) == [("a1", None), ("behind a1", None)]
    assert len(pairing) == 0


def test_pairing_uses_the_latest_decision_and_forgets_the_oldest():
    pairing: Pairing[str] = Pairing(hold_s=3.0, keep=2)
    pairing.decision(decision("request_approval", "inc-1"))
    pairing.decision(decision("rollback", "inc-1"))
    pairing.decision(decision("rollback", "inc-2"))
    pairing.decision(decision("escalate", "inc-3"))  # inc-1 is forgotten
    for i, incident in enumerate(["inc-1", "inc-2", "inc-3"]):
        pairing.add(0, incident, incident, now=float(i))
    got = pairing.due(now=10.0)
    assert [(item, d.action if d else None) for item, d in got] == [
        ("inc-1", None), ("inc-2", "rollback"), ("inc-3", "escalate")]


# -- the sink on the real broker --------------------------------------------------------------


@pytest.fixture
def where(kafka, unique) -> Topics:
    topics = Topics(f"alerts-{unique}", f"actions-{unique}", f"deadletter-{unique}")
    create_topics(kafka, [TopicSpec(t, 2, 3_600_000) for t in (topics.alerts, topics.actions, topics.deadletter)])
    return topics


class Running:
    """``run`` on a thread, stopped on exit."""

    def __init__(self, kafka, sinks, where, group, hold_s=20.0) -> None:
        self.stop = threading.Event()
        self.tally: list[Tally] = []
        self._thread = threading.Thread(target=lambda: self.tally.append(
            run(kafka, sinks, self.stop, hold_s=hold_s, group=group, from_beginning=True, where=where)))

    def __enter__(self) -> Running:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive()


def publish(kafka, topic, records, key=b"checkout") -> None:
    out = sender(kafka)
    for r in records:
        out.send(topic, r if isinstance(r, bytes) else encode(r), key)
    out.flush(30)


def dead_letters(kafka, topic, count, timeout_s=60.0) -> list:
    cons = consumer(kafka, [topic])
    try:
        got = []
        for msg in messages(cons, timeout_s=timeout_s):
            got.append(json.loads(msg.value()))
            if len(got) >= count:
                break
        return got
    finally:
        cons.close()


def test_alerts_reach_slack_and_the_webhook_once(kafka, where, unique):
    poster = Poster(RetryPolicy(attempts=4, backoff_s=0.05, backoff_max_s=0.2, timeout_s=5))
    question, info = alert(ASKED, "warning", "inc-q"), alert("Traffic rose on checkout.", "info", None)
    with Receiver([200]) as slack, Receiver([503, 200]) as hook:
        sinks = [SlackSink(slack.url, poster, BASE), JsonSink(hook.url, poster, secret="s3cret")]
        publish(kafka, where.alerts, [info, question, b"not an alert"])  # one partition: in this order
        with Running(kafka, sinks, where, f"notify-{unique}"):
            slack.wait_for(1)  # the alert with no incident goes at once; the question waits
            time.sleep(1.0)
            publish(kafka, where.actions, [decision("request_approval", "inc-q")])  # its decision comes later
            slack.wait_for(2)
            hook.wait_for(3)  # two alerts, one retried after a 503
        posted = {json.loads(r.body)["text"]: json.loads(r.body) for r in slack.requests}
        assert set(posted) == {f"[warning] {ASKED}", "[info] Traffic rose on checkout."}
        buttons = texts(posted[f"[warning] {ASKED}"], "actions")
        assert buttons == [f"{BASE}/incidents/inc-q/approve", f"{BASE}/incidents/inc-q/deny"]
        assert texts(posted["[info] Traffic rose on checkout."], "actions") == []

        bodies = [r.body for r in hook.requests]
        assert sorted(bodies) == sorted([encode(question), encode(info)] + [encode(info)])  # the 503 one twice
        for r in hook.requests:
            expected = "sha256=" + hmac.new(b"s3cret", r.body, hashlib.sha256).hexdigest()
            assert r.headers["X-Backout-Signature-256"] == expected
        [letter] = dead_letters(kafka, where.deadletter, 1)
        assert letter["value"] == "not an alert" and "not JSON" in letter["reason"]

        # a restart in the same group sends only what is new
        later = alert("Error rate is back to 0.5%.", "info", None)
        publish(kafka, where.alerts, [later])
        with Running(kafka, sinks, where, f"notify-{unique}"):
            slack.wait_for(3)
            time.sleep(2.0)  # anything sent again would have come by now
        assert len(slack.requests) == 3 and json.loads(slack.requests[-1].body)["text"] == f"[info] {later.text}"


def test_an_alert_a_sink_refuses_is_dead_lettered(kafka, where, unique):
    poster = Poster(RetryPolicy(attempts=2, backoff_s=0.05, backoff_max_s=0.1, timeout_s=5))
    with Receiver([404], reply=b"no_service") as slack:
        publish(kafka, where.alerts, [alert(incident_id=None)])
        with Running(kafka, [SlackSink(slack.url, poster)], where, f"notify-{unique}") as running:
            [letter] = dead_letters(kafka, where.deadletter, 1)
        assert len(slack.requests) == 1, "a 404 is not retried"
    assert "slack refused the alert: HTTP 404 no_service after 1 attempts" in letter["reason"]
    assert decode(letter["value"]) == alert(incident_id=None)
    assert running.tally == [Tally(delivered=0, refused=1, dead_letters=1)]


def test_notify_needs_a_sink(monkeypatch):
    monkeypatch.delenv("BACKOUT_NOTIFY_SLACK_WEBHOOK", raising=False)
    monkeypatch.delenv("BACKOUT_NOTIFY_WEBHOOK_URL", raising=False)
    result = CliRunner().invoke(cli, ["notify"])
    assert result.exit_code == 1 and "no sink" in result.output
    result = CliRunner().invoke(cli, ["notify", "--slack-webhook", "ftp://hooks.slack.com/x"])
    assert result.exit_code == 1 and "expected http:// or https://" in result.output
