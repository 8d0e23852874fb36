"""What the runtime keeps for one input partition it owns, and the commit rule.

The committed offset of a partition is where a restarted owner starts reading,
so it must never pass a record whose effects are not on the broker yet: it is
the lowest of the next offset to read, the first unsaved record of every
changed state, and the record behind every output or state write still in
flight.

>>> ledger = Ledger(partition=0)
>>> ledger.read(119)
>>> ledger.changed(b"a", 100, now=0.0)
>>> ledger.hold(95)
>>> ledger.committable()
95
>>> ledger.release(95)
>>> ledger.committable()
100
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Ledger:
    """One owned partition: its states, what of them is saved, and what is still in flight."""

    partition: int
    live: dict[bytes, Any] = field(default_factory=dict)  # key -> its state, held in memory
    applied: dict[bytes, int] = field(default_factory=dict)  # live key -> offset of the last record in its state
    touched: dict[bytes, float] = field(default_factory=dict)  # live key -> when it last had a record, oldest first
    dirty: dict[bytes, tuple[int, float]] = field(default_factory=dict)  # key -> (first unsaved offset, since)
    unacked: dict[int, int] = field(default_factory=dict)  # record offset -> writes in flight because of it
    unacked_by_key: dict[bytes, int] = field(default_factory=dict)  # key -> its writes in flight
    next_offset: int | None = None  # the next record to read
    committed: int | None = None
    last_read_s: float | None = None  # monotonic time of the last record read
    idle_at_s: float | None = None  # ``last_read_s`` when the partition was last declared idle

    def read(self, offset: int, now_s: float | None = None) -> None:
        self.next_offset = offset + 1
        if now_s is not None:
            self.last_read_s = now_s

    def changed(self, key: bytes, offset: int, now: float) -> None:
        """``key``'s state now includes the record at ``offset``; it must be saved."""
        self.applied[key] = offset
        self.touched.pop(key, None)  # to the end: the most recent
        self.touched[key] = now
        if key not in self.dirty:
            self.dirty[key] = (offset, now)

    def forget(self, key: bytes) -> None:
        """Drop a live state that may be half-changed: it is rebuilt from its last saved one."""
        self.live.pop(key, None)
        self.dirty.pop(key, None)
        self.applied.pop(key, None)
        self.touched.pop(key, None)

    def idle_keys(self, touched_before: float, budget: int) -> list[bytes]:
        """Live keys without a record since ``touched_before`` whose state is saved and on the
        broker: they may leave memory. The oldest first, ``budget`` at most."""
        idle: list[bytes] = []
        for key, since in self.touched.items():
            if since >= touched_before or len(idle) >= budget:
                break
            if key not in self.dirty and not self.unacked_by_key.get(key):
                idle.append(key)
        return idle

    def hold(self, offset: int, key: bytes | None = None) -> None:
        self.unacked[offset] = self.unacked.get(offset, 0) + 1
        if key is not None:
            self.unacked_by_key[key] = self.unacked_by_key.get(key, 0) + 1

    def release(self, offset: int, key: bytes | None = None) -> None:
        _decrement(self.unacked, offset)
        if key is not None:
            _decrement(self.unacked_by_key, key)

    def ready(self, changed_before: float, budget: int) -> list[tuple[bytes, int]]:
        """States to save now, oldest first, ``budget`` at most: changed before ``changed_before``
        (monotonic) and with no write of theirs in flight (an anomaly, or their previous state)."""
        ready: list[tuple[bytes, int]] = []
        for key, (first, since) in self.dirty.items():
            if since > changed_before or len(ready) >= budget:
                break
            if not self.unacked_by_key.get(key):
                ready.append((key, first))
        return ready

    def committable(self) -> int | None:
        """The lowest offset whose record may still have to be read again after a crash."""
        if self.next_offset is None:
            return None
        return min([self.next_offset, *(first for first, _ in self.dirty.values()), *self.unacked])


def _decrement(counts: dict, key: object) -> None:
    if counts.get(key, 0) > 1:
        counts[key] -= 1
    else:
        counts.pop(key, None)
