"""Did the rollback work? The event-time recovery test of the blamed metrics: :class:`Recovery`.

For each metric the decision blamed, the decision's evidence (:func:`blamed_of`)
gives the pre-deploy ``baseline``, the ``shifted`` level and the shift's
``onset_ts``. The verifier is fed the service's samples from that onset on:

* **from the onset to the rollback** (``executed_ts``) the metric sits at the
  shifted level, and its samples teach the test the metric's noise, with the
  monitor's statistics: :class:`~detectors.stats.EWStats` for a gauge
  (variance and AR(1) autocorrelation, winsorised as the monitor's),
  :class:`~detectors.stats.EWRate` for a rate (its beta-binomial dispersion:
  real error counts vary many times more than binomially). They start from a
  prior worth ``PRIOR_SAMPLES`` samples that vary by a fraction of the shift
  (``PRIOR_SPREAD``), so that a few similar samples cannot make the noise look
  tiny, and a test without any sample before the rollback still stands on it.
  The noise is then frozen: the samples under test never move it, so neither a
  spike nor a lucky run can make it look quieter or noisier than it was.
* **after the rollback** each sample feeds the monitor's recovery test
  (:mod:`detectors.monitor`; ``recovery()`` of :mod:`detectors.binomial` and
  :mod:`detectors.gaussian`): a :class:`~detectors.cusum.TrimmedCusum` of the
  shifted level against the point halfway back to the baseline (geometric for
  rates and log-scale gauges), each sample capped at the threshold h and the k
  strongest left out, so a dip of ``spike_samples`` good samples never counts
  and no recovery is declared on fewer than k + 1 samples. When it reaches h,
  the excursion's level (trimmed, count-weighted sums) must also be **near the
  baseline**: no longer a shift by the monitor's own definition (less than
  ``min_ratio`` away in the bad direction, ``gate()``). If it still is (a
  partial recovery, 5% -> 2% after a 0.5% baseline; or a stretch with spikes
  in it) the excursion starts again from the next sample, and a single sample
  that alone is as strong for the shifted level as a confirmation (llr <= -h)
  ends the excursion too: a recovery must hold on its own samples.

A metric passes once both hold; the rollback is ``verified`` when every blamed
metric passed, at the sample that made the last one pass. The sentence says
when the level came back (the passing excursion's first sample) relative to
the rollback. It is ``not_recovered`` once every metric still failing has a
sample stamped past ``executed_ts + verify_within_s`` (its own stream has
passed the deadline), or :meth:`Recovery.tick` brings a time past the deadline
plus ``lateness_s`` (samples stamped before the deadline may still be on
their way; a stream that stopped has no event time of its own). The verdict
is stamped at the deadline, however it was reached. A trend baseline
(``trend_halflife_samples``) is not used here: the test is against the level
the anomaly reported.

Figures on seeded series with the project's production-like noise
(``bench/recovery.py``) are in the README.

>>> from backout.contracts import Metric
>>> from detectors.spec import DEFAULT_SPECS
>>> r = Recovery("inc-1", "checkout", "v2.15.1", executed_ts=1000.0, specs=DEFAULT_SPECS,
...              blamed=(Blamed("error_rate", baseline=0.005, shifted=0.05, onset_ts=900.0),))
>>> rates = [0.05, 0.048, 0.051, 0.052, 0.049] * 2 + [0.05, 0.048, 0.051]  # onset to 30 s after
>>> rates += [0.005, 0.004, 0.006, 0.005] * 3  # a sample every 10 s
>>> out = [r.update(Metric(ts=900.0 + 10 * i, service="checkout", metric="error_rate",
...                        value=v, count=2000)) for i, v in enumerate(rates)]
>>> [i for i, v in enumerate(out) if v is not None]  # the 3rd sample back at the baseline (k = 2)
[15]
>>> v = out[15]; v.status, v.ts - 1000.0, v.before, v.after
('verified', 50.0, {'error_rate': 0.05}, {'error_rate': 0.005})
>>> v.detail
'Error rate dropped from 5% back to 0.5% within 30 seconds of the rollback. The deploy of v2.15.1 was the cause.'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backout.contracts import Decision, Metric, Verification
from backout.errors import ConfigError, ContractError, DuplicateSample, OutOfOrderSample
from detectors import wording
from detectors.binomial import BinomialModel
from detectors.cusum import TrimmedCusum
from detectors.gaussian import GaussianModel
from detectors.spec import MetricSpec
from detectors.stats import EWRate, EWStats

VERIFY_WITHIN_S = 300.0
LATENESS_S = 30.0
PRIOR_SAMPLES = 4  # the noise prior weighs as much as this many samples
PRIOR_SPREAD = {"gauge": 0.5, "rate": 0.25}  # its spread, as a fraction of the shift (see module doc)
SEED_TRIALS = 1e6  # a rate's baseline is held as this many pseudo-trials: it does not move
STATE_VERSION = 1


@dataclass(frozen=True)
class Blamed:
    """One metric a decision blamed: its level before the deploy and while shifted (metric units)."""

    metric: str
    baseline: float
    shifted: float
    onset_ts: float | None = None  # from here to the rollback, samples teach the test the noise


def blamed_of(decision: Decision) -> tuple[str | None, tuple[Blamed, ...]]:
    """(version of the blamed deploy, blamed metrics) from a decision's evidence.

    The evidence holds one ``anomaly`` entry per shift of the service (a shift re-sent as it
    worsened appears again, later): each metric's latest entry speaks for it. The version is the
    ``deploy`` entry's, else the decision's ``from_version``. Entries without numbers are skipped.
    """
    version = decision.from_version
    latest: dict[str, tuple[float, Blamed]] = {}
    for item in decision.evidence:
        if item.get("kind") == "deploy" and isinstance(item.get("version"), str):
            version = item["version"]
        if item.get("kind") != "anomaly" or item.get("service", decision.service) != decision.service:
            continue
        metric, base, shifted = item.get("metric"), _number(item.get("baseline")), _number(item.get("current"))
        if not isinstance(metric, str) or base is None or shifted is None:
            continue
        at = _number(item.get("detected_ts")) or 0.0
        if metric not in latest or at >= latest[metric][0]:
            latest[metric] = (at, Blamed(metric, base, shifted, _number(item.get("onset_ts"))))
    return version, tuple(b for _, b in sorted(latest.values(), key=lambda t: t[1].metric))


def _number(x: Any) -> float | None:
    """``x`` as a float if it is a finite number (evidence comes from a message), else None."""
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) else None


class _Watch:
    """The recovery test of one blamed metric (see module doc)."""

    def __init__(self, blamed: Blamed, spec: MetricSpec) -> None:
        self.blamed = blamed
        self.spec = spec.model_copy(update={"trend_halflife_samples": None})  # against the level
        self.rate = spec.kind == "rate"
        self.model: BinomialModel | GaussianModel = (
            BinomialModel(self.spec) if self.rate else GaussianModel(self.spec))
        up = blamed.shifted > blamed.baseline if spec.direction == "both" else spec.direction == "up"
        self.sign = 1 if up else -1
        self.cusum = TrimmedCusum(spec.spike_samples)
        self.noise: EWStats | EWRate | None = None  # learnt before the rollback; None once frozen
        self.frozen = False  # the model carries the noise; testing has begun
        self.sums = [0.0, 0.0, 0.0]  # tested value, weight, samples since the rollback
        self.last_ts = 0.0
        self.past = False  # this metric's stream has passed the deadline
        self.passed: list[float] | None = None  # [ts, onset_ts, level]
        if isinstance(self.model, BinomialModel):
            p = max(blamed.baseline, 0.0)
            events = max(p * (SEED_TRIALS + EWRate.PRIOR_TRIALS) - EWRate.PRIOR_EVENTS, 0.0)
            self.model.load([1, events, SEED_TRIALS, 0.0, 0.0])
        else:
            self.model.load([1, self.model.transform(blamed.baseline, None)[0], 0.0, 0.0, 0.0])

    @property
    def shifted_y(self) -> float:
        """The shifted level in tested units (a rate's: one event per trial)."""
        b = self.blamed
        return b.shifted if self.rate else self.model.transform(b.shifted, None)[0]

    def learn(self, sample: Metric) -> None:
        """A sample at the shifted level, before the rollback: it teaches the noise."""
        y, w, _ = self.model.transform(sample.value, sample.count)
        if w <= 0.0 or self.frozen:
            return
        if self.noise is None:
            self.noise = self._prior(y, w)
        if isinstance(self.noise, EWRate):
            self.noise.update(y, w, self.model.LEARN_CLIP)
        else:
            self.noise.update(y, self.model.LEARN_CLIP)

    def _prior(self, y: float, w: float) -> EWStats | EWRate:
        """``PRIOR_SAMPLES`` samples at this one's level that varied by a fraction of the shift."""
        b, halflife = self.blamed, self.spec.baseline_halflife_samples
        if not self.rate:
            spread = PRIOR_SPREAD["gauge"] * abs(self.shifted_y - self.model.transform(b.baseline, None)[0])
            return EWStats.from_state([PRIOR_SAMPLES, y, spread * spread, 0.0, 0.0], halflife)
        binomial = max(b.shifted * (1.0 - b.shifted), 1e-12) / w  # a rate's own sampling variance
        spread = PRIOR_SPREAD["rate"] * (b.shifted - b.baseline)
        rho = max((spread * spread / binomial - 1.0) / max(w - 1.0, 1.0), 0.0)
        trials = PRIOR_SAMPLES * w
        events = max(min(max(y / w, 0.0), 1.0) * (trials + EWRate.PRIOR_TRIALS) - EWRate.PRIOR_EVENTS, 0.0)
        return EWRate.from_state([PRIOR_SAMPLES, events, trials, w, rho], halflife)

    def _freeze(self, y: float, w: float) -> None:
        """Give the model the noise learnt before the rollback (or the prior), for good."""
        noise = self.noise if self.noise is not None else self._prior(y, w)
        if isinstance(noise, EWRate):
            assert isinstance(self.model, BinomialModel)
            self.model.rate.rho_raw, self.model.rate.mean_count = noise.rho_raw, noise.mean_count
        else:
            assert isinstance(self.model, GaussianModel)
            self.model.stats.var, self.model.stats.cov1 = noise.var, noise.cov1
        self.noise, self.frozen = None, True

    def update(self, sample: Metric) -> None:
        """A sample after the rollback: one step of the test."""
        model = self.model
        y, w, _ = model.transform(sample.value, sample.count)
        if w <= 0.0:
            return  # a rate sample of zero requests carries no evidence (as in the monitor)
        self.sums = [self.sums[0] + y, self.sums[1] + w, self.sums[2] + 1.0]
        if self.passed is not None:
            return
        if not self.frozen:
            self._freeze(y, w)
        scale = model.transform(sample.value, sample.count)[2]  # a rate's phi, from the frozen noise
        ra, rb, rh = model.recovery(self.shifted_y, 1.0, self.sign)
        llr = (ra * y + rb * w) / scale
        if llr <= -rh:  # alone as strong for the shifted level as a confirmation: the excursion is over
            self.cusum.clear()
        t = self.cusum.update(llr if llr < rh else rh, y, w, sample.ts, (self.spec.spike_samples + 2) * rh)
        if t < rh * (1.0 - 1e-9):  # k + 1 samples capped at h sum to h, up to rounding
            return
        sy, sw = self.cusum.level()
        if model.gate(sy, sw, self.sign):  # still a shift: a recovery must hold on samples of its own
            self.cusum.clear()
            return
        self.passed = [sample.ts, self.cusum.onset_ts, model.level(self.cusum.sum_y, self.cusum.sum_w)]

    @property
    def level(self) -> float | None:
        """Since the rollback: the passing excursion's level if passed, else every sample's."""
        if self.passed is not None:
            return self.passed[2]
        sy, sw, n = self.sums
        return self.model.level(sy, sw) if n > 0 else None

    def to_state(self) -> dict[str, Any]:
        b = self.blamed
        return {"m": b.metric, "base": b.baseline, "shift": b.shifted, "onset": b.onset_ts,
                "b": self.model.to_state(), "c": self.cusum.to_state(),
                "n": None if self.noise is None else self.noise.to_state(), "f": self.frozen,
                "sums": self.sums, "ts": self.last_ts, "past": self.past, "ok": self.passed}

    @classmethod
    def from_state(cls, state: dict[str, Any], spec: MetricSpec) -> _Watch:
        watch = cls(_blamed(state), spec)
        watch.model.load([float(v) for v in state["b"]])
        watch.cusum = TrimmedCusum.from_state(state["c"], spec.spike_samples)
        if state["n"] is not None:
            kind = EWRate if watch.rate else EWStats
            watch.noise = kind.from_state(state["n"], watch.spec.baseline_halflife_samples)
        watch.frozen = bool(state["f"])
        watch.sums = [float(v) for v in state["sums"]]
        watch.last_ts, watch.past = float(state["ts"]), bool(state["past"])
        watch.passed = None if state["ok"] is None else [float(v) for v in state["ok"]]
        return watch


def _blamed(state: dict[str, Any]) -> Blamed:
    onset = state["onset"]
    return Blamed(state["m"], float(state["base"]), float(state["shift"]), None if onset is None else float(onset))


class Recovery:
    """The recovery test of one executed rollback: samples in, one ``verified`` or
    ``not_recovered`` :class:`~backout.contracts.Verification` out (see module doc)."""

    def __init__(self, incident_id: str, service: str, version: str | None, executed_ts: float,
                 blamed: tuple[Blamed, ...], specs: Mapping[str, MetricSpec],
                 verify_within_s: float = VERIFY_WITHIN_S, lateness_s: float = LATENESS_S) -> None:
        if not blamed:
            raise ContractError(f"incident {incident_id}: the decision blamed no metric (no anomaly in its "
                                "evidence), so there is nothing to verify")
        if verify_within_s <= 0 or lateness_s < 0:
            raise ValueError(f"verify_within_s must be > 0 and lateness_s >= 0, got {verify_within_s!r}, "
                             f"{lateness_s!r}")
        missing = sorted({b.metric for b in blamed} - set(specs))
        if missing:
            raise ConfigError(f"incident {incident_id}: no spec for blamed metric(s) {', '.join(missing)}; "
                              f"known: {', '.join(sorted(specs))}")
        self.incident_id = incident_id
        self.service = service
        self.version = version
        self.executed_ts = executed_ts
        self.verify_within_s = verify_within_s
        self.lateness_s = lateness_s
        self._specs = specs
        self._watches = {b.metric: _Watch(b, specs[b.metric]) for b in blamed}
        self._done = False

    @property
    def deadline_ts(self) -> float:
        return self.executed_ts + self.verify_within_s

    @property
    def done(self) -> bool:
        """The verdict was given; later samples and ticks give nothing."""
        return self._done

    def update(self, sample: Metric) -> Verification | None:
        """Feed one sample of the service; the verdict when this sample settles it.

        Samples stamped from the metric's onset up to ``executed_ts`` teach the noise; samples of
        other metrics, or from before the onset, are not part of the test. Only a sample after the
        rollback can settle it. A sample not newer than its metric's last one raises
        :class:`~backout.errors.DuplicateSample` / :class:`~backout.errors.OutOfOrderSample`.
        """
        if sample.service != self.service:
            raise ContractError(f"field 'service': got {sample.service!r}, expected {self.service!r} "
                                f"(the service of incident {self.incident_id})")
        watch = self._watches.get(sample.metric)
        onset = watch.blamed.onset_ts if watch is not None else None
        if self._done or watch is None or sample.ts <= (self.executed_ts if onset is None else onset):
            return None
        if sample.ts <= watch.last_ts:
            what = DuplicateSample if sample.ts == watch.last_ts else OutOfOrderSample
            raise what(f"{'duplicate' if sample.ts == watch.last_ts else 'out-of-order'} sample of "
                       f"{self.service}/{sample.metric}: ts {sample.ts!r}, the stream's newest is "
                       f"{watch.last_ts!r}")
        watch.last_ts = sample.ts
        if sample.ts <= self.executed_ts:
            watch.learn(sample)
            return None
        if sample.ts > self.deadline_ts:
            watch.past = True
            if all(w.past for w in self._watches.values() if w.passed is None):
                return self._verdict()
            return None
        watch.update(sample)
        if all(w.passed is not None for w in self._watches.values()):
            return self._verdict()
        return None

    def state_of(self, metric: str) -> tuple[str, int]:
        """Where the test of ``metric`` stands: (waiting | learning | testing | passed, samples tested)."""
        watch = self._watches[metric]
        stage = ("passed" if watch.passed is not None else "testing" if watch.frozen
                 else "learning" if watch.noise is not None else "waiting")
        return stage, int(watch.sums[2])

    def tick(self, now_ts: float) -> Verification | None:
        """The verdict if ``now_ts`` is past the deadline plus the lateness (a stream that stopped)."""
        if self._done or now_ts < self.deadline_ts + self.lateness_s:
            return None
        return self._verdict()

    def _verdict(self) -> Verification:
        self._done = True
        watches = list(self._watches.values())
        before = {w.blamed.metric: w.blamed.shifted for w in watches}
        after = {w.blamed.metric: level for w in watches if (level := w.level) is not None}
        if all(w.passed is not None for w in watches):
            passed = [w.passed for w in watches if w.passed is not None]
            came_back_s = max(p[1] for p in passed) - self.executed_ts
            detail = wording.recovered([(w.blamed.metric, w.blamed.shifted, after[w.blamed.metric])
                                        for w in watches], came_back_s, self.version)
            return Verification(ts=max(p[0] for p in passed), incident_id=self.incident_id,
                                status="verified", detail=detail, before=before, after=after)
        still = [(w.blamed.metric, w.blamed.baseline, after.get(w.blamed.metric))
                 for w in watches if w.passed is None]
        detail = wording.not_recovered(still, self.verify_within_s, self.version)
        return Verification(ts=self.deadline_ts, incident_id=self.incident_id, status="not_recovered",
                            detail=detail, before=before, after=after)

    def to_state(self) -> dict[str, Any]:
        """Compact JSON-serialisable state; :meth:`from_state` restores the test exactly."""
        return {"v": STATE_VERSION, "i": self.incident_id, "s": self.service, "ver": self.version,
                "x": self.executed_ts, "w": self.verify_within_s, "l": self.lateness_s, "done": self._done,
                "m": [w.to_state() for w in self._watches.values()]}

    @classmethod
    def from_state(cls, state: dict[str, Any], specs: Mapping[str, MetricSpec]) -> Recovery:
        if state.get("v") != STATE_VERSION:
            raise ValueError(f"recovery state version {state.get('v')!r} is not {STATE_VERSION}")
        blamed = tuple(_blamed(m) for m in state["m"])
        rec = cls(state["i"], state["s"], state["ver"], float(state["x"]), blamed, specs,
                  float(state["w"]), float(state["l"]))
        rec._watches = {m["m"]: _Watch.from_state(m, specs[m["m"]]) for m in state["m"]}
        rec._done = bool(state["done"])
        return rec
