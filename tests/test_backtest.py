"""``backout backtest`` through click: decisions on stdout, bad lines on stderr, never fatal."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from backout.contracts import decode, encode
from streams.backtest import backtest
from streams.simulate import demo_scenario


@pytest.fixture(scope="module")
def demo_lines() -> list[bytes]:
    return [encode(r) for r in demo_scenario(7)]


def invoke(data: bytes, *args: str):
    return CliRunner().invoke(backtest, ["-", *args], input=data)


def test_decisions_on_stdout_only(demo_lines):
    result = invoke(b"\n".join(demo_lines) + b"\n")
    assert result.exit_code == 0, result.stderr
    decisions = [decode(line) for line in result.stdout.splitlines()]
    assert decisions and all(d.type == "decision" for d in decisions)
    bad = {d.deploy_id for d in map(decode, demo_lines) if d.type == "deploy" and d.model_extra["label"] == "bad"}
    rollbacks = [d for d in decisions if d.action == "rollback"]
    assert [d.deploy_id for d in rollbacks] == sorted(bad)
    assert "backtest:" in result.stderr.splitlines()[-1]


def test_bad_lines_are_reported_with_their_number_and_counted(demo_lines):
    head = demo_lines[:50]
    junk = [b"{not json", b'{"type":"metric","ts":5,"service":"a","metric":"error_rate"}',
            b'{"type":"metric","ts":5,"service":"a","metric":"bogus_metric","value":1}', b'[1,2]',
            b'{"type":"alert","ts":5,"severity":"info","text":"hi"}', head[10]]  # the last one: a duplicate
    result = invoke(b"\n".join(head + junk) + b"\n")
    assert result.exit_code == 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("line ")]
    assert [e.split(":")[0] for e in errors] == [f"line {n}" for n in range(51, 57)]
    assert "not JSON" in errors[0] and "field 'value'" in errors[1] and "unknown metric 'bogus_metric'" in errors[2]
    assert "6 bad lines" in result.stderr.splitlines()[-1]
    assert result.stdout == ""


def test_file_argument_and_config(tmp_path, demo_lines):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(demo_lines) + b"\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("policy:\n  mode: approval\n")
    result = CliRunner().invoke(backtest, [str(path), "--config", str(cfg)])
    actions = {json.loads(line)["action"] for line in result.stdout.splitlines()}
    assert actions == {"request_approval"}
    assert "Should I proceed?" in result.stdout


def test_bad_config_is_one_backout_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("policy:\n  mode: sometimes\n")
    result = CliRunner().invoke(backtest, ["-", "--config", str(cfg)], input=b"")
    assert result.exit_code != 0 and "policy.mode" in str(result.exception)


def test_help_documents_every_option():
    text = CliRunner().invoke(backtest, ["--help"]).output
    assert "--config" in text and "--alerts" in text and "stdin" in text
