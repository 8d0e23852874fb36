"""Sentences a human can act on, with the numbers.

>>> duration(90), duration(180), duration(3900)
('90 seconds', 'three minutes', '1 hour 5 minutes')
>>> value("error_rate", 0.005), value("latency_p95", 0.25), value("latency_p95", 1.5), value("health", 0.6)
('0.5%', '250 ms', '1.5 s', '60%')
>>> value("latency_p95", 1420.0), value("requests", 12345.0)  # never 1.4e+03
('1,420 s', '12,345')
>>> change("error_rate", 0.005, 0.05, "up")
'Error rate went from 0.5% to 5% (10x)'
>>> change("health", 1.0, 0.6, "down")
'Health fell from 100% to 60%'
>>> together(["a", "b", "c"], 8)
'3 of 8 services at the same time (a, b, c)'
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

LABELS = {"error_rate": "Error rate", "latency_p95": "p95 latency", "health": "Health",
          "requests": "Traffic"}
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def label(metric: str) -> str:
    return LABELS.get(metric, metric.replace("_", " ").capitalize())


def value(metric: str, x: float) -> str:
    """A metric value in the unit people read it in."""
    if metric in ("error_rate", "health"):
        pct = 100 * x
        return f"{pct:.2g}%" if pct < 10 else f"{pct:.0f}%"
    if metric.startswith("latency"):
        return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2g} s" if x < 10 else f"{x:,.0f} s"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 120:
        return f"{s} second{'s' if s != 1 else ''}"
    minutes = round(s / 60)
    if minutes < 60:
        return f"{WORDS[minutes] if minutes <= 10 else minutes} minutes"
    hours, rest = divmod(minutes, 60)
    text = f"{hours} hour{'s' if hours > 1 else ''}"
    return text + (f" {rest} minute{'s' if rest > 1 else ''}" if rest else "")


def times(factor: float) -> str:
    return f"{factor:.0f}x" if factor >= 10 else f"{factor:.1f}x".replace(".0x", "x")


def change(metric: str, baseline: float, current: float, direction: str | None) -> str:
    """'Error rate went from 0.5% to 5% (10x)'."""
    text = f"{label(metric)} {'fell' if current < baseline else 'went'} from {value(metric, baseline)} to {value(metric, current)}"
    if direction != "down" and baseline > 0 and current > baseline:
        text += f" ({times(current / baseline)})"
    return text


def clock(ts: float) -> str:
    """An event time as people read it in an alert: '12:34:56 UTC'."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%H:%M:%S UTC")


# -- doubts: why a blame is not clear-cut (listed in a request for approval) -------------------------

def below_clear(factor: float, clear_ratio: float) -> str:
    """Rounded down: a 2.96x change is "2.9x", never "3.0x below the 3x"."""
    return f"a {math.floor(factor * 10) / 10:.1f}x change is below the {clear_ratio:g}x that is clear-cut"


def small_change() -> str:
    return "the absolute change is small"


def late_onset(lag_s: float, clear_within_s: float) -> str:
    return (f"it began {lag_s / 60:.0f} min after the deploy, later than the "
            f"{clear_within_s / 60:g} min that is clear-cut")


def followed(others: int) -> str:
    return f"{others} other services shifted right after it: its callers, or a shared cause"


def same_moment(other: str) -> str:
    return f"{other} (also just deployed) moved at the same moment"


def succession(earlier: str, gap_s: float, version: str) -> str:
    return f"{earlier} was deployed only {gap_s:.0f} s before {version}"


def traffic_moved(metric: str, baseline: float, current: float) -> str:
    return f"{metric} moved too ({baseline:.3g} → {current:.3g}): it might be traffic"


def may_predate(lead_s: float) -> str:
    return f"it may have begun up to {duration(lead_s)} before the deploy (the samples cannot tell)"


def shifted_before(services: list[str]) -> str:
    return f"{', '.join(services)} shifted at the same time or earlier"


# -- alerts: a shift nobody's deploy is to blame for, or nothing to do about yet ---------------------

