"""The Prometheus bridge's loop: evaluate each declared query when due, publish, remember.

Restarts never publish a timestamp twice: the last evaluation time published
for each query is kept in a small JSON state file (``--state``), written
atomically once the broker has acknowledged every record of that time. The
file, not the topic, is the memory because the topic cannot answer cheaply:
``backout.metrics`` is partitioned by service and written by every feed, so
finding "the last sample this query published" would mean reading all of it
at start-up. One crash window remains, between the broker's acknowledgement
and the file's rename (milliseconds): that evaluation is published once more
and the worker refuses the repeated samples as duplicates (dead letter +
count). A query that failed (Prometheus away, a timeout) is evaluated again
at the times it missed, up to ``max_catch_up_s`` back, so an outage of
Prometheus or of the broker leaves no gap either.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backout.errors import ContractError
from streams.feeds.prometheus import BridgeConfig, Query, due, to_records
from streams.feeds.publish import Publisher

log = logging.getLogger("backout.bridge")
Fetch = Callable[[str, float, float], dict[str, Any]]


class State:
    """The last published evaluation time of each query, in a JSON file written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.last: dict[str, float] = {k: float(v) for k, v in json.loads(path.read_text()).items()}
        except FileNotFoundError:
            self.last = {}

    def published(self, key: str, ts: float) -> None:
        self.last[key] = ts
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as out:
            json.dump(self.last, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)


def instant_query(base_url: str) -> Fetch:
    """``fetch(promql, time, timeout_s)`` against the instant-query API of ``base_url``."""
    def fetch(promql: str, at: float, timeout_s: float) -> dict[str, Any]:
        url = f"{base_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as answer:
                return json.loads(answer.read())  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:  # 400 / 422 / 503 carry Prometheus' error as JSON
            try:
                return json.loads(exc.read())  # type: ignore[no-any-return]
            except ValueError:
                raise OSError(f"HTTP {exc.code} from {base_url}") from None
    return fetch


class Bridge:
    """Publishes each query of ``config`` at its due times; :meth:`run` until ``stop`` is set."""

    def __init__(self, config: BridgeConfig, fetch: Fetch, publisher: Publisher, state: State,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.fetch = fetch
        self.publisher = publisher
        self.state = state
        self.clock = clock
        self.failures = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for query in self.config.queries:
                self.publish_due(query, stop)
            now = self.clock()
            wait_s = min(self.config.interval_of(q) - now % self.config.interval_of(q) for q in self.config.queries)
            stop.wait(wait_s + 0.05)

    def publish_due(self, query: Query, stop: threading.Event) -> None:
        """Evaluate and publish every due time of ``query``, in order; stop at the first failure."""
        interval_s = self.config.interval_of(query)
        for at in due(self.state.last.get(query.key), interval_s, self.clock(), self.config.max_catch_up_s):
            try:
                answer = self.fetch(query.query, at, self.config.timeout_s)
                counts = self.fetch(query.count, at, self.config.timeout_s) if query.count else None
                parsed = to_records(query, answer, at, counts)
            except (OSError, ValueError, ContractError) as exc:
                self.failures += 1
                self.publisher.counts.skipped.labels("prometheus", "query failed").inc()
                log.warning("query %s at %.0f failed (%s); it will be evaluated again", query.key, at, exc)
                return
            delivered = threading.Event()
            while not self.publisher.offer(parsed, "prometheus", on_done=delivered.set,
                                           request_id=f"{query.key}-{at:.0f}"):
                if stop.wait(1.0):  # the buffer is full: the broker is away; wait, lose nothing
                    return
            while not delivered.wait(1.0):
                if stop.is_set():
                    return
            self.state.published(query.key, at)
