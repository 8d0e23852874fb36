"""The post-incident timeline folded from records: one table of stories, order, redeliveries, state."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backout.contracts import (
    Alert,
    Anomaly,
    Approval,
    Decision,
    Deploy,
    Metric,
    Target,
    Verification,
)
from backout.errors import SampleRejected, UnknownIncident
from detectors.incident import IncidentFold

T = 1_700_000_000.0  # the deploy
INC = "inc-0123456789abcdef"
TARGET = Target(kind="kubernetes", namespace="shop", name="checkout")
QUESTION = "Error rate went from 0.5% to 2% (4x) after the deployment of v2.15.1. Should I proceed?"
ROLLBACK = "Error rate went from 0.5% to 5% (10x) 40 seconds after the deployment of v2.15.1 to checkout."


def shift(detected: float = 90.0, current: float = 0.05, metric: str = "error_rate",
          baseline: float = 0.005) -> dict:
    return {"kind": "anomaly", "service": "checkout", "metric": metric, "detector": "cusum",
            "onset_ts": T + 40, "detected_ts": T + detected, "baseline": baseline, "current": current,
            "ratio": current / baseline, "score": 12.0}


DEPLOY_EVIDENCE = {"kind": "deploy", "deploy_id": "d-17", "version": "v2.15.1",
                   "previous_version": "v2.15.0", "ts": T}


def decision(at: float, action: str, evidence: list[dict], reason: str = ROLLBACK,
             to_version: str | None = "v2.15.0") -> Decision:
    return Decision(ts=T + at, incident_id=INC, service="checkout", deploy_id="d-17", action=action,
                    from_version="v2.15.1", to_version=to_version, confidence=0.9 if action == "rollback" else 0.6,
                    reason=reason, evidence=evidence, target=TARGET)


def check(at: float, status: str, **extra) -> Verification:
    return Verification(ts=T + at, incident_id=INC, status=status, **extra)


def metrics(until: float, bad_from: float = 40.0, bad_until: float = 160.0) -> list[Metric]:
    """error_rate every 10 s from 10 min before the deploy: 0.5%, 5% while bad (5.2% once, 6% for
    three samples from +120 s when it has not recovered), then 0.5%."""
    out = []
    for i in range(int((until + 600) / 10) + 1):
        at = -600 + 10 * i
        value = 0.05 if bad_from <= at < bad_until else 0.005
        value = 0.052 if at == 110 else value
        value = 0.06 if bad_until > 1000 and at in (120, 130, 140) else value
        out.append(Metric(ts=T + at, service="checkout", metric="error_rate", value=value, count=1000))
    return out


def story(kind: str) -> list:
    """The records of one incident, as the worker, the gate, the executor and the verifier publish them."""
    records: list = [
        Deploy(ts=T, service="checkout", deploy_id="d-17", version="v2.15.1", previous_version="v2.15.0",
               status="started", target=TARGET),
        Deploy(ts=T + 30, service="checkout", deploy_id="d-17", version="v2.15.1",
               previous_version="v2.15.0", status="finished", target=TARGET),
        Anomaly(ts=T + 90, service="checkout", metric="error_rate", detector="cusum", onset_ts=T + 40,
                detected_ts=T + 90, baseline=0.005, current=0.05, ratio=10.0, score=12.0),
    ]
    evidence = [shift(), DEPLOY_EVIDENCE]
    rolled = {"before": {"error_rate": 0.05}, "after": {"error_rate": 0.005}}
    if kind in ("auto", "not_recovered", "failed", "executing", "decided"):
        records.append(decision(95, "rollback", evidence))
    elif kind in ("upgrade",):
        records += [decision(95, "request_approval", [shift(current=0.02), DEPLOY_EVIDENCE], QUESTION),
                    decision(125, "rollback", [shift(), shift(100, 0.9, "latency_p95", 0.2), DEPLOY_EVIDENCE])]
    elif kind in ("approved", "denied", "timeout", "pending", "approved_waiting"):
        records.append(decision(95, "request_approval", evidence, QUESTION))
    elif kind == "escalate":
        records.append(decision(95, "escalate", evidence, "No earlier version is known to be good.", None))
    records.append(Alert(ts=T + 95, incident_id=INC, severity="critical", text=ROLLBACK))
    if kind == "approved":
        records.append(Approval(ts=T + 185, incident_id=INC, approved=True, by="alice"))
    if kind == "approved_waiting":
        records.append(Approval(ts=T + 185, incident_id=INC, approved=True, by="alice"))
    if kind == "denied":
        records.append(Approval(ts=T + 155, incident_id=INC, approved=False, by="bob"))
    start = 195.0 if kind == "approved" else 130.0 if kind == "upgrade" else 100.0
    if kind in ("auto", "approved", "upgrade", "not_recovered", "failed", "executing"):
        records.append(check(start, "executing", detail="kubernetes shop/checkout"))
    if kind in ("auto", "approved", "upgrade", "not_recovered"):
        records.append(check(start + 30, "executed", detail="checkout runs v2.15.0."))
    if kind == "failed":
        records.append(check(start + 20, "failed", detail="Deployment shop/checkout is paused"))
    if kind in ("auto", "approved", "upgrade"):
        records.append(check(start + 150, "verified", detail="Error rate dropped from 5% back to 0.5%.", **rolled))
    if kind == "not_recovered":
        records.append(check(start + 330, "not_recovered", before={"error_rate": 0.05},
                             after={"error_rate": 0.048}))
    until = {"timeout": 1200.0, "not_recovered": 500.0}.get(kind, 400.0)
    bad_until = 1e9 if kind in ("not_recovered", "denied", "timeout", "pending", "escalate") else 160.0
    return records + metrics(until, bad_until=bad_until)


# (case, story, status, actions, answered by, timed out,
#  deploy→decision, decision→executed, deploy→verified, step kinds)
CASES = [
    ("automatic rollback, verified", "auto", "verified", ["rollback"], None, False, 95.0, 35.0, 250.0,
     ["deploy", "degradation", "decision", "executing", "executed", "verified"]),
    ("question approved, then rolled back and verified", "approved", "verified", ["request_approval"],
     "alice", False, 95.0, 130.0, 345.0,
     ["deploy", "degradation", "decision", "approval", "executing", "executed", "verified"]),
    ("question upgraded to a rollback: both decisions, no answer needed", "upgrade", "verified",
     ["request_approval", "rollback"], None, False, 95.0, 35.0, 280.0,
     ["deploy", "degradation", "decision", "decision", "superseded", "executing", "executed", "verified"]),
    ("denied", "denied", "denied", ["request_approval"], "bob", False, 95.0, None, None,
     ["deploy", "degradation", "decision", "approval"]),
    ("unanswered for 15 minutes: timed out", "timeout", "timed_out", ["request_approval"], None, True,
     95.0, None, None, ["deploy", "degradation", "decision", "timeout"]),
    ("unanswered, not yet due", "pending", "awaiting_approval", ["request_approval"], None, False,
     95.0, None, None, ["deploy", "degradation", "decision"]),
    ("approved, the executor has not started", "approved_waiting", "approved", ["request_approval"], "alice",
     False, 95.0, None, None, ["deploy", "degradation", "decision", "approval"]),
    ("rolled back, not recovered", "not_recovered", "not_recovered", ["rollback"], None, False, 95.0, 35.0,
     None, ["deploy", "degradation", "decision", "executing", "executed", "not_recovered"]),
    ("rollback failed", "failed", "failed", ["rollback"], None, False, 95.0, None, None,
     ["deploy", "degradation", "decision", "executing", "failed"]),
    ("rollback under way", "executing", "executing", ["rollback"], None, False, 95.0, None, None,
     ["deploy", "degradation", "decision", "executing"]),
    ("escalated: nothing safe to roll back to", "escalate", "escalated", ["escalate"], None, False, 95.0,
     None, None, ["deploy", "degradation", "decision"]),
]


@pytest.mark.parametrize("case,kind,status,actions,by,timed_out,to_decision,to_executed,to_verified,kinds",
                         CASES, ids=[c[0] for c in CASES])
def test_story(case, kind, status, actions, by, timed_out, to_decision, to_executed, to_verified, kinds):
    fold = IncidentFold()
    fold.add_all(story(kind))
    t = fold.timeline(INC)
    assert t.status == status
    assert [d.action for d in t.decisions] == actions
    assert (t.answers[0].by if t.answers else None) == by
    assert t.timed_out == timed_out
    assert t.durations.deploy_to_decision_s == to_decision
    assert t.durations.decision_to_executed_s == to_executed
    assert t.durations.deploy_to_verified_s == to_verified
    assert [s.kind for s in t.steps] == kinds
    assert [s.ts for s in t.steps] == sorted(s.ts for s in t.steps)
    assert t.deploy is not None and (t.deploy.version, t.deploy.ts, t.deploy.finished_ts) == ("v2.15.1", T, T + 30)
    assert t.alerts[0].text == ROLLBACK


def test_the_numbers_of_an_automatic_rollback():
    fold = IncidentFold()
    fold.add_all(story("auto"))
    t = fold.timeline(INC)
    (moved,) = t.pattern
    # the worst median of five consecutive samples: the one 5.2% sample does not speak for the incident
    assert (moved.metric, moved.baseline, moved.peak, moved.peak_ts) == ("error_rate", 0.005, 0.05, T + 90)
    assert moved.text == "Error rate went from 0.5% to 5% at worst (10x), 50 seconds after the onset."
    assert t.degradation is not None and t.degradation.onset_ts == T + 40
    assert [s.ts - T for s in t.degradation.samples] == [-10, 0, 10, 20, 30, 40, 50, 60, 70, 80]
    assert t.degradation.text == ("Error rate began to rise 40 seconds after the deploy; cusum confirmed "
                                  "the shift 50 seconds later.")
    assert t.rollback is not None
    assert (t.rollback.target_text, t.rollback.from_version, t.rollback.to_version) == (
        "kubernetes shop/checkout", "v2.15.1", "v2.15.0")
    assert t.recovery is not None and t.recovery.after == {"error_rate": 0.005}
    assert t.recovery.text == "Error rate came back from 5% to 0.5%, two minutes after the rollback."
    assert t.durations.executed_to_verified_s == 120.0 and t.durations.deploy_to_executed_s == 130.0
    assert t.headline == ("v2.15.1 broke checkout (error rate 0.5% → 5%); rolled back to v2.15.0 "
                          "two minutes after the deploy and recovered four minutes after the deploy.")


def test_an_upgrade_shows_the_question_and_the_rollback_and_every_metric_it_blamed():
    fold = IncidentFold()
    fold.add_all(story("upgrade"))
    t = fold.timeline(INC)
    assert [(d.action, d.upgrade) for d in t.decisions] == [("request_approval", False), ("rollback", True)]
    assert t.decisions[1].text.startswith("Upgraded the question to a rollback (confidence 90%): Error rate")
    assert {m.metric for m in t.pattern} == {"error_rate", "latency_p95"}
    assert t.pattern[0].metric == "error_rate"  # 10x before 4.5x: worst first
    error = next(m for m in t.pattern if m.metric == "error_rate")
    assert error.detected_ts == T + 90  # the first detection, though the question saw a smaller shift


def test_not_recovered_says_so_with_the_numbers():
    fold = IncidentFold()
    fold.add_all(story("not_recovered"))
    t = fold.timeline(INC)
    assert (t.pattern[0].peak, t.pattern[0].peak_ts) == (0.06, T + 120)  # the first five whose median is 6%
    assert t.recovery is not None
    assert t.recovery.text == ("Error rate is still 4.8% (5% before the rollback, 0.5% before the deploy). "
                               "Not recovered five minutes after the rollback: a human must look. Backout will "
                               "not roll back again on its own.")
    assert "has not recovered" in t.headline


@pytest.mark.parametrize("kind", ["auto", "upgrade", "approved", "timeout", "not_recovered"])
def test_any_order_with_redeliveries_gives_the_same_timeline(kind):
    records = story(kind)
    fold = IncidentFold()
    fold.add_all(records)
    expected = fold.timeline(INC)
    for seed in range(3):
        shuffled = records + random.Random(seed).sample(records, k=len(records) // 2)  # half redelivered
        random.Random(seed + 100).shuffle(shuffled)
        other = IncidentFold()
        assert other.add_all(shuffled) == len(records)  # every redelivery is recognised
        assert other.timeline(INC) == expected


@settings(max_examples=25, deadline=None)
@given(st.permutations(story("upgrade")[:12]), st.integers(0, 11))
def test_state_round_trips_at_any_point(records, cut):
    whole = IncidentFold()
    whole.add_all(records)
    first = IncidentFold()
    first.add_all(records[:cut])
    resumed = IncidentFold.from_state(json.loads(json.dumps(first.to_state())))
    resumed.add_all(records[cut:])
    assert resumed.to_state() == whole.to_state()
    assert resumed.timeline(INC) == whole.timeline(INC)


def test_a_deploy_record_not_read_is_taken_from_the_evidence():
    fold = IncidentFold()
    fold.add_all(r for r in story("auto") if not isinstance(r, Deploy))
    t = fold.timeline(INC)
    assert t.deploy is not None and not t.deploy.seen
    assert (t.deploy.version, t.deploy.ts, t.durations.deploy_to_verified_s) == ("v2.15.1", T, 250.0)


def test_wants_only_the_samples_near_an_incident_of_their_service():
    fold = IncidentFold(context_s=600)
    fold.add_all(r for r in story("auto") if not isinstance(r, Metric))
    sample = Metric(ts=T, service="checkout", metric="error_rate", value=0.01)
    assert fold.wants(sample)
    assert fold.wants(sample.model_copy(update={"ts": T - 600}))
    assert not fold.wants(sample.model_copy(update={"ts": T - 601}))  # before the deploy's context
    assert not fold.wants(sample.model_copy(update={"ts": T + 250 + 601}))  # after the verification's
    assert not fold.wants(sample.model_copy(update={"service": "search"}))


def test_incidents_are_found_by_id_or_unique_prefix():
    fold = IncidentFold()
    fold.add_all(story("auto"))
    fold.add(Verification(ts=T + 5000, incident_id="inc-0123ffff", status="executing"))
    assert fold.incident_ids() == [INC, "inc-0123ffff"]
    assert fold.timeline("inc-01234").incident_id == INC
    with pytest.raises(UnknownIncident, match="ambiguous: it starts 2 ids"):
        fold.timeline("inc-0123")
    with pytest.raises(UnknownIncident, match="no incident 'inc-9' in the records read"):
        fold.timeline("inc-9")
    alone = fold.timeline("inc-0123ffff")  # only a verification names it: still a timeline, plainly partial
    assert (alone.status, alone.service, alone.deploy) == ("executing", None, None)


def test_the_timeline_of_real_decider_output():
    """The demo scenario through the real engine: the fold reads what the decider actually wrote."""
    from detectors.config import BackoutConfig
    from detectors.engine import Engine
    from streams.simulate import demo_records as demo_scenario

    records = demo_scenario()
    engine = Engine(BackoutConfig())
    outputs: list = []
    for r in records:
        try:
            outputs += engine.feed(r)
        except SampleRejected:  # the scenario's deliberate duplicates, as the backtest skips them
            pass
    outputs += engine.finish()
    fold = IncidentFold()
    fold.add_all(records + outputs)
    bad = next(r for r in records if isinstance(r, Deploy) and (r.model_extra or {}).get("label") == "bad")
    rolled = [d for d in outputs if isinstance(d, Decision) and d.action == "rollback"]
    assert rolled, "the demo scenario's bad deploy is rolled back"
    t = fold.timeline(rolled[0].incident_id)
    assert t.status == "decided" and t.deploy is not None and t.deploy.deploy_id == bad.deploy_id
    assert t.pattern and t.degradation is not None and t.degradation.samples
    assert t.pattern[0].peak > t.pattern[0].baseline if t.pattern[0].direction == "up" else True
    assert t.steps[0].kind == "deploy" and t.decisions[0].reason == rolled[0].reason


def test_later_deploys_of_the_service_are_steps():
    """What the deploy system saw after the blamed deploy: the rollback itself, or a fix."""
    fold = IncidentFold()
    fold.add_all(story("executing"))
    fold.add(Deploy(ts=T + 125, service="checkout", deploy_id="d-18", version="v2.15.0",
                    previous_version="v2.15.1", status="rolled_back"))
    fold.add(Deploy(ts=T + 900, service="checkout", deploy_id="d-19", version="v2.15.2",
                    previous_version="v2.15.0"))
    fold.add(Deploy(ts=T + 130, service="search", deploy_id="d-20", version="v9", previous_version="v8"))
    later = [s.text for s in fold.timeline(INC).steps if s.kind == "deploy"][1:]
    assert later == ["v2.15.0 runs again (rolled back).", "v2.15.2 deployed, replacing v2.15.0 (finished)."]


# -- what the front ends that answer check: the gate's reading of the same records ---------------

def gate_after(records: list, until_ts: float) -> tuple[dict, object]:
    """The approval gate (actions.gate) fed the records it reads, in event time, its clock ticking
    at each record and at a question's due time; (its state, the gate)."""
    from actions.gate import ServiceGate, Tick, step

    read = sorted((r for r in records if isinstance(r, Decision | Approval | Deploy | Verification)),
                  key=lambda r: r.ts)
    due = [d.ts + 900.0 for d in read if isinstance(d, Decision) and d.action == "request_approval"]
    events = sorted([(r.ts, 1, r) for r in read] + [(ts, 0, Tick(ts)) for ts in due + [until_ts]
                                                     if ts <= until_ts], key=lambda e: (e[0], e[1]))
    state = None
    for _, _, r in events:
        state, _ = step(state, r)
    assert state is not None
    return state, ServiceGate.from_state(state)


