"""``backout web``: the page the people on call read incidents and answer Backout from.

What it shows comes from the single fold of the topics (:class:`detectors.incident.IncidentFold`):
the open incidents with their sentences and evidence and, for a question, Approve and Deny; the
recent decisions and verifications; one incident's whole timeline with its plot
(:func:`streams.incident_report.draw`). Every sentence is :mod:`detectors.wording`'s; everything
taken from records is escaped (Jinja2's autoescape).

Mounting. :func:`mount` adds the routes to an ``aiohttp.web.Application`` or to a Faust app's web
server (the executor service mounts it there). It takes the function that returns the current
fold, ``source(samples)`` (``samples``: the metric samples are wanted, for a plot; a source that
always has them may ignore it), and the function that sends an answer — the one answer path,
:func:`actions.approvals.answer`, bound to a broker (:func:`from_topics` binds both).
``backout web`` serves it alone, reading the topics afresh on each request.

Answers, only when a token is configured (``BACKOUT_API_TOKEN``): a POST to
``/incidents/{id}/approve`` or ``/deny``, either with ``Authorization: Bearer <token>`` and a
``by`` field (answered in JSON), or from the page after signing in with the token, which sets an
HttpOnly, SameSite=Strict cookie naming who answers, signed with the token and valid for
``SESSION_S``; a cookie POST from another site is refused. A GET of those URLs (the links in Slack
messages) only shows the question. With no token the buttons are disabled and say how to enable
them. The checks are the answer path's: an answer the gate would ignore is refused with its reason.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from aiohttp import web

from backout.contracts import Approval
from backout.errors import AnswerRefused, BackoutError, ConfigError, ContractError, UnknownIncident
from backout.settings import KafkaSettings
from detectors import wording
from detectors.incident import RAN, IncidentFold, IncidentTimeline

Source = Callable[[bool], IncidentFold]  # samples wanted -> the current fold
Answer = Callable[[str, bool, str], tuple[Approval, int]]  # (incident, approved, by) -> (sent, partition)

COOKIE = "backout_session"
SESSION_S = 12 * 3600.0
RECENT = 20  # decisions and verifications on the front page
_PLOTTING = threading.Lock()  # matplotlib's pyplot is not thread-safe

STATUS_CLASS = {"verified": "good", "awaiting_approval": "ask", "approved": "ask", "executing": "busy",
                "executed": "busy", "decided": "busy", "not_recovered": "bad", "failed": "bad",
                "timed_out": "bad", "denied": "quiet", "escalated": "bad", "alerted": "quiet"}

LAYOUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{% block title %}Backout{% endblock %}</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2125;background:#f6f7f9}
header{background:#1d2125;color:#fff;padding:.7em 1.5em;display:flex;gap:1.5em;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}main{max-width:70em;margin:0 auto;padding:1em 1.5em}
.card{background:#fff;border:1px solid #d8dce1;border-radius:6px;padding:1em 1.2em;margin:1em 0}
.status{display:inline-block;border-radius:3px;padding:0 .45em;font-size:.85em;font-weight:600;background:#e4e7eb}
.good{background:#d3f2dc;color:#14532d}.ask{background:#fde9b8;color:#713f12}.busy{background:#dbe7fb;color:#1e3a8a}
.bad{background:#fbd5d5;color:#7f1d1d}.quiet{background:#e4e7eb;color:#374151}
table{border-collapse:collapse;width:100%;font-size:.93em}td,th{text-align:left;padding:.25em .5em;
border-bottom:1px solid #eceef1;vertical-align:top}
table+table,ul+table{margin-top:.8em}th{color:#5b636d;font-weight:600}
.question{background:#fff8e6;border-left:4px solid #e0a100;padding:.6em .9em;margin:.8em 0}
button{font:inherit;padding:.35em 1.1em;border-radius:4px;border:1px solid #888;cursor:pointer;margin-right:.4em}
button.approve{background:#15803d;color:#fff;border-color:#15803d}button.deny{background:#fff;color:#b91c1c;border-color:#b91c1c}
button:disabled{opacity:.45;cursor:not-allowed}form.inline{display:inline}
.note{color:#5b636d;font-size:.9em}.notice{background:#d3f2dc;padding:.6em .9em;border-radius:4px}
.error{background:#fbd5d5;padding:.6em .9em;border-radius:4px}img.plot{max-width:100%;border:1px solid #d8dce1}
input{font:inherit;padding:.25em .4em}code{background:#eceef1;padding:0 .25em;border-radius:3px}
</style></head><body>
<header><a href="{{ p }}/">Backout</a><span class="note" style="color:#c9ced4">{{ as_of }}</span>
<span style="margin-left:auto">{% if by %}{{ signed_in }}
<form class="inline" method="post" action="{{ p }}/logout"><button>Sign out</button></form>{% endif %}</span></header>
<main>
{% if notice %}<p class="notice" role="status">{{ notice }}</p>{% endif %}
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
{% if not token_set %}<p class="note" id="writes-off">{{ w.WEB_WRITES_OFF }}</p>
{% elif not by %}<form class="card" method="post" action="{{ p }}/login" id="sign-in">{{ w.WEB_SIGN_IN }}<br>
<label>Token <input type="password" name="token" autocomplete="current-password" required></label>
<label>Your name <input name="by" required maxlength="64"></label> <button>Sign in</button></form>{% endif %}
{% block body %}{% endblock %}
</main></body></html>
"""

