"""The decider on hand-written anomaly/deploy/watermark streams: policy cases, order, state."""

from __future__ import annotations

import json
import random

import pytest

from backout.contracts import Alert, Anomaly, Decision, Deploy, Watermark
from detectors.config import BackoutConfig
from detectors.decider import Decider, incident_id

T = 1_700_000_000.0
BASE = {"error_rate": 0.005, "latency_p95": 0.2, "health": 1.0}


def dep(ts: float, version: str, prev: str | None, service: str = "checkout", status: str = "finished",
        deploy_id: str | None = None) -> Deploy:
    return Deploy(ts=T + ts, service=service, deploy_id=deploy_id or f"{service}-{version}", version=version,
                  previous_version=prev, status=status)


def anom(onset: float, factor: float, metric: str = "error_rate", service: str = "checkout",
         detect_after_s: float = 30.0) -> Anomaly:
    base = BASE[metric]
    cur = base * factor if metric != "health" else base / factor
    return Anomaly(ts=T + onset + detect_after_s, service=service, metric=metric, detector="test",
                   onset_ts=T + onset, detected_ts=T + onset + detect_after_s, baseline=base,
                   current=cur, ratio=cur / base, score=10.0)


def marks(until: float, services: int = 8, step: float = 5.0, start: float = -7200.0,
          partition: int = 0) -> list[Watermark]:
    n = int((until - start) / step) + 1
    return [Watermark(ts=T + start + i * step, partition=partition, services=services) for i in range(n)]


def run(records: list, config: BackoutConfig | None = None, until: float = 900.0) -> list[Decision | Alert]:
    """Interleave ``records`` (by event time, inputs first) with watermarks of one partition."""
    decider = Decider(config or BackoutConfig())
    stream = sorted(records + marks(until), key=lambda r: (r.ts, r.type == "watermark"))
    return [out for rec in stream for out in decider.handle(rec)]


def decisions(outputs: list) -> list[Decision]:
    return [o for o in outputs if isinstance(o, Decision)]


def with_mode(mode: str, service: str | None = None) -> BackoutConfig:
    if service is None:
        return BackoutConfig.model_validate({"policy": {"mode": mode}})
    return BackoutConfig.model_validate({"services": {service: {"mode": mode}}})


def traffic(onset: float, factor: float, service: str) -> Anomaly:
    """A service's requests rising ``factor`` times from 100 a sample (context, never harm)."""
    return Anomaly(ts=T + onset + 30, service=service, metric="requests", detector="test", onset_ts=T + onset,
                   detected_ts=T + onset + 30, baseline=100.0, current=100.0 * factor, ratio=factor, score=10.0)


HISTORY = [dep(-7000, "v1", "v0", deploy_id="d-old")]  # v0 ran before; v1 has run clean for hours