ANSWERABLE = ["auto", "approved", "upgrade", "denied", "timeout", "pending", "approved_waiting",
              "not_recovered", "failed", "executing", "escalate", "denied_then_rollback"]


def answerable_story(kind: str) -> list:
    if kind == "denied_then_rollback":  # a denial is final: a later rollback decision does not override it
        return story("denied") + [decision(300, "rollback", [shift(), DEPLOY_EVIDENCE])]
    return story(kind)


@pytest.mark.parametrize("kind", ANSWERABLE)
def test_an_answer_is_refused_exactly_when_the_gate_would_ignore_it(kind):
    """The timeline's refusal is the gate's own reason, and its open/closed the gate's phase; the one
    difference: an approval the gate acted on before the topics show it is refused as 'answered'."""
    from actions.gate import step

    records = answerable_story(kind)
    fold = IncidentFold()
    fold.add_all(records)
    t = fold.timeline(INC)
    state, gate = gate_after(records, t.as_of_ts)
    assert t.is_open == (gate.phase(INC) in ("asking", "executing", "executed")), gate.phase(INC)

    refusal = t.refusal(True, "carol")
    _, out = step(state, Approval(ts=t.as_of_ts, incident_id=INC, approved=True, by="carol", service="checkout"))
    ignored = [o.text for o in out if isinstance(o, Alert) and "changes nothing" in o.text]
    if not ignored:
        assert refusal is None, refusal
    elif kind == "approved_waiting":
        assert refusal == f"carol's approval of {INC} would change nothing, so it was not sent: alice already " \
                          "approved it, and the first answer counts."
        assert ignored == [f"carol's approval of {INC} changes nothing: the rollback to v2.15.0 was already "
                           "approved by alice."]
    else:
        assert [refusal] == [text.replace("changes nothing:", "would change nothing, so it was not sent:")
                             for text in ignored]


