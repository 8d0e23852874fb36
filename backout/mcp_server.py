"""``backout mcp``: Backout's incidents, decisions and backtests as tools for AI assistants (MCP).

A thin front end over the same parts as the CLI, imported when the server
starts: the incident fold (:mod:`detectors.incident`), the topic reader, the
backtest's :func:`~streams.backtest.replay` and :func:`actions.approvals.answer`, the one
answer path with its checks.
Every call reads the topics afresh, so an assistant always sees what is on
them now.

Read tools are always there: ``list_incidents``, ``get_incident`` (the
timeline with its evidence), ``get_decision_reason`` and ``backtest`` (a JSON
Lines file under ``--files``, or a time range of the topics). The write tools
``approve`` and ``deny`` exist only when the server is started with
``--allow-writes`` *and* ``BACKOUT_API_TOKEN`` is set; over HTTP that token
must then come with every request as ``Authorization: Bearer <token>``.
An assistant can only answer a question Backout is waiting on; it never
triggers a rollback of its own.
"""

from __future__ import annotations

import functools
import hmac
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import BaseModel, Field

from backout.contracts import Approval, Decision
from backout.errors import BackoutError, ConfigError
from backout.settings import KafkaSettings
from detectors.incident import (  # the tools' output types: needed at run time
    IncidentFold,
    IncidentTimeline,
)

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

INSTRUCTIONS = """Backout watches service metrics and deploys, blames bad deploys and rolls them back.
Start with list_incidents, then get_incident for the timeline and evidence of one.
An incident whose status is awaiting_approval is a question to a human: answer it with
approve or deny only when the person you act for has decided, and name them in `by`."""

MAX_DECISIONS = 200  # a backtest answers with at most this many decisions (the counts are complete)


class IncidentSummary(BaseModel):
    incident_id: str
    service: str | None
    status: str
    headline: str
    deploy_version: str | None
    first_ts: float = Field(description="event time of the incident's first step")
    last_ts: float = Field(description="event time of its latest step")


class DecisionReason(BaseModel):
    incident_id: str
    action: str = Field(description="the latest decision: rollback, request_approval or escalate")
    reason: str = Field(description="the decider's sentence, with the numbers")
    confidence: float
    from_version: str | None
    to_version: str | None
    decided_ts: float
    evidence: list[dict[str, Any]] = Field(description="the anomalies and deploys the decision rests on")
    earlier: list[str] = Field(description="the reasons of earlier decisions of the same incident")


class BacktestResult(BaseModel):
    decisions: list[Decision]
    decisions_total: int
    anomalies: int
    alerts: int
    records: int
    bad_lines: int
    first_bad: list[str] = Field(description="the first bad lines, 'line N: reason'")