def no_deploy(what: str, service: str, onset_ts: float, window_s: float) -> str:
    return f"{what} on {service} (onset {clock(onset_ts)}); no deploy of it in the last {duration(window_s)} to blame."


def before_deploy(what: str, service: str, early_s: float, version: str) -> str:
    return (f"{what} on {service}, starting {duration(early_s)} before the deployment of {version}: "
            "not that deploy's fault.")


def follower(what: str, service: str, leader: str) -> str:
    return (f"{what} on {service}; {leader}, deployed at the same time, moved first: treating it as the cause, "
            "not this service's deploy.")


def echo(what: str, service: str, source: str) -> str:
    return (f"{what} on {service}; {source}, not deployed, moved at the same time or earlier and by far more: "
            f"the trouble looks like it began there and reached {service}, not like this service's deploy.")


def alongside(what: str, service: str, others: list[str], lag_s: float) -> str:
    return (f"{what} on {service}, beginning {duration(lag_s)} after its deploy, when {', '.join(others)} "
            f"(no deploy of theirs just before) shifted too, no later: a shared cause is likelier than this "
            "deploy; not asking.")


def surge(what: str, service: str, surged: list[str], total: int, lag_s: float) -> str:
    return (f"{what} on {service}, beginning {duration(lag_s)} after its deploy, as traffic rose on "
            f"{together(surged, total)}: a traffic surge is likelier than this deploy; not asking.")


def watching(what: str, service: str, version: str) -> str:
    return f"{what} on {service} after the deployment of {version}, below the rollback threshold: watching."


def stale(what: str, service: str, after_s: float, version: str) -> str:
    return (f"{what} on {service}, first confirmed {duration(after_s)} after the deployment of {version}: "
            "too long after it to pin on it; watching.")


def load(what: str, service: str, version: str, traffic: float) -> str:
    return (f"{what} on {service} after the deployment of {version}, while its traffic grew {times(traffic)}: "
            "load, not the deploy; watching.")


def reverted(what: str, service: str, version: str, current: str | None) -> str:
    return f"{what} on {service} after the deployment of {version}; it already runs {current} again."


def grew_after_redeploy(what: str, service: str, version: str, current: str | None) -> str:
    return (f"{what} on {service} since the deployment of {version}; it grew after {current or 'another version'} "
            "was deployed, whose own tests judge it: nothing asked about this one.")


def together(services: list[str], total: int) -> str:
    """'5 of 8 services at the same time (a, b, c, d, e)'."""
    listed = ", ".join(services[:8]) + (", …" if len(services) > 8 else "")
    return f"{len(services)} of {total} services at the same time ({listed})"


def shared(metric: str, services: list[str], total: int) -> str:
    return (f"{label(metric)} shifted on {together(services, total)}: a shared dependency or a traffic surge, "
            "not a deploy; nothing to roll back. A human should look.")


# -- decisions: what Backout does about a blamed deploy, and why ------------------------------------

def shared_deploy(what: str, service: str, lag_s: float, version: str, services: list[str], total: int,
                  soon: bool = False) -> str:
    """``soon``: the shift began right after the deploy, when its own trouble would begin too."""
    cause = ("a shared dependency, a traffic surge, or this deploy's fault reaching the services that call it"
             if soon else "a shared dependency or a traffic surge, not this deploy")
    return (f"{what} on {service} {duration(lag_s)} after the deployment of {version}, "
            f"but it shifted on {together(services, total)}: {cause}. Escalating to a human.")


def no_target(what: str, lag_s: float, version: str, service: str) -> str:
    return (f"{what} {duration(lag_s)} after the deployment of {version} to {service}, "
            f"but no earlier version of {service} is known to be good: nothing safe to roll back to. "
            "Escalating to a human.")


def policy_off(what: str, lag_s: float, version: str, service: str, would: str, target: str | None) -> str:
    verb = "roll back" if would == "rollback" else "ask to roll back"
    return (f"{what} {duration(lag_s)} after the deployment of {version} to {service}. "
            f"Backout would {verb} to {target}; the policy is off here, so it is not acting.")


def rollback(what: str, lag_s: float, version: str, service: str, target: str) -> str:
    return (f"{what} {duration(lag_s)} after the deployment of {version} to {service}. "
            f"Rolling back to {target}.")


