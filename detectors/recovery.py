"""Did the rollback work? The event-time recovery test of the blamed metrics: :class:`Recovery`.

After a rollback is executed (at ``executed_ts``) the verifier is fed the
service's metric samples. For each metric the decision blamed it knows the
pre-deploy ``baseline`` and the ``shifted`` level from the anomaly (the
decision's evidence, :func:`blamed_of`), and tests, in event time, with the
monitor's own statistics (:mod:`detectors.monitor`, whose recovery test this is):

1. **Back halfway**: the monitor's recovery CUSUM (``recovery()`` of
   :mod:`detectors.binomial` / :mod:`detectors.gaussian`: the shifted level
   against the point halfway back to the baseline, geometric for rates and
   log-scale gauges), a :class:`~detectors.cusum.TrimmedCusum` whose alarm
   leaves out the k strongest samples, each capped at the threshold: a dip of
   ``spike_samples`` good samples among bad ones never counts as a recovery,
   and no recovery is declared on fewer than k + 1 samples.
2. **Near the baseline**: the level of that recovered excursion (its trimmed,
   count-weighted sums) is no longer a shift by the monitor's own definition:
   less than ``min_ratio`` away from the baseline in the bad direction
   (``gate()``). 5% -> 2% after a 0.5% baseline is past halfway but still 4x:
   not recovered.

A metric passes once both hold; the rollback is ``verified`` when every blamed
metric passed, at the sample that made the last one pass. The sentence says
when the level came back (the recovered excursion's first sample) relative to
the rollback. It is ``not_recovered`` once every metric still failing has a
sample stamped past ``executed_ts + verify_within_s`` (its own stream has
passed the deadline), or :meth:`Recovery.tick` brings a time past the deadline
plus ``lateness_s`` (samples stamped before the deadline may still be on
their way; a stream that stopped gives no event time of its own). The verdict
is stamped at the deadline, however it was reached.

Noise. Rates are tested with the binomial likelihood of their counts (more
requests, more evidence), without the overdispersion the monitor estimated
(the evidence does not carry it; the near-baseline condition and the trimming
keep noise from passing for a recovery). A gauge's noise scale is learnt from
the samples after the rollback (the monitor's :class:`~detectors.stats.EWStats`,
winsorised), starting from a prior worth ``PRIOR_SAMPLES`` samples of half
the shift, so that two or three similar samples cannot make it look tiny; it
is floored at the spec's ``min_sigma``. A trend baseline (``trend_halflife_samples``)
is not used here: the test is against the reported baseline level.

>>> from backout.contracts import Metric
>>> from detectors.spec import DEFAULT_SPECS
>>> r = Recovery("inc-1", "checkout", "v2.15.1", executed_ts=1000.0,
...              blamed=(Blamed("error_rate", baseline=0.005, shifted=0.05),), specs=DEFAULT_SPECS)
>>> rates = [0.05, 0.048, 0.051] + [0.005, 0.004, 0.006, 0.005] * 3  # a sample every 10 s
>>> out = [r.update(Metric(ts=1000.0 + 10 * (i + 1), service="checkout", metric="error_rate",
...                        value=v, count=2000)) for i, v in enumerate(rates)]
>>> [i for i, v in enumerate(out) if v is not None]  # the 3rd sample back at the baseline (k = 2)
[5]
>>> v = out[5]; v.status, v.ts - 1000.0, v.before, v.after
('verified', 60.0, {'error_rate': 0.05}, {'error_rate': 0.005})
>>> v.detail
'Error rate dropped from 5% back to 0.5% within 40 seconds of the rollback. The deploy of v2.15.1 was the cause.'
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
PRIOR_SAMPLES = 4  # a gauge's noise prior weighs as much as this many samples
SEED_TRIALS = 1e6  # a rate's baseline is held as this many pseudo-trials: it does not move
STATE_VERSION = 1


@dataclass(frozen=True)
class Blamed:
    """One metric a decision blamed: its level before the deploy and while shifted (metric units)."""

    metric: str
    baseline: float
    shifted: float


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
            latest[metric] = (at, Blamed(metric, base, shifted))
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
        self.noise: EWStats | None = None  # a gauge's, from the first sample on
        self.sums = [0.0, 0.0, 0.0]  # tested value, weight, samples since the rollback
        self.last_ts = 0.0
        self.past = False  # this metric's stream has passed the deadline
        self.passed: list[float] | None = None  # [ts, onset_ts, level]
        if isinstance(self.model, BinomialModel):
            p = max(blamed.baseline, 0.0)
            events = max(p * (SEED_TRIALS + EWRate.PRIOR_TRIALS) - EWRate.PRIOR_EVENTS, 0.0)
            self.model.load([1, events, SEED_TRIALS, 0.0, 0.0])
        else:
            y0 = self.model.transform(blamed.baseline, None)[0]
            self.model.load([1, y0, 0.0, 0.0, 0.0])

    @property
    def shifted_y(self) -> float:
        """The shifted level in tested units (a rate's: one event per trial)."""
        b = self.blamed
        return b.shifted if self.rate else self.model.transform(b.shifted, None)[0]

    def update(self, sample: Metric) -> None:
        model = self.model
        if isinstance(model, BinomialModel) and sample.count and self.sums[1] == 0.0:
            model.rate.mean_count = sample.count  # the design's evidence per sample
        y, w, scale = model.transform(sample.value, sample.count)
        if w <= 0.0:
            return  # a rate sample of zero requests carries no evidence (as in the monitor)
        self.sums = [self.sums[0] + y, self.sums[1] + w, self.sums[2] + 1.0]
        if isinstance(model, GaussianModel):
            self._learn_noise(model, y)
        if self.passed is not None:
            return
        ra, rb, rh = model.recovery(self.shifted_y, 1.0, self.sign)
        llr = (ra * y + rb * w) / scale
        t = self.cusum.update(llr if llr < rh else rh, y, w, sample.ts, (self.spec.spike_samples + 2) * rh)
        if t >= rh * (1.0 - 1e-9):  # k + 1 samples capped at h sum to h, up to rounding
            sy, sw = self.cusum.level()
            if not model.gate(sy, sw, self.sign):  # reported: the whole recovered excursion's level
                self.passed = [sample.ts, self.cusum.onset_ts, model.level(self.cusum.sum_y, self.cusum.sum_w)]

    def _learn_noise(self, model: GaussianModel, y: float) -> None:
        if self.noise is None:
            half = 0.5 * abs(self.shifted_y - model.stats.mean)
            self.noise = EWStats.from_state([PRIOR_SAMPLES, y, half * half, 0.0, 0.0],
                                            self.spec.baseline_halflife_samples)
        else:
            self.noise.update(y, model.LEARN_CLIP)
        model.stats.var = self.noise.var

    @property
    def level(self) -> float | None:
        """Since the rollback: the recovered excursion's level if passed, else every sample's."""
        if self.passed is not None:
            return self.passed[2]
        sy, sw, n = self.sums
        return self.model.level(sy, sw) if n > 0 else None

    def to_state(self) -> dict[str, Any]:
        b = self.blamed
        return {"m": b.metric, "base": b.baseline, "shift": b.shifted, "b": self.model.to_state(),
                "c": self.cusum.to_state(), "n": None if self.noise is None else self.noise.to_state(),
                "sums": self.sums, "ts": self.last_ts, "past": self.past, "ok": self.passed}

    @classmethod
    def from_state(cls, state: dict[str, Any], spec: MetricSpec) -> _Watch:
        watch = cls(Blamed(state["m"], float(state["base"]), float(state["shift"])), spec)
        watch.model.load([float(v) for v in state["b"]])
        watch.cusum = TrimmedCusum.from_state(state["c"], spec.spike_samples)
        if state["n"] is not None:
            watch.noise = EWStats.from_state(state["n"], watch.spec.baseline_halflife_samples)
        watch.sums = [float(v) for v in state["sums"]]
        watch.last_ts, watch.past = float(state["ts"]), bool(state["past"])
        watch.passed = None if state["ok"] is None else [float(v) for v in state["ok"]]
        return watch


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

        Samples of other metrics, or stamped at or before ``executed_ts``, are not part of the
        test and give nothing. A sample not newer than its metric's last one raises
        :class:`~backout.errors.DuplicateSample` / :class:`~backout.errors.OutOfOrderSample`.
        """
        if sample.service != self.service:
            raise ContractError(f"field 'service': got {sample.service!r}, expected {self.service!r} "
                                f"(the service of incident {self.incident_id})")
        watch = self._watches.get(sample.metric)
        if self._done or watch is None or sample.ts <= self.executed_ts:
            return None
        if sample.ts <= watch.last_ts:
            what = DuplicateSample if sample.ts == watch.last_ts else OutOfOrderSample
            raise what(f"{'duplicate' if sample.ts == watch.last_ts else 'out-of-order'} sample of "
                       f"{self.service}/{sample.metric}: ts {sample.ts!r}, the stream's newest is "
                       f"{watch.last_ts!r}")
        watch.last_ts = sample.ts
        if sample.ts > self.deadline_ts:
            watch.past = True
            if all(w.past for w in self._watches.values() if w.passed is None):
                return self._verdict()
            return None
        watch.update(sample)
        if all(w.passed is not None for w in self._watches.values()):
            return self._verdict()
        return None

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
        blamed = tuple(Blamed(m["m"], float(m["base"]), float(m["shift"])) for m in state["m"])
        rec = cls(state["i"], state["s"], state["ver"], float(state["x"]), blamed, specs,
                  float(state["w"]), float(state["l"]))
        rec._watches = {m["m"]: _Watch.from_state(m, specs[m["m"]]) for m in state["m"]}
        rec._done = bool(state["done"])
        return rec
