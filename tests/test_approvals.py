"""``backout approve`` / ``deny`` / ``incident`` on the real broker, through the CLI."""

from __future__ import annotations

import json
import re
import time

import pytest
from click.testing import CliRunner

from actions.approvals import IncidentTopics
from backout.cli import cli
from backout.contracts import Alert, Approval, Decision, Verification, decode, encode
from streams.admin import create_topics
from streams.kafka import read_to_end, sender
from streams.topics import TopicSpec

PARTITIONS = 3


@pytest.fixture
def where(kafka, unique) -> IncidentTopics:
    names = IncidentTopics(f"actions-{unique}", f"approvals-{unique}", f"verifications-{unique}",
                           f"alerts-{unique}", f"deploys-{unique}", f"anomalies-{unique}", f"metrics-{unique}")
    create_topics(kafka, [TopicSpec(t, PARTITIONS, 3_600_000) for t in vars(names).values()])
    return names


def decision(incident, action="request_approval", service="checkout", age_s=60.0):
    return Decision(ts=time.time() - age_s, incident_id=incident, service=service, action=action,
                    from_version="v2.15.1", to_version="v2.15.0", confidence=0.7,
                    reason=f"Error rate went from 0.5% to 1% (2x) on {service}. Should I proceed?")


def put(kafka, topic, record, partition=-1, key=b"checkout"):
    out = sender(kafka)
    out.send(topic, encode(record), key, partition=partition)
    out.flush(30)


def odd_partition(kafka, where) -> int:
    """A partition that is not where librdkafka's partitioner puts the key: as if Faust had produced it."""
    put(kafka, where.alerts, Alert(ts=time.time(), severity="info", text="probe"))
    [probe] = list(read_to_end(kafka, where.alerts))
    return (probe.partition() + 1) % PARTITIONS


def run(kafka, where, *args):
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "COLUMNS": "220"}  # COLUMNS: rich does not wrap
    return CliRunner().invoke(cli, list(args), obj=where, env=env)


def approvals(kafka, where) -> list[tuple[int, bytes, Approval]]:
    return [(m.partition(), m.key(), decode(m.value(), expect=Approval)) for m in read_to_end(kafka, where.approvals)]


def test_an_approval_goes_to_the_partition_of_its_incident(kafka, where):
    partition = odd_partition(kafka, where)
    put(kafka, where.actions, decision("inc-a"), partition)
    result = run(kafka, where, "approve", "inc-a", "--by", "alice")
    assert result.exit_code == 0, result.output
    assert f"Approved inc-a (checkout) as alice: sent to {where.approvals} partition {partition}" in result.output
    [(landed, key, record)] = approvals(kafka, where)
    assert (landed, key) == (partition, b"checkout")
    assert (record.incident_id, record.approved, record.by, record.service) == ("inc-a", True, "alice", "checkout")
    assert abs(record.ts - time.time()) < 60

    again = run(kafka, where, "deny", "inc-a", "--by", "bob")  # the first answer counts
    assert again.exit_code == 1
    assert ("error: bob's denial of inc-a would change nothing, so it was not sent: alice already approved it, "
            "and the first answer counts.") in again.output
    assert len(approvals(kafka, where)) == 1


def test_a_denial(kafka, where):
    put(kafka, where.actions, decision("inc-d", service="payments"), key=b"payments")
    result = run(kafka, where, "deny", "inc-d", "--by", "bob")
    assert result.exit_code == 0, result.output
    [(_, key, record)] = approvals(kafka, where)
    assert (key, record.approved, record.by, record.service) == (b"payments", False, "bob", "payments")