def upgrade(what: str, lag_s: float, version: str, service: str, target: str, asked_s: float) -> str:
    return (f"{what} {duration(lag_s)} after the deployment of {version} to {service}: now clear-cut. "
            f"Rolling back to {target} without waiting for the approval asked {duration(asked_s)} ago.")


def approval(what: str, version: str, service: str, ago_s: float, lag_s: float, target: str,
             doubts: tuple[str, ...]) -> str:
    why = f" Not clear-cut: {'; '.join(doubts)}." if doubts else ""
    return (f"{what} after the deployment of {version} to {service} {duration(ago_s)} ago "
            f"(the shift began {duration(lag_s)} after it).{why} "
            f"I recommend rolling back to {target}. Should I proceed?")


# -- after the decision: recovery (detectors.recovery) and the approval gate (actions.gate) ------


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]


def recovered(changes: list[tuple[str, float, float]], within_s: float, version: str | None) -> str:
    """'Error rate dropped from 5% back to 0.5% within two minutes of the rollback. The deploy of
    v2.15.1 was the cause.' ``changes``: (metric, shifted level, level after the rollback)."""
    parts = [f"{label(m) if i == 0 else _lower(label(m))} {'dropped' if after < before else 'rose'} "
             f"from {value(m, before)} back to {value(m, after)}" for i, (m, before, after) in enumerate(changes)]
    text = f"{' and '.join(parts)} within {duration(within_s)} of the rollback."
    return text + (f" The deploy of {version} was the cause." if version else "")


def not_recovered(still: list[tuple[str, float, float | None]], within_s: float, version: str | None) -> str:
    """One sentence per metric that did not come back: (metric, baseline, level since the rollback,
    None when no sample arrived)."""
    before = f"before the deploy of {version}" if version else "before the deploy"
    out = []
    for m, baseline, level in still:
        if level is None:
            out.append(f"No samples of {_lower(label(m))} arrived in the {duration(within_s)} after the "
                       "rollback: its recovery cannot be shown.")
        else:
            out.append(f"{label(m)} is still {value(m, level)} ({value(m, baseline)} {before}) "
                       f"{duration(within_s)} after the rollback.")
    return " ".join(out)


def executing(service: str, from_version: str | None, to_version: str, kind: str, by: str | None) -> str:
    why = f"approved by {by}" if by else "automatically"
    start = f" from {from_version}" if from_version else ""
    return f"Rolling back {service}{start} to {to_version} ({kind} target), {why}."


def executed(service: str, to_version: str, took_s: float, verify_within_s: float) -> str:
    return (f"Rolled back {service} to {to_version} in {duration(took_s)}; checking for "
            f"{duration(verify_within_s)} that the blamed metrics recover.")


def nothing_to_verify(service: str, to_version: str) -> str:
    return (f"Rolled back {service} to {to_version}, but the decision blamed no metric to watch: "
            "a human must check that it recovered.")


def rollback_failed(service: str, to_version: str, detail: str) -> str:
    return (f"The rollback of {service} to {to_version} failed: {detail.rstrip('.')}. "
            "A human must act; Backout will not try again for this incident.")


def rollback_verified(detail: str) -> str:
    return f"{detail} Recovery verified."


def rollback_not_recovered(service: str, detail: str) -> str:
    return (f"{detail} The rollback did not fix {service}: escalating to a human. "
            "Backout will not roll it back again for this incident.")


def denied(service: str, to_version: str, by: str) -> str:
    return f"{by} denied rolling back {service} to {to_version}: not acting. The incident is with a human now."


def approval_timed_out(service: str, to_version: str, waited_s: float) -> str:
    return (f"No one answered within {duration(waited_s)} whether to roll back {service} to {to_version}: "
            "escalating to a human. Later approvals of this incident are ignored.")


def cooldown(service: str, incident: str, ago_s: float, cooldown_s: float) -> str:
    return (f"{service} was rolled back {duration(ago_s)} ago, and Backout rolls a service back "
            f"automatically at most once in {duration(cooldown_s)}: asking a human instead. "
            f"Answer with `backout approve {incident}` or `backout deny {incident}`.")