MACROS = """{% macro buttons(t, only=None) %}
{% if t.status == "awaiting_approval" %}<div class="question">{{ question(t) }}<br>
{% for verb, label in (("approve", "Approve"), ("deny", "Deny")) if only in (None, verb) %}
<form class="inline" method="post" action="{{ p }}/incidents/{{ t.incident_id }}/{{ verb }}">
<button class="{{ verb }}" {% if not by %}disabled title="{{ w.WEB_WRITES_OFF if not token_set else w.WEB_SIGN_IN }}"{% endif %}>
{{ label }}</button></form>{% endfor %}</div>{% endif %}
{% endmacro %}
{% macro steps(t) %}<table><tr><th>time</th><th>step</th><th>what happened</th></tr>
{% for s in t.steps %}<tr><td>{{ clock(s.ts) }}</td><td>{{ s.kind }}</td><td>{{ s.text }}</td></tr>{% endfor %}
</table>{% endmacro %}
{% macro evidence(t) %}{% if t.pattern %}<ul>{% for m in t.pattern %}<li>{{ m.text }}</li>{% endfor %}</ul>{% endif %}
{% set rows = evidence_rows(t) %}{% if rows %}<table class="evidence"><tr><th>evidence</th><th>what</th>
<th>change</th><th>detail</th></tr>{% for kind, what, change, detail in rows %}<tr><td>{{ kind }}</td><td>{{ what }}</td>
<td>{{ change }}</td><td>{{ detail }}</td></tr>{% endfor %}</table>{% endif %}{% endmacro %}
"""

INDEX = """{% extends "layout.html" %}{% from "macros.html" import buttons, steps, evidence with context %}
{% block body %}<h2>Open incidents</h2>
{% for t in open %}<section class="card incident" id="{{ t.incident_id }}">
<h3><a href="{{ p }}/incidents/{{ t.incident_id }}">{{ t.incident_id }}</a> · {{ t.service }}
<span class="status {{ status_class(t) }}">{{ t.status.replace("_", " ") }}</span></h3>
<p>{{ t.headline }}</p>{{ buttons(t) }}{{ evidence(t) }}{{ steps(t) }}</section>
{% else %}<p class="card">{{ w.WEB_NO_OPEN }}</p>{% endfor %}
<h2>Recent decisions and verifications</h2>
{% if recent %}<table class="card" id="recent"><tr><th>time</th><th>incident</th><th>service</th><th>step</th>
<th>what happened</th></tr>{% for t, s in recent %}<tr><td>{{ day(s.ts) }} {{ clock(s.ts) }}</td>
<td><a href="{{ p }}/incidents/{{ t.incident_id }}">{{ t.incident_id }}</a></td><td>{{ t.service }}</td>
<td>{{ s.action.replace("_", " ") if s.action else s.kind.replace("_", " ") }}</td><td>{{ s.text }}</td></tr>{% endfor %}
</table>{% else %}<p class="card">{{ w.WEB_NO_RECENT }}</p>{% endif %}{% endblock %}
"""

