"""Notifications: every alert on ``backout.alerts`` posted to Slack and/or a JSON webhook.

``backout notify`` reads ``backout.alerts`` and ``backout.actions`` in the consumer group
``backout-notify`` (one replica is enough; several share the partitions). An alert is
rendered with the latest decision of its incident (:mod:`actions.slack`), so a question
(``request_approval``) gets its approve/deny buttons. The decider publishes a decision and
its alert to the two topics at once, and a consumer may read them in either order: an
alert whose incident has no decision yet waits up to ``hold_s`` for it (:class:`Pairing`).

Delivery is at least once: an alert's offset is stored for commit only once every sink
has taken it or given up (:mod:`actions.delivery`'s retries). One that a sink refused
(a 4xx, or retries exhausted) goes to ``backout.deadletter`` with the reason, as does a
record on ``backout.alerts`` that is not an alert. Records of ``backout.actions`` that
are not decisions are skipped here: the executor dead-letters them.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import click
from confluent_kafka import Message
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from actions.delivery import (
    SIGNATURE_HEADER,
    Delivery,
    Poster,
    RetryPolicy,
    check_url,
    origin,
    signature,
)
from actions.slack import render_slack
from backout.contracts import Alert, Decision, dead_letter, decode, encode
from backout.errors import ConfigError, ContractError
from backout.settings import KafkaSettings
from streams import topics

log = logging.getLogger(__name__)
Item = TypeVar("Item")


class NotifySettings(BaseSettings):
    """Settings of ``backout notify``, from ``BACKOUT_NOTIFY_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="BACKOUT_NOTIFY_", frozen=True, extra="ignore",
                                      use_attribute_docstrings=True)

    slack_webhook: SecretStr | None = None
    """``BACKOUT_NOTIFY_SLACK_WEBHOOK``: a Slack incoming webhook URL (its path is the credential,
    so it is a secret and logs show only its host); ``--slack-webhook`` overrides it."""

    webhook_url: str | None = None
    """``BACKOUT_NOTIFY_WEBHOOK_URL``: a generic sink; each alert is POSTed as it is on the topic
    (``backout.contracts.encode``), with ``X-Backout-Incident``; ``--webhook`` overrides it."""

    webhook_secret: SecretStr | None = None
    """``BACKOUT_NOTIFY_WEBHOOK_SECRET``: signs the generic sink's body in
    ``X-Backout-Signature-256`` (as the webhook target does); unset, alerts go unsigned."""

    executor_url: str | None = None
    """``BACKOUT_NOTIFY_EXECUTOR_URL``: the executor's web base URL, e.g.
    ``https://backout.example.com``; a question links to ``<url>/incidents/<id>/approve`` and
    ``/deny``. Unset, the message shows the ``backout approve`` / ``deny`` commands only."""

    hold_s: float = Field(default=3.0, ge=0)
    """``BACKOUT_NOTIFY_HOLD_S``: how long an alert waits for its incident's decision."""

    attempts: int = Field(default=8, ge=1, le=50)
    """``BACKOUT_NOTIFY_ATTEMPTS``: tries per sink and alert (5xx, 429, no answer) before the
    alert is dead-lettered."""

    backoff_s: float = Field(default=1.0, ge=0)
    """``BACKOUT_NOTIFY_BACKOFF_S``: wait after the first failed try; doubled after each next one."""

    backoff_max_s: float = Field(default=60.0, ge=0)
    """``BACKOUT_NOTIFY_BACKOFF_MAX_S``: the longest wait between tries (a ``Retry-After`` too)."""

    timeout_s: float = Field(default=10.0, gt=0)
    """``BACKOUT_NOTIFY_TIMEOUT_S``: how long one try may take to connect, and then to answer."""

    group: str = "backout-notify"
    """``BACKOUT_NOTIFY_GROUP``: the consumer group, whose committed offsets say what was sent."""

    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.attempts, self.backoff_s, self.backoff_max_s, self.timeout_s)


