"""Event-time progress: per metrics partition, and across all of them.

Metric samples of different services reach the decider through different
partitions, in an order that depends on the broker and on how many workers
share the load. The decider therefore never acts on "what it has seen so far":
it acts when the event-time watermark — the slowest partition's progress —
passes the moment a decision is due. Then every input stamped up to that moment
has arrived, and the backtest (one partition, file order) and the live stream
(many partitions, any interleaving, any consumer lag) take the same decisions.

A partition that has no traffic would hold time back for ever, so the worker
that owns it says so: an *idle* mark (no sample for a while, in wall time)
takes it out of the minimum until it reports progress again. Event-time lag
alone never makes a partition idle — a partition that is merely behind (a
restarted worker catching up) is waited for, or decisions would depend on
read order. ``stall_s`` is an optional backstop for partitions that stop
without a word. An idle mark of a partition that never had a sample (its
stamp is the worker's guess) releases the others but never sets the time.

One record must not move event time (:meth:`PartitionClock.admit`). A sample
more than ``max_future_skew_s`` ahead of its partition's event time is
refused (:class:`~backout.errors.FutureSample`), and so is the first sample of
a new stream more than ``max_lateness_s`` behind it
(:class:`~backout.errors.LateSample`); only accepted samples move the
partition's time (:meth:`PartitionClock.observe`). The first sample of a
partition has no event time to be measured against; the live stage gives the
record's Kafka timestamp instead, and a first sample more than
``max_future_skew_s`` ahead of it is refused (one behind it is not: a replay
of old data by a producer that does not stamp its records is still read).
The backtest has no Kafka timestamps: its first sample sets the time, as the
live stage's first sample does for the records of ``backout ingest`` and
``backout demo``, which are stamped with their own event time, so the two
agree on the same file.

Event time can still jump when every stream does (an outage of the exporters
longer than the skew): a jump is taken once it is *corroborated*, when the
sample refused just before, of another service (or, on a partition that has
seen only this service, of another of its streams), agrees with it within
``max_future_skew_s``. A single record, or a service alone among others,
cannot move the time; after a real outage the first service to speak again
loses that round of samples.

>>> clock = PartitionClock(partition=0, interval_s=10, partitions=2)
>>> [w.ts for w in map(clock.observe, [100.0, 105.0, 111.0, 112.0]) if w]
[100.0, 111.0]
>>> clock = PartitionClock(partition=0, interval_s=10)
>>> clock.establish("a"); clock.observe(1000.0) and None
>>> clock.admit(5000.0, "b", "error_rate", new_stream=True)
Traceback (most recent call last):
...
backout.errors.FutureSample: sample of b/error_rate at ts 5000.0 (1970-01-01 01:23:20 UTC) is 4000 s ahead of partition 0's event time 1000.0 (1970-01-01 00:16:40 UTC): more than max_future_skew_s = 600 s (event time jumps that far only when the next sample, of another service, agrees)
>>> clock.admit(5010.0, "a", "error_rate", new_stream=False)  # another service agrees: the jump is real
>>> events = EventClock()
>>> events.advance(Watermark(ts=100.0, partition=0, partitions=2))  # partition 1 not heard of yet
>>> events.advance(Watermark(ts=130.0, partition=1, partitions=2))
100.0
>>> events.advance(Watermark(ts=120.0, partition=0, partitions=2, idle=True))
130.0
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from backout.contracts import Watermark
from backout.errors import FutureSample, LateSample


class PartitionClock:
    """One metrics partition's event time; yields a watermark every ``interval_s`` of it."""

    def __init__(self, partition: int, interval_s: float = 5.0, partitions: int = 1,
                 max_future_skew_s: float = 600.0, max_lateness_s: float = 3600.0) -> None:
        for name, value in (("interval_s", interval_s), ("max_future_skew_s", max_future_skew_s),
                            ("max_lateness_s", max_lateness_s)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        self.partition = partition
        self.partitions = partitions
        self.interval_s = interval_s
        self.max_future_skew_s = max_future_skew_s
        self.max_lateness_s = max_lateness_s
        self._max_ts = 0.0
        self._emitted_ts = 0.0
        self._services: set[str] = set()
        self._ahead: tuple[str, str, float] | None = None  # the last sample refused as ahead, if none was accepted since

    @property
    def max_ts(self) -> float:
        return self._max_ts

    def admit(self, ts: float, service: str, metric: str, new_stream: bool, reference_ts: float | None = None) -> None:
        """Raise :class:`FutureSample` or :class:`LateSample` for a sample that would move event time alone.

        ``new_stream``: the partition has no state for (service, metric). ``reference_ts``
        (a Kafka timestamp) bounds how far ahead the first sample of a partition may be.
        """
        now = self._max_ts
        if now:
            against = f"partition {self.partition}'s event time"
        elif reference_ts:
            now, against = reference_ts, f"its Kafka timestamp (partition {self.partition} has no sample yet)"
        else:
            return  # nothing to measure against: this sample sets the partition's time
        if ts > now + self.max_future_skew_s:
            ahead, self._ahead = self._ahead, (service, metric, ts)
            if ahead is not None and abs(ts - ahead[2]) <= self.max_future_skew_s and ahead != self._ahead and (
                    ahead[0] != service or self._services <= {service}):
                return  # corroborated: every stream moved on (an outage of the exporters)
            raise FutureSample(f"sample of {service}/{metric} at ts {ts!r} ({_utc(ts)}) is {ts - now:.0f} s ahead of "
                               f"{against} {now!r} ({_utc(now)}): more than max_future_skew_s = "
                               f"{self.max_future_skew_s:g} s (event time jumps that far only when the next sample, "
                               "of another service, agrees)")
        if new_stream and self._max_ts and ts < now - self.max_lateness_s:
            raise LateSample(f"first sample of {service}/{metric} at ts {ts!r} ({_utc(ts)}) is {now - ts:.0f} s behind "
                             f"{against} {now!r} ({_utc(now)}): a new stream may start at most max_lateness_s = "
                             f"{self.max_lateness_s:g} s behind")

    def establish(self, service: str) -> None:
        """``service`` has a stream past its warm-up: it counts in the watermark's ``services``.

        A name that sent a sample or two (a typo, a flood of invented ones) is not a service
        that could have shifted, and must not dilute "did most services shift?".
        """
        self._services.add(service)

    def observe(self, ts: float) -> Watermark | None:
        """Note one accepted sample; return a watermark when the partition moved ``interval_s`` on."""
        self._ahead = None
        self._max_ts = max(self._max_ts, ts)
        if self._max_ts - self._emitted_ts < self.interval_s:
            return None
        return self.flush()

    def flush(self) -> Watermark | None:
        """The current watermark, whatever the interval (end of a replay)."""
        if self._max_ts <= 0 or self._max_ts == self._emitted_ts:
            return None
        self._emitted_ts = self._max_ts
        return self._mark(idle=False)

    def idle(self, default_ts: float) -> Watermark:
        """The partition has gone quiet: stop holding the others back until it speaks again.

        ``default_ts`` stamps the mark of a partition that never had a sample.
        """
        self._emitted_ts = self._max_ts
        return self._mark(idle=True, ts=self._max_ts or default_ts)

    def _mark(self, idle: bool, ts: float | None = None) -> Watermark:
        return Watermark(ts=ts or self._max_ts, partition=self.partition, partitions=self.partitions,
                         services=len(self._services), idle=idle)


class EventClock:
    """The decider's event time: the minimum over the partitions that are not idle.

    Until every partition of the metrics topic (``Watermark.partitions``) has
    reported — progress or idleness — time does not move: decisions never
    start on half the topic.
    """

    def __init__(self, stall_s: float | None = None) -> None:
        if stall_s is not None and stall_s <= 0:
            raise ValueError(f"stall_s must be > 0, got {stall_s!r}")
        self.stall_s = stall_s
        self._partitions: dict[int, tuple[float, int, bool]] = {}  # partition -> (ts, services, idle)
        self._expected = 0
        self._now = 0.0

    @property
    def now(self) -> float:
        """Global watermark: no input stamped at or before it is still to come."""
        return self._now

    @property
    def services(self) -> int:
        """How many services the partitions have reported, in all."""
        return sum(count for _, count, _ in self._partitions.values())

    def advance(self, mark: Watermark) -> float | None:
        """Take one partition's mark; return the global watermark if it moved forward."""
        ts, _, _ = self._partitions.get(mark.partition, (0.0, 0, False))
        self._partitions[mark.partition] = (max(ts, mark.ts), mark.services, mark.idle)
        self._expected = max(self._expected, mark.partitions)
        if any(p not in self._partitions for p in range(self._expected)):
            return None
        front = max((t for t, services, idle in self._partitions.values() if services or not idle), default=0.0)
        live = [t for t, _, idle in self._partitions.values()
                if not idle and (self.stall_s is None or t >= front - self.stall_s)]
        now = min(live) if live else front
        if now <= self._now:  # also when every partition is idle and none ever had a sample
            return None
        self._now = now
        return now

    def to_state(self) -> dict[str, Any]:
        return {"now": self._now, "n": self._expected, "p": {str(k): list(v) for k, v in self._partitions.items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any], stall_s: float | None = None) -> EventClock:
        clock = cls(stall_s)
        clock._now = float(state["now"])
        clock._expected = int(state.get("n", 0))
        clock._partitions = {int(k): (float(v[0]), int(v[1]), bool(v[2]) if len(v) > 2 else False)
                             for k, v in state["p"].items()}
        return clock


def _utc(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):
        return "out of range"