@pytest.mark.parametrize("records,needle", [
    (lambda: [], r"no decision on actions-\w+ carries incident 'inc-x'"),
    (lambda: [decision("inc-x", action="escalate")], "Backout escalated it to a human; there is no rollback to approve"),
    (lambda: [decision("inc-x", age_s=1000.0)], r"the question timed out 1\d\d seconds ago and was escalated"),
    (lambda: [decision("inc-x", action="rollback"),
              Verification(ts=time.time(), incident_id="inc-x", status="executing", detail="Rolling back.")],
     "the rollback to v2.15.0 already ran automatically, superseding the question"),
], ids=["unknown", "escalated", "timed out", "already executing"])
def test_an_answer_that_would_change_nothing_is_refused(kafka, where, records, needle):
    for record in records():
        put(kafka, where.verifications if isinstance(record, Verification) else where.actions, record)
    result = run(kafka, where, "approve", "inc-x", "--by", "alice")
    assert result.exit_code == 1 and re.search(needle, result.output), result.output
    assert result.output.startswith("error: ")
    assert approvals(kafka, where) == []


def test_topics_with_different_partition_counts_are_refused(kafka, where, unique):
    other = IncidentTopics(where.actions, f"approvals-two-{unique}", where.verifications, where.alerts,
                           where.deploys, where.anomalies, where.metrics)
    create_topics(kafka, [TopicSpec(other.approvals, 2, 3_600_000)])
    put(kafka, where.actions, decision("inc-p"))
    result = run(kafka, other, "approve", "inc-p", "--by", "alice")
    assert result.exit_code == 1
    assert f"{other.approvals} has 2 partitions and {where.actions} 3: they must have as many" in result.output


def test_a_bad_name_is_a_usage_error(kafka, where):
    result = run(kafka, where, "approve", "inc-a", "--by", "evil\nname")
    assert result.exit_code == 2 and "is not a name: letters, digits, spaces" in result.output


def test_incident_list_and_show(kafka, where):
    now = time.time()
    put(kafka, where.actions, decision("inc-open"))
    put(kafka, where.actions, decision("inc-done", action="rollback", age_s=600.0))
    put(kafka, where.verifications, Verification(ts=now - 590, incident_id="inc-done", status="executing",
                                                 detail="Rolling back checkout from v2.15.1 to v2.15.0."))
    verified = Verification(ts=now - 480, incident_id="inc-done", status="verified",
                            detail="Error rate dropped from 5% back to 0.5% within 40 seconds of the rollback.",
                            before={"error_rate": 0.05}, after={"error_rate": 0.005})
    put(kafka, where.verifications, verified)
    put(kafka, where.alerts, Alert(ts=now - 480, incident_id="inc-done", severity="info", text="Recovery verified."))
    put(kafka, where.alerts, Alert(ts=now, incident_id="shift-1", severity="warning", text="No deploy to blame."))
    put(kafka, where.actions, decision("inc-old", action="escalate", age_s=3 * 86400))

    listed = run(kafka, where, "incident", "list")
    assert listed.exit_code == 0, listed.output
    assert "1 open, 1 closed" in listed.output
    assert listed.output.index("inc-open") < listed.output.index("inc-done")  # open ones first
    assert "awaiting approval" in listed.output and "verified" in listed.output
    assert "inc-old" not in listed.output and "shift-1" not in listed.output  # closed long ago; not an incident
    assert "inc-old" in run(kafka, where, "incident", "list", "--all").output

    shown = run(kafka, where, "incident", "show", "inc-done")
    assert shown.exit_code == 0, shown.output
    flat = " ".join(shown.output.split())
    for needle in ("inc-done · checkout · verified · v2.15.1 → v2.15.0", "decision rollback",
                   "verification executing", "verification verified", "alert info",
                   "before / after the rollback: Error rate 5% → 0.5%"):
        assert needle in flat, needle
    assert flat.index("decision rollback") < flat.index("verification executing") < flat.index("alert info")

    missing = run(kafka, where, "incident", "show", "inc-nope")
    assert missing.exit_code == 1 and "no decision on" in missing.output


def test_unreadable_records_are_counted_not_hidden(kafka, where):
    out = sender(kafka)
    out.send(where.actions, b"not json", b"checkout")
    out.send(where.actions, json.dumps({"type": "decision"}).encode(), b"checkout")
    out.flush(30)
    put(kafka, where.actions, decision("inc-r"))
    result = run(kafka, where, "incident", "list")
    assert result.exit_code == 0 and "inc-r" in result.output
    assert "(2 records on these topics are not valid records and were left out)" in result.output
