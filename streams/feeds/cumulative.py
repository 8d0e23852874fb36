"""Deltas of cumulative streams (OTLP cumulative sums and histograms), with bounded memory.

A cumulative point says "so much since ``start``"; what Backout wants is how
much happened in the interval since the previous point of the same stream.
:class:`Cumulatives` remembers the last point of each stream, at most
``max_streams`` of them (the least recently updated is forgotten first and
counted in ``evicted``), and answers each new point with the interval and
the increase, or ``None`` when there is nothing to measure yet:

* the first point of a stream (or the first after it was forgotten) is only
  remembered: its value is an increase over an unknown interval;
* a point no newer than the last is ignored (a re-sent export);
* a reset (a new ``start``, or a value that went down) after the last point
  gives the new value over ``[start, time]``, as the counter restarted then.

>>> c = Cumulatives(max_streams=2)
>>> c.delta("a", 0, 10, (5.0,)) is None
True
>>> c.delta("a", 0, 20, (8.0,))
(10, (3.0,))
>>> c.delta("a", 25, 30, (2.0,))  # restarted at 25: 2 over 5 ns
(5, (2.0,))
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class Cumulatives:
    def __init__(self, max_streams: int = 100_000) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams must be at least 1, got {max_streams}")
        self.max_streams = max_streams
        self.evicted = 0
        self._last: OrderedDict[Hashable, tuple[int, int, tuple[float, ...]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def delta(self, stream: Hashable, start: int, time: int,
              values: tuple[float, ...]) -> tuple[int, tuple[float, ...]] | None:
        """(interval, increases) since the stream's last point, in the units given; ``None`` if unknown."""
        last = self._last.get(stream)
        if last is not None and time <= last[1]:
            return None
        self._last[stream] = (start, time, values)
        self._last.move_to_end(stream)
        if len(self._last) > self.max_streams:
            self._last.popitem(last=False)
            self.evicted += 1
        if last is None:
            return None
        last_start, last_time, last_values = last
        if start == last_start and all(v >= w for v, w in zip(values, last_values, strict=True)):
            return time - last_time, tuple(v - w for v, w in zip(values, last_values, strict=True))
        if last_time <= start < time:  # restarted since the last point
            return time - start, values
        return None
