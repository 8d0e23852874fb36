"""Policy table (mode × clarity → action) and the YAML configuration that carries it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backout.errors import ConfigError
from detectors.config import BackoutConfig, MetricPolicy, load_config
from detectors.policy import ask_ratio, assess

ERR = MetricPolicy(act_ratio=1.5, clear_ratio=5.0, clear_within_s=300.0, min_delta=0.005)

# (case, factor, delta, lag_s, ambiguity, mode, action, clear)
CASES = [
    ("10x within 5 min, auto: roll back", 10.0, 0.045, 90.0, [], "auto", "rollback", True),
    ("10x within 5 min, approval: ask", 10.0, 0.045, 90.0, [], "approval", "request_approval", True),
    ("10x within 5 min, off: nothing", 10.0, 0.045, 90.0, [], "off", None, True),
    ("2x: ambiguous, ask", 2.0, 0.005, 90.0, [], "auto", "request_approval", False),
    ("10x but 12 min after: ask", 10.0, 0.045, 720.0, [], "auto", "request_approval", False),
    ("10x of a tiny rate: ask", 10.0, 0.0009, 60.0, [], "auto", "request_approval", False),
    ("ambiguous blame: ask", 10.0, 0.045, 60.0, ["two deploys"], "auto", "request_approval", False),
    ("below act_ratio: alert only", 1.3, 0.001, 60.0, [], "auto", None, False),
    ("below act_ratio, approval: alert only", 1.3, 0.001, 60.0, [], "approval", None, False),
    ("2x, 10 min after: too small that late, alert only", 2.0, 0.01, 600.0, [], "auto", None, False),
    ("4x, 10 min after: ask", 4.0, 0.02, 600.0, [], "auto", "request_approval", False),
    ("10x of a tiny rate, 10 min after: alert only", 10.0, 0.0009, 600.0, [], "auto", None, False),
]


@pytest.mark.parametrize("case,factor,delta,lag_s,ambiguity,mode,action,clear", CASES, ids=[c[0] for c in CASES])
def test_assess(case, factor, delta, lag_s, ambiguity, mode, action, clear):
    a = assess(factor, delta, lag_s, ambiguity, ERR, 1800.0, mode)
    assert (a.action, a.clear) == (action, clear)
    assert 0 <= a.confidence <= 1


@pytest.mark.parametrize("lag_s, needed", [(0.0, 1.5), (300.0, 1.5), (600.0, 1.5 * (5 / 1.5) ** 0.5),
                                            (900.0, 5.0), (3000.0, 5.0)])
def test_the_later_a_shift_began_the_larger_it_must_be_to_ask(lag_s, needed):
    assert ask_ratio(ERR, lag_s, late_ramp_s=600.0) == pytest.approx(needed)


def test_confidence_falls_with_lag_size_and_doubt():
    c = [assess(f, 0.05, lag, amb, ERR, 1800.0, "auto").confidence
         for f, lag, amb in [(10, 60, []), (10, 900, []), (2, 60, []), (10, 60, ["x"])]]
    assert c[0] == 1.0 and all(x < c[0] for x in c[1:])


def write(tmp_path, text):
    path = tmp_path / "backout.yaml"
    path.write_text(text)
    return path


def test_defaults_and_example_file():
    assert load_config(None) == BackoutConfig()
    cfg = load_config("examples/backout.yaml")
    assert cfg.mode_for("payments", "error_rate") == "approval"
    assert cfg.mode_for("search", "latency_p95") == "off"  # a bare YAML `off` is the mode, not false
    assert cfg.mode_for("checkout", "error_rate") == "auto"
    assert cfg.metric_policy("payments", "error_rate").clear_ratio == 3.0
    assert cfg.metric_policy("payments", "error_rate").act_ratio == 1.5  # the rest stays global
    assert cfg.metric_policy("checkout", "queue_depth").clear_ratio == 3.0  # generic policy
    assert cfg.spec_for("error_rate") is not None and cfg.spec_for("nonsense") is None


def test_partial_metric_policy_merges_over_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "policy:\n  metrics:\n    error_rate: {clear_ratio: 8}\n"))
    assert cfg.policy.metrics["error_rate"].clear_ratio == 8 and cfg.policy.metrics["error_rate"].act_ratio == 1.5
    assert "latency_p95" in cfg.policy.metrics


@pytest.mark.parametrize("text,needle", [
    ("policy:\n  mode: sometimes\n", "backout.yaml:2: field 'policy.mode': got 'sometimes', expected 'approval', 'auto' or 'off'"),
    ("policy:\n  windw_s: 3\n", "backout.yaml:2: field 'policy.windw_s': unknown key"),
    ("hold_s: -5\n", "backout.yaml:1: field 'hold_s': got -5, expected greater than or equal to 0"),
    ("policy:\n  metrics:\n    error_rate: {clear_ratio: 1.2}\n", "clear_ratio (1.2) must be >= act_ratio (1.5)"),
    ("services:\n  a:\n    mode: maybe\n", "backout.yaml:3: field 'services.a.mode'"),
    ("- a\n- b\n", "expected a mapping"),
    ("policy: [\n", "not valid YAML"),
])
def test_config_errors_name_line_field_value_and_expectation(tmp_path, text, needle):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert needle in str(err.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_config("/nonexistent/backout.yaml")


def test_config_is_frozen():
    with pytest.raises(ValidationError):
        BackoutConfig().hold_s = 3  # type: ignore[misc]
