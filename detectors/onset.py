"""Where a confirmed shift began: :class:`OnsetWindow`, a window-limited GLR change-time estimate.

A CUSUM's own estimate of the change time is its last zero, which is often
early on slow or moderate shifts: the test of the smallest design leaves zero
on ordinary noise before the change and carries that excursion into the
shift. Deploy correlation (and segmentation) use the onset, so the monitor
re-estimates it when an alarm fires.

The window keeps the last ``size`` *tested* samples ``(y, w, ts)`` (after the
warm-up, since the baseline was last learnt from scratch; cleared with the
pending evidence after a gap or a confirmed shift). Given the baseline's level
``m0`` per unit weight (a gauge's mean, a rate's p0), the onset is the start
``tau`` of the newest segment that maximises the generalised likelihood ratio
of "the level changed at tau, to the segment's own level" against "no change"
(the change-time MLE with a known pre-change level; Siegmund & Venkatraman
1995, window-limited as in Lai 1995)::

    tau = argmax  gain(Y_tau, W_tau)     Y, W: sums of y and w from tau to now

with ``gain`` from the model (gauges ``(Y - W m0)**2 / W``, rates
``W KL(Y/W || p0)``; both ``0`` unless the segment moved in the alarm's
direction). As everywhere in Backout, the ``spike_samples`` (k) samples of the
segment furthest in that direction are left out of its sums, so a spike just
before a shift cannot pull its onset back, and the segment must be longer
than k samples.

When the window cannot answer, the CUSUM's onset stands: fewer than k + 1
samples, no segment moved in the direction, or the CUSUM's excursion began
before the window's oldest sample (the window has not seen the whole shift).

``size`` bounds the state (a few dozen floats); 64 samples are about three
times the detection delay of the smallest design shift at the default ARL0,
longer than any excursion that is confirmed as a shift rather than absorbed.

>>> w = OnsetWindow(size=64, spike_samples=2)
>>> for ts, y in enumerate([0.0, 0.1, -0.1, 0.0, 0.6, 0.4, 0.1, 2.0, 2.1, 1.9, 9.0, 2.2], 1):
...     w.add(y, 1.0, float(ts))
>>> gauge = lambda sy, sw, sign: sy * sy / sw if sign * sy > 0 else 0.0  # m0 = 0, sigma = 1
>>> w.onset(0.0, gauge, 1, fallback=5.0)  # a CUSUM would have left zero at the 0.6 (ts 5)
8.0
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from detectors.packing import pack_rows, unpack_rows


class OnsetWindow:
    """The last ``size`` tested samples and their GLR change-time estimate (see module doc)."""

    def __init__(self, size: int, spike_samples: int) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1 sample, got {size}")
        if spike_samples < 0:
            raise ValueError(f"spike_samples must be >= 0, got {spike_samples}")
        self.size = size
        self.spike_samples = spike_samples
        self._reset()

    def _reset(self) -> None:
        self._buf: deque[tuple[float, float, float]] = deque(maxlen=self.size)  # (y, w, ts), oldest first

    def __len__(self) -> int:
        return len(self._buf)

    def add(self, y: float, w: float, ts: float) -> None:
        self._buf.append((y, w, ts))  # the oldest falls out

    def clear(self) -> None:
        self._reset()

    def onset(self, m0: float, gain: Callable[[float, float, int], float], sign: int,
              fallback: float) -> float:
        """The ts where the newest segment moved from ``m0`` (per unit w) in direction ``sign``.

        ``gain(Y, W, sign)`` scores a segment with sums Y, W; ``fallback`` is the CUSUM's onset.
        """
        buf = self._buf
        if len(buf) <= self.spike_samples or fallback < buf[0][2]:
            return fallback
        best, best_ts = self.best(m0, gain, sign)
        return best_ts if best > 0.0 else fallback

    def best(self, m0: float, gain: Callable[[float, float, int], float], sign: int) -> tuple[float, float]:
        """``(gain, ts)`` of the segment :meth:`onset` picks; ``(0.0, 0.0)`` when none moved that way."""
        best, best_ts, _ = self.span(m0, gain, sign)
        return best, best_ts

    def span(self, m0: float, gain: Callable[[float, float, int], float], sign: int,
             slack: float = 0.0) -> tuple[float, float, float]:
        """``(gain, ts, latest)``: the best segment's gain and start, and the newest start whose gain
        is within ``slack`` of it (the latest onset the samples cannot tell from the best)."""
        buf, k = self._buf, self.spike_samples
        best, best_ts = 0.0, 0.0
        scores: list[tuple[float, float]] = []  # (gain, start), newest first; kept only with a slack
        sy = sw = 0.0
        top: list[tuple[float, float, float]] = []  # the k largest (deviation, y, w) of the segment
        for n, (y, w, ts) in enumerate(reversed(buf), 1):
            sy += y
            sw += w
            if k:
                dev = sign * (y - w * m0)
                if len(top) < k or dev > top[-1][0]:
                    if len(top) == k:
                        top.pop()
                    top.append((dev, y, w))
                    top.sort(reverse=True)
            if n <= k:
                continue
            ty = sy - sum(t[1] for t in top)
            tw = sw - sum(t[2] for t in top)
            g = gain(ty, tw, sign) if tw > 0.0 else 0.0
            if slack:
                scores.append((g, ts))
            if g > best:
                best, best_ts = g, ts
        latest = next(ts for g, ts in scores if g >= best - slack) if slack and best > 0.0 else best_ts
        return best, best_ts, latest

    def to_state(self) -> str:
        """The rows ``(y, w, ts)``, packed (see :mod:`detectors.packing`)."""
        return pack_rows(self._buf)

    @classmethod
    def from_state(cls, state: str | list, size: int, spike_samples: int) -> OnsetWindow:
        win = cls(size, spike_samples)
        if isinstance(state, str):
            win._buf.extend(unpack_rows(state, 3))  # type: ignore[arg-type]
        elif state:  # saved before the rows were packed: [ref, [[y, w, ts - ref], ...]]
            ref = float(state[0])
            win._buf.extend((float(y), float(w), float(dt) + ref) for y, w, dt in state[1])
        return win