class Pairing(Generic[Item]):
    """Alerts with the latest decision of their incident, released in arrival order per partition.

    An alert whose incident has no decision yet waits up to ``hold_s`` (of the caller's clock)
    for one; the alerts behind it on its partition wait too, so that a stored offset never
    passes an alert not yet sent. ``keep`` bounds the decisions remembered.

    >>> from backout.contracts import Decision
    >>> pairing = Pairing(hold_s=3.0)
    >>> pairing.add(0, "inc-1", "alert of inc-1", now=10.0)
    >>> pairing.add(0, None, "alert of no incident", now=10.5)
    >>> pairing.due(now=11.0)
    []
    >>> pairing.decision(Decision(ts=1, incident_id="inc-1", service="checkout", action="escalate",
    ...                           confidence=1, reason="."))
    >>> [(item, d.action if d else None) for item, d in pairing.due(now=11.0)]
    [('alert of inc-1', 'escalate'), ('alert of no incident', None)]
    """

    def __init__(self, hold_s: float, keep: int = 10_000) -> None:
        self.hold_s = hold_s
        self.keep = keep
        self._decisions: OrderedDict[str, Decision] = OrderedDict()
        self._waiting: dict[int, deque[tuple[float, str | None, Item]]] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def decision(self, decision: Decision) -> None:
        self._decisions[decision.incident_id] = decision
        self._decisions.move_to_end(decision.incident_id)
        while len(self._decisions) > self.keep:
            self._decisions.popitem(last=False)

    def add(self, partition: int, incident_id: str | None, item: Item, now: float) -> None:
        self._waiting.setdefault(partition, deque()).append((now, incident_id, item))

    def due(self, now: float) -> list[tuple[Item, Decision | None]]:
        out = []
        for queue in self._waiting.values():
            while queue:
                arrived, incident_id, item = queue[0]
                decision = self._decisions.get(incident_id) if incident_id else None
                if incident_id and decision is None and now - arrived < self.hold_s:
                    break
                queue.popleft()
                out.append((item, decision))
        return out


class Sink(Protocol):
    """Somewhere alerts go."""

    name: str
    url: str

    def send(self, alert: Alert, decision: Decision | None) -> Delivery: ...


class SlackSink:
    """A Slack incoming webhook: Block Kit messages (:func:`actions.slack.render_slack`)."""

    name = "slack"

    def __init__(self, url: str, poster: Poster, executor_url: str | None = None) -> None:
        self.url = check_url(url, what="Slack webhook")
        self.executor_url = check_url(executor_url, what="executor URL") if executor_url else None
        self._poster = poster

    def send(self, alert: Alert, decision: Decision | None) -> Delivery:
        body = json.dumps(render_slack(alert, decision, self.executor_url)).encode()
        return self._poster.post(self.url, body, {})


class JsonSink:
    """A generic webhook: the alert record as JSON, signed when a secret is set."""

    name = "webhook"

    def __init__(self, url: str, poster: Poster, secret: str | None = None) -> None:
        self.url = check_url(url, what="notification webhook")
        self.secret = secret
        self._poster = poster

    def send(self, alert: Alert, decision: Decision | None) -> Delivery:
        body = encode(alert)
        headers = {"X-Backout-Incident": alert.incident_id} if alert.incident_id and \
            alert.incident_id.isascii() and alert.incident_id.isprintable() else {}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(body, self.secret)
        return self._poster.post(self.url, body, headers)


@dataclass(frozen=True)
class Topics:
    """Where the sink reads and dead-letters (tests use their own topics)."""

    alerts: str = topics.ALERTS
    actions: str = topics.ACTIONS
    deadletter: str = topics.DEADLETTER


@dataclass
class Tally:
    """What a run did: alerts delivered to every sink, alerts some sink refused, dead letters."""

    delivered: int = 0
    refused: int = 0
    dead_letters: int = 0


class Notifier:
    """Takes records of the two topics; releases the alerts due, once every sink has had them."""

    def __init__(self, sinks: Sequence[Sink], hold_s: float, where: Topics,
                 dead_letter_of: Callable[[Message, str], None]) -> None:
        self.sinks = sinks
        self.where = where
        self.tally = Tally()
        self._dead_letter_of = dead_letter_of
        self._pairing: Pairing[tuple[Message, Alert | None, str]] = Pairing(hold_s)

    def take(self, msg: Message, now: float) -> bool:
        """Read one record; whether it is done with (a decision) or waits to be released (an alert)."""
        if msg.topic() == self.where.actions:
            try:
                self._pairing.decision(decode(msg.value() or b"", Decision))
            except ContractError:
                pass  # not a decision: the executor dead-letters it
            return True
        try:
            alert: Alert = decode(msg.value() or b"", Alert)
        except ContractError as exc:
            self._pairing.add(msg.partition() or 0, None, (msg, None, str(exc)), now)
        else:
            self._pairing.add(msg.partition() or 0, alert.incident_id, (msg, alert, ""), now)
        return False

    def release(self, now: float) -> list[Message]:
        """Send the alerts due to every sink (dead-letter what was refused); their records."""
        done = []
        for (msg, alert, error), decision in self._pairing.due(now):
            if alert is None:
                self._dead_letter_of(msg, error)
                self.tally.dead_letters += 1
            elif refusals := _deliver(self.sinks, alert, decision):
                self._dead_letter_of(msg, "; ".join(refusals))
                self.tally.refused += 1
                self.tally.dead_letters += 1
            else:
                self.tally.delivered += 1
            done.append(msg)
        return done


