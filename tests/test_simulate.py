"""The simulator: deterministic, labelled consistently, with the noise it promises."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from click.testing import CliRunner

from backout.contracts import Deploy, Metric, decode
from streams.simulate import EVENTS, demo_scenario, scenario, simulate


@pytest.fixture(scope="module")
def mixed():
    return scenario(5, kinds=list(EVENTS), hours=6.0, spacing_s=1200.0)


def test_same_seed_same_stream():
    a, la = scenario(3, hours=1.0)
    b, lb = scenario(3, hours=1.0)
    assert a == b and la == lb
    assert scenario(4, hours=1.0)[0] != a


def test_labels_match_the_records(mixed):
    records, labels = mixed
    deploys = [r for r in records if isinstance(r, Deploy)]
    assert {d.deploy_id for d in deploys} == {d["deploy_id"] for d in labels["deploys"]}
    for d in labels["deploys"]:
        if d["label"] == "bad":
            assert d["onset_ts"] >= d["ts"] and d["clarity"] in ("clear", "ambiguous")
            assert d["acceptable_targets"] and d["version"] not in d["acceptable_targets"]
    kinds = Counter(d["kind"] for d in labels["deploys"])
    assert {"bad_error_rate", "bad_health", "bad_slow_rollout", "bad_leak", "good_during_shared_incident",
            "good_during_traffic_surge", "good_after_degradation_began", "good_concurrent_caller"} <= set(kinds)


def test_noise_is_there(mixed):
    records, _ = mixed
    metrics = [r for r in records if isinstance(r, Metric)]
    keys = Counter((m.service, m.metric, m.ts) for m in metrics)
    assert any(n > 1 for n in keys.values()), "duplicates"
    last: dict = {}
    late = 0
    for m in metrics:
        k = (m.service, m.metric)
        late += m.ts < last.get(k, 0)
        last[k] = max(last.get(k, 0), m.ts)
    assert late > 0, "out-of-order samples"
    errors = [m for m in metrics if m.metric == "error_rate" and m.service == "checkout"]
    assert all(m.count is not None for m in errors)
    steps = Counter(round(b.ts - a.ts) for a, b in zip(errors, errors[1:], strict=False) if b.ts > a.ts)
    assert steps[10] > 0 and any(s >= 30 for s in steps), "10 s sampling, with gaps"


def test_overdispersed_error_counts():
    records, _ = scenario(9, kinds=["good"], hours=2.0)
    rows = [(r.value, r.count) for r in records if isinstance(r, Metric) and r.metric == "error_rate"
            and r.service == "frontend"]
    errors = [v * c for v, c in rows]
    p = sum(errors) / sum(c for _, c in rows)
    binomial_var = sum(c * p * (1 - p) for _, c in rows) / len(rows)
    mean_c = sum(c for _, c in rows) / len(rows)
    var = sum((e - p * c) ** 2 for e, (_, c) in zip(errors, rows, strict=True)) / len(rows)
    assert var > 1.5 * binomial_var and mean_c > 100


def test_demo_scenario_has_one_labelled_bad_deploy_after_a_warm_up():
    records = demo_scenario(7)
    deploys = [r for r in records if isinstance(r, Deploy)]
    labels = {d.deploy_id: d.model_extra["label"] for d in deploys}
    assert list(labels.values()).count("bad") == 1 and "good" in labels.values()
    assert min(d.ts for d in deploys) - records[0].ts >= 1200


def test_command_writes_jsonl_and_labels(tmp_path):
    out = tmp_path / "s"
    result = CliRunner().invoke(simulate, [str(out), "--seed", "2", "--hours", "1", "--services", "3",
                                           "--kind", "bad_error", "--kind", "good"])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "s.jsonl").read_bytes().splitlines()
    assert all(decode(line).type in ("metric", "deploy") for line in lines[:2000])
    labels = json.loads((tmp_path / "s.labels.json").read_text())
    assert labels["seed"] == 2 and labels["deploys"][0]["kind"] == "bad_error_rate"
    assert "--kind" in CliRunner().invoke(simulate, ["--help"]).output
