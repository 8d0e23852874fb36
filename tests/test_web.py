"""The web page (backout/web.py): its handlers over a fold of records, then the real thing in
headless Chromium against the real broker: an open incident shown, Approve clicked, the approval
on the approvals topic. Screenshots are kept in tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from confluent_kafka import Producer
from markupsafe import escape

from actions.approvals import IncidentTopics
from backout.contracts import Approval, Decision, decode, encode
from backout.errors import AnswerRefused
from backout.web import COOKIE, from_topics, mount
from detectors import wording
from detectors.incident import IncidentFold
from streams import topics
from streams.broker import free_port
from streams.kafka import read_to_end
from tests.test_incident import INC, story
from tests.test_mcp import fresh_topics, recent

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EVIL = "<script>alert('x')</script>"


@contextmanager
def served(app: web.Application) -> Iterator[str]:
    """``app`` on a free local port, in a thread with its own event loop; yields its base URL."""
    port = free_port()
    ready, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        try:
            while not stop.is_set():
                await asyncio.sleep(0.05)
        finally:
            await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30), "the page did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(30)


def call(method: str, url: str, **kwargs) -> tuple[int, dict, str]:
    """One HTTP request, redirects not followed: (status, headers, body)."""
    async def go() -> tuple[int, dict, str]:
        async with aiohttp.ClientSession() as session, session.request(
                method, url, allow_redirects=False, **kwargs) as response:
            return response.status, dict(response.headers), await response.text(errors="replace")

    return asyncio.run(go())


class Answers:
    """The answer path's seam: records what it was asked to send, or refuses as the real one does."""

    def __init__(self, refuse: str | None = None) -> None:
        self.sent: list[tuple[str, bool, str]] = []
        self.refuse = refuse

    def __call__(self, incident_id: str, approved: bool, by: str) -> tuple[Approval, int]:
        if self.refuse:
            raise AnswerRefused(self.refuse)
        self.sent.append((incident_id, approved, by))
        return Approval(ts=time.time(), incident_id=incident_id, approved=approved, by=f"{by} via web"), 2


def fold_of(records: list) -> IncidentFold:
    fold = IncidentFold()
    fold.add_all(records)
    return fold


def pending(reason_suffix: str = "") -> list:
    """An unanswered question of the last few minutes (its reason may carry markup)."""
    out = []
    for r in recent(story("pending")):
        if isinstance(r, Decision):
            r = r.model_copy(update={"reason": r.reason + reason_suffix})
        out.append(r)
    return out


@contextmanager
def page(records: list, token: str | None, answers: Answers | None = None) -> Iterator[str]:
    app = web.Application()
    fold = fold_of(records)
    mount(app, lambda samples: fold, answers, token=token)
    with served(app) as url:
        yield url


