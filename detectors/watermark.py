"""Event-time progress: per metrics partition, and across all of them.

Metric samples of different services reach the decider through different
partitions, in an order that depends on the broker and on how many workers
share the load. The decider therefore never acts on "what it has seen so far":
it acts when the event-time watermark — the slowest live partition's progress —
passes the moment a decision is due. Then every input stamped up to that moment
has arrived, and the backtest (one partition, file order) and the live stream
(many partitions, any interleaving) take the same decisions.

>>> clock = PartitionClock(partition=0, interval_s=10)
>>> [w.ts for w in map(clock.observe, [100.0, 105.0, 111.0, 112.0], "abab") if w]
[100.0, 111.0]
>>> events = EventClock(idle_s=60)
>>> events.advance(Watermark(ts=100.0, partition=0)), events.advance(Watermark(ts=130.0, partition=1))
(100.0, None)
>>> events.advance(Watermark(ts=120.0, partition=0))
120.0
"""

from __future__ import annotations

from typing import Any

from backout.contracts import Watermark


class PartitionClock:
    """One metrics partition's event time; yields a watermark every ``interval_s`` of it."""

    def __init__(self, partition: int, interval_s: float = 5.0) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.partition = partition
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
        return Watermark(ts=self._max_ts, partition=self.partition, services=len(self._services))


class EventClock:
    """The decider's event time: the minimum over live partitions' watermarks.

    A partition that has fallen ``idle_s`` behind the most advanced one is
    treated as idle (it has no traffic, or its worker is gone) and stops
    holding time back; it counts again as soon as it catches up.
    """

    def __init__(self, idle_s: float = 300.0) -> None:
        if idle_s <= 0:
            raise ValueError(f"idle_s must be > 0, got {idle_s!r}")
        self.idle_s = idle_s
        self._partitions: dict[int, tuple[float, int]] = {}
        self._now = 0.0

    @property
    def now(self) -> float:
        """Global watermark: no input stamped at or before it is still to come."""
        return self._now

    @property
    def services(self) -> int:
        """How many services the partitions have reported, in all."""
        return sum(count for _, count in self._partitions.values())

    def advance(self, mark: Watermark) -> float | None:
        """Take one partition's watermark; return the global one if it moved forward."""
        ts, _ = self._partitions.get(mark.partition, (0.0, 0))
        self._partitions[mark.partition] = (max(ts, mark.ts), mark.services)
        front = max(t for t, _ in self._partitions.values())
        live = [t for t, _ in self._partitions.values() if t >= front - self.idle_s]
        now = min(live)
        if now <= self._now:
            return None
        self._now = now
        return now

    def to_state(self) -> dict[str, Any]:
        return {"now": self._now, "p": {str(k): list(v) for k, v in self._partitions.items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any], idle_s: float = 300.0) -> EventClock:
        clock = cls(idle_s)
        clock._now = float(state["now"])
        clock._partitions = {int(k): (float(v[0]), int(v[1])) for k, v in state["p"].items()}
        return clock
