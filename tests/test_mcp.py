"""``backout mcp`` through the SDK's in-memory client: tools, refusals, the real broker, backtests."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from confluent_kafka import Producer
from mcp import Client

from backout.contracts import Decision, encode
from backout.errors import ConfigError
from backout.mcp_server import build
from detectors.config import BackoutConfig
from streams import topics
from streams.admin import create_topics
from streams.backtest import replay
from streams.broker import free_port, wait_for_port
from streams.simulate import demo_records as demo_scenario
from streams.topics import TopicSpec
from tests.test_incident import INC, T, story

READ = ["list_incidents", "get_incident", "get_decision_reason", "backtest"]


def session(server, *calls: tuple[str, dict[str, Any]]) -> list:
    """Run tool calls in one client session; return their results (tools/list first)."""
    async def run() -> list:
        async with Client(server) as client:
            out: list = [await client.list_tools()]
            for name, args in calls:
                out.append(await client.call_tool(name, args))
            return out

    return asyncio.run(run())


def structured(result) -> Any:
    assert not result.is_error, result.content
    data = result.structured_content
    return data["result"] if set(data) == {"result"} else data


def fresh_topics(kafka, unique: str) -> dict[str, str]:
    names = {name: f"{name}.mcp-{unique}" for name in topics.ALL}
    create_topics(kafka, [TopicSpec(n, 2, 3_600_000) for n in names.values()])
    return names


def recent(records: list) -> list:
    """The story moved to the last few minutes, so that an answer given now is on time."""
    by = time.time() - 300 - T
    times = ("ts", "onset_ts", "detected_ts")

    def moved(r):
        update = {f: getattr(r, f) + by for f in times if hasattr(r, f)}
        if isinstance(r, Decision):
            update["evidence"] = [{k: v + by if k in times else v for k, v in e.items()} for e in r.evidence]
        return r.model_copy(update=update)

    return [moved(r) for r in records]


def publish(kafka, names: dict[str, str], records: list) -> None:
    prod = Producer(kafka.confluent())
    for record in records:
        prod.produce(names[topics.OF_TYPE[record.type]], encode(record), key=topics.key_of(record.model_dump()))
    assert prod.flush(30) == 0


def test_write_tools_exist_only_with_allow_writes_and_a_token():
    (listed,) = session(build())
    assert [t.name for t in listed.tools] == READ
    assert all(t.annotations.read_only_hint for t in listed.tools)
    (listed,) = session(build(token="secret"))  # a token alone does not offer writes
    assert [t.name for t in listed.tools] == READ
    (listed,) = session(build(allow_writes=True, token="secret"))
    assert [t.name for t in listed.tools] == READ + ["approve", "deny"]
    approve = next(t for t in listed.tools if t.name == "approve")
    assert approve.input_schema["required"] == ["incident_id", "by"] and approve.annotations.destructive_hint
    with pytest.raises(ConfigError, match="--allow-writes needs BACKOUT_API_TOKEN"):
        build(allow_writes=True, token=None)


@pytest.mark.integration
def test_incidents_from_the_real_broker_and_an_answer(kafka, unique):
    names = fresh_topics(kafka, unique)
    publish(kafka, names, recent(story("pending")))
    server = build(kafka, allow_writes=True, token="secret", names=names)
    _, listed, incident, reason, wrong = session(
        server, ("list_incidents", {}), ("get_incident", {"incident_id": INC[:8]}),
        ("get_decision_reason", {"incident_id": INC}), ("get_incident", {"incident_id": "inc-nope"}))
    (summary,) = structured(listed)
    assert (summary["incident_id"], summary["status"]) == (INC, "awaiting_approval")
    timeline = structured(incident)
    assert timeline["status"] == "awaiting_approval" and timeline["deploy"]["version"] == "v2.15.1"
    assert timeline["degradation"]["samples"], "the samples around the onset came from the metrics topic"
    assert timeline["decisions"][0]["evidence"][0]["metric"] == "error_rate"
    why = structured(reason)
    assert why["action"] == "request_approval" and why["reason"].endswith("Should I proceed?")
    assert wrong.is_error and "no incident 'inc-nope' in the records read" in wrong.content[0].text

    _, approved, again, after = session(
        server, ("approve", {"incident_id": INC, "by": "alice"}), ("deny", {"incident_id": INC, "by": "bob"}),
        ("get_incident", {"incident_id": INC}))
    assert structured(approved)["by"] == "alice via mcp" and structured(approved)["approved"] is True
    assert again.is_error and (f"bob via mcp's denial of {INC} would change nothing, so it was not sent: "
                               "alice via mcp already approved it, and the first answer counts.") in again.content[0].text
    assert [(a["by"], a["approved"]) for a in structured(after)["answers"]] == [("alice via mcp", True)]


@pytest.mark.integration
def test_a_name_that_is_not_one_is_refused_before_anything_is_read(kafka, unique):
    names = fresh_topics(kafka, unique)
    server = build(kafka, allow_writes=True, token="secret", names=names)
    _, bad_by, bad_id = session(server, ("approve", {"incident_id": INC, "by": "x; rm -rf /"}),
                                ("deny", {"incident_id": "../../etc", "by": "bob"}))
    assert bad_by.is_error and "is not a name" in bad_by.content[0].text
    assert bad_id.is_error and "is not an incident id" in bad_id.content[0].text


def test_backtest_of_a_simulated_file(tmp_path):
    records = demo_scenario()
    (tmp_path / "sim.jsonl").write_text("\n".join(encode(r).decode() for r in records) + "\nnot json\n")
    (tmp_path / "secret.txt").write_text("{}")
    expected = [o for o in replay([encode(r) for r in records], BackoutConfig()) if o.type == "decision"]
    _, result, escape, other = session(build(files_dir=tmp_path), ("backtest", {"path": "sim.jsonl"}),
                                       ("backtest", {"path": "../sim.jsonl"}), ("backtest", {"path": "secret.txt"}))
    got = structured(result)
    assert got["decisions_total"] == len(expected) >= 1
    assert [d["incident_id"] for d in got["decisions"]] == [d.incident_id for d in expected]
    assert got["records"] == len(records) + 1 and got["bad_lines"] >= 1
    assert f"line {len(records) + 1}: not JSON" in got["first_bad"][-1]
    for refused in (escape, other):
        assert refused.is_error and "is not a .jsonl file under" in refused.content[0].text


@pytest.mark.integration
def test_backtest_of_a_time_range_of_the_topics(kafka, unique):
    names = fresh_topics(kafka, unique)
    records = demo_scenario()
    publish(kafka, names, records)
    expected = [o for o in replay([encode(r) for r in records], BackoutConfig()) if o.type == "decision"]
    _, result = session(build(kafka, names=names),
                        ("backtest", {"from_ts": records[0].ts, "to_ts": records[-1].ts}))
    got = structured(result)
    assert [d["incident_id"] for d in got["decisions"]] == [d.incident_id for d in expected]


def test_http_serves_only_with_the_bearer_token(tmp_path):
    """The real command over streamable HTTP (uvicorn): no token or a wrong one is 401; the right one talks MCP."""
    port = free_port()
    env = {**os.environ, "BACKOUT_API_TOKEN": "s3cret", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    proc = subprocess.Popen([sys.executable, "-m", "backout.cli", "mcp", "--http", "--port", str(port),
                             "--allow-writes"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for_port("127.0.0.1", port, 30), proc.stderr.read1().decode() if proc.stderr else ""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}})

        def post(token: str | None) -> tuple[int, str]:
            headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            request = urllib.request.Request(f"http://127.0.0.1:{port}/mcp", body.encode(), headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        assert post(None)[0] == 401
        assert post("wrong")[0] == 401
        status, text = post("s3cret")
        assert status == 200 and '"serverInfo"' in text and '"backout"' in text
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_stdio_is_the_default_transport():
    """The command an assistant starts: tools listed over its stdin/stdout, nothing else written there."""
    from mcp import StdioServerParameters

    params = StdioServerParameters(command=sys.executable, args=["-m", "backout.cli", "mcp"],
                                   env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    (listed,) = session(params)
    assert [t.name for t in listed.tools] == READ
