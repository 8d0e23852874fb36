"""The hostile corpus (tests/corpus.py) against the core, without a broker: every record a file can
hold is refused by the backtest's checks with its reason, and refusing them changes no decision.
The live-only kinds (Kafka keys, tombstones) and the deploys topic are covered on the real broker
in test_hostile_integration.py."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from backout.cli import cli
from backout.contracts import Deploy, Metric, decode, encode
from backout.errors import ContractError, SampleRejected
from detectors.config import BackoutConfig
from detectors.engine import Engine, Output
from streams.simulate import scenario
from tests import corpus


def feed(engine: Engine, records: list) -> list[Output]:
    out: list[Output] = []
    for record in records:
        try:
            out += engine.feed(record)
        except SampleRejected:  # the scenario's own duplicates and late samples
            pass
    return out


def test_the_corpus_has_at_least_thirty_kinds():
    kinds = [(h.topic, h.kind) for h in corpus.metrics("checkout", 1.8e9) + corpus.deploys("checkout", 1.8e9)]
    assert len(set(kinds)) == len(kinds) and len({kind for _, kind in kinds}) >= 30


def test_each_hostile_record_a_file_can_hold_is_refused_with_its_reason_and_changes_no_decision():
    records, _ = scenario(5, kinds=["bad_error", "good"], hours=1.5, services=4)
    half = len(records) // 2
    engine = Engine(BackoutConfig())
    out = feed(engine, records[:half])
    last = records[half - 1]
    hostile = [h for h in corpus.metrics(last.service, last.ts) + corpus.deploys(last.service, last.ts)
               if h.backtest]
    wrong = {}
    for h in hostile:
        try:
            engine.feed(decode(h.value, expect=Metric if h.topic == corpus.topics.METRICS else Deploy))
            wrong[h.kind] = "accepted"
        except (ContractError, SampleRejected) as exc:
            if h.reason not in str(exc):
                wrong[h.kind] = str(exc)
    assert not wrong
    out += feed(engine, records[half:]) + engine.finish()
    clean = Engine(BackoutConfig())
    expected = feed(clean, records) + clean.finish()
    decisions = [encode(o) for o in out if o.type == "decision"]
    assert decisions and decisions == [encode(o) for o in expected if o.type == "decision"]


@pytest.mark.parametrize("args, message", [
    (["--service", "check out", "--version", "v2.0.1"], "field 'service': got 'check out'"),
    (["--service", "checkout", "--version", "v2;reboot"], "field 'version': got 'v2;reboot'"),
    (["--service", "checkout", "--version", "v2.0.1", "--target", "kubernetes", "--namespace", "../kube-system",
      "--name", "checkout"], "namespace '../kube-system' is not a valid namespace"),
])
def test_deploy_event_refuses_a_bad_name_with_one_line_before_connecting(args, message):
    result = CliRunner().invoke(cli, ["deploy-event", *args])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