@pytest.mark.parametrize("kind,status,is_open,answer", [
    ("denied_then_rollback", "denied", False, ("bob", False)),
    ("pending", "awaiting_approval", True, None),
    ("approved_waiting", "approved", True, ("alice", True)),
    ("escalate", "escalated", False, None),
])
def test_status_and_the_answer_that_counts(kind, status, is_open, answer):
    fold = IncidentFold()
    fold.add_all(answerable_story(kind))
    t = fold.timeline(INC)
    assert (t.status, t.is_open) == (status, is_open)
    assert ((t.answer.by, t.answer.approved) if t.answer else None) == answer


def test_an_answer_after_the_rollback_started_does_not_count():
    fold = IncidentFold()
    fold.add_all(story("upgrade") + [Approval(ts=T + 140, incident_id=INC, approved=False, by="bob")])
    t = fold.timeline(INC)
    assert t.status == "verified" and t.answer is None and [a.by for a in t.answers] == ["bob"]


def test_a_front_ends_clock_times_a_question_out():
    fold = IncidentFold()
    fold.add_all(r for r in story("pending") if not isinstance(r, Metric))  # records up to T + 95
    assert fold.timeline(INC).status == "awaiting_approval"
    late = fold.timeline(INC, now_ts=T + 95 + 900 + 120)
    assert (late.status, late.timed_out, late.question_due_ts, late.as_of_ts) == ("timed_out", True, T + 995,
                                                                                  T + 1115)
    assert late.refusal(False, "bob") == (f"bob's denial of {INC} would change nothing, so it was not sent: the "
                                          "question timed out two minutes ago and was escalated to a human.")
    assert fold.timeline(INC, now_ts=T).as_of_ts == T + 95  # an earlier clock does not rewind the records


def test_the_partition_of_the_decisions_is_kept_and_round_trips():
    fold = IncidentFold()
    for r in story("pending"):
        fold.add(r, partition=5 if isinstance(r, Decision) else 0)
    assert fold.timeline(INC).partition == 5
    assert IncidentFold.from_state(json.loads(json.dumps(fold.to_state()))).timeline(INC).partition == 5
    unread = IncidentFold()
    unread.add_all(story("pending"))
    assert unread.timeline(INC).partition is None
