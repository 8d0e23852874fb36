"""Policy table (shift × mode × situation → outcome) and the YAML configuration that carries it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backout.errors import ConfigError
from backout.settings import load_config
from detectors.config import BackoutConfig, MetricPolicy
from detectors.policy import ask_ratio, assess, escalation, outcome

ERR = MetricPolicy(act_ratio=1.5, clear_ratio=5.0, clear_within_s=300.0, min_delta=0.005)
CLEAR = (10.0, 0.045, 90.0, [])  # factor, delta, lag_s, ambiguity: 10x error rate 90 s after the deploy
SMALL = (1.3, 0.001, 60.0, [])  # below act_ratio
VAGUE = (2.0, 0.005, 90.0, [])  # actionable, not clear-cut
NEW = {}  # a new incident; the service runs the blamed version; a known-good target exists
ASKED = {"decided": "request_approval"}

# (case, shift, mode, situation, expected (kind, action, publish, record, severity), clear)
CASES = [
    ("10x within 5 min, auto: roll back", CLEAR, "auto", NEW,
     ("rollback", "rollback", True, "rollback", "critical"), True),
    ("10x within 5 min, approval: ask", CLEAR, "approval", NEW,
     ("request_approval", "request_approval", True, "request_approval", "warning"), True),
    ("10x within 5 min, off: says it would roll back, publishes nothing", CLEAR, "off", NEW,
     ("off", "rollback", False, "none", "critical"), True),
    ("ambiguous, off: says it would ask", VAGUE, "off", NEW, ("off", "request_approval", False, "none", "warning"),
     False),
    ("2x: ambiguous, ask", VAGUE, "auto", NEW,
     ("request_approval", "request_approval", True, "request_approval", "warning"), False),
    ("10x but 12 min after: ask", (10.0, 0.045, 720.0, []), "auto", NEW,
     ("request_approval", "request_approval", True, "request_approval", "warning"), False),
    ("10x of a tiny rate: ask", (10.0, 0.0009, 60.0, []), "auto", NEW,
     ("request_approval", "request_approval", True, "request_approval", "warning"), False),
    ("ambiguous blame: ask", (10.0, 0.045, 60.0, ["two deploys"]), "auto", NEW,
     ("request_approval", "request_approval", True, "request_approval", "warning"), False),
    ("below act_ratio: alert only", SMALL, "auto", NEW, ("watch", None, False, None, "info"), False),
    ("below act_ratio, approval: alert only", SMALL, "approval", NEW, ("watch", None, False, None, "info"), False),
    ("below act_ratio, already reverted: still just watching", SMALL, "auto", {"reverted": True},
     ("watch", None, False, None, "info"), False),
    ("already runs a good version again: nothing to do", CLEAR, "auto", {"reverted": True},
     ("reverted", None, False, "none", "info"), True),
    ("grown after the service was deployed again: no question of this deploy", CLEAR, "auto",
     {"worsened": True, "still_runs": False}, ("redeployed", None, False, None, "info"), True),
    ("grown, still running the blamed version: as a new shift", CLEAR, "auto", {"worsened": True},
     ("rollback", "rollback", True, "rollback", "critical"), True),
    ("no known-good target: escalate", CLEAR, "auto", {"has_target": False},
     ("no_target", "escalate", True, "escalate", "critical"), True),
    ("no known-good target, off: says so, publishes nothing", CLEAR, "off", {"has_target": False},
     ("no_target", "escalate", False, "escalate", "critical"), True),
    ("rolled back already: decided for good", CLEAR, "auto", {"decided": "rollback"},
     ("decided", None, False, None, None), True),
    ("escalated already: decided for good", CLEAR, "auto", {"decided": "escalate"},
     ("decided", None, False, None, None), True),
    ("nothing to do, decided: stays so", CLEAR, "auto", {"decided": "none"}, ("decided", None, False, None, None),
     True),
    ("a question that became clear-cut: upgraded to a rollback", CLEAR, "auto", ASKED,
     ("upgrade", "rollback", True, "rollback", "critical"), True),
    ("a question still ambiguous: stands", VAGUE, "auto", ASKED, ("kept_asking", None, False, None, None), False),
    ("a question in approval mode: stands", CLEAR, "approval", ASKED,
     ("kept_asking", None, False, None, None), True),
    ("a question after someone deployed again: stands", CLEAR, "auto", {**ASKED, "still_runs": False},
     ("kept_asking", None, False, None, None), True),
    ("a question with no target left: stands", CLEAR, "auto", {**ASKED, "has_target": False},
     ("kept_asking", None, False, None, None), True),
    ("2x, 10 min after: too small that late, watched", (2.0, 0.01, 600.0, []), "auto", NEW,
     ("watch", None, False, None, "info"), False),
    ("4x, 10 min after: ask", (4.0, 0.02, 600.0, []), "auto", NEW,
     ("request_approval", "request_approval", True, "request_approval", "warning"), False),
    ("10x of a tiny rate, 10 min after: watched", (10.0, 0.0009, 600.0, []), "auto", NEW,
     ("watch", None, False, None, "info"), False),
    ("first confirmed longer than the window after the deploy: watched, even clear-cut", CLEAR, "auto",
     {"stale": True}, ("stale", None, False, None, "info"), True),
    ("traffic grew as much, not clear-cut: load, watched", VAGUE, "auto", {"traffic": 2.0},
     ("load", None, False, None, "info"), False),
    ("traffic grew by the square root, not clear-cut, load_power 0.5: load", VAGUE, "auto",
     {"traffic": 1.45, "load_power": 0.5}, ("load", None, False, None, "info"), False),
    ("traffic grew by less than the square root: ask", VAGUE, "auto", {"traffic": 1.35, "load_power": 0.5},
     ("request_approval", "request_approval", True, "request_approval", "warning"), False),
    ("traffic grew as much, but clear-cut: roll back", CLEAR, "auto", {"traffic": 10.0},
     ("rollback", "rollback", True, "rollback", "critical"), True),
    ("clear-sized but ambiguous: traffic must grow as much as the shift", (10.0, 0.045, 60.0, ["two deploys"]),
     "auto", {"traffic": 4.0, "load_power": 0.5},
     ("request_approval", "request_approval", True, "request_approval", "warning"), False),
]


@pytest.mark.parametrize("case,shift,mode,situation,expected,clear", CASES, ids=[c[0] for c in CASES])
def test_outcome(case, shift, mode, situation, expected, clear):
    a = assess(*shift, ERR, 1800.0)
    o = outcome(a, mode, **situation)
    assert (o.kind, o.action, o.publish, o.record, o.severity) == expected
    assert a.clear == clear and 0 <= a.confidence <= 1
    assert o.marks_bad == (o.kind in ("rollback", "upgrade"))  # a question, answered or not, leaves it good


@pytest.mark.parametrize("mode,publish", [("auto", True), ("approval", True), ("off", False)])
def test_a_shared_shift_escalates_the_deploy_it_spares(mode, publish):
    o = escalation(mode, "shared")
    assert (o.action, o.publish, o.record, o.severity) == ("escalate", publish, "escalate", "critical")


@pytest.mark.parametrize("lag_s, needed", [(0.0, 1.5), (300.0, 1.5), (600.0, 1.5 * (5 / 1.5) ** 0.5),
                                            (900.0, 5.0), (3000.0, 5.0)])
def test_the_later_a_shift_began_the_larger_it_must_be_to_act_on(lag_s, needed):
    assert ask_ratio(ERR, lag_s, late_ramp_s=600.0) == pytest.approx(needed)


def test_confidence_falls_with_lag_size_and_doubt():
    c = [assess(f, 0.05, lag, amb, ERR, 1800.0).confidence
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