# (case, records, config, expected decisions as (service, action, from, to))
CASES = [
    ("clear 10x error 90 s after the deploy rolls back",
     HISTORY + [dep(0, "v2", "v1"), anom(90, 10)], None, [("checkout", "rollback", "v2", "v1")]),
    ("health collapse rolls back",
     HISTORY + [dep(0, "v2", "v1"), anom(20, 2.0, "health")], None, [("checkout", "rollback", "v2", "v1")]),
    ("moderate latency growth asks first",
     HISTORY + [dep(0, "v2", "v1"), anom(60, 1.5, "latency_p95")], None,
     [("checkout", "request_approval", "v2", "v1")]),
    ("a shift that starts 12 min after the deploy asks first",
     HISTORY + [dep(0, "v2", "v1"), anom(720, 10)], None, [("checkout", "request_approval", "v2", "v1")]),
    ("a shift 12 min after the deploy as traffic surged on 5 of 8 services: the surge's, no question",
     HISTORY + [dep(0, "v2", "v1"), anom(720, 10)] + [traffic(690 + 10 * i, 2.0, f"svc{i}") for i in range(5)],
     None, []),
    ("a shift 90 s after the deploy as traffic surged: still the deploy's",
     HISTORY + [dep(0, "v2", "v1"), anom(90, 10)] + [traffic(60 + 10 * i, 2.0, f"svc{i}") for i in range(5)],
     None, [("checkout", "rollback", "v2", "v1")]),
    ("a shift 20 min after the deploy, when a service deployed as long ago shifted too: a shared cause",
     HISTORY + [dep(0, "v2", "v1"), dep(10, "p2", "p1", service="payments"), anom(1200, 10),
                anom(1195, 6, service="payments")], None, []),
    ("onset before the deploy: no blame",
     HISTORY + [dep(0, "v2", "v1"), anom(-120, 10, detect_after_s=130)], None, []),
    ("no deploy at all: alert only", HISTORY + [anom(600, 10)], None, []),
    ("deploy older than the window: no blame", HISTORY + [dep(0, "v2", "v1"), anom(2400, 10)], None, []),
    ("shift too small to act on", HISTORY + [dep(0, "v2", "v1"), anom(60, 1.1, "latency_p95")], None, []),
    ("shared incident across 5 of 8 services escalates",
     HISTORY + [dep(0, "v2", "v1"), anom(90, 6)]
     + [anom(80 + 7 * i, 10, service=f"svc{i}") for i in range(4)], None,
     [("checkout", "escalate", "v2", None)]),
    ("a release train: the deployed service with the largest shift is blamed, though some callers' onsets "
     "were dated a few seconds before its own",
     HISTORY + [dep(0, "v2", "v1"), anom(90, 10)]
     + [anom(84 + 3 * i, 4, service=f"svc{i}") for i in range(4)], None,
     [("checkout", "request_approval", "v2", "v1")]),
    ("a deployed service that moved before the others is blamed, not clear-cut (cascade to callers)",
     HISTORY + [dep(0, "v2", "v1"), anom(30, 10)]
     + [anom(32 + 2 * i, 3, service=f"svc{i}", detect_after_s=25) for i in range(4)], None,
     [("checkout", "request_approval", "v2", "v1")]),
    ("latency growth while the service's own traffic rose: ask, never roll back",
     HISTORY + [dep(0, "v2", "v1"), anom(60, 4, "latency_p95"),
                Anomaly(ts=T + 80, service="checkout", metric="requests", detector="test", onset_ts=T + 50,
                        detected_ts=T + 80, baseline=100, current=250, ratio=2.5, score=9)], None,
     [("checkout", "request_approval", "v2", "v1")]),
    ("latency growth below the clear-cut size while traffic rose by its square root: load, no question",
     HISTORY + [dep(0, "v2", "v1"), anom(60, 2.0, "latency_p95"),
                Anomaly(ts=T + 80, service="checkout", metric="requests", detector="test", onset_ts=T + 50,
                        detected_ts=T + 80, baseline=100, current=150, ratio=1.5, score=9)], None, []),
    ("the same growth with traffic up by less than its square root: ask",
     HISTORY + [dep(0, "v2", "v1"), anom(60, 2.0, "latency_p95"),
                Anomaly(ts=T + 80, service="checkout", metric="requests", detector="test", onset_ts=T + 50,
                        detected_ts=T + 80, baseline=100, current=130, ratio=1.3, score=9)], None,
     [("checkout", "request_approval", "v2", "v1")]),
    ("latency growth minutes after the service's own traffic rose as much: load, no question",
     HISTORY + [dep(0, "v2", "v1"), anom(330, 2.5, "latency_p95"),
                Anomaly(ts=T + 180, service="checkout", metric="requests", detector="test", onset_ts=T + 150,
                        detected_ts=T + 180, baseline=100, current=260, ratio=2.6, score=9)], None, []),
    ("a traffic shift alone is never blamed",
     HISTORY + [dep(0, "v2", "v1"),
                Anomaly(ts=T + 80, service="checkout", metric="requests", detector="test", onset_ts=T + 50,
                        detected_ts=T + 80, baseline=100, current=250, ratio=2.5, score=9)], None, []),
    ("hotfix after a bad deploy: the bad deploy is blamed, back to the last good",
     HISTORY + [dep(0, "v2", "v1"), anom(60, 10), dep(75, "v2.1", "v2")], None,
     [("checkout", "rollback", "v2.1", "v1")]),
    ("a bad hotfix after a rolled back bad deploy goes back past both",
     HISTORY + [dep(0, "v2", "v1"), anom(60, 10), dep(1000, "v1", "v2", status="rolled_back", deploy_id="rb"),
                dep(1500, "v3", "v1"), anom(1560, 10, "latency_p95")], None,
     [("checkout", "rollback", "v2", "v1"), ("checkout", "rollback", "v3", "v1")]),
    ("quick succession: ambiguous, and the target predates both",
     HISTORY + [dep(0, "v2", "v1"), dep(40, "v3", "v2"), anom(70, 10)], None,
     [("checkout", "request_approval", "v3", "v1")]),
    ("a deploy that returns to an earlier version is not blamed",
     HISTORY + [dep(0, "v2", "v1"), dep(1200, "v1", "v2", deploy_id="undo"), anom(1230, 10)], None, []),
    ("concurrent deploys: the service that moved first is blamed, not its caller",
     HISTORY + [dep(-7000, "f1", "f0", service="frontend"), dep(0, "v2", "v1"), dep(5, "f2", "f1", service="frontend"),
                anom(30, 10), anom(50, 4, service="frontend")], None, [("checkout", "rollback", "v2", "v1")]),
    ("approval mode turns a clear rollback into a question",
     HISTORY + [dep(0, "v2", "v1"), anom(90, 10)], with_mode("approval"),
     [("checkout", "request_approval", "v2", "v1")]),
    ("per-service approval mode",
     HISTORY + [dep(0, "v2", "v1"), anom(90, 10)], with_mode("approval", "checkout"),
     [("checkout", "request_approval", "v2", "v1")]),
    ("off mode decides but never acts", HISTORY + [dep(0, "v2", "v1"), anom(90, 10)], with_mode("off"), []),
    ("no known-good version: escalate",
     [dep(0, "v2", None, deploy_id="first"), anom(90, 10)], None, [("checkout", "escalate", "v2", None)]),
    ("slow rollout: blamed from its start", HISTORY + [dep(0, "v2", "v1", status="started"), anom(400, 8),
                                                      dep(900, "v2", "v1")], None,
     [("checkout", "request_approval", "v2", "v1")]),
    ("latency growth no larger than the service's own traffic growth: load, not the deploy",
     HISTORY + [dep(0, "v2", "v1"), anom(60, 1.8, "latency_p95"),
                Anomaly(ts=T + 80, service="checkout", metric="requests", detector="test", onset_ts=T + 50,
                        detected_ts=T + 80, baseline=100, current=250, ratio=2.5, score=9)], None, []),
    ("a moderate shift that began 10 min after the deploy: nobody is asked",
     HISTORY + [dep(0, "v2", "v1"), anom(600, 1.6, "latency_p95")], None, []),
    ("a large shift that began 10 min after the deploy: asked",
     HISTORY + [dep(0, "v2", "v1"), anom(600, 4, "latency_p95")], None,
     [("checkout", "request_approval", "v2", "v1")]),
    ("a shift confirmed longer than the window after the deploy: nobody is asked",
     HISTORY + [dep(0, "v2", "v1"), anom(120, 10, detect_after_s=1800)], None, []),
    ("a question leaves its version good: the next bad deploy goes back to it, not two versions",
     HISTORY + [dep(0, "v2", "v1"), anom(60, 1.6, "latency_p95"), dep(3600, "v3", "v2"), anom(3660, 10)], None,
     [("checkout", "request_approval", "v2", "v1"), ("checkout", "rollback", "v3", "v2")]),
    ("a rollback decision makes its version bad: the next one goes back past it",
     HISTORY + [dep(0, "v2", "v1"), anom(60, 10), dep(3600, "v3", "v2"), anom(3660, 10)], None,
     [("checkout", "rollback", "v2", "v1"), ("checkout", "rollback", "v3", "v1")]),
    ("two bad deploys seconds apart, latency and errors: both rolled back (another metric is no echo)",
     HISTORY + [dep(-7000, "p1", "p0", service="payments"), dep(0, "p2", "p1", service="payments"),
                dep(10, "v2", "v1"), anom(20, 4, "latency_p95", service="payments"), anom(30, 28)], None,
     [("payments", "rollback", "p2", "p1"), ("checkout", "rollback", "v2", "v1")]),
    ("two bad deploys seconds apart, the later shift far larger: both rolled back",
     HISTORY + [dep(-7000, "p1", "p0", service="payments"), dep(0, "p2", "p1", service="payments"),
                dep(10, "v2", "v1"), anom(20, 6, service="payments"), anom(45, 28)], None,
     [("payments", "rollback", "p2", "p1"), ("checkout", "rollback", "v2", "v1")]),
    ("with a call graph, a caller of the first mover is excused",
     HISTORY + [dep(-7000, "p1", "p0", service="payments"), dep(0, "p2", "p1", service="payments"),
                dep(10, "v2", "v1"), anom(20, 6, service="payments"), anom(30, 28)],
     BackoutConfig.model_validate({"policy": {"depends_on": {"checkout": ["cart"], "cart": ["payments"]}}}),
     [("payments", "rollback", "p2", "p1")]),
    ("with a call graph, a service that does not call the first mover is not excused",
     HISTORY + [dep(-7000, "p1", "p0", service="payments"), dep(0, "p2", "p1", service="payments"),
                dep(10, "v2", "v1"), anom(20, 10, service="payments"), anom(30, 5)],
     BackoutConfig.model_validate({"policy": {"depends_on": {"frontend": ["checkout", "payments"]}}}),
     [("payments", "rollback", "p2", "p1"), ("checkout", "rollback", "v2", "v1")]),
]