def version_moved(service: str, running: str, blamed: str) -> str:
    return (f"Not rolling back {service}: it runs {running} now, not {blamed} that the decision blamed; "
            "someone already acted.")


def target_rolled_back(service: str, to_version: str) -> str:
    return (f"Not rolling back {service} to {to_version}: that version was itself rolled back before, so it "
            "is not a safe one to return to. A human must choose.")


def rollback_in_progress(service: str, other: str) -> str:
    return (f"Not rolling back {service} now: another rollback of it ({other}) is in progress. "
            "A human must look.")


def cannot_roll_back(service: str, detail: str) -> str:
    return f"Not rolling back {service}: {detail.rstrip('.')}. A human must act."


def answer_ignored(approved: bool, by: str, incident: str, why: str) -> str:
    """'alice's approval of inc-… changes nothing: the rollback to v2.15.0 already ran automatically.'"""
    return f"{by}'s {'approval' if approved else 'denial'} of {incident} changes nothing: {why}."


def why_ran(to_version: str, by: str | None) -> str:
    return (f"the rollback to {to_version} was already approved by {by}" if by else
            f"the rollback to {to_version} already ran automatically, superseding the question")


def why_answered(approved: bool, by: str) -> str:
    return f"{by} already {'approved' if approved else 'denied'} it, and the first answer counts"


def why_timed_out(ago_s: float) -> str:
    return f"the question timed out {duration(ago_s)} ago and was escalated to a human"


def why_escalated() -> str:
    return "Backout escalated it to a human; there is no rollback to approve"


def why_refused(reason: str) -> str:
    return f"the rollback was refused ({_lower(reason.rstrip('.'))})"


def why_unknown(service: str, waited_s: float) -> str:
    return f"no decision of {service} with this incident id arrived within {duration(waited_s)}"


def why_too_many(service: str, limit: int) -> str:
    return f"{limit} approvals already wait for decisions of {service} that have not arrived"


def answer_refused(approved: bool, by: str, incident: str, why: str) -> str:
    return f"{by}'s {'approval' if approved else 'denial'} of {incident} would change nothing, so it was not sent: {why}."


def unknown_incident(incident: str, topic: str) -> str:
    return (f"no decision on {topic} carries incident {incident!r}: "
            "`backout incident list` shows the open ones")

# -- the post-incident timeline (detectors/incident.py) ------------------------------------

ACTIONS = {"rollback": "Decided to roll back", "request_approval": "Asked for approval to roll back",
           "escalate": "Escalated to a human"}


def relative(seconds: float) -> str:
    """A signed offset, exact for the tables: '+95 s', '-12 s', '+4 min 10 s'."""
    sign, s = ("-" if seconds < 0 else "+"), abs(round(seconds))
    return f"{sign}{s} s" if s < 120 else f"{sign}{s // 60} min {s % 60} s" if s % 60 else f"{sign}{s // 60} min"


def target_name(kind: str, fields: dict[str, object]) -> str:
    """'kubernetes shop/checkout', 'webhook https://deploy.example/hook', 'bluegreen (upstream=shop)'."""
    if "name" in fields:
        where = f"{fields['namespace']}/{fields['name']}" if "namespace" in fields else str(fields["name"])
        return f"{kind} {where}"
    if "url" in fields:
        return f"{kind} {fields['url']}"
    rest = ", ".join(f"{k}={v}" for k, v in sorted(fields.items()))
    return f"{kind} ({rest})" if rest else kind


def deployed(version: str, service: str, previous: str | None, target: str | None) -> str:
    """'v2.15.1 deployed to checkout, replacing v2.15.0 (kubernetes shop/checkout).'"""
    text = f"{version} deployed to {service}"
    text += f", replacing {previous}" if previous else ""
    return text + (f" ({target})." if target else ".")


def later_deploy(version: str, previous: str | None, status: str, back_to_good: bool) -> str:
    """A later deploy of the same service, as its deploy system reported it.

    'v2.15.0 runs again (rolled back).' / 'v2.16.0 deployed, replacing v2.15.1 (started).'
    """
    if back_to_good:
        return f"{version} runs again ({status.replace('_', ' ')})."
    replacing = f", replacing {previous}" if previous else ""
    return f"{version} deployed{replacing} ({status.replace('_', ' ')})."