class Tools:
    """The tools' bodies, over one broker (and one set of topic names: tests give their own)."""

    def __init__(self, settings: KafkaSettings, files_dir: Path, names: Mapping[str, str] | None = None,
                 approval_timeout_s: float = 900.0, config_path: str | None = None) -> None:
        self.settings = settings
        self.files_dir = files_dir.resolve()
        self.names = dict(names or {})
        self.approval_timeout_s = approval_timeout_s
        self.config_path = config_path

    def fold(self, samples: bool) -> IncidentFold:
        from streams.incidents import load

        return load(None, self.approval_timeout_s, settings=self.settings, names=self.names, samples=samples)

    def list_incidents(self, status: str | None, limit: int) -> list[IncidentSummary]:
        timelines = self.fold(samples=False).timelines(time.time())
        if status:
            timelines = [t for t in timelines if t.status == status]
        return [_summary(t) for t in timelines[-limit:]][::-1]  # newest first

    def get_incident(self, incident_id: str) -> IncidentTimeline:
        return self.fold(samples=True).timeline(incident_id, time.time())

    def get_decision_reason(self, incident_id: str) -> DecisionReason:
        t = self.fold(samples=False).timeline(incident_id, time.time())
        if not t.decisions:
            raise BackoutError(f"incident {t.incident_id} has no decision on the actions topic")
        last = t.decisions[-1]
        return DecisionReason(incident_id=t.incident_id, action=last.action, reason=last.reason,
                              confidence=last.confidence, from_version=last.from_version,
                              to_version=last.to_version, decided_ts=last.ts, evidence=last.evidence,
                              earlier=[d.reason for d in t.decisions[:-1]])

    def backtest(self, path: str | None, from_ts: float | None, to_ts: float | None) -> BacktestResult:
        from backout.settings import load_config
        from streams.backtest import replay

        config = load_config(self.config_path)
        if path is not None:
            if from_ts is not None or to_ts is not None:
                raise BackoutError("give a file or a time range, not both")
            lines: list[bytes] = self._file(path).read_bytes().splitlines()
        else:
            lines = self._topic_lines(from_ts, to_ts)
        bad: list[str] = []
        counts = {"decision": 0, "anomaly": 0, "alert": 0}
        decisions: list[Decision] = []
        for out in replay(lines, config, lambda number, reason: bad.append(f"line {number}: {reason}")):
            counts[out.type] += 1
            if isinstance(out, Decision) and len(decisions) < MAX_DECISIONS:
                decisions.append(out)
        return BacktestResult(decisions=decisions, decisions_total=counts["decision"], anomalies=counts["anomaly"],
                              alerts=counts["alert"], records=sum(1 for line in lines if line.strip()),
                              bad_lines=len(bad), first_bad=bad[:10])

    def answer(self, incident_id: str, approved: bool, by: str) -> Approval:
        from actions.approvals import IncidentTopics, answer

        record, _ = answer(self.settings, IncidentTopics.of(self.names), incident_id, approved, by, via="mcp",
                           approval_timeout_s=self.approval_timeout_s)
        return record

    def _file(self, path: str) -> Path:
        """A JSON Lines file under ``files_dir``: the server never reads anything else."""
        resolved = (self.files_dir / path).resolve()
        if not resolved.is_relative_to(self.files_dir) or resolved.suffix not in (".jsonl", ".ndjson"):
            raise BackoutError(f"{path!r} is not a .jsonl file under {self.files_dir} (the server's --files)")
        if not resolved.is_file():
            raise BackoutError(f"no file {path!r} under {self.files_dir}")
        return resolved

    def _topic_lines(self, from_ts: float | None, to_ts: float | None) -> list[bytes]:
        from streams import topics
        from streams.dump import dump_lines, read_topics

        if from_ts is None or to_ts is None or to_ts <= from_ts:
            raise BackoutError("a backtest of the topics needs from_ts < to_ts (unix seconds, event time)")
        inputs = [self.names.get(t, t) for t in (topics.METRICS, topics.DEPLOYS)]
        return dump_lines(read_topics(self.settings, inputs), from_ts, to_ts)


