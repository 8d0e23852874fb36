"""An alert as a Slack message (Block Kit), pure: the same alert always renders the same way.

The message carries a ``text`` fallback (notifications, screen readers) and ``blocks``:
a header (severity, service, what Backout does), the alert's sentence, the numbers of the
decision it belongs to (versions, confidence, each shifted metric's before → after), and,
when the decision asks a human (``request_approval``), buttons to approve or deny on the
executor's web port, with the equivalent ``backout approve`` / ``backout deny`` commands.
Everything from a message is escaped the way Slack asks (``&``, ``<``, ``>``), so an
alert cannot forge a mention or a link.

>>> from backout.contracts import Alert
>>> message = render_slack(Alert(ts=1.7e9, incident_id="inc-1", severity="info", text="Traffic <rose>."))
>>> message["text"]
'[info] Traffic &lt;rose&gt;.'
>>> [block["type"] for block in message["blocks"]]
['header', 'section', 'context']
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from actions.delivery import check_url
from backout.contracts import Alert, Decision
from backout.errors import ContractError
from detectors import wording

ICONS = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_blue_circle:"}
DOING = {"rollback": "rolling back", "request_approval": "asks to roll back", "escalate": "needs a human"}
MAX_TEXT = 3000  # a section's text
MAX_FIELD = 2000  # a field's text
MAX_HEADER = 150  # a header's plain text
MAX_METRICS = 6  # fields of shifted metrics, after action, versions, confidence (Slack allows 10)


def render_slack(alert: Alert, decision: Decision | None = None, executor_url: str | None = None) -> dict[str, Any]:
    """The Slack message for ``alert``; ``decision`` is its incident's latest decision, if known;
    ``executor_url`` the executor's web base URL, for the approve/deny buttons."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _header(alert, decision), "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(escape(alert.text), MAX_TEXT)}},
    ]
    if decision is not None:
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(f, MAX_FIELD)}
                                                     for f in _numbers(decision)]})
    asks = decision is not None and decision.action == "request_approval"
    if asks and executor_url and decision is not None:
        blocks.append({"type": "actions", "elements": _buttons(executor_url, decision.incident_id)})
    links = [_link(url) for url in alert.links]
    if links:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(" · ".join(links), MAX_TEXT)}})
    context = [f"Backout · {_when(alert.ts)}"]
    if alert.incident_id:
        context.append(f"incident `{escape(alert.incident_id)}`")
    if asks:
        who = escape(alert.incident_id or "")
        context.append(f"or run `backout approve {who}` / `backout deny {who}`")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(" · ".join(context), MAX_TEXT)}]})
    return {"text": _cut(f"[{alert.severity}] {escape(alert.text)}", MAX_TEXT), "blocks": blocks}


def escape(text: str) -> str:
    """Slack's escaping of ``&``, ``<`` and ``>`` (nothing else needs it in mrkdwn).

    >>> escape("<!channel> & <https://x|y>")
    '&lt;!channel&gt; &amp; &lt;https://x|y&gt;'
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _header(alert: Alert, decision: Decision | None) -> str:
    head = f"{ICONS[alert.severity]} {alert.severity.capitalize()}"
    if decision is not None:
        head += f" · {decision.service} {DOING[decision.action]}"
        if decision.action != "escalate" and decision.from_version and decision.to_version:
            head += f" {decision.from_version} → {decision.to_version}"
    return _cut(head, MAX_HEADER)


def _numbers(decision: Decision) -> list[str]:
    fields = [f"*Action*\n{escape(decision.action.replace('_', ' '))}"]
    if decision.from_version or decision.to_version:
        fields.append(f"*Versions*\n`{escape(decision.from_version or '?')}` → `{escape(decision.to_version or '?')}`")
    fields.append(f"*Confidence*\n{decision.confidence:.0%}")
    shifts = [e for e in decision.evidence if e.get("kind") == "anomaly"]
    for shift in shifts[:MAX_METRICS]:
        metric, baseline, current = shift.get("metric"), _number(shift.get("baseline")), _number(shift.get("current"))
        if isinstance(metric, str) and baseline is not None and current is not None:
            change = f"{wording.value(metric, baseline)} → {wording.value(metric, current)}"
            if baseline > 0 and current > baseline:
                change += f" ({wording.times(current / baseline)})"
            fields.append(f"*{escape(wording.label(metric))}*\n{escape(change)}")
    return fields


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _buttons(executor_url: str, incident_id: str) -> list[dict[str, Any]]:
    base = executor_url.rstrip("/") + "/incidents/" + quote(incident_id, safe="")
    return [
        {"type": "button", "action_id": "approve", "style": "primary", "url": base + "/approve",
         "text": {"type": "plain_text", "text": "Approve rollback"}},
        {"type": "button", "action_id": "deny", "style": "danger", "url": base + "/deny",
         "text": {"type": "plain_text", "text": "Deny"}},
    ]


def _link(url: str) -> str:
    """``<url>`` for an http(s) URL Slack can link; anything else as escaped text."""
    try:
        check_url(url, what="link")
    except ContractError:
        return escape(url)
    return f"<{url}>" if not any(c in url for c in "|<>") else escape(url)


def _when(ts: float) -> str:
    """A Slack date (shown in the reader's time zone) with a UTC fallback."""
    utc = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"<!date^{int(ts)}^{{date_short_pretty}} {{time_secs}}|{utc}>"


def _cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, never ending inside an escape such as ``&amp;``."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    amp = cut.rfind("&", len(cut) - 5)
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"