@pytest.mark.parametrize("case,records,config,expected", CASES, ids=[c[0] for c in CASES])
def test_policy_cases(case, records, config, expected):
    out = run(records, config, until=max(r.ts for r in records) - T + 200)
    got = [(d.service, d.action, d.from_version, d.to_version) for d in decisions(out)]
    assert got == expected
    for d in decisions(out):
        assert any(isinstance(a, Alert) and a.incident_id == d.incident_id and a.text == d.reason for a in out)


def test_clear_rollback_sentence_and_incident():
    out = run(HISTORY + [dep(0, "v2.15.1", "v2.15.0"), anom(45, 10)])
    (d,) = decisions(out)
    assert d.reason == ("Error rate went from 0.5% to 5% (10x) 45 seconds after the deployment of v2.15.1 "
                        "to checkout. Rolling back to v2.15.0.")
    assert d.incident_id == incident_id("checkout", "checkout-v2.15.1")
    assert d.ts == T + 45 + 30 + 10  # detected + hold_s: event time, not a wall clock
    assert d.confidence == 1.0
    assert {e["kind"] for e in d.evidence} == {"anomaly", "deploy"}


def test_a_shift_that_began_late_for_its_deploy_waits_for_other_services_to_show():
    """The deploy's anchored test sees a shared incident before the monitors of services nobody deployed."""
    lone = decisions(run(HISTORY + [dep(0, "v2", "v1"), anom(90, 10)]))
    assert [(d.action, d.ts) for d in lone] == [("rollback", T + 90 + 30 + 60)]  # detected + shared.hold_s
    shared = [anom(86, 12, service=s, detect_after_s=50) for s in ("cart", "search", "users")]
    out = run(HISTORY + [dep(0, "v2", "v1"), anom(90, 10), *shared])
    assert [d.action for d in decisions(out)] == ["escalate"]  # 4 of 8 together: shared, the deploy spared
    assert "a shared dependency, a traffic surge, or this deploy's fault" in decisions(out)[0].reason  # 90 s in
    late = [anom(286, 12, service=s, detect_after_s=50) for s in ("cart", "search", "users")]
    out = run(HISTORY + [dep(0, "v2", "v1"), anom(290, 10), *late])
    assert "a shared dependency or a traffic surge, not this deploy" in decisions(out)[0].reason  # 290 s in


