"""Correlation table: which deploy a shift is blamed on, or why none is."""

from __future__ import annotations

import pytest

from backout.contracts import Anomaly
from detectors.config import PolicyConfig
from detectors.correlation import adverse_factor, correlate
from detectors.deploys import Change, ServiceView

T = 1_700_000_000.0
POLICY = PolicyConfig()


def anomaly(service, metric, onset_ts, detected_ts, baseline, current, ratio, score, detector, samples=0):
    return Anomaly(ts=detected_ts, service=service, metric=metric, onset_ts=onset_ts, detected_ts=detected_ts,
                   baseline=baseline, current=current, ratio=ratio, score=score, detector=detector,
                   samples=samples)


def shift(service="a", onset=100.0, metric="error_rate", detect_after=30.0, factor=10.0):
    return anomaly(service, metric, T + onset, T + onset + detect_after, 0.01, 0.01 * factor, factor, 9.0, "test")


def sampled(service, onset, factor, step=10.0):
    """A shift confirmed on its third sample of a stream sampled every ``step`` seconds."""
    return anomaly(service, "latency_p95", T + onset, T + onset + 2 * step, 0.2, 0.2 * factor, factor, 9.0,
                   "test", samples=3)


def view(*changes):
    return ServiceView(current=changes[-1].version if changes else "v1",
                       changes=list(changes), known_good=["v1"])


def change(ts, version="v2", deploy_id=None, prev="v1"):
    return Change(deploy_id or f"d-{version}", version, prev, T + ts)


def judge(s, own, others=(), views=None, services=8, extended=True):
    views = views or {}
    due = s.detected_ts + 20
    return correlate(s, own, [s, *others], lambda name: views.get(name, ServiceView()), services, POLICY,
                     due, extended)


