"""The demo's story: warm up, deploy, and watch what Backout does, answering its question.

The demo acts twice, as a deploy system and a person would: it deploys (switches nginx to
green and publishes the deploy event), and, when the worker asks, it answers (in the terminal,
or yes with ``--yes``). Everything else is Backout's own doing; the story only reads the
timeline (:mod:`streams.demo_timeline`) and what the users saw (:mod:`streams.demo_load`),
and ends with a status: ``verified``, ``not_recovered``, ``failed``, ``denied``,
``escalated``, ``timeout``; with ``--good`` ``no_action``, or ``unexpected_<action>``.
"""

from __future__ import annotations

import getpass
import time
from dataclasses import dataclass

from rich.prompt import Confirm

from actions.approvals import IncidentTopics, answer
from streams.demo_stack import GOOD_VERSION, SERVICE, DemoStack
from streams.demo_timeline import Timeline

TRAFFIC_EVERY_S = 10.0


@dataclass(frozen=True)
class Story:
    good: bool  # a healthy version is deployed: nothing must happen
    yes: bool  # answer the question yes without asking
    warmup_s: float  # traffic on blue before the deploy
    observe_s: float  # with ``good``: how long nothing must happen
    timeout_s: float  # after the deploy: give up


def play(stack: DemoStack, timeline: Timeline, story: Story) -> str:
    """Warm up, deploy, then watch until the story ends; the run's status."""
    good, warmup_s = story.good, story.warmup_s
    started = time.time()
    next_traffic = started + TRAFFIC_EVERY_S
    while time.time() < started + warmup_s:
        next_traffic = _traffic(stack, timeline, next_traffic)
        time.sleep(0.2)
    deploy_ts = time.time()
    timeline.deploy_ts = deploy_ts
    record = stack.deploy(f"deploy-{int(deploy_ts)}", deploy_ts)
    timeline.show("deploy", f"{SERVICE} {record.previous_version} → {record.version} ({record.deploy_id}): "
                            f"nginx now sends every request to green", deploy_ts)
    asked = False
    while True:
        now = time.time()
        next_traffic = _traffic(stack, timeline, next_traffic)
        _first_errors(stack, timeline, record.version, deploy_ts)
        decision = timeline.first("decision")
        if decision is not None:
            action = decision.record["action"]
            if good:
                return f"unexpected_{action}"
            if action == "escalate":
                return "escalated"
            if action == "request_approval" and not asked:
                asked = True
                if not _ask(stack, timeline, decision.record, story.yes):
                    time.sleep(2)  # the approval's line
                    return "denied"
        for step in ("verified", "not_recovered", "failed"):
            if timeline.first(step) is not None:
                time.sleep(TRAFFIC_EVERY_S / 2)  # a little traffic after the end, seen by users
                _traffic(stack, timeline, 0.0)
                return step
        if good and now > deploy_ts + story.observe_s:
            return "no_action"
        if now > deploy_ts + story.timeout_s:
            return "timeout"
        time.sleep(0.2)


def _ask(stack: DemoStack, timeline: Timeline, decision: dict, yes: bool) -> bool:
    """Put the worker's question to the terminal (or answer yes for the user); send the answer."""
    question = (f"Roll {decision['service']} back from {decision.get('from_version')} to "
                f"{decision.get('to_version')} ({decision['incident_id']})?")
    if yes:
        approved = True
        timeline.show("approval", f"{question} yes (--yes)")
    else:
        approved = Confirm.ask(f"[bold magenta]{question}[/bold magenta]", console=timeline.console, default=True)
    answer(stack.kafka, IncidentTopics(), decision["incident_id"], approved, getpass.getuser(), via="demo")
    return approved


def _traffic(stack: DemoStack, timeline: Timeline, due_ts: float) -> float:
    """Every ``TRAFFIC_EVERY_S``: what users saw over the last interval, from their own counts."""
    now = time.time()
    if now < due_ts:
        return due_ts
    seen = stack.load.traffic.between(now - TRAFFIC_EVERY_S, now)
    p95 = f"{seen.p95_s * 1000:.0f} ms" if seen.p95_s is not None else "-"
    timeline.show("traffic", f"{seen.requests / TRAFFIC_EVERY_S:.0f} req/s, {seen.error_rate:.1%} errors, "
                             f"p95 {p95}, served by {', '.join(seen.versions) or 'nobody'}", now)
    return now + TRAFFIC_EVERY_S


def _first_errors(stack: DemoStack, timeline: Timeline, version: str, deploy_ts: float) -> None:
    """The first 500 users got from the new version, next to the old version's usual rate."""
    if timeline.first("errors") is not None:
        return
    found = stack.load.traffic.first_error(version, deploy_ts)
    if found is not None:
        first_ts, counts = found
        before = stack.load.traffic.between(deploy_ts - 60, deploy_ts)
        timeline.mark("errors", {"ts": first_ts})
        timeline.show("errors", f"first 500s from {version}: {counts.error_versions[version]} of "
                                f"{counts.requests} requests in that second ({GOOD_VERSION} failed "
                                f"{before.error_rate:.1%} of requests in the minute before the deploy)",
                      first_ts)
