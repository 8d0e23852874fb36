"""The approval gate: one table of record sequences and what comes out, then properties."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actions.gate import Execute, GateSettings, Ignored, ServiceGate, Tick, Verify, step
from backout.contracts import Alert, Approval, Decision, Deploy, Target, Verification
from backout.errors import ContractError

T0 = 1_700_000_000.0
SVC = "checkout"
K8S = Target(kind="kubernetes", namespace="shop", name="checkout")


def evidence(version="v2"):
    return [{"kind": "anomaly", "service": SVC, "metric": "error_rate", "detector": "binomial_cusum",
             "onset_ts": T0 - 120, "detected_ts": T0 - 60, "baseline": 0.005, "current": 0.05,
             "ratio": 10.0, "score": 3.0},
            {"kind": "deploy", "deploy_id": "d-1", "version": version, "previous_version": "v1", "ts": T0 - 200}]


def decision(action, inc="inc-1", ts=0.0, frm="v2", to="v1", target=K8S):
    return Decision(ts=T0 + ts, incident_id=inc, service=SVC, action=action, from_version=frm, to_version=to,
                    confidence=0.9, reason="Error rate went from 0.5% to 5% (10x).", evidence=evidence(frm),
                    target=target)


def rollback(inc="inc-1", ts=0.0, **kw):
    return decision("rollback", inc, ts, **kw)


def ask(inc="inc-1", ts=0.0, **kw):
    return decision("request_approval", inc, ts, **kw)


def escalate(inc="inc-1", ts=0.0):
    return decision("escalate", inc, ts, to=None)


def approve(inc="inc-1", ts=60.0, by="alice"):
    return Approval(ts=T0 + ts, incident_id=inc, approved=True, by=by, service=SVC)


def deny(inc="inc-1", ts=60.0, by="bob"):
    return Approval(ts=T0 + ts, incident_id=inc, approved=False, by=by, service=SVC)


def result(status, inc="inc-1", ts=120.0, detail=""):
    return Verification(ts=T0 + ts, incident_id=inc, status=status, detail=detail)


def deploy(ts, version, previous, status="finished", target=K8S):
    return Deploy(ts=T0 + ts, service=SVC, deploy_id=f"d-{version}", version=version,
                  previous_version=previous, status=status, target=target)


def tick(ts):
    return Tick(T0 + ts)


def short(out) -> str:
    """One output in a few words: what kind, which incident, and the step."""
    if isinstance(out, Execute):
        r = out.rollback
        return f"execute {r.incident_id} {r.from_version}->{r.to_version}"
    if isinstance(out, Verify):
        return f"verify {out.incident_id}"
    if isinstance(out, Ignored):
        return f"ignored {out.incident_id}"
    if isinstance(out, Verification):
        return f"{out.status} {out.incident_id}"
    assert isinstance(out, Alert)
    return f"alert {out.severity} {out.incident_id}"


EXEC1 = ["executing inc-1", "alert warning inc-1", "execute inc-1 v2->v1"]
EXEC2 = ["executing inc-2", "alert warning inc-2", "execute inc-2 v2->v1"]
DONE1 = ["executed inc-1", "alert info inc-1", "verify inc-1"]

# (case, records, every output in order, final phase of each incident, words an alert must contain)
CASES = [
    ("rollback executes", [rollback()], EXEC1, {"inc-1": "executing"}, "automatically"),
    ("the same decision twice is a no-op", [rollback(), rollback()], EXEC1 + ["ignored inc-1"],
     {"inc-1": "executing"}, ""),
    ("executed, then verified", [rollback(), result("executed"), result("verified", ts=300, detail="Back.")],
     EXEC1 + DONE1 + ["verified inc-1", "alert info inc-1"], {"inc-1": "verified"}, "Recovery verified"),
    ("a question waits", [ask()], [], {"inc-1": "asking"}, ""),
    ("approved: executes", [ask(), approve()], EXEC1, {"inc-1": "executing"}, "approved by alice"),
    ("denied: closed, an alert", [ask(), deny()], ["alert warning inc-1"], {"inc-1": "denied"},
     "bob denied rolling back checkout to v1"),
    ("not yet timed out", [ask(), tick(899)], [], {"inc-1": "asking"}, ""),
    ("unanswered: escalates at the timeout", [ask(), tick(900)], ["alert critical inc-1"],
     {"inc-1": "timed_out"}, "No one answered within 15 minutes"),
    ("approval after the timeout: no-op", [ask(), tick(900), approve(ts=950)],
     ["alert critical inc-1", "alert info inc-1"], {"inc-1": "timed_out"}, "timed out 50 seconds ago"),
    ("a later rollback supersedes the question", [ask(), rollback(ts=30)], EXEC1, {"inc-1": "executing"}, ""),
    ("approval after a superseding rollback: no-op", [ask(), rollback(ts=30), approve(ts=60)],
     EXEC1 + ["alert info inc-1"], {"inc-1": "executing"}, "already ran automatically, superseding the question"),
    ("approval after an automatic rollback: no-op", [rollback(), approve()], EXEC1 + ["alert info inc-1"],
     {"inc-1": "executing"}, "alice's approval of inc-1 changes nothing"),
    ("a rollback after the timeout still supersedes", [ask(), tick(900), rollback(ts=1000)],
     ["alert critical inc-1"] + EXEC1, {"inc-1": "executing"}, ""),
    ("an approval redelivered", [ask(), approve(), approve()], EXEC1 + ["ignored inc-1"],
     {"inc-1": "executing"}, ""),
    ("the first answer counts", [ask(), deny(), approve(ts=90)], ["alert warning inc-1", "alert info inc-1"],
     {"inc-1": "denied"}, "bob already denied it"),
    ("a denial is final, even against a later rollback", [ask(), deny(), rollback(ts=90)],
     ["alert warning inc-1", "ignored inc-1"], {"inc-1": "denied"}, ""),
    ("an approval read before its question", [approve(ts=5), ask(ts=0)], EXEC1, {"inc-1": "executing"},
     "approved by alice"),
    ("an approval whose question never comes", [approve(ts=5), tick(905)], ["alert info inc-1"], {},
     "no decision of checkout with this incident id arrived within 15 minutes"),
    ("escalated: nothing to approve", [escalate(), approve()], ["alert info inc-1"], {"inc-1": "escalated"},
     "there is no rollback to approve"),
    ("failed: a human must act, never again", [rollback(), result("failed", detail="Deployment is paused"),
                                               rollback(ts=200, frm="v2", to="v1")],
     EXEC1 + ["failed inc-1", "alert critical inc-1", "ignored inc-1"], {"inc-1": "failed"},
     "failed: Deployment is paused. A human must act"),
    ("not_recovered, then a new rollback decision: no-op",
     [ask(), approve(), result("executed"), result("not_recovered", ts=420, detail="Error rate is still 5%."),
      rollback(ts=500)],
     EXEC1 + DONE1 + ["not_recovered inc-1", "alert critical inc-1", "ignored inc-1"], {"inc-1": "not_recovered"},
     "did not fix checkout: escalating to a human"),
    ("a result redelivered", [rollback(), result("executed"), result("executed")], EXEC1 + DONE1 + ["ignored inc-1"],
     {"inc-1": "executed"}, ""),
    ("a result for no execution", [ask(), result("executed")], ["ignored inc-1"], {"inc-1": "asking"}, ""),
    ("cooldown: a second automatic rollback becomes a question",
     [rollback(), result("executed"), rollback("inc-2", ts=600)],
     EXEC1 + DONE1 + ["alert warning inc-2"], {"inc-1": "executed", "inc-2": "asking"},
     "rolled back ten minutes ago, and Backout rolls a service back automatically at most once in 1 hour"),
    ("cooldown: an approval still executes",
     [rollback(), result("executed"), deploy(700, "v2", "v1"), rollback("inc-2", ts=800), approve("inc-2", ts=900)],
     EXEC1 + DONE1 + ["alert warning inc-2"] + EXEC2, {"inc-2": "executing"}, ""),
    ("after the cooldown: automatic again",
     [rollback(), result("executed"), deploy(3000, "v3", "v1"), rollback("inc-2", ts=3700, frm="v3")],
     EXEC1 + DONE1 + ["executing inc-2", "alert warning inc-2", "execute inc-2 v3->v1"], {"inc-2": "executing"}, ""),
    ("never back to a version rolled back before",
     [rollback(), result("executed"), deploy(5000, "v3", "v1"), rollback("inc-2", ts=5100, frm="v3", to="v2")],
     EXEC1 + DONE1 + ["alert critical inc-2"], {"inc-2": "refused"}, "that version was itself rolled back"),
    ("never back to a version someone else rolled back",
     [deploy(-900, "v1", "v0", status="rolled_back"), rollback(to="v0")], ["alert critical inc-1"],
     {"inc-1": "refused"}, "Not rolling back checkout to v0"),
    ("the current version moved after the decision", [deploy(10, "v3", "v2"), rollback()],
     ["alert critical inc-1"], {"inc-1": "refused"}, "it runs v3 now, not v2"),
    ("moved while the question waited", [ask(), deploy(30, "v3", "v2"), approve()], ["alert critical inc-1"],
     {"inc-1": "refused"}, "someone already acted"),
    ("the blamed deploy failed after the decision", [ask(), deploy(30, "v2", "v1", status="failed"), approve()],
     ["alert critical inc-1"], {"inc-1": "refused"}, "it runs v1 now, not v2"),
    ("a deploy read late but stamped before the decision refuses nothing", [rollback(), deploy(-200, "v2", "v1")],
     EXEC1, {"inc-1": "executing"}, ""),
    ("approval after a refusal: no-op", [deploy(10, "v3", "v2"), ask(), approve()],
     ["alert critical inc-1", "alert info inc-1"], {"inc-1": "refused"}, "the rollback was refused"),
    ("one rollback of a service at a time", [rollback(), ask("inc-2", ts=10), approve("inc-2", ts=20)],
     EXEC1 + ["alert critical inc-2"], {"inc-2": "refused"}, "another rollback of it (inc-1) is in progress"),
    ("no target in the decision: the deploy record's",
     [deploy(-200, "v2", "v1"), rollback(target=None)], EXEC1, {"inc-1": "executing"}, ""),
    ("no target at all: refused", [rollback(target=None)], ["alert critical inc-1"], {"inc-1": "refused"},
     "names no target or no version"),
    ("a stale decision is ignored", [deploy(-200, "v2", "v1"), tick(8 * 86400), rollback()], ["ignored inc-1"],
     {}, ""),
    ("a closed incident is forgotten after the horizon, and its redelivery is stale",
     [rollback(), result("executed"), result("verified", ts=300), tick(8 * 86400), rollback()],
     EXEC1 + DONE1 + ["verified inc-1", "alert info inc-1", "ignored inc-1"], {}, ""),
]


def run(records, gate_settings=None, round_trip=True):
    state, outputs = None, []
    for record in records:
        state, out = step(state, record, gate_settings)
        if round_trip and state is not None:
            state = json.loads(json.dumps(state))
        outputs += out
    return state, outputs


@pytest.mark.parametrize("case,records,expected,phases,words", CASES, ids=[c[0] for c in CASES])
def test_gate(case, records, expected, phases, words):
    state, outputs = run(records)
    assert [short(o) for o in outputs] == expected
    gate = ServiceGate.from_state(state) if state is not None else None
    for incident, phase in phases.items():
        assert gate is not None and gate.phase(incident) == phase
    if not phases and gate is not None:
        assert gate.phase("inc-1") is None
    if words:
        assert any(words in o.text for o in outputs if isinstance(o, Alert)), [
            o.text for o in outputs if isinstance(o, Alert)]


def test_execute_carries_the_decision_and_the_verify_command_the_evidence():
    _, outputs = run([ask(), approve(), result("executed", ts=150)])
    execute = next(o for o in outputs if isinstance(o, Execute))
    assert execute.rollback.decision == ask() and execute.rollback.target == K8S and not execute.resume
    verify = next(o for o in outputs if isinstance(o, Verify))
    assert (verify.service, verify.version, verify.executed_ts, verify.within_s) == (SVC, "v2", T0 + 150, 300.0)
    assert [(b.metric, b.baseline, b.shifted, b.onset_ts) for b in verify.blamed] == [
        ("error_rate", 0.005, 0.05, T0 - 120)]
    executed = next(o for o in outputs if isinstance(o, Alert) and "Rolled back" in o.text)
    assert executed.text == ("Rolled back checkout to v1 in 90 seconds; checking for five minutes that the "
                             "blamed metrics recover.")


def test_resume_returns_only_rollbacks_in_flight():
    state, _ = run([rollback()])
    gate = ServiceGate.from_state(state)
    [again] = gate.resume()
    assert again.resume and again.rollback.incident_id == "inc-1"
    state, _ = run([rollback(), result("executed")])
    [verify] = ServiceGate.from_state(state).resume()  # the recovery test was running: it starts again
    assert isinstance(verify, Verify) and verify.executed_ts == T0 + 120 and verify.blamed[0].metric == "error_rate"
    state, _ = run([rollback(), result("executed"), result("verified", ts=200.0)])
    assert ServiceGate.from_state(state).resume() == []


def test_next_due_ts_says_when_to_tick():
    state, _ = run([ask()], GateSettings(approval_timeout_s=600))
    assert ServiceGate.from_state(state).next_due_ts == T0 + 600
    state, _ = run([rollback()])
    assert ServiceGate.from_state(state).next_due_ts is None  # executing: nothing waits on time


def test_settings_change_the_rules():
    short_cooldown = GateSettings(cooldown_s=0)
    _, outputs = run([rollback(), result("executed"), deploy(100, "v3", "v1"),
                      rollback("inc-2", ts=200, frm="v3")], short_cooldown)
    assert sum(isinstance(o, Execute) for o in outputs) == 2


def test_a_record_of_another_service_is_refused():
    state, _ = run([ask()])
    other = Decision(**{**ask("inc-9").model_dump(), "service": "payments"})
    with pytest.raises(ContractError, match="field 'service' of inc-9: got 'payments', expected 'checkout'"):
        step(state, other)


def test_records_for_a_service_without_state():
    assert step(None, tick(0)) == (None, [])
    state, out = step(None, Approval(ts=T0, incident_id="inc-7", approved=True, by="alice"))
    assert state is None and "no decision with this incident id is known" in out[0].text
    state, out = step(None, result("executed"))
    assert state is None and isinstance(out[0], Ignored)


# -- properties --------------------------------------------------------------------------------

POOL = [rollback(), rollback(ts=40), ask(), ask(ts=20), escalate(ts=50), rollback("inc-2", ts=100),
        ask("inc-2", ts=90), approve(), approve(ts=70, by="carol"), deny(), approve("inc-2", ts=130),
        deny("inc-2", ts=140), result("executed"), result("failed"), result("verified", ts=400),
        result("not_recovered", ts=400), result("executed", "inc-2", ts=200), result("verified", "inc-2", ts=500),
        deploy(30, "v3", "v2"), deploy(-100, "v2", "v1"), deploy(160, "v2", "v1", status="failed"),
        tick(300), tick(1000), tick(5000)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(POOL), max_size=40))
def test_at_most_one_execute_per_incident_whatever_the_order_and_duplicates(records):
    _, outputs = run(records, round_trip=False)
    executes = Counter(o.rollback.incident_id for o in outputs if isinstance(o, Execute))
    assert all(n == 1 for n in executes.values()), executes
    executing = Counter(o.incident_id for o in outputs if isinstance(o, Verification) and o.status == "executing")
    assert executing == executes  # every execution is recorded as executing first, once


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(POOL), max_size=40))
def test_state_round_trip_changes_nothing(records):
    plain_state, plain = run(records, round_trip=False)
    trip_state, tripped = run(records, round_trip=True)
    assert [short(o) for o in plain] == [short(o) for o in tripped]
    assert plain == tripped
    assert plain_state == trip_state
    if plain_state is not None:
        assert ServiceGate.from_state(json.loads(json.dumps(plain_state))).to_state() == plain_state
