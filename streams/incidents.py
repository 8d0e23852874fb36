"""``backout incident``: the topics (or a dump of them) replayed into incident timelines.

A thin front end: records are read and handed to :class:`detectors.incident.IncidentFold`,
which computes everything; :mod:`streams.incident_report` lays the result out.
The small topics (deploys, anomalies, actions, approvals, verifications, alerts)
are folded first, then only the metric samples the fold says it can use, so a
week of metrics costs a read, not memory.

The group is a table like the top level: ``report`` is here; ``list`` and
``show`` (open and recent incidents, for the on-call) belong to the approval
gate's front end and plug in by naming their command in :data:`INCIDENT_COMMANDS`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import click
from confluent_kafka import Message

from backout.cli import LazyGroup
from backout.contracts import Metric, decode
from backout.errors import BackoutError, ContractError
from backout.settings import KafkaSettings
from detectors import wording
from detectors.incident import IncidentFold, IncidentTimeline
from streams import topics

INCIDENT_COMMANDS: dict[str, tuple[str | None, str]] = {
    "report": ("streams.incidents:report", "The post-incident report of one incident (or all) as Markdown or JSON."),
    "list": ("actions.approvals:incident_list", "List open and recent incidents."),
    "show": ("actions.approvals:incident_show", "Show where one incident stands."),
}

# what the timeline reads, small topics first
TIMELINE_TOPICS = (topics.DEPLOYS, topics.ANOMALIES, topics.ACTIONS, topics.APPROVALS,
                   topics.VERIFICATIONS, topics.ALERTS)

OnBad = Callable[[str, str], None]  # (where, reason)


class IncidentGroup(LazyGroup):
    table = INCIDENT_COMMANDS


@click.group(cls=IncidentGroup)
def incident() -> None:
    """Incidents as the topics tell them: reports, and (soon) the open ones."""


def fold_topics(fold: IncidentFold, settings: KafkaSettings, names: Mapping[str, str] | None = None,
                on_bad: OnBad | None = None, samples: bool = True) -> int:
    """Fold Backout's topics, read to their end, into ``fold``; return how many records were new.

    ``names`` maps a Backout topic to the name it has on this broker (default: itself);
    ``samples`` False skips the metrics topic (enough to list incidents and their states).
    Each decision keeps the partition it was read from (an answer goes to the same one).
    """
    from streams.dump import read_topics

    names = names or {}
    small = read_topics(settings, [names.get(t, t) for t in TIMELINE_TOPICS])
    new = _fold(((_where(m), m.value() or b"", m.partition()) for m in small), fold, None, on_bad)
    if not samples:
        return new
    metrics = read_topics(settings, [names.get(topics.METRICS, topics.METRICS)])
    return new + _fold(((_where(m), m.value() or b"", None) for m in metrics), fold, "metric", on_bad)


def _where(msg: Message) -> str:
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"


def fold_file(fold: IncidentFold, path: str | Path, on_bad: OnBad | None = None) -> int:
    """Fold a JSON Lines file (a dump, or any file of records) into ``fold``: twice over it, samples last."""
    def lines() -> Iterable[tuple[str, bytes, None]]:
        with open(path, "rb") as file:
            for number, line in enumerate(file, start=1):
                if line.strip():
                    yield f"line {number}", line, None

    return _fold(lines(), fold, "other", on_bad) + _fold(lines(), fold, "metric", None)


def _fold(items: Iterable[tuple[str, bytes, int | None]], fold: IncidentFold, only: str | None,
          on_bad: OnBad | None) -> int:
    """Decode and fold (where, value, partition) items; ``only``: 'metric' takes just the samples the
    fold wants, 'other' all but samples."""
    new = 0
    for where, raw, partition in items:
        if only == "metric" and b'"metric"' not in raw:
            continue  # cheap pre-filter: not a sample
        try:
            record = decode(raw)
        except ContractError as exc:
            if on_bad is not None:
                on_bad(where, str(exc))
            continue
        if isinstance(record, Metric):
            if only == "other" or not fold.wants(record):
                continue
        elif only == "metric":
            continue
        new += fold.add(record, partition)
    return new


def load(source: str | None, approval_timeout_s: float, on_bad: OnBad | None = None,
         settings: KafkaSettings | None = None, names: Mapping[str, str] | None = None,
         samples: bool = True) -> IncidentFold:
    """A fold of the topics (``source`` None) or of a JSON Lines file."""
    fold = IncidentFold(approval_timeout_s=approval_timeout_s)
    if source is None:
        fold_topics(fold, settings or KafkaSettings(), names, on_bad, samples)
    else:
        fold_file(fold, source, on_bad)
    return fold


@click.command()
@click.argument("incident_id", required=False, metavar="[INCIDENT]")
@click.option("--from", "source", type=click.Path(exists=True, dir_okay=False), metavar="FILE.jsonl",
              help="Read a dump ('backout topics dump') instead of the topics.")
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True,
              help="Markdown for people; JSON (one object per incident and line) for tools.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, writable=True), metavar="FILE.png",
              help="Also draw the blamed metrics with the deploy, decision, rollback and recovery marked.")
@click.option("--approval-timeout", "approval_timeout_s", type=click.FloatRange(min=1), default=900.0,
              show_default=True, help="The gate's approval_timeout_s: an older unanswered question timed out.")
def report(incident_id: str | None, source: str | None, fmt: str, plot_path: str | None,
           approval_timeout_s: float) -> None:
    """The post-incident report of INCIDENT (an id or a unique prefix), or of every incident.

    Replays the topics, read to their end, or FILE.jsonl into the timeline:
    the deploy, the first degradation, the error pattern, the decisions and
    their reasons, the approval, the rollback, the recovery and the time
    between the steps. Unreadable records are reported on stderr and counted.
    """
    bad = 0

    def on_bad(where: str, reason: str) -> None:
        nonlocal bad
        bad += 1
        click.echo(f"{where}: {reason}", err=True)

    fold = load(source, approval_timeout_s, on_bad)
    timelines = [fold.timeline(incident_id)] if incident_id else fold.timelines()
    if plot_path and len(timelines) != 1:
        ids = ", ".join(t.incident_id for t in timelines[-5:]) or "none"
        raise BackoutError(f"--plot draws one incident; {len(timelines)} were found (latest: {ids}): name one")
    write(timelines, fmt)
    if plot_path:
        from streams.incident_report import draw

        draw(fold, timelines[0], plot_path)
        click.echo(f"plot written to {plot_path}", err=True)
    click.echo(f"incident report: {len(timelines)} incident(s); {bad} unreadable record(s)", err=True)


def write(timelines: list[IncidentTimeline], fmt: str) -> None:
    if fmt == "json":
        for t in timelines:
            sys.stdout.write(t.model_dump_json() + "\n")
        return
    from streams.incident_report import markdown

    sys.stdout.write("\n".join(markdown(t) for t in timelines) or wording.NO_INCIDENT + "\n")