def test_approval_sentence():
    out = run(HISTORY + [dep(0, "v2.15.1", "v2.15.0"), anom(150, 10)], with_mode("approval"))
    (d,) = decisions(out)
    assert d.reason.startswith("Error rate went from 0.5% to 5% (10x) after the deployment of v2.15.1 "
                               "to checkout four minutes ago")
    assert d.reason.endswith("I recommend rolling back to v2.15.0. Should I proceed?")


def test_off_mode_alerts_what_it_would_do():
    out = run(HISTORY + [dep(0, "v2", "v1"), anom(90, 10)], with_mode("off"))
    (alert,) = [o for o in out if isinstance(o, Alert)]
    assert alert.text.endswith("Backout would roll back to v1; the policy is off here, so it is not acting.")


def test_one_incident_one_decision_whatever_the_redeliveries():
    a = anom(90, 10)
    out = run(HISTORY + [dep(0, "v2", "v1"), a, a, anom(95, 3, "latency_p95"), dep(0, "v2", "v1")])
    assert len(decisions(out)) == 1


def test_late_deploy_record_within_the_lateness_is_joined():
    decider = Decider(BackoutConfig())
    out = []
    # a shift confirmed fast (10 s), and the deploy just before its onset read 15 s behind the metrics:
    # the decision waits until onset + onset_slack_s + deploy_lateness_s for it
    late = marks(100) + [anom(90, 10, detect_after_s=10), dep(85, "v2", "v1")] + marks(200, start=105)
    for rec in late:
        out += decider.handle(rec)
    assert [(d.action, d.to_version, d.ts) for d in decisions(out)] == [("rollback", "v1", T + 115)]