def test_without_a_token_the_page_shows_but_answers_are_off_and_records_are_escaped():
    answers = Answers()
    with page(pending(EVIL), token=None) as url:
        status, headers, html = call("GET", url + "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert INC in html and "waiting for approval" in html
        assert EVIL not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
        assert escape(wording.WEB_WRITES_OFF) in html
        assert len(re.findall(r"<button class=\"(approve|deny)\" disabled", html)) == 2
        assert "Error rate went from 0.5% to 6% at worst (12x)" in html  # the evidence, as a sentence
        status, _, html = call("POST", f"{url}/incidents/{INC}/approve", headers={"Authorization": "Bearer x"},
                               data={"by": "alice"})
        assert status == 403 and escape(wording.WEB_WRITES_OFF) in html
    assert answers.sent == []


def test_answers_need_the_token_by_bearer_or_signed_cookie():
    answers = Answers()
    with page(pending(), token="s3cret", answers=answers) as url:
        target = f"{url}/incidents/{INC}"
        assert call("POST", target + "/approve", headers={"Authorization": "Bearer wrong"},
                    data={"by": "alice"})[0] == 401
        status, _, html = call("POST", target + "/approve", data={"by": "alice"})  # neither bearer nor cookie
        assert status == 401 and escape(wording.WEB_SIGN_IN_FIRST) in html
        status, _, body = call("POST", target + "/approve", headers={"Authorization": "Bearer s3cret"},
                               data={"by": "alice"})
        sent = json.loads(body)
        assert status == 200 and (sent["approval"]["by"], sent["partition"]) == ("alice via web", 2)

        assert call("POST", url + "/login", data={"token": "wrong", "by": "bob"})[0] == 401
        status, headers, _ = call("POST", url + "/login", data={"token": "s3cret", "by": "bob"})
        assert status == 303 and headers["Location"] == "/"
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        session = cookie.split(";")[0].split("=", 1)[1]
        jar = {"Cookie": f"{COOKIE}={session}"}
        status, _, html = call("POST", target + "/deny", headers={**jar, "Origin": "https://evil.example"})
        assert status == 403 and escape(wording.WEB_CROSS_SITE) in html
        forged = "YWxpY2U" + session[session.index("."):]  # another name under bob's signature
        assert call("POST", target + "/deny", headers={"Cookie": f"{COOKIE}={forged}"})[0] == 401
        status, _, html = call("POST", target + "/deny", headers={**jar, "Origin": url})
        assert status == 200 and escape(wording.web_sent(False, INC, "bob via web", 2)) in html
        assert "Signed in as bob" in html
    assert answers.sent == [(INC, True, "alice"), (INC, False, "bob")]


def test_a_refused_answer_shows_the_gates_reason():
    why = f"bob's denial of {INC} would change nothing, so it was not sent: <b>alice</b> already approved it."
    with page(pending(), token="s3cret", answers=Answers(refuse=why)) as url:
        _, headers, _ = call("POST", url + "/login", data={"token": "s3cret", "by": "bob"})
        cookie = headers["Set-Cookie"].split(";")[0]
        status, _, html = call("POST", f"{url}/incidents/{INC}/deny", headers={"Cookie": cookie})
        assert status == 409 and escape(why) in html and "<b>alice</b>" not in html
        status, _, body = call("POST", f"{url}/incidents/{INC}/deny", headers={"Authorization": "Bearer s3cret"},
                               data={"by": "bob"})
        assert (status, json.loads(body)) == (409, {"error": why})


def test_the_incident_page_its_plot_and_the_slack_link():
    answers = Answers()
    with page(story("auto"), token="s3cret", answers=answers) as url:
        status, _, html = call("GET", f"{url}/incidents/{INC[:9]}")  # a unique prefix
        assert status == 200 and "verified" in html and f'src="/incidents/{INC}/plot.png"' in html
        assert "Error rate came back from 5% to 0.5%" in html
        status, headers, png = call("GET", f"{url}/incidents/{INC}/plot.png")
        assert status == 200 and headers["Content-Type"] == "image/png"
        status, _, html = call("GET", f"{url}/incidents/inc-nope")
        assert status == 404 and "no incident &#39;inc-nope&#39;" in html
    with page(pending(), token="s3cret", answers=answers) as url:
        status, _, html = call("GET", f"{url}/incidents/{INC}/approve")  # what a Slack button opens
        assert status == 200 and "Roll checkout back from v2.15.1 to v2.15.0?" in html
        assert 'class="approve"' in html and 'class="deny"' not in html
    assert answers.sent == []  # a GET never answers


def test_it_mounts_on_a_faust_apps_web_server_under_a_prefix():
    import faust

    app = faust.App(f"backout-web-test-{time.time_ns()}", web_enabled=True)
    mount(app, lambda samples: IncidentFold(), prefix="/ui")
    paths = {r.resource.canonical for r in app.web.web_app.router.routes() if r.resource is not None}
    assert {"/ui/", "/ui/incidents/{incident_id}", "/ui/incidents/{incident_id}/plot.png", "/ui/login"} <= paths


@pytest.fixture
def chromium(tmp_path):
    """The system chromium (Debian package), driven by Playwright; never a downloaded browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                        headless=True, args=FLAGS,
                                                        viewport={"width": 1280, "height": 900})
        try:
            yield context
        finally:
            context.close()


@pytest.mark.integration
def test_approve_in_a_real_browser_publishes_the_approval(kafka, unique, chromium):
    names = fresh_topics(kafka, unique)
    out = Producer(kafka.producer())
    for record in pending():
        out.produce(names[topics.OF_TYPE[record.type]], encode(record), key=topics.key_of(record.model_dump()))
    assert out.flush(30) == 0
    where = IncidentTopics.of(names)
    [decided] = list(read_to_end(kafka, where.actions))
    app = web.Application()
    source, send = from_topics(kafka, where)
    mount(app, source, send, token="s3cret")
    ARTIFACTS.mkdir(exist_ok=True)

    with served(app) as url:
        tab = chromium.new_page()
        tab.goto(url + "/")
        card = tab.locator(f"section.incident#{INC}")
        card.wait_for(timeout=60_000)
        assert "waiting for approval" in card.inner_text()
        assert card.locator("button.approve").is_disabled()  # not signed in yet
        tab.fill("input[name=token]", "s3cret")
        tab.fill("input[name=by]", "alice")
        tab.click("#sign-in button")
        tab.get_by_text("Signed in as alice").wait_for(timeout=60_000)
        tab.screenshot(path=str(ARTIFACTS / "web-open-incident.png"), full_page=True)

        card.locator("button.approve").click()
        tab.locator(".notice").wait_for(timeout=60_000)
        assert tab.locator(".notice").inner_text() == wording.web_sent(True, INC, "alice via web",
                                                                       decided.partition())
        [landed] = list(read_to_end(kafka, where.approvals))
        approval = decode(landed.value(), expect=Approval)
        assert (approval.incident_id, approval.approved, approval.by, approval.service) == (
            INC, True, "alice via web", "checkout")
        assert (landed.partition(), landed.key()) == (decided.partition(), b"checkout")

        tab.goto(f"{url}/incidents/{INC}")
        tab.wait_for_function("() => document.querySelector('img.plot')?.naturalWidth > 0", timeout=60_000)
        assert "approved" in tab.locator(".status").first.inner_text()  # read back from the topics
        tab.screenshot(path=str(ARTIFACTS / "web-incident.png"), full_page=True)
    print(f"screenshots: {ARTIFACTS / 'web-open-incident.png'}, {ARTIFACTS / 'web-incident.png'}")
