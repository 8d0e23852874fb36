"""``backout incident report``: from a dump and from the real broker, as Markdown, JSON and a PNG."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from backout.cli import cli
from backout.contracts import Decision, dead_letter, encode
from detectors.incident import IncidentFold, IncidentTimeline
from streams import topics
from streams.admin import create_topics
from streams.incidents import fold_topics
from streams.topics import specs
from tests.test_incident import INC, T, story


def own(records: list, unique: str) -> list:
    """The story with a service and an incident of its own, so no other test's records mix in."""
    out = []
    for r in records:
        update = {}
        if getattr(r, "service", None) == "checkout":
            update["service"] = f"svc-{unique}"
        if getattr(r, "incident_id", None) == INC:
            update["incident_id"] = f"inc-{unique}"
        if isinstance(r, Decision):
            update["evidence"] = [{**e, "service": f"svc-{unique}"} if "service" in e else e for e in r.evidence]
        out.append(r.model_copy(update=update))
    return out


@pytest.fixture
def dump_file(tmp_path):
    path = tmp_path / "incident.jsonl"
    lines = [encode(r).decode() for r in story("upgrade")]
    lines.insert(3, '{"type":"decision","ts":5}')  # a bad record: reported, never fatal
    letter = json.loads(encode(dead_letter(b"{", "not JSON", topics.METRICS, 0, 3, 1.0)))
    lines.append(json.dumps({**letter, "_topic": topics.DEADLETTER}))  # not a timeline record, not bad either
    path.write_text("\n".join(lines) + "\n")
    return path


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


def test_markdown_report_from_a_dump(dump_file):
    result = invoke("incident", "report", INC[:10], "--from", str(dump_file))
    assert result.exit_code == 0, result.output
    md = result.stdout
    for heading in ("## Timeline", "## First degradation", "## Error pattern", "## Decisions", "## Approval",
                    "## Rollback", "## Recovery", "## Durations", "## Alerts sent"):
        assert heading in md
    assert md.startswith(f"# Incident {INC} — checkout\n\n**verified.** v2.15.1 broke checkout")
    assert "| +2 min 5 s | decision | Upgraded the question to a rollback (confidence 90%)" in md
    assert "| deploy → verified | 280 | five minutes |" in md
    # the bad record is reported with its line; the dead letter envelope is not a complaint
    assert "line 4: invalid decision record" in result.stderr
    assert "1 incident(s); 1 unreadable record(s)" in result.stderr


def test_json_report_is_the_timeline(dump_file):
    result = invoke("incident", "report", "--from", str(dump_file), "--format", "json")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    got = IncidentTimeline.model_validate_json(line)
    fold = IncidentFold()
    fold.add_all(story("upgrade"))
    assert got == fold.timeline(INC)


def test_plot_marks_the_steps(dump_file, tmp_path):
    from matplotlib.image import imread

    png = tmp_path / "incident.png"
    result = invoke("incident", "report", "--from", str(dump_file), "--plot", str(png))
    assert result.exit_code == 0, result.output
    image = imread(png)
    assert image.shape[0] > 300 and image.shape[1] > 800
    rgb = (image[..., :3] * 255).round().astype(int)

    def has(hex_colour: str) -> bool:
        target = [int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]
        return bool(((abs(rgb - target) <= 8).all(axis=-1)).sum() > 50)

    assert has("#1f77b4")  # the deploy (tab:blue)
    assert has("#d62728")  # the decisions (tab:red)
    assert has("#2ca02c")  # the rollback (tab:green)
    assert has("#006400")  # the verified recovery (darkgreen)


@pytest.mark.parametrize("args,message", [
    (["inc-nope"], "error: no incident 'inc-nope' in the records read"),
    (["--plot", "x.png", "--format", "json"], None),
])
def test_refusals_are_one_red_line(tmp_path, args, message):
    path = tmp_path / "two.jsonl"
    second = [r.model_copy(update={"incident_id": "inc-other"}) if hasattr(r, "incident_id") else r
              for r in story("auto")]
    path.write_text("\n".join(encode(r).decode() for r in story("auto") + second) + "\n")
    result = invoke("incident", "report", *args, "--from", str(path))
    assert result.exit_code == 1
    expected = message or "error: --plot draws one incident; 2 were found"
    assert result.stderr.startswith(expected)


@pytest.mark.integration
def test_report_from_the_topics(kafka, unique, tmp_path):
    create_topics(kafka, specs(2))
    records = own(story("approved"), unique)
    far = [r.model_copy(update={"ts": r.ts - 5000}) for r in records if r.type == "metric"][:20]
    prod = Producer(kafka.confluent())
    for record in far + list(reversed(records)):
        prod.produce(topics.OF_TYPE[record.type], encode(record), key=topics.key_of(record.model_dump()))
    assert prod.flush(30) == 0
    png = tmp_path / "p.png"
    result = invoke("incident", "report", f"inc-{unique}", "--format", "json", "--plot", str(png),
                    env={"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers})
    assert result.exit_code == 0, result.output
    t = IncidentTimeline.model_validate_json(result.stdout)
    assert (t.status, t.service, t.answers[0].by) == ("verified", f"svc-{unique}", "alice")
    assert t.durations.model_dump() == {"deploy_to_decision_s": 95.0, "question_to_answer_s": 90.0,
                                        "decision_to_executed_s": 130.0, "executed_to_verified_s": 120.0,
                                        "deploy_to_executed_s": 225.0, "deploy_to_verified_s": 345.0}
    assert t.pattern[0].peak_ts == T + 90 and t.degradation.samples  # the samples came from backout.metrics
    assert png.stat().st_size > 10_000

    fold = IncidentFold()
    fold_topics(fold, kafka)
    samples = fold.series(f"svc-{unique}", "error_rate")
    assert [s.ts for s in samples] == [r.ts for r in records if r.type == "metric"]  # not the far ones