# (case, shift, own changes, other shifts, other services' changes, expected kind, blamed version, leader)
CASES = [
    ("onset after the deploy: blame", shift(onset=90), [change(0)], [], {}, "blame", "v2", None),
    ("onset just before the deploy, within the slack: blame", shift(onset=-5), [change(0)], [], {}, "blame", "v2", None),
    ("onset before the deploy: not its fault", shift(onset=-120, detect_after=150), [change(0)], [], {}, "before_deploy", None, None),
    ("no deploy", shift(onset=90), [], [], {}, "no_deploy", None, None),
    ("a deploy read after the decision time is not seen",
     shift(onset=-120), [change(0)], [], {}, "no_deploy", None, None),
    ("deploy older than the window", shift(onset=2000), [change(0)], [], {}, "no_deploy", None, None),
    ("quick succession: blame the latest", shift(onset=90), [change(0), change(40, "v3")], [], {}, "blame", "v3", None),
    ("5 of 8 services together, not first: shared",
     shift(onset=100), [change(0)], [shift(s, 90 + 5 * i) for i, s in enumerate("bcde")], {}, "shared", "v2", None),
    ("3 of 8 together, not first, first look: wait for the others",
     shift(onset=100), [change(0)], [shift(s, 95) for s in "bc"], {}, "wait", "v2", None),
    ("3 of 8 together after the wait: blame",
     shift(onset=100), [change(0)], [shift(s, 95) for s in "bc"], {}, "blame", "v2", None),
    ("other metric shifting elsewhere is not shared",
     shift(onset=100), [change(0)], [shift(s, 95, "latency_p95") for s in "bcde"], {}, "blame", "v2", None),
    ("caller of a deployed service that moved first",
     shift("a", onset=60), [change(0)], [shift("b", 30)], {"b": view(change(5, "b2", prev="b1"))},
     "follower", None, "b"),
    ("the deployed service that moved first is blamed",
     shift("b", onset=30), [change(5, "b2", prev="b1")], [shift("a", 60)], {"a": view(change(0))},
     "blame", "b2", None),
    ("a deployed service moved first, on another metric: this shift is its own",
     shift("a", onset=60), [change(0)], [shift("b", 30, "latency_p95")], {"b": view(change(5, "b2", prev="b1"))},
     "blame", "v2", None),
    ("a deployed service moved first, by far less: this shift is its own",
     shift("a", onset=60, factor=30.0), [change(0)], [shift("b", 30, factor=3.0)],
     {"b": view(change(5, "b2", prev="b1"))}, "blame", "v2", None),
    ("an earlier mover without a deploy does not make us a follower",
     shift("a", onset=60), [change(0)], [shift("b", 30)], {}, "blame", "v2", None),
    ("a service without a deploy moved at the same moment by far more: this shift is its echo",
     shift("a", onset=60, factor=3.0), [change(0)], [shift("b", 55, factor=30.0)], {}, "echo", None, "b"),
    ("a deployed service moved at the same moment by more: this one is its caller",
     shift("a", onset=100, factor=5.0), [change(0)], [shift("b", 98, factor=8.0)],
     {"b": view(change(5, "b2", prev="b1"))}, "follower", None, "b"),
    ("at the same moment, the larger of two deployed shifts is the cause",
     shift("a", onset=98, factor=8.0), [change(0)], [shift("b", 100, factor=5.0)],
     {"b": view(change(5, "b2", prev="b1"))}, "blame", "v2", None),
    ("a release train: the largest shift leads, though callers were dated a few seconds before it",
     shift("a", onset=100), [change(0)], [shift(s, t, factor=4.0) for s, t in zip("bcde", (95, 97, 102, 110), strict=True)],
     {}, "blame", "v2", None),
    ("a cascade at 10-s samples: callers stamped a few seconds before it, some larger (two paths): it leads",
     sampled("a", 100, 3.0), [change(0)], [sampled(s, t, f) for s, t, f in
                                           (("b", 94, 3.5), ("c", 96, 2.5), ("d", 97, 4.0), ("e", 104, 3.0))],
     {}, "blame", "v2", None),
    ("the same, with another service deployed just before, shifting within the interval: who leads is unknown",
     sampled("a", 100, 3.0), [change(0)], [sampled(s, t, f) for s, t, f in
                                           (("b", 94, 3.5), ("c", 96, 2.5), ("d", 97, 4.0), ("e", 108, 3.0))],
     {"e": view(change(20, "e2", prev="e1"))}, "shared", "v2", None),
    ("the same, one caller a whole interval before it: shared",
     sampled("a", 100, 3.0), [change(0)], [sampled(s, t, f) for s, t, f in
                                           (("b", 88, 3.5), ("c", 96, 2.5), ("d", 97, 4.0), ("e", 104, 3.0))],
     {}, "shared", "v2", None),
    ("a sparse stream's shift dated right after its deploy, that may have begun with the others: shared",
     shift("a", onset=20, detect_after=320).model_copy(update={"latest_onset_ts": T + 290.0}), [change(0)],
     [shift(s, t) for s, t in zip("bcd", (270, 280, 300), strict=True)], {}, "shared", "v2", None),
    ("the same shift without that doubt: apart from theirs, its deploy's",
     shift("a", onset=20, detect_after=320), [change(0)], [shift(s, t) for s, t in zip("bcd", (270, 280, 300),
                                                                                        strict=True)], {},
     "blame", "v2", None),
    ("the same train minutes after the deploy: no cascade of it, a shared cause",
     shift("a", onset=400), [change(0)], [shift(s, t, factor=4.0) for s, t in zip("bcde", (395, 397, 402, 410), strict=True)],
     {}, "shared", "v2", None),
    ("minutes after the deploy, with a service nobody deployed, no later: theirs, not asked",
     shift("a", onset=300), [change(0)], [shift("b", 290)], {}, "alongside", None, None),
    ("90 s after its deploy, first look: wait for other services' shifts to show",
     shift("a", onset=90), [change(0)], [], {}, "wait", "v2", None),
    ("45 s after its deploy, first look: decided at once", shift("a", onset=45), [change(0)], [], {}, "blame", "v2", None),
    ("at the same moment as two services nobody deployed: blamed, not clear-cut",
     shift("a", onset=60), [change(0)], [shift("b", 62), shift("c", 65)], {}, "blame", "v2", None),
    ("right after the deploy, with a service nobody deployed: blamed, not clear-cut",
     shift("a", onset=60), [change(0)], [shift("b", 50)], {}, "blame", "v2", None),
]