def began(metric: str, direction: str, lag_s: float, detector: str, confirmed_after_s: float) -> str:
    """'Error rate began to rise 40 seconds after the deploy; cusum confirmed it 50 seconds later.'"""
    verb = "rise" if direction == "up" else "fall"
    when = (f"{duration(lag_s)} after the deploy" if lag_s >= 0
            else f"{duration(-lag_s)} before the deploy's record (an onset is an estimate)")
    return (f"{label(metric)} began to {verb} {when}; {detector} confirmed the shift "
            f"{duration(confirmed_after_s)} later.")


def worst(metric: str, baseline: float, peak: float, direction: str, peak_after_s: float) -> str:
    """'Error rate went from 0.5% to 5.2% at worst (10x), 3 minutes after the onset.'"""
    text = (f"{label(metric)} {'fell' if direction == 'down' else 'went'} from {value(metric, baseline)} "
            f"to {value(metric, peak)} at worst")
    if direction == "up" and baseline > 0 and peak > baseline:
        text += f" ({times(peak / baseline)})"
    elif direction == "down" and baseline > 0 and peak < baseline:
        text += f" ({100 * (1 - peak / baseline):.0f}% lower)"
    return text + f", {duration(peak_after_s)} after the onset."


def decided(action: str, confidence: float, reason: str, upgrade: bool) -> str:
    """The decision as a step: what was done, how sure, and the decider's own sentence."""
    what = "Upgraded the question to a rollback" if upgrade else ACTIONS.get(action, action)
    return f"{what} (confidence {100 * confidence:.0f}%): {reason}"


def answered(approved: bool, by: str, wait_s: float | None) -> str:
    """'Approved by alice 90 seconds after the question.'"""
    text = f"{'Approved' if approved else 'Denied'} by {by}"
    return text + (f" {duration(wait_s)} after the question." if wait_s is not None else ".")


def superseded(asked_s: float) -> str:
    return (f"The question asked {duration(asked_s)} earlier was superseded by the rollback: "
            "no answer was needed.")


def unanswered(timeout_s: float) -> str:
    return (f"No answer within {duration(timeout_s)}: the question timed out and went to a human; "
            "nothing was rolled back.")


def timeline_executing(service: str, from_version: str | None, to_version: str | None, target: str | None) -> str:
    """'Rolling back checkout from v2.15.1 to v2.15.0 on kubernetes shop/checkout.'"""
    text = f"Rolling back {service}"
    text += f" from {from_version}" if from_version else ""
    text += f" to {to_version}" if to_version else ""
    return text + (f" on {target}." if target else ".")


def timeline_executed(to_version: str | None, took_s: float | None, detail: str) -> str:
    """'Rollback done: v2.15.0 runs again, 25 seconds after it started.'"""
    text = f"Rollback done: {to_version} runs again" if to_version else "Rollback done"
    text += f", {duration(took_s)} after it started." if took_s is not None else "."
    return text + (f" {detail}" if detail else "")


def timeline_rollback_failed(detail: str) -> str:
    return f"Rollback failed: {detail or 'no detail given'}. A human must act."


def timeline_recovered(metric: str, before: float, after: float, after_rollback_s: float | None) -> str:
    """'Error rate came back from 5% to 0.5%, 2 minutes after the rollback.'"""
    text = f"{label(metric)} came back from {value(metric, before)} to {value(metric, after)}"
    return text + (f", {duration(after_rollback_s)} after the rollback." if after_rollback_s is not None else ".")


def still_bad(metric: str, before: float, after: float, baseline: float | None) -> str:
    """'Error rate is still 4.8% (5% before the rollback, 0.5% before the deploy).'"""
    text = f"{label(metric)} is still {value(metric, after)} ({value(metric, before)} before the rollback"
    return text + (f", {value(metric, baseline)} before the deploy)." if baseline is not None else ").")