INCIDENT = """{% extends "layout.html" %}{% from "macros.html" import buttons, steps, evidence with context %}
{% block title %}{{ t.incident_id }} · Backout{% endblock %}
{% block body %}<section class="card incident" id="{{ t.incident_id }}">
<h2>{{ t.incident_id }} · {{ t.service }} <span class="status {{ status_class(t) }}">{{ t.status.replace("_", " ") }}</span></h2>
<p>{{ t.headline }}</p>{{ buttons(t, confirm) }}
{% if t.pattern %}<img class="plot" alt="the blamed metrics with the deploy, decision, rollback and recovery marked"
src="{{ p }}/incidents/{{ t.incident_id }}/plot.png">{% else %}<p class="note">{{ w.WEB_NO_PLOT }}</p>{% endif %}
<h3>Timeline</h3>{{ steps(t) }}<h3>Evidence</h3>{{ evidence(t) }}
{% if t.decisions %}<h3>Decisions</h3><ul>{% for d in t.decisions %}<li>{{ clock(d.ts) }} <b>{{ d.action }}</b>: {{ d.text }}</li>
{% endfor %}</ul>{% endif %}
{% if t.recovery %}<h3>Recovery</h3><p>{{ t.recovery.text }}</p>{% endif %}
{% if t.alerts %}<h3>Alerts sent</h3><ul>{% for a in t.alerts %}<li>{{ clock(a.ts) }} [{{ a.severity }}] {{ a.text }}</li>
{% endfor %}</ul>{% endif %}</section>{% endblock %}
"""

MISSING = """{% extends "layout.html" %}{% block body %}{% endblock %}"""


def mount(app: Any, source: Source, answer: Answer | None = None, *, token: str | None = None,
          prefix: str = "") -> None:
    """Add the page's routes to ``app``: an ``aiohttp.web.Application``, or a Faust app (its web
    server's application), under ``prefix`` ('' or '/ui'). ``token`` enables answers, sent with
    ``answer``."""
    if token is not None and answer is None:
        raise ConfigError("a token enables answers on the web page: give it the function that sends them")
    if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
        raise ConfigError(f"prefix {prefix!r}: '' or a path such as '/ui' (leading slash, none trailing)")
    target: web.Application = app if isinstance(app, web.Application) else app.web.web_app
    page = Page(source, answer, token, prefix)
    incident = prefix + "/incidents/{incident_id}"
    target.router.add_get(prefix + "/", page.index)
    target.router.add_get(incident, page.incident)
    target.router.add_get(incident + "/plot.png", page.plot)
    target.router.add_get(incident + "/{verb:approve|deny}", page.confirm)
    target.router.add_post(incident + "/{verb:approve|deny}", page.answer)
    target.router.add_post(prefix + "/login", page.login)
    target.router.add_post(prefix + "/logout", page.logout)


def from_topics(kafka: KafkaSettings, where: Any = None, approval_timeout_s: float = 900.0) -> tuple[Source, Answer]:
    """A source that folds the topics afresh on each call, and the answer path bound to the same
    broker (``where``: an :class:`actions.approvals.IncidentTopics`, default Backout's topics)."""
    from actions.approvals import IncidentTopics, answer, read

    topics = where or IncidentTopics()

    def source(samples: bool) -> IncidentFold:
        return read(kafka, topics, approval_timeout_s, samples).fold

    def send(incident_id: str, approved: bool, by: str) -> tuple[Approval, int]:
        return answer(kafka, topics, incident_id, approved, by, via="web", approval_timeout_s=approval_timeout_s)

    return source, send