@pytest.mark.parametrize("case,s,own,others,views,kind,blamed,leader", CASES, ids=[c[0] for c in CASES])
def test_correlate(case, s, own, others, views, kind, blamed, leader):
    verdict = judge(s, view(*own), others, views, extended="first look" not in case)
    assert verdict.kind == kind
    blamed_version = verdict.change.version if kind in ("blame", "shared", "wait") else None
    assert blamed_version == blamed
    assert verdict.leader == leader


def test_a_shift_alongside_others_names_them():
    verdict = judge(shift("a", onset=300), view(change(0)), [shift("b", 290), shift("c", 340)])
    assert (verdict.kind, verdict.shared) == ("alongside", ["b"])  # c moved later: a caller, maybe


def test_quick_succession_is_ambiguous_and_names_the_earlier_deploy():
    verdict = judge(shift(onset=90), view(change(0), change(40, "v3")))
    assert [c.version for c in verdict.also_suspect] == ["v2"] and verdict.ambiguity


def test_shared_needs_half_of_a_large_fleet():
    others = [shift(f"s{i}", 95) for i in range(5)]  # 6 of 20 services
    assert judge(shift(onset=100), view(change(0)), others, services=20).kind == "blame"
    assert judge(shift(onset=100), view(change(0)), others, services=10, extended=False).kind == "shared"


def test_shifts_detected_after_the_due_time_are_not_seen():
    late = [shift(s, 95, detect_after=200) for s in "bcde"]
    assert judge(shift(onset=100), view(change(0)), late).kind == "blame"


@pytest.mark.parametrize("baseline,current,direction,factor", [
    (0.01, 0.1, "up", 10.0), (1.0, 0.5, "down", 2.0), (0.2, 0.1, "up", 0.5), (1.0, 0.5, None, 2.0),
])
def test_adverse_factor(baseline, current, direction, factor):
    s = anomaly("a", "m", T, T, baseline, current, current / baseline, 1.0, "t")
    assert adverse_factor(s, direction) == pytest.approx(factor)


def test_onsets_within_the_slack_are_the_same_moment():
    others, views = [shift("b", 95)], {"b": view(change(5, "b2", prev="b1"))}
    tie = judge(shift("a", onset=100), view(change(0)), others, views)
    assert tie.kind == "blame" and any("same moment" in a for a in tie.ambiguity)
    s = shift("a", onset=100)
    after_b_blamed = correlate(s, view(change(0)), [s, *others], lambda name: views.get(name, ServiceView()), 8,
                               POLICY, s.detected_ts + 20, True, blamed=lambda service, deploy_id: service == "b")
    assert (after_b_blamed.kind, after_b_blamed.leader) == ("follower", "b")


@pytest.mark.parametrize("samples", [0, 2, 40])
def test_onset_dated_before_the_deploy_is_not_its_fault_however_long_it_took_to_confirm(samples):
    s = anomaly("a", "error_rate", T - 300, T + 100, 0.01, 0.05, 5.0, 9.0, "test", samples)
    assert judge(s, view(change(0))).kind == "before_deploy"


def test_an_earlier_shift_explained_by_its_own_deploy_casts_no_doubt():
    """Two unrelated bad deploys 40 s apart in a large fleet: each is clear on its own."""
    earlier, views = [shift("b", 60)], {"b": view(change(50, "b2", prev="b1"))}
    own = view(change(90))
    assert not judge(shift("a", onset=100), own, earlier, views, services=2000).ambiguity
    unexplained = judge(shift("a", onset=100), own, earlier, {}, services=2000)
    assert any("shifted at the same time or earlier" in a for a in unexplained.ambiguity)
