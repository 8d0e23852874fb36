"""Windowed statistics + detector bank for one (service, metric): :class:`MetricMonitor`.

One monitor per stream; the Faust worker keeps ``to_state()`` in a changelog
table and rebuilds it with ``from_state()``. Everything runs in event time
(``sample.ts``); nothing reads a clock.

Life of a stream:

1. **Warm-up** (``warmup_samples``): the baseline is learnt, nothing is tested.
2. **Watching**: each sample feeds the bank of trimmed CUSUMs of its kind
   (:mod:`detectors.binomial` for rates with counts, :mod:`detectors.gaussian`
   for gauges and health), one per design shift and direction, calibrated from
   ``arl0`` (:mod:`detectors.calibration`) and recalibrated every
   ``RECALIBRATE_SAMPLES`` samples as the baseline moves. A shift is confirmed
   when a test's trimmed statistic (its evidence without the k strongest
   samples, :mod:`detectors.cusum`) reaches its threshold *and* the level of
   the excursion is at least ``min_ratio`` away from the baseline in the bad
   direction. The baseline learns from every sample (winsorised at 4 sigma),
   except while a shift is suspected (a test past half its threshold with the
   minimum effect): a fault must not become the norm while it is being tested.
   A rate's dispersion still learns then (winsorised): leaving out exactly the
   high samples would underestimate it and make false alarms on bursty error
   counts several times more frequent.
   A significant but harmless shift (below ``min_ratio``) does not freeze the
   baseline, which then absorbs it slowly; that is also how daily swings are
   followed. A gauge that trends by nature can have a local line as its
   baseline (``trend_halflife_samples``, :mod:`detectors.gaussian`).
3. **Alarmed**: one :class:`~backout.contracts.Anomaly` was emitted. It is
   reported again — same ``onset_ts``, later ``detected_ts``, the field
   ``worsened`` — only when the shift gets ``WORSE_FACTOR`` times worse than
   last reported on ``spike_samples + 1`` samples in a row (a slow rollout
   reaching more traffic, a leak): a question put to a human may then become
   a clear-cut rollback. The baseline is frozen; a
   recovery test (a CUSUM for "back halfway to the baseline", same
   calibration) ends the alarm when the metric recovers. If the shift lasts
   ``accept_s`` (event seconds) it is accepted as the new normal: the baseline
   jumps to the recent level (a trend line, whose new slope is unknown, is
   learnt again from the next sample, with a warm-up). Either way the monitor
   watches again and a later shift fires again. With ``accept_s = 0``
   (segmentation, e.g. the TCPDBench run) every confirmed shift starts a new
   segment at once: the baseline restarts from the excursion's level, is
   warmed up again, and re-learns its scale (the old segment's is no evidence
   about the new one).

Input policy:

* ``ts`` equal to the newest sample's: :class:`~backout.errors.DuplicateSample`;
  older: :class:`~backout.errors.OutOfOrderSample` (also for re-sent older
  samples: only the newest ts is remembered, which keeps the state compact).
  The state is untouched; the caller dead-letters the sample.
* Gaps are detected from ts, not from an assumed interval: after a gap longer
  than ``max_gap_s`` the evidence of pending shifts is dropped (a shift is
  "sustained" only over contiguous data); baseline and alarm are kept, except
  a trend line's: its slope counts samples, so after a gap it is learnt again
  (a warm-up, the alarm dropped; the anomaly was already reported). Tests
  count samples, not seconds, so a slower exporter only makes detection slower
  in seconds.
* A rate sample with ``count == 0`` carries no evidence and is skipped; one
  without ``count`` is weighed as the stream's mean count (see binomial).
* ``enabled=False`` specs (``requests``): samples are checked and recorded,
  never tested.

Anomaly fields: ``onset_ts`` is where the level moved: the start of the
newest segment of the last ``ONSET_WINDOW`` tested samples with the largest
likelihood ratio against the baseline, k strongest samples left out
(:mod:`detectors.onset`), or the CUSUM's last zero when that window cannot see
the change; ``detected_ts = ts`` the confirming sample's,
``baseline``/``current`` in the metric's units (``current`` = the excursion's
level without its k strongest samples; rates count-weighted),
``ratio = current / baseline``, ``score`` = trimmed statistic / threshold
(>= 1; a log-likelihood-ratio multiple of what ARL0 requires),
``direction`` ("up"/"down" as observed), ``kind``, ``samples`` (the CUSUM
excursion's length; 0 on a re-report, which is ``worsened``).

>>> from backout.contracts import Metric
>>> from detectors.spec import spec_for
>>> mon = MetricMonitor("checkout", "error_rate", spec_for("error_rate"))
>>> rates = [0.005, 0.004, 0.006, 0.005] * 15 + [0.05] * 5
>>> out = [mon.update(Metric(ts=1e9 + 10 * i, service="checkout", metric="error_rate",
...                          value=r, count=2000)) for i, r in enumerate(rates)]
>>> [i for i, a in enumerate(out) if a is not None]  # the 3rd shifted sample: k = 2 never confirm
[62]
>>> a = out[62]; (a.detector, a.onset_ts - 1e9, a.detected_ts - 1e9, round(a.ratio, 1), mon.alarmed)
('binomial_cusum', 600.0, 620.0, 10.0, True)
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass

from backout.contracts import Anomaly, Metric
from backout.errors import DuplicateSample, ImpossibleValue, OutOfOrderSample
from detectors.anchored import MIN_PRE_SAMPLES, AnchoredTest, RecentWindow
from detectors.binomial import BinomialModel
from detectors.cusum import TrimmedCusum
from detectors.gaussian import GaussianModel
from detectors.onset import OnsetWindow
from detectors.spec import MetricSpec

RECALIBRATE_SAMPLES = 16
LEVEL_HALFLIFE = 20.0  # samples: the "recent level" an accepted shift is rebased to
SUSPECT_CLIP = 4.0  # sigmas: a suspected sample still informs the spread (not the level), winsorised
WORSE_FACTOR = 2.0  # an alarmed shift this many times worse than last reported is reported again
WORSE_EVENTS = 5.0  # a rate's run must expect this many events at the reported level to count
ONSET_WINDOW = 64  # tested samples kept to estimate an onset (detectors.onset: ~3x the slowest design's delay)
ASIDE_KEPT = 4  # ended shifts remembered to leave out of a deploy's window
STATE_VERSION = 4  # 2: adds the onset window; 3: the recent window and anchored tests (older: empty ones); 4: windows packed
DONE_ANCHORS = 8  # deploy ids whose test ended, remembered so that their later records open nothing
YOUNG = ""  # the key of a young stream's self-starting test among the anchored tests


@dataclass(slots=True)
class Alarm:
    """A confirmed shift being watched: for recovery, acceptance, and getting worse.

    Mutable, unlike the other state records: its recent level moves on every
    sample of an alarmed stream (measured: a frozen copy per sample costs more
    than the rest of the update).
    """

    ts: float  # when it was confirmed
    sign: int  # +1 up, -1 down
    level_y: float  # recent level (an EWMA of the transformed samples), what an accepted shift rebases to
    level_w: float
    recovery_a: float  # the recovery test's log-likelihood-ratio coefficients and threshold
    recovery_b: float
    recovery_h: float
    onset_ts: float  # as reported
    reported: float  # the level last reported, in the metric's units
    score: float  # as reported
    run_mildest: float = 0.0  # the current run of worse samples: its mildest level, weight, length
    run_weight: float = 0.0
    run_length: float = 0.0
    reports_worse: bool = True  # False for an alarm restored from a state that kept no run

    def to_list(self) -> list[float]:
        row = list(astuple(self))[:-1]
        return row if self.reports_worse else row[:10]

    @classmethod
    def from_list(cls, row: list) -> Alarm:
        v = [float(x) for x in row] + [0.0] * (13 - len(row))
        return cls(v[0], int(v[1]), v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12],
                   reports_worse=len(row) >= 13)


class MetricMonitor:
    """Windowed statistics + detector bank for one (service, metric)."""

    def __init__(self, service: str, metric: str, spec: MetricSpec) -> None:
        if not isinstance(spec, MetricSpec):
            raise TypeError(f"spec must be a MetricSpec, got {type(spec).__name__}")
        self.service = service
        self.metric = metric
        self.spec = spec
        self._reset()

    def _reset(self) -> None:
        spec = self.spec
        self._model = BinomialModel(spec) if spec.kind == "rate" else GaussianModel(spec)
        self._last_ts = 0.0
        self._n = 0  # samples learnt or tested
        self._since = 0  # samples since the last calibration
        self._designs: list[tuple[int, float, float, float, float, float]] = []
        self._bank: list[TrimmedCusum] = []
        self._alarm: Alarm | None = None
        self._recovery = TrimmedCusum(spec.spike_samples)
        self._window = OnsetWindow(ONSET_WINDOW, spec.spike_samples)
        self._recent = RecentWindow(spec)
        self._tests: dict[str, AnchoredTest] = {}  # deploy id (YOUNG: self-start) -> its open test
        self._ended: list[str] = []  # deploy ids whose test ended, newest last
        self._aside: list[tuple[float, float]] = []  # (from, to) ts of ended shifts: no baseline for a deploy

    @property
    def warmed_up(self) -> bool:
        """Its baseline is learnt: a shift of this stream can be detected."""
        return self._n >= self.spec.warmup_samples

    @property
    def alarmed(self) -> bool:
        """Currently in a confirmed shift."""
        return self._alarm is not None

    def update(self, sample: Metric) -> Anomaly | None:
        """Feed one sample; return an Anomaly when a sustained shift is confirmed (once per shift)."""
        ts = sample.ts
        last = self._last_ts
        if ts <= last:
            what = DuplicateSample if ts == last else OutOfOrderSample
            kind = "duplicate" if ts == last else "out-of-order"
            raise what(f"{kind} sample of {self.service}/{self.metric}: ts {ts!r}, "
                       f"the stream's newest ts is {last!r}; samples must arrive once, in event-time order")
        why = self.spec.impossible(sample.value)
        if why is not None:
            raise ImpossibleValue(f"impossible sample of {self.service}/{self.metric} at ts {ts!r}: {why}")
        self._last_ts = ts
        if not self.spec.enabled:
            return None
        anchored = self._feed_tests(sample.value, sample.count, ts)
        self._recent.add(sample.value, sample.count, ts)
        found = self._update(sample, last)
        return found if anchored is None else anchored  # both on one sample: one anomaly, the deploy's

    def _update(self, sample: Metric, last: float) -> Anomaly | None:
        """The bank of CUSUMs (module doc): warm-up, watching, alarmed."""
        ts = sample.ts
        model = self._model
        gap = last > 0.0 and ts - last > self.spec.max_gap_s
        if gap and model.forget_trend():  # a trend line: learnt again, alarm included
            self._relearn()
        y, w, scale = model.transform(sample.value, sample.count)
        if w <= 0.0:
            return None
        if self._n < self.spec.warmup_samples:
            model.learn(y, w, 0.0)
            self._n += 1
            if self._n == self.spec.warmup_samples:
                self._calibrate()
                self._end(YOUNG)
            elif self._n == MIN_PRE_SAMPLES:
                self._self_start(ts)
            return None
        self._n += 1
        if gap:
            for c in self._bank:
                c.clear()
            self._recovery.clear()
            self._window.clear()
        if self._alarm is not None:
            return self._watch_recovery(y, w, scale, ts)
        return self._test(sample, y, w, scale, ts)

    def _test(self, sample: Metric, y: float, w: float, scale: float, ts: float) -> Anomaly | None:
        model = self._model
        k2 = self.spec.spike_samples + 2
        best = -1
        best_score = 0.0
        freeze = False
        root = math.sqrt(w * scale)
        self._window.add(y, w, ts)
        bank = self._bank
        for j, (sign, a, b, h, c1, c2) in enumerate(self._designs):
            llr = (a * y + b * w) / scale
            c = bank[j]
            if llr <= 0.0 and c.s == 0.0:  # the usual case: the CUSUM stays at zero
                continue
            cap = (c1 * w + c2 * root) / scale
            if cap > h:
                cap = h
            if llr > cap:
                llr = cap
            t = c.update(llr, y, w, ts, k2 * h)
            if c.s >= 0.5 * h:  # suspected (untrimmed: the first k samples of a shift count here)
                sy, sw = c.level()
                if model.gate(sy, sw, sign):
                    freeze = True
                    if t >= h and t / h > best_score:
                        best, best_score = j, t / h
        if best >= 0:
            return self._fire(best, best_score, ts)
        model.learn(y, w, SUSPECT_CLIP if freeze else model.LEARN_CLIP, not freeze)
        if not freeze:
            self._since += 1
            if self._since >= RECALIBRATE_SAMPLES:
                self._calibrate()
        return None

    def _fire(self, j: int, score: float, ts: float) -> Anomaly:
        model, c = self._model, self._bank[j]
        sign = self._designs[j][0]
        sy, sw = c.level()
        base = model.baseline
        current = model.level(sy, sw)
        ratio = current / base if base != 0.0 else 0.0
        onset = self._window.onset(model.center, model.onset_gain, sign, c.onset_ts)
        anomaly = Anomaly(ts=ts, service=self.service, metric=self.metric, detector=model.detector,
                          onset_ts=onset, detected_ts=ts, baseline=base, current=current,
                          ratio=ratio, score=score, direction="up" if sign > 0 else "down",
                          kind=self.spec.kind, samples=c.samples)
        n = c.samples
        for other in self._bank:
            other.clear()
        self._window.clear()
        if self.spec.accept_s <= 0.0:  # segmentation use: every shift starts a new segment at once
            model.rebase(sy, sw, restart=True)
            self._n = 1  # the new segment's level is its first sample; warm up again
            return anomaly
        ra, rb, rh = model.recovery(sy, sw, sign)
        self._alarm = Alarm(ts, sign, sy / n, sw / n, ra, rb, rh, anomaly.onset_ts, current, score)
        self._recovery.clear()
        return anomaly

    def _watch_recovery(self, y: float, w: float, scale: float, ts: float) -> Anomaly | None:
        alarm = self._alarm
        assert alarm is not None
        decay = 1.0 - 1.0 / LEVEL_HALFLIFE
        alarm.level_y = decay * alarm.level_y + (1.0 - decay) * y
        alarm.level_w = decay * alarm.level_w + (1.0 - decay) * w
        rh = alarm.recovery_h
        llr = (alarm.recovery_a * y + alarm.recovery_b * w) / scale
        t = self._recovery.update(llr if llr < rh else rh, y, w, ts, (self.spec.spike_samples + 2) * rh)
        if t >= rh:  # recovered: watch again against the old baseline
            self._set_aside(alarm.onset_ts, ts)
            self._alarm = None
        elif ts - alarm.ts >= self.spec.accept_s:  # the new normal
            if self._model.forget_trend():  # a line's new slope is unknown: learn it again
                self._relearn()
                return None
            self._model.rebase(alarm.level_y, alarm.level_w)
            self._set_aside(0.0, alarm.onset_ts)
            self._alarm = None
        else:
            return self._worse(alarm, y, w, ts)
        self._recovery.clear()
        self._calibrate()
        return None

    def _set_aside(self, start_ts: float, end_ts: float) -> None:
        """The samples of a shift that ended (``start_ts`` to ``end_ts``) are no level to judge a
        later deploy by: its anchored test leaves them out of the window before it."""
        self._aside = [x for x in self._aside[-(ASIDE_KEPT - 1):] if x[1] >= self._recent.oldest_ts]
        self._aside.append((start_ts, end_ts))

    def _worse(self, alarm: Alarm, y: float, w: float, ts: float) -> Anomaly | None:
        """Report the shift again once it got markedly worse, sample after sample.

        Every sample of the run must be ``WORSE_FACTOR`` times past the last reported level (so a
        spike, however large, breaks no rule), the run must be ``spike_samples + 1`` long, and a
        rate's run must expect at least ``WORSE_EVENTS`` events at the reported level (20 requests a
        sample prove nothing about a 2% rate). The level reported is the run's mildest sample.
        """
        if not alarm.reports_worse:
            return None
        model, sign, reported = self._model, alarm.sign, alarm.reported
        now = model.level(y, w)
        worse = now / reported if sign > 0 and reported > 0 else reported / now if sign < 0 and now > 0 else 0.0
        if worse < WORSE_FACTOR:
            alarm.run_mildest, alarm.run_weight, alarm.run_length = 0.0, 0.0, 0.0
            return None
        mildest = now if alarm.run_length == 0 else (min(alarm.run_mildest, now) if sign > 0
                                                     else max(alarm.run_mildest, now))
        alarm.run_mildest, alarm.run_weight, alarm.run_length = mildest, alarm.run_weight + w, alarm.run_length + 1.0
        enough = self.spec.kind != "rate" or alarm.run_weight * reported >= WORSE_EVENTS
        if alarm.run_length <= self.spec.spike_samples or not enough:
            return None
        alarm.reported, alarm.run_mildest, alarm.run_weight, alarm.run_length = mildest, 0.0, 0.0, 0.0
        base = model.baseline
        return Anomaly(ts=ts, service=self.service, metric=self.metric, detector=model.detector,
                       onset_ts=alarm.onset_ts, detected_ts=ts, baseline=base, current=mildest,
                       ratio=mildest / base if base != 0.0 else 0.0, score=alarm.score,
                       direction="up" if sign > 0 else "down", kind=self.spec.kind, worsened=True)

    # -- deploy-anchored and self-starting tests (detectors.anchored) ---------------------------------

    def anchor(self, deploy_id: str, deploy_ts: float, finished_ts: float | None = None) -> Anomaly | None:
        """A deploy of this service began at ``deploy_ts``: test what follows against what came before.

        Called for every record of the deploy (``finished_ts``: a finished record's ts, which
        extends the test through the rollout). A record read late is fine: the samples after the
        deploy already seen are tested at once, from the recent window, so the anomaly is the
        same whatever order deploys and samples are read in (within the window).
        """
        spec = self.spec
        if not spec.enabled or spec.trend_halflife_samples is not None or deploy_id in self._ended:
            return None  # a trend line's stream moves by nature: a level before the deploy is no baseline
        test = self._tests.get(deploy_id)
        if test is not None:
            if finished_ts is not None:
                test.horizon_s = max(test.horizon_s, finished_ts - test.deploy_ts + spec.anchor_horizon_s / 2)
            return None
        # a shift confirmed before the deploy is the level the deploy is judged against: its samples only,
        # or, once it is coming back (its recovery test half way to confirming it), the samples since then
        # if there are enough; a shift that ended before it is no level (recovered: the level around it is;
        # accepted: the new one)
        alarm = self._alarm
        since = [-math.inf]
        if alarm is not None and alarm.ts < deploy_ts:
            since = [alarm.onset_ts]
            back = self._recovery
            if back.onset_ts and back.s >= 0.5 * alarm.recovery_h:
                since.insert(0, back.onset_ts)
        for since_ts in since:
            test = self._recent.start(deploy_ts, since_ts, aside=self._aside, alpha=spec.anchor_alpha,
                                      horizon_s=spec.anchor_horizon_s, onset_half_s=spec.anchor_onset_half_s)
            if test is not None:
                break
        if test is None:  # too little history before it (or since the shift in progress began)
            self._end(deploy_id)
            return None
        if finished_ts is not None:
            test.horizon_s = max(test.horizon_s, finished_ts - deploy_ts + spec.anchor_horizon_s / 2)
        self._tests[deploy_id] = test
        found = None
        for value, count, ts in self._recent.after(deploy_ts):
            if test.update(value, count, ts):
                found = self._anchored_anomaly(deploy_id, test, ts)
                break
        if test.done:
            self._end(deploy_id)
        return found

    def _self_start(self, ts: float) -> None:
        """A young stream (``MIN_PRE_SAMPLES`` samples): its later samples are tested against these
        until the warm-up ends, with the false-alarm budget of the samples that covers at ARL0,
        its onset prior spread over them."""
        spec = self.spec
        covered = spec.warmup_samples - MIN_PRE_SAMPLES
        if covered <= spec.spike_samples + 1 or spec.trend_halflife_samples is not None:
            return  # nothing to confirm in so few samples; a trend's first samples are no level
        test = self._recent.start(math.nextafter(ts, math.inf), alpha=min(covered / spec.arl0, 0.5),
                                  horizon_s=1e12, onset_half_s=max(self._recent.step_s, 1e-3) * covered)
        if test is not None:
            self._tests[YOUNG] = test

    def _feed_tests(self, value: float, count: float | None, ts: float) -> Anomaly | None:
        found = None
        for deploy_id, test in list(self._tests.items()):
            if test.update(value, count, ts):
                found = self._anchored_anomaly(deploy_id, test, ts)  # the newest deploy's, if several
            if test.done:
                self._end(deploy_id)
        return found

    def _end(self, deploy_id: str) -> None:
        self._tests.pop(deploy_id, None)
        if deploy_id != YOUNG and deploy_id not in self._ended:
            self._ended = (self._ended + [deploy_id])[-DONE_ANCHORS:]

    def _anchored_anomaly(self, deploy_id: str, test: AnchoredTest, ts: float) -> Anomaly:
        spec = self.spec
        detector = ("anchored_" if deploy_id != YOUNG else "selfstart_") + ("rate" if spec.kind == "rate" else "gauge")
        return Anomaly(ts=ts, service=self.service, metric=self.metric, detector=detector,
                       onset_ts=test.onset_ts, detected_ts=ts, baseline=test.baseline, current=test.current,
                       ratio=test.ratio, score=test.log_e / math.log(1.0 / test.alpha),
                       direction="down" if spec.direction == "down" else "up", kind=spec.kind,
                       samples=test.shifted_samples, deploy_id=deploy_id or None,
                       earliest_onset_ts=test.earliest_onset_ts, latest_onset_ts=test.latest_onset_ts)

    def _relearn(self) -> None:
        """Warm up again from the next sample (the model forgot its baseline's trend)."""
        self._n, self._alarm = 0, None
        self._bank, self._designs = [], []
        self._recovery.clear()
        self._window.clear()

    def _calibrate(self) -> None:
        self._since = 0
        m = len(self.spec.shift_grid) * (2 if self.spec.direction == "both" else 1)
        self._designs = self._model.designs(m)
        if len(self._bank) != len(self._designs):
            self._bank = [TrimmedCusum(self.spec.spike_samples) for _ in self._designs]

    # -- state ---------------------------------------------------------------------------------

    def to_state(self) -> dict:
        """A compact JSON-serialisable dict; :meth:`from_state` restores the monitor exactly."""
        return {"v": STATE_VERSION, "s": self.service, "m": self.metric, "ts": self._last_ts,
                "n": self._n, "i": self._since, "b": self._model.to_state(),
                "d": [list(d) for d in self._designs], "c": [c.to_state() for c in self._bank],
                "a": None if self._alarm is None else self._alarm.to_list(), "r": self._recovery.to_state(),
                "o": self._window.to_state(), "w": self._recent.to_state(),
                "t": [[k, t.to_state()] for k, t in self._tests.items()], "g": self._ended,
                "x": [list(x) for x in self._aside]}

    @classmethod
    def from_state(cls, state: dict, spec: MetricSpec) -> MetricMonitor:
        if state.get("v") not in (1, 2, 3, STATE_VERSION):
            raise ValueError(f"monitor state version {state.get('v')!r} is not 1, 2, 3 or {STATE_VERSION}")
        mon = cls(state["s"], state["m"], spec)
        mon._last_ts = float(state["ts"])
        if "w" in state:
            mon._recent = RecentWindow.from_state(state["w"], spec)
            mon._tests = {k: AnchoredTest.from_state(t, spec) for k, t in state["t"]}
            mon._ended = list(state["g"])
            mon._aside = [(float(a), float(b)) for a, b in state.get("x", [])]
        if not mon._model.load(state["b"]):  # saved under another spec (trend on/off): learn again
            return mon
        mon._n, mon._since = int(state["n"]), int(state["i"])
        mon._designs = [(int(d[0]), *(float(v) for v in d[1:6])) for d in state["d"]]  # type: ignore[misc]
        mon._bank = [TrimmedCusum.from_state(c, spec.spike_samples) for c in state["c"]]
        mon._alarm = None if state["a"] is None else Alarm.from_list(state["a"])
        mon._recovery = TrimmedCusum.from_state(state["r"], spec.spike_samples)
        mon._window = OnsetWindow.from_state(state.get("o", []), ONSET_WINDOW, spec.spike_samples)
        return mon
