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
without a word.

>>> clock = PartitionClock(partition=0, interval_s=10, partitions=2)
>>> [w.ts for w in map(clock.observe, [100.0, 105.0, 111.0, 112.0], "abab") if w]
[100.0, 111.0]
>>> events = EventClock()
>>> events.advance(Watermark(ts=100.0, partition=0, partitions=2))  # partition 1 not heard of yet
>>> events.advance(Watermark(ts=130.0, partition=1, partitions=2))
100.0
>>> events.advance(Watermark(ts=120.0, partition=0, partitions=2, idle=True))
130.0
"""

from __future__ import annotations

from typing import Any

from backout.contracts import Watermark


class PartitionClock:
    """One metrics partition's event time; yields a watermark every ``interval_s`` of it."""

    def __init__(self, partition: int, interval_s: float = 5.0, partitions: int = 1) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.partition = partition
        self.partitions = partitions
        self.interval_s = interval_s
        self._max_ts = 0.0
        self._emitted_ts = 0.0
        self._services: set[str] = set()

    @property
    def max_ts(self) -> float:
        return self._max_ts

    def observe(self, ts: float, service: str) -> Watermark | None:
        """Note one sample; return a watermark when the partition moved ``interval_s`` on."""
        self._services.add(service)
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
        front = max(t for t, _, _ in self._partitions.values())
        live = [t for t, _, idle in self._partitions.values()
                if not idle and (self.stall_s is None or t >= front - self.stall_s)]
        now = min(live) if live else front
        if now <= self._now:
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