def _deliver(sinks: Sequence[Sink], alert: Alert, decision: Decision | None) -> list[str]:
    """Send to each sink; the refusals, one sentence each."""
    refusals = []
    for sink in sinks:
        delivery = sink.send(alert, decision)
        if delivery.ok:
            log.info("alert of %s sent to %s", alert.incident_id, sink.name)
        else:
            reason = f"{sink.name} refused the alert: {delivery.detail} after {delivery.attempts} attempts"
            log.error("alert of %s: %s", alert.incident_id, reason)
            refusals.append(reason)
    return refusals


def run(kafka: KafkaSettings, sinks: Sequence[Sink], stop: threading.Event, hold_s: float = 3.0,
        group: str = "backout-notify", from_beginning: bool = False, where: Topics = Topics()) -> Tally:
    """Post every alert to every sink until ``stop`` is set; committed offsets say what was handled."""
    from streams.kafka import consumer, messages, sender

    cons = consumer(kafka, [where.alerts, where.actions], group=group, from_beginning=from_beginning,
                    **{"enable.auto.offset.store": False})
    out = sender(kafka)

    def dead_letter_of(msg: Message, reason: str) -> None:
        _, broker_ms = msg.timestamp()
        letter = dead_letter(msg.value(), reason, msg.topic() or "", msg.partition() or 0, msg.offset() or 0,
                             broker_ms / 1000)
        out.send(where.deadletter, encode(letter), msg.key())
        out.flush()  # on the broker before the offset passes it

    notifier = Notifier(sinks, hold_s, where, dead_letter_of)
    try:
        while not stop.is_set():
            for msg in messages(cons, timeout_s=0.5):
                if notifier.take(msg, time.monotonic()):
                    cons.store_offsets(message=msg)
            for msg in notifier.release(time.monotonic()):
                cons.store_offsets(message=msg)
            out.poll()
    finally:
        out.flush(30)
        cons.close()
    return notifier.tally


@click.command()
@click.option("--slack-webhook", metavar="URL", help="Slack incoming webhook URL "
              "(default BACKOUT_NOTIFY_SLACK_WEBHOOK; prefer the variable: a command line is visible to ps).")
@click.option("--webhook", "webhook_url", metavar="URL",
              help="Generic JSON webhook URL for each alert record (default BACKOUT_NOTIFY_WEBHOOK_URL).")
@click.option("--executor-url", metavar="URL",
              help="The executor's web base URL for approve/deny links (default BACKOUT_NOTIFY_EXECUTOR_URL).")
@click.option("--from-beginning", is_flag=True,
              help="A new consumer group starts at the oldest alert instead of the newest.")
def notify(slack_webhook: str | None, webhook_url: str | None, executor_url: str | None,
           from_beginning: bool) -> None:
    """Post every alert to Slack (Block Kit, with approve/deny links) and/or a JSON webhook."""
    settings = NotifySettings()
    poster = Poster(settings.retry())
    sinks: list[Sink] = []
    slack = slack_webhook or (settings.slack_webhook.get_secret_value() if settings.slack_webhook else None)
    if slack:
        sinks.append(SlackSink(slack, poster, executor_url or settings.executor_url))
    generic = webhook_url or settings.webhook_url
    if generic:
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        sinks.append(JsonSink(generic, poster, secret))
    if not sinks:
        raise ConfigError("no sink: give --slack-webhook URL and/or --webhook URL "
                          "(or BACKOUT_NOTIFY_SLACK_WEBHOOK / BACKOUT_NOTIFY_WEBHOOK_URL)")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    click.echo("posting alerts to " + ", ".join(f"{s.name} ({origin(s.url)})" for s in sinks)
               + f"; consumer group {settings.group}", err=True)
    tally = run(KafkaSettings(), sinks, stop, settings.hold_s, settings.group, from_beginning)
    click.echo(f"{tally.delivered} alerts delivered, {tally.refused} refused, "
               f"{tally.dead_letters} dead letters", err=True)
