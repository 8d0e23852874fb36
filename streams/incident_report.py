"""An incident timeline rendered for people: Markdown, and a PNG of the blamed metrics.

Both only lay out what :mod:`detectors.incident` computed; every sentence in
them comes from the timeline (that is, from :mod:`detectors.wording`).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from detectors import wording
from detectors.incident import IncidentFold, IncidentTimeline, Sample

PLOT_MARGIN_S = 300.0  # metric history drawn before the first step and after the last

MARKS = {  # step kind -> (colour, line style, legend label)
    "deploy": ("tab:blue", "-", "deploy"),
    "degradation": ("tab:orange", ":", "onset"),
    "decision": ("tab:red", "--", "decision"),
    "approval": ("tab:purple", "--", "answer"),
    "timeout": ("tab:gray", "--", "timed out"),
    "superseded": ("tab:purple", ":", "question superseded"),
    "executing": ("tab:green", ":", "rollback started"),
    "executed": ("tab:green", "-", "rollback done"),
    "failed": ("black", "-", "rollback failed"),
    "verified": ("darkgreen", "-.", "recovery verified"),
    "not_recovered": ("black", "-.", "not recovered"),
}


def markdown(t: IncidentTimeline) -> str:
    """The post-incident report of one timeline, as Markdown."""
    zero = t.deploy.ts if t.deploy else (t.steps[0].ts if t.steps else t.as_of_ts)
    out = [f"# Incident {t.incident_id}" + (f" — {t.service}" if t.service else ""), "",
           f"**{t.status.replace('_', ' ')}.** {t.headline}", "",
           wording.span(zero, t.as_of_ts), ""]
    if t.deploy is not None and not t.deploy.seen:
        out += [f"_{wording.DEPLOY_FROM_EVIDENCE}_", ""]

    out += ["## Timeline", "", "| time | since deploy | step | what happened |", "|---|---|---|---|"]
    for s in t.steps:
        out.append(f"| {wording.clock(s.ts)} | {wording.relative(s.ts - zero)} | {s.kind} | "
                   f"{_cell(s.text)} |")

    if t.degradation is not None:
        d = t.degradation
        out += ["", "## First degradation", "", d.text, "",
                f"| time | since onset | {wording.label(d.metric).lower()} | observations |", "|---|---|---|---|"]
        for x in d.samples:
            count = f"{x.count:.0f}" if x.count is not None else ""
            out.append(f"| {wording.clock(x.ts)} | {wording.relative(x.ts - d.onset_ts)} | "
                       f"{wording.value(d.metric, x.value)} | {count} |")

    if t.pattern:
        out += ["", "## Error pattern", "", "| metric | baseline | worst | onset | detected | detector |",
                "|---|---|---|---|---|---|"]
        for m in t.pattern:
            out.append(f"| {wording.label(m.metric)} | {wording.value(m.metric, m.baseline)} | "
                       f"{wording.value(m.metric, m.peak)} | {wording.relative(m.onset_ts - zero)} | "
                       f"{wording.relative(m.detected_ts - zero)} | {m.detector} |")
        out += [""] + [f"- {m.text}" for m in t.pattern]

    out += ["", "## Decisions", ""]
    out += [f"- {wording.clock(d.ts)} **{d.action}**: {d.text}" for d in t.decisions] or ["- none recorded"]

    out += ["", "## Approval", ""]
    if t.answers:
        out += [f"- {wording.clock(a.ts)} {a.text}" for a in t.answers]
    elif t.timed_out:
        out.append(next(s.text for s in t.steps if s.kind == "timeout"))
    elif any(s.kind == "superseded" for s in t.steps):
        out.append(next(s.text for s in t.steps if s.kind == "superseded"))
    else:
        out.append(wording.NOT_ASKED if not any(d.action == "request_approval" for d in t.decisions)
                   else wording.NO_ANSWER_YET)

    if t.rollback is not None:
        r = t.rollback
        out += ["", "## Rollback", "", f"- target: {r.target_text or 'not named'}",
                f"- versions: {r.from_version or '?'} → {r.to_version or '?'}"]
        for label, ts in (("executing", r.executing_ts), ("executed", r.executed_ts), ("failed", r.failed_ts)):
            if ts is not None:
                out.append(f"- {label}: {wording.clock(ts)} ({wording.relative(ts - zero)})")
        if r.detail:
            out.append(f"- detail: {r.detail}")

    if t.recovery is not None:
        v = t.recovery
        out += ["", "## Recovery", "", f"**{v.status.replace('_', ' ')}** at {wording.clock(v.ts)}: {v.text}"]
        if v.detail and v.detail not in v.text:
            out += ["", f"> {v.detail}"]
        metrics = sorted(set(v.before) | set(v.after))
        if metrics:
            out += ["", "| metric | before | after |", "|---|---|---|"]
            out += [f"| {wording.label(m)} | {_value(m, v.before.get(m))} | {_value(m, v.after.get(m))} |"
                    for m in metrics]

    out += ["", "## Durations", "", "| between | seconds | |", "|---|---|---|"]
    for name, seconds in t.durations.model_dump().items():
        if seconds is not None:
            between = name.removesuffix("_s").replace("_to_", " → ").replace("_", " ")
            out.append(f"| {between} | {seconds:.0f} | {wording.duration(seconds)} |")

    if t.alerts:
        out += ["", "## Alerts sent", ""]
        out += [f"- {wording.clock(a.ts)} [{a.severity}] {a.text}" for a in t.alerts]
    return "\n".join(out) + "\n"


def draw(fold: IncidentFold, t: IncidentTimeline, path: str | Path) -> Path:
    """:func:`plot` of the fold's samples of ``t``'s blamed metrics, from a little before its first
    step to a little after its last."""
    span = [s.ts for s in t.steps] or [t.as_of_ts]
    start, end = min(span) - PLOT_MARGIN_S, max(span) + PLOT_MARGIN_S
    return plot(t, {m.metric: fold.series(t.service or "", m.metric, start, end) for m in t.pattern}, path)


def plot(t: IncidentTimeline, series: dict[str, list[Sample]], path: str | Path) -> Path:
    """A PNG of the blamed metrics (``series``: metric -> samples), the steps marked; returns the path."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    blamed = [m.metric for m in t.pattern]
    metrics = ([m for m in blamed if series.get(m)] or blamed or sorted(series))[:4]
    if not metrics:
        raise ValueError(f"incident {t.incident_id} names no metric to plot")
    zero = t.deploy.ts if t.deploy else (t.steps[0].ts if t.steps else t.as_of_ts)
    fig, axes = plt.subplots(len(metrics), 1, figsize=(10, 1.6 + 2.6 * len(metrics)), sharex=True, squeeze=False)
    moved = {m.metric: m for m in t.pattern}
    legend: dict[str, Any] = {}
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        samples = series.get(metric, [])
        ax.plot([(s.ts - zero) / 60 for s in samples], [s.value for s in samples], color="0.2", lw=1.2,
                marker="." if len(samples) < 200 else None)
        if metric in moved:
            m = moved[metric]
            legend["baseline"] = ax.axhline(m.baseline, color="0.5", ls="--", lw=0.8)
            legend["worst"] = ax.plot([(m.peak_ts - zero) / 60], [m.peak], "v", color="tab:red", ms=8)[0]
        for step in t.steps:
            colour, style, label = MARKS.get(step.kind, ("0.6", ":", step.kind.replace("_", " ")))
            legend.setdefault(label, ax.axvline((step.ts - zero) / 60, color=colour, ls=style, lw=1.3))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _pos, m=metric: wording.value(m, y)))
        ax.set_ylabel(wording.label(metric))
        ax.grid(alpha=0.3)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(6, len(legend)), fontsize=8,
               frameon=False)
    axes[-1, 0].set_xlabel(f"minutes since the deploy ({wording.day(zero)} {wording.clock(zero)})")
    fig.suptitle("\n".join(textwrap.wrap(t.headline, 110)), fontsize=10)
    fig.tight_layout(rect=(0, 0.07 if len(legend) > 6 else 0.045, 1, 1))
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _value(metric: str, x: float | None) -> str:
    return wording.value(metric, x) if x is not None else ""
