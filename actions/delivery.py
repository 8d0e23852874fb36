"""POST a JSON body to someone else's endpoint, signed, with bounded retries.

The webhook target and the notification sinks share one delivery rule:

* 2xx is delivered;
* 5xx, 429 and connection errors (refused, reset, timed out) are retried, at most
  ``attempts`` tries in all, waiting ``backoff_s``, then twice that, four times…
  up to ``backoff_max_s``; a ``Retry-After`` in seconds is honoured up to the same cap;
* anything else (4xx, and redirects, which are never followed: a redirect could
  lead a signed body past the host allow-list) fails at once.

Logs name the endpoint by its origin only (``https://hooks.slack.com``): a Slack
webhook URL's path is its secret.

>>> signature(b'{"type":"decision"}', "s3cret")
'sha256=8c8fdad2c3e0520b247529f9a97d52e4832e62d5f36a2e38cc9605f0717d8a3a'
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3

from backout.errors import ContractError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Backout-Signature-256"
RETRIED_STATUSES = frozenset({429, *range(500, 600)})
MAX_URL_CHARS = 2048
_SHOWN_BODY_CHARS = 200


def signature(body: bytes, secret: str) -> str:
    """``sha256=<hex HMAC-SHA256 of body>``, the value of :data:`SIGNATURE_HEADER`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_url(url: object, allowed_hosts: Collection[str] = (), what: str = "url") -> str:
    """``url`` if it is an http(s) URL without credentials whose host is allowed (any host when
    ``allowed_hosts`` is empty); else :class:`ContractError` saying which rule it breaks."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        shown = url if not isinstance(url, str) else f"{url[:60]!r}… ({len(url)} chars)"
        raise ContractError(f"{what} {shown}: expected an http(s) URL of at most {MAX_URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ContractError(f"{what} {url[:80]!r}: spaces and control characters are not allowed in a URL")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError as exc:
        raise ContractError(f"{what} {url[:80]!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ContractError(f"{what} {url[:80]!r}: expected http:// or https:// and a host")
    if parts.username is not None or parts.password is not None:
        raise ContractError(f"{what} {origin(url)}: credentials in a URL end up in logs; "
                            "the body is signed instead")
    allowed = {h.lower() for h in allowed_hosts}
    if allowed and parts.hostname not in allowed:
        raise ContractError(f"{what} {origin(url)}: host {parts.hostname!r} is not in the allowed hosts "
                            f"({', '.join(sorted(allowed))})")
    return url


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: how logs name an endpoint."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: ``attempts`` tries in all, the backoff between them, and the time one
    attempt may take to connect and to answer."""

    attempts: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    timeout_s: float = 10.0

    def delay_s(self, failed: int, retry_after_s: float | None = None) -> float:
        """How long to wait after the ``failed``-th failed attempt.

        >>> [RetryPolicy(backoff_s=1.0, backoff_max_s=5.0).delay_s(n) for n in (1, 2, 3, 4)]
        [1.0, 2.0, 4.0, 5.0]
        >>> RetryPolicy(backoff_s=1.0, backoff_max_s=5.0).delay_s(1, retry_after_s=3.0)
        3.0
        """
        backoff = self.backoff_s * 2 ** (failed - 1)
        return min(max(backoff, retry_after_s or 0.0), self.backoff_max_s)


@dataclass(frozen=True)
class Delivery:
    """How a POST ended: the last HTTP status (``None`` if no attempt got an answer), how many
    attempts it took, and a short description for the logs and the step's detail."""

    status: int | None
    attempts: int
    detail: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Poster:
    """POSTs with :class:`RetryPolicy`; one connection pool per poster."""

    def __init__(self, policy: RetryPolicy, sleep: Callable[[float], object] = time.sleep) -> None:
        self.policy = policy
        self._sleep = sleep
        self._pool = urllib3.PoolManager(
            retries=False, timeout=urllib3.Timeout(connect=policy.timeout_s, read=policy.timeout_s))

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Delivery:
        """POST ``body`` as JSON to ``url`` (checked by the caller), retrying as the module says."""
        sent = {"Content-Type": "application/json", "User-Agent": "backout", **headers}
        for attempt in range(1, self.policy.attempts + 1):
            retry_after_s = None
            try:
                response = self._pool.request("POST", url, body=body, headers=sent, redirect=False,
                                              preload_content=False)
            except urllib3.exceptions.HTTPError as exc:
                status, detail = None, _reason(exc)
            else:
                status = response.status
                text = response.read(4096, decode_content=True)
                response.release_conn()
                if 200 <= status < 300:
                    return Delivery(status, attempt, f"HTTP {status}")
                detail = f"HTTP {status} {_shown(text)}".rstrip()
                if status not in RETRIED_STATUSES:
                    return Delivery(status, attempt, detail)
                retry_after_s = _seconds(response.headers.get("Retry-After"))
            if attempt == self.policy.attempts:
                return Delivery(status, attempt, detail)
            delay_s = self.policy.delay_s(attempt, retry_after_s)
            log.warning("POST to %s: attempt %d of %d failed (%s); retrying in %.1f s",
                        origin(url), attempt, self.policy.attempts, detail, delay_s)
            self._sleep(delay_s)
        raise AssertionError("unreachable: the last attempt returns")  # attempts >= 1


def _reason(exc: urllib3.exceptions.HTTPError) -> str:
    """The cause of a failed attempt, without the URL's path (it may be a secret)."""
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    return text.rpartition(": ")[2] if ": " in text else text


def _shown(body: bytes) -> str:
    text = "".join(c if c.isprintable() else " " for c in body.decode("utf-8", "replace")).strip()
    return text if len(text) <= _SHOWN_BODY_CHARS else text[:_SHOWN_BODY_CHARS] + "…"


def _seconds(retry_after: str | None) -> float | None:
    """A ``Retry-After`` in seconds; the HTTP-date form is ignored (the backoff applies)."""
    if retry_after is None or not retry_after.strip().isdigit():
        return None
    return float(retry_after.strip())