def test_deploy_read_after_the_decision_is_not_joined():
    decider = Decider(BackoutConfig())
    out = []
    for rec in marks(100) + [anom(90, 10)] + marks(200, start=105) + [dep(0, "v2", "v1")] + marks(300, start=205):
        out += decider.handle(rec)
    assert decisions(out) == [] and "no deploy" in out[0].text


def _scenario() -> list:
    """Two partitions' worth of inputs: a bad deploy, a shared incident, a caller, noise."""
    return HISTORY + [
        dep(-7000, "f1", "f0", service="frontend"), dep(-7000, "p1", "p0", service="payments"),
        dep(0, "v2", "v1"), dep(5, "f2", "f1", service="frontend"), anom(30, 10), anom(50, 4, service="frontend"),
        anom(45, 1.6, "latency_p95"),
        dep(1000, "p2", "p1", service="payments"),
        *[anom(1100 + 5 * i, 5, "latency_p95", service=s) for i, s in enumerate(["a", "payments", "b", "c", "d"])],
        anom(2000, 2.5, "health", service="search"),
    ]


def _interleave(seed: int) -> list:
    """Inputs in a random order that respects causality: an input stamped t is read before the
    global watermark passes t (sometimes long before), partitions drift against each other."""
    rng = random.Random(seed)
    stream = marks(2400, services=4, partition=0) + marks(2400, services=4, partition=1)
    stream.sort(key=lambda w: w.ts + rng.uniform(-15, 15))
    pending = list(_scenario())
    rng.shuffle(pending)
    placed: list = []
    front = {0: 0.0, 1: 0.0}
    for w in stream:
        front[w.partition] = max(front[w.partition], w.ts)
        now = min(front.values())
        ready = [r for r in pending if getattr(r, "detected_ts", r.ts) <= now + rng.choice([0, 0, 30])]
        for r in ready:
            pending.remove(r)
        placed += ready + [w]
    return placed + pending


def _key(o):
    return o.model_dump_json()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_decisions_do_not_depend_on_interleaving(seed):
    reference = run(_scenario(), until=2400)
    decider = Decider(BackoutConfig())
    got = [o for rec in _interleave(seed) for o in decider.handle(rec)]
    assert sorted(map(_key, got)) == sorted(map(_key, reference))
    actions = sorted((d.service, d.action) for d in decisions(reference))
    assert actions == [("checkout", "rollback"), ("payments", "escalate")]


def test_state_round_trip_mid_stream_gives_the_same_outputs():
    stream = sorted(_scenario() + marks(2400), key=lambda r: (r.ts, r.type == "watermark"))
    straight = Decider(BackoutConfig())
    expected = [o for rec in stream for o in straight.handle(rec)]
    got = []
    decider = Decider(BackoutConfig())
    sizes = []
    for rec in stream:
        state = json.loads(json.dumps(decider.to_state()))
        sizes.append(len(json.dumps(state)))
        decider = Decider.from_state(state, BackoutConfig())
        got += decider.handle(rec)
    assert [_key(o) for o in got] == [_key(o) for o in expected]
    assert decider.to_state() == straight.to_state()
    assert max(sizes) < 20_000


def test_state_is_pruned_by_event_time():
    decider = Decider(BackoutConfig())
    for rec in sorted(_scenario() + marks(4 * 3600 + 7200), key=lambda r: (r.ts, r.type == "watermark")):
        decider.handle(rec)
    state = decider.to_state()
    assert state["shifts"] == [] and state["pending"] == [] and state["incidents"] == {}


def update(a: Anomaly, after_s: float, factor: float) -> Anomaly:
    """The monitor re-sending a growing shift: same onset, later detection, bigger level."""
    cur = a.baseline * factor
    return a.model_copy(update={"ts": a.ts + after_s, "detected_ts": a.detected_ts + after_s, "current": cur,
                                "ratio": factor})


