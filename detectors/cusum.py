"""A one-sided CUSUM that cannot be pushed over by k samples: :class:`TrimmedCusum`.

Page's CUSUM ``S = max(0, S + llr)`` is the optimal sustained-shift test
(Lorden), but one huge outlier adds a huge llr. Backout refuses to confirm a
shift on the evidence of ``spike_samples`` (k) samples or fewer, so the alarm
statistic is the CUSUM *without the k largest increments of the current
excursion* (the samples since S last left zero)::

    trimmed = S - sum(top k llr of the excursion)

A spike of <= k samples, of any size, only contributes increments that are
trimmed away, so it can never confirm a shift on its own; the trimmed
statistic is also never larger than the plain CUSUM, so the false-alarm rate
can only go down. The price for a real shift is about ``k`` ordinary
increments, which is why a large shift is confirmed exactly at its
(k+1)-th sample when every llr is capped at h (see the monitor).

The excursion also yields what an anomaly reports: the onset (the first sample
after the CUSUM was last at zero, the classical change-time estimate) and the
level during the excursion (the trimmed sums of the tested value ``y`` and of
its weight ``w``; for counts ``y`` is events and ``w`` trials).

>>> c = TrimmedCusum(spike_samples=1)
>>> [round(c.update(llr, 1.0, 1.0, float(ts)), 2) for ts, llr in enumerate([-1, 50, -1, 2, 2, -9], 1)]
[0.0, 0.0, 0.0, 1.0, 3.0, 0.0]
>>> c.onset_ts  # the excursion that began with the spike at ts 2 is still open; the spike was trimmed
2.0
"""

from __future__ import annotations


class TrimmedCusum:
    """Page's CUSUM whose alarm statistic leaves out the k largest increments of the excursion."""

    def __init__(self, spike_samples: int) -> None:
        if spike_samples < 0:
            raise ValueError(f"spike_samples must be >= 0, got {spike_samples}")
        self.spike_samples = spike_samples
        self._reset()

    def _reset(self) -> None:
        self.s = 0.0  # the plain CUSUM
        self.onset_ts = 0.0  # ts of the excursion's first sample (0 = no excursion)
        self.samples = 0  # samples in the excursion
        self.sum_y = 0.0  # excursion sums, all samples
        self.sum_w = 0.0
        self._top: list[list[float]] = []  # k largest [llr, y, w] of the excursion, descending
        self.trimmed = 0.0

    def update(self, llr: float, y: float, w: float, ts: float, limit: float = 1e300) -> float:
        """Add one increment; return the trimmed statistic. ``limit`` caps S (a saturated alarm)."""
        s = self.s + llr
        if s <= 0.0:
            if self.s > 0.0:
                self._reset()
            return 0.0
        if self.s == 0.0:
            self.onset_ts = ts
        self.s = limit if s > limit else s
        self.samples += 1
        self.sum_y += y
        self.sum_w += w
        top = self._top
        k = self.spike_samples
        if k:
            if len(top) < k:
                top.append([llr, y, w])
                top.sort(reverse=True)
            elif llr > top[-1][0]:
                top[-1] = [llr, y, w]
                top.sort(reverse=True)
            trim = 0.0
            for t in top:
                trim += t[0]
            trim = self.s - trim
            self.trimmed = trim if trim > 0.0 and self.samples > k else 0.0
        else:
            self.trimmed = self.s
        return self.trimmed

    def level(self) -> tuple[float, float]:
        """The excursion's (sum y, sum w) without its k strongest samples."""
        sy, sw = self.sum_y, self.sum_w
        if self.samples > len(self._top):
            for _, y, w in self._top:
                sy -= y
                sw -= w
        return sy, sw

    def clear(self) -> None:
        self._reset()

    def to_state(self) -> list:
        if self.s == 0.0:
            return [0]
        return [self.s, self.onset_ts, self.samples, self.sum_y, self.sum_w, self.trimmed, self._top]

    @classmethod
    def from_state(cls, state: list, spike_samples: int) -> TrimmedCusum:
        c = cls(spike_samples)
        if len(state) > 1:
            c.s, c.onset_ts, c.samples, c.sum_y, c.sum_w, c.trimmed = (
                float(state[0]), float(state[1]), int(state[2]), float(state[3]), float(state[4]), float(state[5]))
            c._top = [[float(v) for v in t] for t in state[6]]
        return c
