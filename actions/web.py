"""The executor's web pages: approve or deny a rollback over HTTP, ``/metrics``, ``/health``.

* ``GET /incidents/{id}/approve`` (or ``/deny``): a confirmation page, where the Slack buttons
  link. Its form sends the POST below with the token typed in; nothing changes on a GET.
* ``POST /incidents/{id}/approve`` (or ``/deny``), ``Authorization: Bearer <BACKOUT_API_TOKEN>``,
  optional JSON body ``{"by": "alice"}``: publishes the answer with the function ``backout
  approve`` uses (:func:`actions.approvals.answer`), which sends it to its incident's partition
  and refuses an unknown incident (404) or an answer the gate would ignore (409). Without
  ``BACKOUT_API_TOKEN`` every write is refused (403); a wrong or missing token gets 401.
  Browsers never send a bearer token on their own, so a page elsewhere cannot forge an answer.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import json
from collections.abc import Callable
from functools import partial
from typing import Any

import faust
from faust.web import Request, Response, View

from actions.approvals import IncidentTopics, answer
from backout.errors import AnswerRefused, BackoutError, UnknownIncident
from backout.settings import KafkaSettings

VERBS = {"approve": True, "deny": False}
MAX_ID_CHARS = 256
DEFAULT_BY = "web"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem}}
label{{display:block;margin:.8rem 0}} input{{width:100%;padding:.4rem}} button{{padding:.5rem 1.2rem}}</style>
</head><body>
<h1>{title}</h1>
<p>{question}</p>
<form id="answer">
<label>Your name <input name="by" required maxlength="100" value=""></label>
<label>API token (<code>BACKOUT_API_TOKEN</code>) <input name="token" type="password" required></label>
<button type="submit">{verb}</button>
</form>
<p id="result" role="status"></p>
<noscript><p>This form needs JavaScript; or run <code>backout {verb} {incident}</code>.</p></noscript>
<script>
document.getElementById("answer").addEventListener("submit", async (e) => {{
  e.preventDefault();
  const form = new FormData(e.target);
  const r = await fetch(location.pathname, {{method: "POST",
    headers: {{"Authorization": "Bearer " + form.get("token"), "Content-Type": "application/json"}},
    body: JSON.stringify({{by: form.get("by")}})}});
  const body = await r.json().catch(() => ({{}}));
  document.getElementById("result").textContent = r.ok ? body.message : "Refused (" + r.status + "): " + body.error;
}});
</script>
</body></html>
"""


def page(incident_id: str, verb: str) -> str:
    """The confirmation page of ``verb`` (approve / deny) for an incident, every value escaped."""
    shown = html.escape(incident_id)
    what = "Approve" if VERBS[verb] else "Deny"
    question = (f"Roll back as Backout proposes for incident <code>{shown}</code>?" if VERBS[verb]
                else f"Refuse the rollback Backout proposes for incident <code>{shown}</code>? It will not act on it.")
    return PAGE.format(title=f"{what} rollback · {shown}", question=question, verb=verb, incident=shown)


def authorised(header: str | None, token: str | None) -> tuple[int, str] | None:
    """``None`` if the bearer token in ``header`` is ``token``; else (status, why).

    >>> authorised("Bearer s3cret", "s3cret") is None, authorised(None, None)[0], authorised("Bearer x", "s3cret")[0]
    (True, 403, 401)
    """
    if not token:
        return 403, ("approving over HTTP is disabled: set BACKOUT_API_TOKEN on the executor to enable it, "
                     "or use `backout approve` / `backout deny`")
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return 401, "missing or wrong bearer token (Authorization: Bearer <BACKOUT_API_TOKEN>)"
    return None


def by_of(body: bytes) -> str:
    """Who answers, from an optional JSON body ``{"by": ...}``; :class:`ValueError` if it is not a name."""
    data: Any = json.loads(body) if body.strip() else {}
    by = data.get("by", DEFAULT_BY) if isinstance(data, dict) else None
    if not isinstance(by, str) or not by.strip() or len(by) > 100 or not by.isprintable():
        raise ValueError("field 'by': expected a name of 1-100 printable characters")
    return by.strip()


def register(app: faust.App, kafka: KafkaSettings, token: Callable[[], str | None], approval_timeout_s: float,
             metrics: Callable[[], tuple[bytes, str]], health: Callable[[], dict[str, Any]]) -> None:
    """Add the pages to ``app``."""

    @app.page("/incidents/{incident_id}/{verb}")
    class Answer(View):
        async def get(self, request: Request, incident_id: str, verb: str) -> Response:
            if verb not in VERBS or len(incident_id) > MAX_ID_CHARS:
                return self.error(404, "no such page: /incidents/<id>/approve or /deny")
            return self.html(page(incident_id, verb))

        async def post(self, request: Request, incident_id: str, verb: str) -> Response:
            if verb not in VERBS or len(incident_id) > MAX_ID_CHARS:
                return self.error(404, "no such page: /incidents/<id>/approve or /deny")
            refused = authorised(request.headers.get("Authorization"), token())
            if refused is not None:
                headers = {"WWW-Authenticate": "Bearer"} if refused[0] == 401 else None
                return self.error(refused[0], refused[1], headers=headers)
            try:
                by = by_of(await request.read())
            except (ValueError, json.JSONDecodeError) as exc:
                return self.error(400, f"invalid body: {exc}")
            try:
                record, partition = await asyncio.to_thread(
                    partial(answer, kafka, IncidentTopics(), incident_id, VERBS[verb], by, via="web",
                            approval_timeout_s=approval_timeout_s))
            except UnknownIncident as exc:
                return self.error(404, str(exc))
            except AnswerRefused as exc:
                return self.error(409, str(exc))
            except BackoutError as exc:
                return self.error(503, str(exc))
            done = "Approved" if record.approved else "Denied"
            return self.json({"message": f"{done} {incident_id} ({record.service}) as {record.by}.",
                              "approval": record.model_dump(mode="json"), "partition": partition})

    @app.page("/metrics")
    async def prometheus_metrics(web: Any, request: Request) -> Response:
        body, content_type = metrics()
        return web.bytes(body, content_type=content_type)

    @app.page("/health")
    async def healthz(web: Any, request: Request) -> Response:
        return web.json(health())