def test_a_question_is_upgraded_to_a_rollback_when_it_becomes_clear_cut():
    first = anom(60, 2.5)
    out = run(HISTORY + [dep(0, "v2", "v1"), first, update(first, 120, 10)])
    got = [(d.action, d.incident_id, d.to_version) for d in decisions(out)]
    inc = incident_id("checkout", "checkout-v2")
    assert got == [("request_approval", inc, "v1"), ("rollback", inc, "v1")]
    assert decisions(out)[1].reason.endswith("Rolling back to v1 without waiting for the approval asked "
                                             "two minutes ago.")


@pytest.mark.parametrize("case,extra,config", [
    ("still moderate", [update(anom(60, 2.5), 120, 3)], None),
    ("approval mode never acts alone", [update(anom(60, 2.5), 120, 10)], with_mode("approval")),
    ("a human deployed a hotfix since the question", [dep(150, "v2.1", "v2"), update(anom(60, 2.5), 180, 10)], None),
])
def test_no_upgrade(case, extra, config):
    out = run(HISTORY + [dep(0, "v2", "v1"), anom(60, 2.5), *extra], config)
    assert [d.action for d in decisions(out)] == ["request_approval"]


def test_a_shift_that_grew_after_a_redeploy_asks_nothing_of_the_deploy_before():
    """A small shift after v2 (watched), grown 5x after v3 was deployed: the monitor re-reports it with
    v2-era onset, but the growth is no evidence against v2, and v3's own tests judge v3."""
    first = anom(600, 1.3, "latency_p95")
    grown = update(first, 900, 5.0).model_copy(update={"worsened": True})
    out = run(HISTORY + [dep(0, "v2", "v1"), first, dep(1200, "v3", "v2"), grown], until=2400.0)
    assert decisions(out) == []
    said = [o.text for o in out if isinstance(o, Alert)]
    assert any("it grew after v3 was deployed" in t for t in said)
    kept = run(HISTORY + [dep(0, "v2", "v1"), first, grown], until=2400.0)  # nobody deployed since: v2's question
    assert [(d.action, d.from_version) for d in decisions(kept)] == [("request_approval", "v2")]


def test_another_metric_can_upgrade_and_a_rollback_is_never_repeated():
    out = run(HISTORY + [dep(0, "v2", "v1"), anom(60, 1.6, "latency_p95"), anom(200, 2.0, "health"),
                         anom(300, 20)])
    assert [d.action for d in decisions(out)] == ["request_approval", "rollback"]
    assert len({d.incident_id for d in decisions(out)}) == 1


def test_shared_incident_gives_one_grouped_alert():
    others = [anom(80 + 7 * i, 10, service=f"svc{i}") for i in range(5)]
    out = run(HISTORY + [dep(0, "v2", "v1"), anom(90, 6)] + others)
    assert [d.action for d in decisions(out)] == ["escalate"]
    alerts = [o for o in out if isinstance(o, Alert)]
    # six shifts, two alerts: the group's (svc1 was due first) and the spared deploy's escalation
    assert [a.incident_id[:6] for a in alerts] == ["shared", "inc-c5"]
    assert "4 of 8 services at the same time (checkout, svc0, svc1, svc2)" in alerts[1].text


def test_shared_incident_without_deploys_is_one_alert():
    out = run([anom(80 + 7 * i, 6, service=f"svc{i}") for i in range(6)])
    # the first shift is alone when it is due; from the fourth on they are one group, one alert
    assert [o.incident_id[:6] for o in out] == ["shift-", "shared"]
    assert "4 of 8 services at the same time" in out[1].text


def test_a_caller_moving_at_the_same_moment_as_a_rolled_back_callee_is_its_follower():
    # onsets 5 s apart (within onset_slack_s): payments is decided first, checkout follows it
    out = run(HISTORY + [dep(-7000, "p1", "p0", service="payments"), dep(-2, "p2", "p1", service="payments"),
                         dep(0, "v2", "v1"), anom(16, 11, service="payments"), anom(13, 5.6, detect_after_s=80)])
    assert [(d.service, d.action) for d in decisions(out)] == [("payments", "rollback")]