class Page:
    """The handlers (see the module doc)."""

    def __init__(self, source: Source, answer: Answer | None, token: str | None, prefix: str) -> None:
        from jinja2 import DictLoader, Environment, StrictUndefined

        self.source, self.send, self.token, self.prefix = source, answer, token, prefix
        self.env = Environment(loader=DictLoader({"layout.html": LAYOUT, "macros.html": MACROS, "index.html": INDEX,
                                                  "incident.html": INCIDENT, "missing.html": MISSING}),
                               autoescape=True, trim_blocks=True, lstrip_blocks=True,
                               undefined=StrictUndefined)

    # -- pages ----------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        now = time.time()
        timelines = (await self._fold(False)).timelines(now)
        still = sorted((t for t in timelines if t.is_open and t.decisions), key=lambda t: -t.decisions[0].ts)
        recent = sorted(((t, s) for t in timelines for s in t.steps if s.kind == "decision" or s.kind in RAN),
                        key=lambda pair: -pair[1].ts)[:RECENT]
        return self._render(request, "index.html", 200, now, open=still, recent=recent)

    async def incident(self, request: web.Request) -> web.Response:
        return await self._incident(request, 200)

    async def confirm(self, request: web.Request) -> web.Response:
        return await self._incident(request, 200, confirm=request.match_info["verb"])

    async def plot(self, request: web.Request) -> web.Response:
        fold = await self._fold(True)
        try:
            t = fold.timeline(request.match_info["incident_id"], time.time())
        except UnknownIncident as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        if not t.pattern:
            raise web.HTTPNotFound(text=wording.WEB_NO_PLOT)
        png = await asyncio.to_thread(_png, fold, t)
        return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "no-store"})

    # -- answers --------------------------------------------------------------------------------

    async def answer(self, request: web.Request) -> web.StreamResponse:
        incident_id, approved = request.match_info["incident_id"], request.match_info["verb"] == "approve"
        form = await request.post()
        bearer = request.headers.get("Authorization")
        if self.token is None or self.send is None:
            return await self._refused(request, bearer, incident_id, 403, wording.WEB_WRITES_OFF)
        if bearer is not None:
            if not hmac.compare_digest(bearer.encode(), f"Bearer {self.token}".encode()):
                return web.json_response({"error": wording.WEB_BAD_TOKEN}, status=401,
                                         headers={"WWW-Authenticate": "Bearer"})
            by: str | None = str(form.get("by", ""))
        elif not _same_site(request):
            return await self._refused(request, None, incident_id, 403, wording.WEB_CROSS_SITE)
        else:
            by = self._who(request)
        if by is None:
            return await self._refused(request, None, incident_id, 401, wording.WEB_SIGN_IN_FIRST)
        try:
            record, partition = await asyncio.to_thread(self.send, incident_id, approved, by)
        except BackoutError as exc:
            status = (404 if isinstance(exc, UnknownIncident) else 409 if isinstance(exc, AnswerRefused)
                      else 400 if isinstance(exc, ContractError) else 503)
            return await self._refused(request, bearer, incident_id, status, str(exc))
        if bearer is not None:
            return web.json_response({"approval": record.model_dump(mode="json"), "partition": partition})
        return await self._incident(request, 200, notice=wording.web_sent(approved, incident_id, record.by, partition))

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        now = time.time()
        if self.token is None:
            return self._render(request, "missing.html", 403, now)
        if not _same_site(request):
            return self._render(request, "missing.html", 403, now, error=wording.WEB_CROSS_SITE)
        if not hmac.compare_digest(str(form.get("token", "")).encode(), self.token.encode()):
            return self._render(request, "missing.html", 401, now, error=wording.WEB_BAD_TOKEN)
        from actions.approvals import check_by

        try:
            by = check_by(str(form.get("by", "")).strip())
        except ContractError as exc:
            return self._render(request, "missing.html", 400, now, error=str(exc))
        response = _see_other(self.prefix + "/")
        response.set_cookie(COOKIE, self._session(by, now), max_age=int(SESSION_S), httponly=True,
                            samesite="Strict", secure=request.secure, path=self.prefix or "/")
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        response = _see_other(self.prefix + "/")
        response.del_cookie(COOKIE, path=self.prefix or "/")
        return response

    # -- parts ----------------------------------------------------------------------------------

    async def _fold(self, samples: bool) -> IncidentFold:
        try:
            return await asyncio.to_thread(self.source, samples)
        except BackoutError as exc:  # the broker or the topics: say which, as the CLI does
            raise web.HTTPServiceUnavailable(text=str(exc)) from None

    async def _incident(self, request: web.Request, status: int, **extra: Any) -> web.Response:
        now = time.time()
        fold = await self._fold(True)
        try:
            t = fold.timeline(request.match_info["incident_id"], now)
        except UnknownIncident as exc:
            extra.pop("notice", None)
            return self._render(request, "missing.html", 404, now, **{**extra, "error": str(exc)})
        return self._render(request, "incident.html", status, now, t=t, **extra)

    async def _refused(self, request: web.Request, bearer: str | None, incident_id: str, status: int,
                       why: str) -> web.Response:
        if bearer is not None:
            return web.json_response({"error": why}, status=status)
        return await self._incident(request, status, error=why)

    def _render(self, request: web.Request, name: str, status: int, now: float, **context: Any) -> web.Response:
        by = self._who(request)
        html = self.env.get_template(name).render(
            p=self.prefix, w=wording, by=by, token_set=self.token is not None,
            signed_in=wording.web_signed_in(by) if by else "", as_of=f"{wording.day(now)} {wording.clock(now)}",
            clock=wording.clock, day=wording.day, status_class=lambda t: STATUS_CLASS.get(t.status, "quiet"),
            question=lambda t: _question(t, now), evidence_rows=_evidence,
            **{"notice": None, "error": None, "confirm": None, **context})
        return web.Response(text=html, status=status, content_type="text/html",
                            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                     "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'"})

    def _session(self, by: str, now: float) -> str:
        name = base64.urlsafe_b64encode(by.encode()).decode().rstrip("=")
        expires = str(int(now + SESSION_S))
        return f"{name}.{expires}.{self._sign(name, expires)}"

    def _who(self, request: web.Request) -> str | None:
        """Who the session cookie names, if it is signed with this token and not expired."""
        parts = request.cookies.get(COOKIE, "").split(".")
        if self.token is None or len(parts) != 3:
            return None
        name, expires, signature = parts
        if not hmac.compare_digest(signature, self._sign(name, expires)) or not expires.isdigit():
            return None
        if int(expires) < time.time():
            return None
        return base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()

    def _sign(self, name: str, expires: str) -> str:
        assert self.token is not None
        return hmac.new(self.token.encode(), f"{name}.{expires}".encode(), hashlib.sha256).hexdigest()


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _same_site(request: web.Request) -> bool:
    """A browser's POST from this page, not from another site (the cookie is SameSite=Strict too)."""
    origin = request.headers.get("Origin")
    if origin is not None and origin != "null":
        return urlsplit(origin).netloc == request.host
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


