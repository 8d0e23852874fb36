"""Deploy tracking: versions, rollbacks, known-good targets, as of an event time; state round-trip."""

from __future__ import annotations

import json

import pytest

from backout.contracts import Deploy
from detectors.deploys import DeployTracker, tracker_from_state, tracker_to_state

T = 1_700_000_000.0


def dep(ts, version, prev, status="finished", deploy_id=None, service="a"):
    return Deploy(ts=T + ts, service=service, deploy_id=deploy_id or f"d-{version}-{status}", version=version,
                  previous_version=prev, status=status)


def tracker(*deploys):
    t = DeployTracker(clean_s=600)
    for d in deploys:
        t.add(d)
    return t


# (case, deploys, as_of, current, blameable versions, target excluding the current)
CASES = [
    ("first deploy: the previous version ran before we watched, so it is good",
     [dep(0, "v2", "v1")], 60, "v2", ["v2"], "v1"),
    ("a version that ran less than clean_s is not known good",
     [dep(0, "v2", "v1"), dep(300, "v3", "v2")], 400, "v3", ["v2", "v3"], "v1"),
    ("a version that ran clean_s is known good",
     [dep(0, "v2", "v1"), dep(900, "v3", "v2")], 1000, "v3", ["v2", "v3"], "v2"),
    ("status rolled_back: not a change, and the version it leaves is bad",
     [dep(0, "v2", "v1"), dep(900, "v3", "v2"), dep(2000, "v2", "v3", status="rolled_back")], 2100, "v2",
     ["v2", "v3"], "v1"),
    ("back to a version run before: a rollback, the version left is bad even after it ran long",
     [dep(0, "v2", "v1"), dep(900, "v3", "v2"), dep(4000, "v2", "v3", deploy_id="undo")], 4100, "v2",
     ["v2", "v3"], "v1"),
    ("started and finished records are one change, from the start",
     [dep(0, "v2", "v1", status="started", deploy_id="d"), dep(600, "v2", "v1", deploy_id="d")], 700, "v2",
     ["v2"], "v1"),
    ("a failed deploy puts the previous version back and is not blamed",
     [dep(0, "v2", "v1", status="started", deploy_id="d"), dep(100, "v2", "v1", status="failed", deploy_id="d")],
     200, "v1", [], None),
    ("records stamped after as_of do not count, whatever the order they were read in",
     [dep(900, "v3", "v2"), dep(0, "v2", "v1")], 500, "v2", ["v2"], "v1"),
]


@pytest.mark.parametrize("case,deploys,as_of,current,changes,target", CASES, ids=[c[0] for c in CASES])
def test_view(case, deploys, as_of, current, changes, target):
    view = tracker(*deploys).view("a", T + as_of)
    assert view.current == current
    assert [c.version for c in view.changes] == changes
    assert view.target(exclude=(view.current,)) == target


def test_marked_bad_is_never_a_target():
    t = tracker(dep(0, "v2", "v1"), dep(900, "v3", "v2"))
    t.mark_bad("a", "v2")
    assert t.view("a", T + 2000).target(exclude=("v3",)) == "v1"


def test_unknown_service():
    assert DeployTracker().view("nobody", T).current is None


def test_redelivered_record_is_ignored():
    t = DeployTracker()
    assert t.add(dep(0, "v2", "v1")) and not t.add(dep(0, "v2", "v1"))


def test_prune_keeps_answers_and_bounds_state():
    t = DeployTracker(clean_s=600, keep_s=3600)
    for i in range(60):
        t.add(dep(i * 1000, f"v{i + 2}", f"v{i + 1}"))
    t.mark_bad("a", "v59")
    before = t.view("a", T + 60_000)
    t.prune(T + 60_000)
    after = t.view("a", T + 60_000)
    assert (after.current, after.target(exclude=(after.current,))) == (before.current, before.target(exclude=(before.current,)))
    assert after.target(exclude=("v61",)) == "v60"
    state = json.loads(json.dumps(tracker_to_state(t)))
    assert len(state["a"]["e"]) <= 10
    restored = tracker_from_state(state, 600, 3600)
    assert tracker_to_state(restored) == state
    assert restored.view("a", T + 60_000).known_good == after.known_good