def test_a_release_train_member_waits_a_sampling_interval_for_its_callee():
    """1-min samples: the caller's third shifted sample is stamped 11 s before its callee's. Decided
    at once it would be rolled back; an interval later its callee's larger shift is seen first."""
    def minute(a: Anomaly) -> Anomaly:
        return a.model_copy(update={"samples": 3})
    train = [dep(-7000, "p1", "p0", service="payments"), dep(-15, "p2", "p1", service="payments"), dep(0, "v2", "v1")]
    caller = minute(anom(44, 5, detect_after_s=120))
    out = run(HISTORY + train + [caller, minute(anom(55, 8, service="payments", detect_after_s=120))])
    # at the same moment (within two intervals) the larger shift is the cause; asked, as both deployed
    assert [(d.service, d.action) for d in decisions(out)] == [("payments", "request_approval")]
    assert "checkout (also just deployed) moved at the same moment" in decisions(out)[0].reason
    alone = decisions(run(HISTORY + [dep(0, "v2", "v1"), caller]))
    assert [(d.service, d.action, d.ts - T) for d in alone] == [("checkout", "rollback", 174.0)]  # hold_s only
    graph = BackoutConfig.model_validate({"policy": {"depends_on": {"payments": ["checkout"]}}})
    train_of_a_caller = decisions(run(HISTORY + train + [caller], graph))  # payments calls it, not the reverse
    assert [(d.service, d.action, d.ts - T) for d in train_of_a_caller] == [("checkout", "rollback", 174.0)]


def test_onset_dated_before_the_deploy_but_confirmed_after_it_is_not_its_fault():
    late = anom(-400, 3.2, detect_after_s=440).model_copy(update={"samples": 45})
    out = run(HISTORY + [dep(0, "v2", "v1"), late])
    assert decisions(out) == []
    assert any("before the deployment of v2: not that deploy's fault" in o.text for o in out)


def test_confirmed_before_the_deploy_is_never_blamed():
    early = anom(-120, 8, detect_after_s=125).model_copy(update={"samples": 13})  # 1 sample after the deploy
    assert decisions(run(HISTORY + [dep(0, "v2", "v1"), early])) == []


def test_hotfix_after_a_rollback_decision_is_not_blamed_for_the_old_shift():
    out = run(HISTORY + [dep(0, "v2", "v1"), anom(60, 10), dep(600, "v2.1", "v2"), anom(1500, 10)])
    assert [(d.action, d.deploy_id) for d in decisions(out)] == [("rollback", "checkout-v2")]


def test_slow_rollout_is_blamed_from_its_first_record_and_rolled_back_when_clear():
    out = run(HISTORY + [dep(0, "v2", "v1", status="started"), anom(60, 12), dep(1200, "v2", "v1")])
    assert [(d.action, d.deploy_id, d.to_version) for d in decisions(out)] == [("rollback", "checkout-v2", "v1")]


def test_a_version_2_state_loads_and_decides_the_same():
    """Version 2 kept an anomaly's first ten fields as a row; version 3 keeps all of it."""
    stream = sorted(HISTORY + [dep(0, "v2", "v1"), anom(60, 2.5)] + marks(40),
                    key=lambda r: (r.ts, r.type == "watermark"))
    decider = Decider(BackoutConfig())
    for rec in stream:
        decider.handle(rec)
    state = json.loads(json.dumps(decider.to_state()))
    assert state["v"] == 3 and len(state["shifts"]) == 1
    old = {**state, "v": 2, "shifts": [row[:10] for row in state["shifts"]],
           "pending": [[due, ext, row[:10]] for due, ext, row in state["pending"]]}
    rest = marks(900, start=45)
    current, restored = Decider.from_state(state, BackoutConfig()), Decider.from_state(old, BackoutConfig())
    expected = [o for rec in rest for o in current.handle(rec)]
    got = [o for rec in rest for o in restored.handle(rec)]
    assert decisions(expected) and [_key(o) for o in got] == [_key(o) for o in expected]


def test_a_shift_that_may_have_begun_before_the_deploy_is_asked_about_not_rolled_back():
    """The anchored test dated a clear 10x shift after the deploy, but the samples before it could
    be its start too (a noisy stream cannot date a shift within a few samples)."""
    unsure = anom(10, 10).model_copy(update={"earliest_onset_ts": T - 70.0})
    out = run(HISTORY + [dep(0, "v2", "v1"), unsure])
    assert [(d.action, d.to_version) for d in decisions(out)] == [("request_approval", "v1")]
    assert "may have begun up to 70 seconds before the deploy" in decisions(out)[0].reason
    sure = anom(10, 10).model_copy(update={"earliest_onset_ts": T - 5.0})  # within onset_slack_s: the same moment
    assert [d.action for d in decisions(run(HISTORY + [dep(0, "v2", "v1"), sure]))] == ["rollback"]