def build(settings: KafkaSettings | None = None, *, allow_writes: bool = False, token: str | None = None,
          files_dir: str | Path = ".", names: Mapping[str, str] | None = None,
          approval_timeout_s: float = 900.0, config_path: str | None = None) -> MCPServer:
    """The MCP server; ``approve`` and ``deny`` only with ``allow_writes`` and a ``token``."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import ToolAnnotations

    if allow_writes and not token:
        raise ConfigError("--allow-writes needs BACKOUT_API_TOKEN: no token, no write tools")
    tools = Tools(settings or KafkaSettings(), Path(files_dir), names, approval_timeout_s, config_path)
    server: MCPServer = MCPServer("backout", instructions=INSTRUCTIONS, version=_version())
    read = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    def refusals(fn: Callable[..., Any]) -> Callable[..., Any]:
        """Backout's own errors reach the model as the tool's error message (the rest is a crash)."""
        @functools.wraps(fn)  # the SDK reads the signature and the docstring through it
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except BackoutError as exc:
                raise ToolError(str(exc)) from exc

        return call

    @server.tool(annotations=read)
    @refusals
    def list_incidents(status: str | None = None, limit: int = 20) -> list[IncidentSummary]:
        """Incidents on the topics, newest first: id, service, status, and one sentence each.

        status: only incidents in this state (verified, not_recovered, failed, executed, executing,
        decided, approved, denied, timed_out, awaiting_approval, escalated)."""
        return tools.list_incidents(status, max(1, min(limit, 500)))

    @server.tool(annotations=read)
    @refusals
    def get_incident(incident_id: str) -> IncidentTimeline:
        """One incident's timeline (an id or a unique prefix): the deploy, the first degradation with
        the samples around it, the error pattern, the decisions with their reasons and evidence, the
        answer, the rollback, the recovery and the durations between the steps."""
        return tools.get_incident(incident_id)

    @server.tool(annotations=read)
    @refusals
    def get_decision_reason(incident_id: str) -> DecisionReason:
        """Why Backout decided what it did about an incident: its sentence, confidence and evidence."""
        return tools.get_decision_reason(incident_id)

    @server.tool(annotations=read)
    @refusals
    def backtest(path: str | None = None, from_ts: float | None = None,
                 to_ts: float | None = None) -> BacktestResult:
        """Replay metric and deploy records through Backout's detectors and policy, and return the
        decisions it would take: either a JSON Lines file (path, relative to the server's --files
        directory) or the topics between from_ts and to_ts (unix seconds, event time)."""
        return tools.backtest(path, from_ts, to_ts)

    if allow_writes:
        write = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                                open_world_hint=True)

        @server.tool(annotations=write)
        @refusals
        def approve(incident_id: str, by: str) -> Approval:
            """Approve the rollback Backout asked about (status awaiting_approval), on behalf of `by`,
            the person who decided. The executor then rolls back and verifies recovery."""
            return tools.answer(incident_id, True, by)

        @server.tool(annotations=write)
        @refusals
        def deny(incident_id: str, by: str) -> Approval:
            """Deny the rollback Backout asked about (status awaiting_approval), on behalf of `by`."""
            return tools.answer(incident_id, False, by)

    return server


def _summary(t: IncidentTimeline) -> IncidentSummary:
    times = [s.ts for s in t.steps] or [t.as_of_ts]
    return IncidentSummary(incident_id=t.incident_id, service=t.service, status=t.status, headline=t.headline,
                           deploy_version=t.deploy.version if t.deploy else None,
                           first_ts=min(times), last_ts=max(times))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("backout")
    except PackageNotFoundError:
        return "0"


def bearer(app: Any, token: str) -> Callable[..., Awaitable[None]]:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, expected):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": b"missing or wrong bearer token\n"})
                return
        await app(scope, receive, send)

    return guarded


@click.command()
@click.option("--http", "http", is_flag=True, help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on with --http.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535), help="Port with --http.")
@click.option("--allow-writes", is_flag=True,
              help="Offer approve and deny (needs BACKOUT_API_TOKEN; over HTTP every request must bear it).")
@click.option("--files", "files_dir", default=".", show_default=True,
              type=click.Path(exists=True, file_okay=False), help="The only directory backtest reads files from.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Policy and detector YAML for backtests (default: built-in defaults).")
@click.option("--approval-timeout", "approval_timeout_s", type=click.FloatRange(min=1), default=900.0,
              show_default=True, help="The gate's approval_timeout_s, to tell a timed-out question.")
def mcp(http: bool, host: str, port: int, allow_writes: bool, files_dir: str, config_path: str | None,
        approval_timeout_s: float) -> None:
    """Serve Backout's incidents, decision reasons and backtests to an AI assistant over MCP.

    Stdio by default (the assistant starts 'backout mcp' itself); --http serves
    streamable HTTP. Reads the topics at KAFKA_BOOTSTRAP_SERVERS on every call.
    """
    token = os.environ.get("BACKOUT_API_TOKEN") or None
    server = build(allow_writes=allow_writes, token=token, files_dir=files_dir,
                   approval_timeout_s=approval_timeout_s, config_path=config_path)
    if not http:
        server.run("stdio")
        return
    import uvicorn

    app: Any = server.streamable_http_app(host=host)
    if token:
        app = bearer(app, token)
    elif host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(f"--http on {host} without BACKOUT_API_TOKEN would serve anyone: set a token")
    click.echo(f"backout mcp: http://{host}:{port}/mcp ({'read and write' if allow_writes else 'read only'}"
               f"{', bearer token required' if token else ''})", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
