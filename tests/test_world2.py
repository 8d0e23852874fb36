"""The second simulator: deterministic, labelled as the bench scores, with the noise and events it promises."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from backout.contracts import Deploy, Metric
from bench import world2


@pytest.fixture(scope="module")
def sim():
    return world2.scenario(3, "sim")


def test_same_seed_same_stream_and_modes_differ():
    a, la = world2.scenario(5, "testbed")
    b, lb = world2.scenario(5, "testbed")
    assert a == b and la == lb
    assert world2.scenario(6, "testbed")[0] != a
    with pytest.raises(ValueError, match="mode must be one of sim, slow, testbed"):
        world2.scenario(1, "prod")


def test_labels_match_the_records(sim):
    records, labels = sim
    deploys = [r for r in records if isinstance(r, Deploy)]
    assert {d.deploy_id for d in deploys} == {d["deploy_id"] for d in labels["deploys"]}
    for d in labels["deploys"]:
        if d["label"] == "bad":
            assert d["onset_ts"] >= d["ts"] and d["clarity"] in ("clear", "ambiguous")
            # one acceptable target: never the bad version itself
            assert len(d["acceptable_targets"]) == 1 and d["version"] not in d["acceptable_targets"]


def test_a_bad_deploy_after_a_long_good_one_must_go_back_to_it():
    """The good-then-bad event: the version that served 45-80 min is the only acceptable target."""
    for seed in range(1, 40):
        _, labels = world2.scenario(seed, "sim")
        later = [d for d in labels["deploys"] if d["kind"] == "bad_after_good"]
        if later:
            d = later[0]
            assert d["acceptable_targets"] == [d["previous_version"]]
            return
    pytest.fail("no good-then-bad event in 40 scenarios")


def test_the_testbed_is_slow_short_and_countless():
    records, labels = world2.scenario(2, "testbed")
    metrics = [r for r in records if isinstance(r, Metric)]
    assert labels["step_s"] == 60.0 and labels["latency_unit"] == "ms" and not labels["counts"]
    assert all(m.count is None for m in metrics)
    first_release = min(d["ts"] for d in labels["deploys"])
    history_min = (first_release - labels["start_ts"]) / 60
    assert 14 <= history_min <= 18
    bad = [d for d in labels["deploys"] if d["label"] == "bad"]
    assert len(bad) == 1 and len({d["service"] for d in labels["deploys"] if d["kind"].endswith("in_release")}) >= 1


def test_the_base_error_rate_drifts(sim):
    """Multiplicative AR(1) drift: hour-long stretches of a quiet service differ by tens of per cent."""
    records, labels = sim
    by_service: dict[str, list[Metric]] = {}
    for r in records:
        if isinstance(r, Metric) and r.metric == "error_rate" and r.count:
            by_service.setdefault(r.service, []).append(r)
    spreads = []
    for rows in by_service.values():
        rate = np.array([r.value * r.count for r in rows]), np.array([r.count for r in rows])
        step = len(rows) // 8
        chunks = [rate[0][i:i + step].sum() / rate[1][i:i + step].sum() for i in range(0, 8 * step, step)]
        spreads.append(max(chunks) / max(min(chunks), 1e-9))
    assert np.median(spreads) > 1.5


def test_events_cover_what_the_issue_lists():
    kinds: Counter[str] = Counter()
    for seed in range(1, 13):
        kinds.update(d["kind"] for d in world2.scenario(seed, "sim")[1]["deploys"])
    assert {"bad_error_rate", "bad_latency_p95", "bad_health", "bad_in_release", "good_in_release",
            "good_traffic_surge", "good_shared_incident", "good_degradation_before", "good_small_shift",
            "good_restart_spike", "good_no_hazard", "hotfix", "manual_rollback"} <= set(kinds)