def _question(t: IncidentTimeline, now: float) -> str:
    ask = next((d for d in t.decisions if d.action == "request_approval"), None)
    due_s = t.question_due_ts - now if t.question_due_ts is not None else None
    return wording.web_question(t.service, ask.from_version if ask else None, ask.to_version if ask else None, due_s)


def _evidence(t: IncidentTimeline) -> list[tuple[str, str, str, str]]:
    """The latest decision's evidence as (kind, what, change, detail) rows."""
    rows = []
    for e in t.decisions[-1].evidence if t.decisions else []:
        if e.get("kind") == "anomaly" and isinstance(e.get("metric"), str):
            metric = e["metric"]
            onset = e.get("onset_ts")
            rows.append(("anomaly", wording.label(metric),
                         f"{_value(metric, e.get('baseline'))} → {_value(metric, e.get('current'))}",
                         f"{e.get('detector', '?')}" + (f", onset {wording.clock(float(onset))}"
                                                       if isinstance(onset, int | float) else "")))
        elif e.get("kind") == "deploy":
            ts = e.get("ts")
            rows.append(("deploy", str(e.get("version", "?")), f"{e.get('previous_version') or '?'} → "
                         f"{e.get('version', '?')}", wording.clock(float(ts)) if isinstance(ts, int | float) else ""))
    return rows


def _value(metric: str, x: object) -> str:
    return wording.value(metric, float(x)) if isinstance(x, int | float) else "?"


def _png(fold: IncidentFold, t: IncidentTimeline) -> bytes:
    from streams.incident_report import draw

    with _PLOTTING, tempfile.TemporaryDirectory() as tmp:
        return draw(fold, t, Path(tmp) / "plot.png").read_bytes()


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8780, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--approval-timeout", "approval_timeout_s", type=click.FloatRange(min=1), default=900.0,
              show_default=True, help="The gate's approval_timeout_s, to tell a timed-out question.")
def serve(host: str, port: int, approval_timeout_s: float) -> None:
    """Serve the web page on its own: open incidents, their evidence, Approve and Deny, recent steps.

    Reads the topics at KAFKA_BOOTSTRAP_SERVERS on every request. Approve and Deny
    need BACKOUT_API_TOKEN (sign in with it on the page, or send it as a bearer token).
    """
    token = os.environ.get("BACKOUT_API_TOKEN") or None
    app = web.Application()
    source, send = from_topics(KafkaSettings(), approval_timeout_s=approval_timeout_s)
    mount(app, source, send, token=token)
    click.echo(f"backout web: http://{host}:{port}/ ({'answers need the token' if token else 'read only'})",
               err=True)
    web.run_app(app, host=host, port=port, print=None)