def timeline_not_recovered(within_s: float | None) -> str:
    when = f" {duration(within_s)} after the rollback" if within_s is not None else ""
    return (f"Not recovered{when}: a human must look. Backout will not roll back again on its own.")


def headline(service: str, version: str | None, what: str | None, status: str, to_version: str | None,
             by: str | None, rollback_s: float | None, verified_s: float | None,
             timeout_s: float) -> str:
    """One sentence for the top of the report: what broke, and where the incident stands."""
    head = f"{version} broke {service}" if version else f"{service} degraded"
    head += f" ({what})" if what else ""
    to = f" to {to_version}" if to_version else ""
    after = f" {duration(rollback_s)} after the deploy" if rollback_s is not None else ""
    tail = {
        "verified": (f"rolled back{to}{after} and recovered "
                     f"{duration(verified_s)} after the deploy" if verified_s is not None
                     else f"rolled back{to}{after} and recovered"),
        "not_recovered": f"rolled back{to}{after}, but the service has not recovered: a human must look",
        "failed": f"the rollback{to} failed: a human must act",
        "executed": f"rolled back{to}{after}; recovery not verified yet",
        "executing": f"rolling back{to}",
        "decided": f"rollback{to} decided, not executed yet",
        "approved": f"rollback{to} approved by {by}, not executed yet",
        "awaiting_approval": f"waiting for approval to roll back{to}",
        "denied": f"the rollback{to} was denied by {by}",
        "timed_out": f"nobody answered within {duration(timeout_s)}: escalated to a human",
        "escalated": "escalated to a human",
    }.get(status, status.replace("_", " "))
    return f"{head}; {tail}."


NO_INCIDENT = "No incident in the records read."
NOT_ASKED = "Not asked: the decision did not wait for an approval."
NO_ANSWER_YET = "No answer yet."
DEPLOY_FROM_EVIDENCE = ("The deploy record was not among the records read; its details come from the "
                        "decision's evidence.")


def day(ts: float) -> str:
    """'2023-11-14' (UTC)."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d")


def span(from_ts: float, to_ts: float) -> str:
    """'Event times in UTC, from 2023-11-14 22:13:20 UTC; records read up to 2023-11-14 22:20:00 UTC.'"""
    return (f"Event times in UTC, from {day(from_ts)} {clock(from_ts)}; records read up to "
            f"{day(to_ts)} {clock(to_ts)}.")


# -- the web page (backout/web.py) ----------------------------------------------------------

WEB_WRITES_OFF = ("Answering from this page is off: start it with BACKOUT_API_TOKEN set to enable "
                  "Approve and Deny. Meanwhile `backout approve INCIDENT` and `backout deny INCIDENT` work.")
WEB_SIGN_IN = "Sign in with the API token to approve or deny; your name goes on the answer."
WEB_SIGN_IN_FIRST = "Sign in first: an answer needs the API token, from this page's sign-in or a bearer header."
WEB_BAD_TOKEN = "That is not the API token this page was started with."
WEB_CROSS_SITE = "Refused: the request came from another site."
WEB_NO_OPEN = "No open incidents: nothing waits on Backout or on you."
WEB_NO_RECENT = "No decisions or verifications on the topics yet."
WEB_NO_PLOT = "No metric to plot: the decision blamed none."


def web_signed_in(by: str) -> str:
    return f"Signed in as {by}: your answers go out as {by} via web."


def web_question(service: str | None, from_version: str | None, to_version: str | None, due_s: float | None) -> str:
    """'Roll checkout back from v2.15.1 to v2.15.0? Unanswered, it is escalated in 9 minutes.'"""
    versions = f" from {from_version}" if from_version else ""
    versions += f" to {to_version}" if to_version else ""
    late = (f" Unanswered, it is escalated in {duration(due_s)}." if due_s is not None and due_s > 0 else "")
    return f"Roll {service or 'the service'} back{versions}?{late}"


def web_sent(approved: bool, incident: str, by: str, partition: int) -> str:
    return (f"{'Approval' if approved else 'Denial'} of {incident} sent as {by} (partition {partition} of the "
            "approvals topic); the executor acts on it and this page shows what it did.")
