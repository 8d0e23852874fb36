"""A second, independent simulator for the decision bench: noise Backout's defaults were not chosen on.

``streams/simulate.py`` (world 1) is the data the defaults were chosen on;
this one is where they are reported (../shared/DETECTION.md, "Generalization").
It shares only the output format (records and labels, scored by
``bench/decisions.py``); every noise model and event differs:

* **drifting base error rates**: ``log p`` follows a multiplicative AR(1)
  (time constant 10-40 min, stationary sd 0.1-0.45) on top of beta-binomial
  noise (concentration 200-3000): the rate wanders by tens of per cent within
  the hour, as production error rates do;
* **heavy-tailed latency**: log p95 is an AR(1) with Student-t innovations
  (3-5 degrees of freedom), grows with load (an elasticity, and queueing once
  load passes a service's capacity), in seconds or in milliseconds;
* **sampling**: 10, 12 or 15 s (``sim``), 30 s (``slow``), 60 s (``testbed``);
  exporters with their own phase, gaps, duplicates, late samples;
* **short histories**: a scenario may start its first deploys 8-20 samples
  after its first sample (a new service, a worker restarted without state);
* **rates without count** (``testbed``, and a third of the ``slow`` scenarios);
* **a call graph** drawn per scenario: a callee's *extra* errors and latency
  reach its callers (errors that come from a callee), never its noise;
* **events**, labelled as world 1 labels them: bad deploys (clear: errors
  3-30x, latency 2-6x, health; ambiguous: errors 1.6-2.8x, latency 1.3-1.8x,
  delayed onsets, slow rollouts), concurrent releases of 2-6 services with
  zero, one or two independent bad ones, good deploys with no hazard, small
  benign shifts, traffic surges, shared incidents, degradations that began
  before the deploy, restarts that spike for a sample or two, unrelated shifts
  8-24 min after a deploy, hotfixes and manual rollbacks, and a good version
  that serves 45-80 min before a bad deploy replaces it.

``acceptable_targets`` of a bad deploy holds one version: the one it replaced
if that ran at least 10 min and was not bad, else the latest that did (rule 3
of issue 12: never two versions back past a version that served well).

Modes (``scenario(seed, mode)``):

* ``sim``: 4 h, 8-10 services, events every 25-35 min;
* ``slow``: the same at 30 s sampling;
* ``testbed``: a microservice testbed: 1-min samples, rates without counts,
  latency in ms, 14-18 min of history, then one release of 1-6 services at
  once with exactly one faulty, watched for 20-30 min.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backout.contracts import Deploy, Metric, Target

T0 = 1_772_323_200.0  # 2026-03-01 00:00 UTC
MODES = ("sim", "slow", "testbed")
NAMES = ("gateway", "orders", "billing", "ledger", "users", "search", "ranking", "media", "notify", "stock",
         "pricing", "reviews")
CLEAN_S = 600.0


@dataclass(frozen=True)
class Service:
    name: str
    rps: float
    p_err: float
    latency_s: float
    pods: int
    calls: tuple[tuple[str, float, float], ...]  # (callee, share of its extra errors, of its extra latency)
    drift_tau_s: float  # the error rate's AR(1) time constant
    drift_sd: float  # its stationary sd, log units
    kappa: float  # beta-binomial concentration
    lat_tau_s: float
    lat_sd: float
    lat_df: float
    elasticity: float  # latency ~ load ** elasticity
    capacity: float  # load (x normal) beyond which latency queues and errors rise


@dataclass
class Effect:
    service: str
    metric: str  # requests | error_rate | latency_p95 | health
    start_ts: float
    factor: float  # multiplier; for health the healthy fraction reached
    ramp_s: float = 0.0
    end_ts: float = math.inf

    def weight(self, t: np.ndarray) -> np.ndarray:
        on = (t >= self.start_ts) & (t < self.end_ts)
        frac = np.ones_like(t) if self.ramp_s <= 0 else np.clip((t - self.start_ts) / self.ramp_s, 0, 1)
        return np.where(on, frac, 0.0)


@dataclass
class World:
    rng: np.random.Generator
    services: list[Service]
    start_ts: float
    end_ts: float
    step_s: float
    counts: bool
    unit: float  # latency unit: 1.0 seconds, 1000.0 milliseconds
    effects: list[Effect] = field(default_factory=list)
    deploys: list[Deploy] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    bad: set[tuple[str, str]] = field(default_factory=set)
    busy_until: dict[str, float] = field(default_factory=dict)
    later: list[tuple[float, str, str]] = field(default_factory=list)  # (ts, kind, service) scheduled
    counter: int = 0

    def names(self) -> list[str]:
        return [s.name for s in self.services]

    def pick(self, now: float, n: int = 1, exclude: tuple[str, ...] = ()) -> list[str]:
        idle = [s for s in self.names() if self.busy_until.get(s, 0.0) <= now and s not in exclude]
        pool = idle if len(idle) >= n else [s for s in self.names() if s not in exclude]
        return [str(x) for x in self.rng.choice(pool, size=min(n, len(pool)), replace=False)]

    def target(self, service: str, before_ts: float) -> list[str]:
        """The one acceptable rollback target: the replaced version if it served well, else the last that did."""
        hist = self.versions[service]
        for i in range(len(hist) - 1, -1, -1):
            version, since = hist[i]
            until = hist[i + 1][1] if i + 1 < len(hist) else before_ts
            if (service, version) in self.bad:
                continue
            if until - since >= CLEAN_S or since < self.start_ts:
                return [version]
        return []

    def deploy(self, service: str, ts: float, label: str, kind: str, clarity: str | None = None,
               onset_ts: float | None = None, rollout_s: float | None = None, version: str | None = None,
               rolled_back: bool = False) -> Deploy:
        self.counter += 1
        prev = self.versions[service][-1][0]
        if version is None:
            build = int(prev.split("-r")[-1]) + int(self.rng.integers(1, 9))
            version = f"{prev.split('-r')[0]}-r{build}"
        targets = self.target(service, ts)
        deploy_id = f"rel-{service}-{self.counter:03d}"
        tgt = Target.model_validate({"kind": "kubernetes", "namespace": "prod", "name": service})
        if rolled_back:
            self.bad.add((service, prev))
            records = [Deploy(ts=ts, service=service, deploy_id=deploy_id, version=version, previous_version=prev,
                              status="rolled_back", target=tgt)]
        else:
            rollout = rollout_s if rollout_s is not None else float(self.rng.uniform(30, 180))
            records = [Deploy(ts=ts, service=service, deploy_id=deploy_id, version=version, previous_version=prev,
                              status="started", target=tgt),
                       Deploy(ts=ts + rollout, service=service, deploy_id=deploy_id, version=version,
                              previous_version=prev, status="finished", target=tgt)]
        self.deploys += records
        self.versions[service].append((version, ts))
        self.busy_until[service] = max(self.busy_until.get(service, 0.0), ts + 1500.0)
        if label == "bad":
            self.bad.add((service, version))
        self.labels.append({"deploy_id": deploy_id, "service": service, "version": version,
                            "previous_version": prev, "ts": ts, "label": label, "kind": kind,
                            "clarity": clarity, "onset_ts": onset_ts,
                            "acceptable_targets": targets if label == "bad" else [],
                            "rollback": rolled_back, "incident": deploy_id if label == "bad" else None})
        return records[0]

    def effect(self, service: str, metric: str, start_ts: float, factor: float, ramp_s: float = 0.0,
               end_ts: float = math.inf) -> None:
        self.effects.append(Effect(service, metric, start_ts, factor, ramp_s, end_ts))


# -- events ------------------------------------------------------------------------------------

def _fix(w: World, service: str, ts: float) -> float:
    """Someone deals with a bad release 8-15 min in: a manual rollback or a hotfix. Returns when it lands."""
    at = ts + float(w.rng.uniform(480, 900))
    if w.rng.random() < 0.5:
        back = w.target(service, at) or [w.versions[service][0][0]]
        w.deploy(service, at, "good", "manual_rollback", version=back[0], rolled_back=True)
    else:
        w.deploy(service, at, "good", "hotfix")
    return at + 20.0


def _bad(w: World, service: str, ts: float, metric: str, clear: bool, delay_s: float | None = None,
         ramp_s: float | None = None, kind: str | None = None) -> None:
    rng = w.rng
    rollout = float(rng.uniform(30, 180))
    if metric == "error_rate":
        factor = math.exp(rng.uniform(math.log(3), math.log(30))) if clear else float(rng.uniform(1.6, 2.8))
    elif metric == "latency_p95":
        factor = float(rng.uniform(2, 6) if clear else rng.uniform(1.3, 1.8))
    else:
        factor = float(rng.uniform(0.3, 0.75))
    delayed = delay_s is not None
    if delay_s is None:
        delay_s = float(rng.uniform(0, min(rollout, 45)))
    if ramp_s is None:
        ramp_s = rollout if rng.random() < 0.4 else 0.0  # new pods take traffic as they roll out
    clarity = "clear" if clear and not delayed else "ambiguous"
    onset = ts + delay_s
    w.deploy(service, ts, "bad", kind or f"bad_{metric}", clarity, onset, rollout_s=rollout)
    w.effect(service, metric, onset, factor, ramp_s=ramp_s, end_ts=_fix(w, service, onset))


def ev_bad(metric: str, clear: bool) -> Any:
    return lambda w, ts: _bad(w, w.pick(ts)[0], ts, metric, clear)


def ev_delayed(w: World, ts: float) -> None:
    metric = "error_rate" if w.rng.random() < 0.5 else "latency_p95"
    delay = float(w.rng.uniform(300, 1200))
    s = w.pick(ts)[0]
    factor = float(w.rng.uniform(3, 10) if metric == "error_rate" else w.rng.uniform(2, 4))
    w.deploy(s, ts, "bad", "bad_delayed", "ambiguous", ts + delay)
    w.effect(s, metric, ts + delay, factor, ramp_s=float(w.rng.uniform(120, 600)), end_ts=_fix(w, s, ts + delay))


def ev_rollout(w: World, ts: float) -> None:
    s = w.pick(ts)[0]
    rollout = float(w.rng.uniform(300, 900))
    w.deploy(s, ts, "bad", "bad_slow_rollout", "ambiguous", ts, rollout_s=rollout)
    w.effect(s, "error_rate", ts, float(w.rng.uniform(5, 15)), ramp_s=rollout, end_ts=_fix(w, s, ts + rollout / 2))


def ev_good(w: World, ts: float) -> None:
    w.deploy(w.pick(ts)[0], ts, "good", "good_no_hazard")


def ev_small(w: World, ts: float) -> None:
    s = w.pick(ts)[0]
    w.deploy(s, ts, "good", "good_small_shift")
    if w.rng.random() < 0.5:
        w.effect(s, "latency_p95", ts + float(w.rng.uniform(0, 60)), float(w.rng.uniform(0.85, 1.12)))
    else:
        w.effect(s, "error_rate", ts + float(w.rng.uniform(0, 60)), float(w.rng.uniform(0.75, 1.3)))


def ev_surge(w: World, ts: float) -> None:
    w.deploy(w.pick(ts)[0], ts, "good", "good_traffic_surge")
    at = ts + float(w.rng.uniform(30, 300))
    surge = float(w.rng.uniform(1.6, 3.0))
    end = at + float(w.rng.uniform(600, 1500))
    for s in w.names():
        w.effect(s, "requests", at + float(w.rng.uniform(0, 60)), surge, ramp_s=float(w.rng.uniform(30, 180)),
                 end_ts=end)
    w.events.append({"kind": "traffic_surge", "ts": at, "factor": surge})


def ev_shared(w: World, ts: float) -> None:
    deployer = w.pick(ts)[0]
    w.deploy(deployer, ts, "good", "good_shared_incident")
    at = ts + float(w.rng.uniform(60, 400))
    names = w.names()
    hit = [str(x) for x in w.rng.choice(names, size=max(3, int(math.ceil(0.6 * len(names)))), replace=False)]
    if deployer not in hit:
        hit[0] = deployer
    metric = "error_rate" if w.rng.random() < 0.6 else "latency_p95"
    end = at + float(w.rng.uniform(300, 1200))
    for s in hit:
        f = float(w.rng.uniform(3, 15) if metric == "error_rate" else w.rng.uniform(1.8, 4))
        w.effect(s, metric, at + float(w.rng.uniform(0, 45)), f, end_ts=end)
    w.events.append({"kind": "shared_incident", "ts": at, "services": sorted(hit), "metric": metric})


def ev_before(w: World, ts: float) -> None:
    s = w.pick(ts)[0]
    start = ts - float(w.rng.uniform(60, 600))
    metric = "error_rate" if w.rng.random() < 0.65 else "latency_p95"
    f = float(w.rng.uniform(3, 10) if metric == "error_rate" else w.rng.uniform(1.5, 3))
    end = ts + float(w.rng.uniform(60, 180) if w.rng.random() < 0.5 else w.rng.uniform(300, 900))
    w.effect(s, metric, start, f, end_ts=end)
    w.deploy(s, ts, "good", "good_degradation_before")
    w.events.append({"kind": "degradation_before_deploy", "ts": start, "service": s})


def ev_spike(w: World, ts: float) -> None:
    """Pods restart: errors or latency burst for a sample or two right after the deploy, then nothing."""
    s = w.pick(ts)[0]
    w.deploy(s, ts, "good", "good_restart_spike")
    at = ts + float(w.rng.uniform(5, 60))
    length = w.step_s * float(w.rng.uniform(0.6, 1.9))
    if w.rng.random() < 0.5:
        w.effect(s, "error_rate", at, float(w.rng.uniform(5, 40)), end_ts=at + length)
    else:
        w.effect(s, "latency_p95", at, float(w.rng.uniform(2, 6)), end_ts=at + length)


def ev_late(w: World, ts: float) -> None:
    """A moderate shift 8-24 min after a good deploy, from something else (a batch job, a noisy neighbour)."""
    s = w.pick(ts)[0]
    w.deploy(s, ts, "good", "good_unrelated_late_shift")
    at = ts + float(w.rng.uniform(480, 1440))
    metric = "error_rate" if w.rng.random() < 0.5 else "latency_p95"
    w.effect(s, metric, at, float(w.rng.uniform(1.5, 1.8)), ramp_s=float(w.rng.uniform(0, 120)),
             end_ts=at + float(w.rng.uniform(600, 1200)))


def ev_concurrent(w: World, ts: float) -> None:
    """A release train: 2-6 services within a minute; zero, one or two of them bad, independently."""
    n = int(w.rng.integers(2, 7))
    group = w.pick(ts, n)
    bad = int(w.rng.choice([0, 1, 1, 2], p=[0.2, 0.3, 0.3, 0.2])) if len(group) > 1 else 0
    metrics = ["latency_p95", "error_rate"]
    for i, s in enumerate(group):
        at = ts + float(w.rng.uniform(0, 60))
        if i < bad:
            _bad(w, s, at, metrics[i % 2] if bad == 2 else str(w.rng.choice(metrics)), True, kind="bad_in_release")
        else:
            w.deploy(s, at, "good", "good_in_release")
    w.events.append({"kind": "release", "ts": ts, "services": group, "bad": bad})


def ev_good_then_bad(w: World, ts: float) -> None:
    """A good version with a small visible change, replaced 45-80 min later by a bad one."""
    s = w.pick(ts)[0]
    w.deploy(s, ts, "good", "good_then_replaced")
    w.effect(s, "latency_p95", ts + 30, float(w.rng.uniform(1.08, 1.25)))
    w.later.append((ts + float(w.rng.uniform(2700, 4800)), "bad_after_good", s))
    w.busy_until[s] = math.inf


EVENTS: dict[str, Any] = {
    "bad_error": ev_bad("error_rate", True),
    "bad_error_moderate": ev_bad("error_rate", False),
    "bad_latency": ev_bad("latency_p95", True),
    "bad_latency_moderate": ev_bad("latency_p95", False),
    "bad_health": ev_bad("health", True),
    "bad_delayed": ev_delayed,
    "bad_slow_rollout": ev_rollout,
    "good": ev_good,
    "good_small_shift": ev_small,
    "traffic_surge": ev_surge,
    "shared_incident": ev_shared,
    "degradation_before_deploy": ev_before,
    "restart_spike": ev_spike,
    "unrelated_late_shift": ev_late,
    "release": ev_concurrent,
    "good_then_bad": ev_good_then_bad,
}
# relative frequencies of the event kinds in sim/slow scenarios
WEIGHTS = {"bad_error": 3, "bad_error_moderate": 1, "bad_latency": 2, "bad_latency_moderate": 1, "bad_health": 1,
           "bad_delayed": 1, "bad_slow_rollout": 1, "good": 2, "good_small_shift": 2, "traffic_surge": 2,
           "shared_incident": 2, "degradation_before_deploy": 2, "restart_spike": 2, "unrelated_late_shift": 1,
           "release": 3, "good_then_bad": 1}


# -- series ------------------------------------------------------------------------------------

def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float, df: float | None = None) -> np.ndarray:
    """A stationary AR(1) with stationary sd ``sd``; Student-t innovations with ``df`` if given."""
    scale = sd * math.sqrt(max(1.0 - phi * phi, 1e-9))
    if df is None:
        eps = rng.normal(0.0, scale, n)
    else:
        eps = rng.standard_t(df, n) * scale * math.sqrt((df - 2.0) / df)
    x = np.empty(n)
    x[0] = rng.normal(0.0, sd)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + eps[i]
    return x


def _mult(w: World, service: str, metric: str, t: np.ndarray) -> np.ndarray:
    m = np.ones(len(t))
    for e in w.effects:
        if e.service == service and e.metric == metric:
            m *= 1 + (e.factor - 1) * e.weight(t)
    return m


def _extra(w: World, s: Service, metric: str, t: np.ndarray) -> np.ndarray:
    """The part of a service's error rate (latency, in s) its own faults and its callees' add: no noise."""
    by_name = {x.name: x for x in w.services}
    level = s.p_err if metric == "error_rate" else s.latency_s
    out = level * (_mult(w, s.name, metric, t) - 1)
    for callee, share_err, share_lat in s.calls:
        out = out + (share_err if metric == "error_rate" else share_lat) * _extra(w, by_name[callee], metric, t)
    return out


def _diurnal(t: np.ndarray) -> np.ndarray:
    day = (t - T0) / 86400.0
    return 1 + 0.3 * np.sin(2 * np.pi * day - 1.2) + 0.08 * np.sin(4 * np.pi * day + 0.4)


def _service_rows(w: World, s: Service, first_ts: float) -> list[Metric]:
    rng, step = w.rng, w.step_s
    t = np.arange(first_ts + float(rng.uniform(0, step)), w.end_ts, step)
    n = len(t)
    load = _diurnal(t) * np.exp(_ar1(rng, n, math.exp(-step / 300.0), 0.06)) * _mult(w, s.name, "requests", t)
    requests = rng.poisson(s.rps * step * load).astype(float)
    over = np.maximum(load / s.capacity, 1.0)  # beyond capacity requests queue and some time out
    p_base = s.p_err * np.exp(_ar1(rng, n, math.exp(-step / s.drift_tau_s), s.drift_sd)) * over ** 2
    p = np.clip(p_base + _extra(w, s, "error_rate", t) * over ** 2, 1e-7, 0.95)
    errors = rng.binomial(requests.astype(int), rng.beta(p * s.kappa, (1 - p) * s.kappa))
    rate = np.where(requests > 0, errors / np.maximum(requests, 1), 0.0)
    noise = np.exp(_ar1(rng, n, math.exp(-step / s.lat_tau_s), s.lat_sd, s.lat_df))
    # a callee that got faster takes no more than its share off: a service is never faster than a fifth of its base
    level = np.maximum(s.latency_s + _extra(w, s, "latency_p95", t), 0.2 * s.latency_s)
    latency = level * noise * load ** s.elasticity * over ** 3
    ready = np.full(n, float(s.pods))
    for e in w.effects:
        if e.service == s.name and e.metric == "health":
            ready -= s.pods * (1 - e.factor) * e.weight(t)
    for i in np.flatnonzero(rng.random(n) < s.pods * 0.3 * step / 3600.0):  # a pod restarts: 1-2 samples
        ready[i:i + int(rng.integers(1, 3))] -= 1
    ready = np.clip(np.round(ready), 0, s.pods)
    hours = (t[-1] - t[0]) / 3600.0 if n > 1 else 0.0
    for length in (1, 2):  # spikes
        for _ in range(rng.poisson(hours * (1.0 if length == 1 else 0.5))):
            i = int(rng.integers(0, max(n - length, 1)))
            if rng.random() < 0.5:
                rate[i:i + length] = np.minimum(rate[i:i + length] + rng.uniform(0.02, 0.1), 1.0)
            else:
                latency[i:i + length] *= rng.uniform(2, 6)
    keep = np.ones(n, dtype=bool)
    for _ in range(rng.poisson(hours / 3)):  # an exporter stalls
        i = int(rng.integers(0, n))
        keep[i:i + int(rng.integers(2, 8))] = False
    counts = w.counts
    rows = []
    for i in np.flatnonzero(keep):
        ts = round(float(t[i]), 3)
        c = float(requests[i])
        rows.append(Metric(ts=ts, service=s.name, metric="requests", value=round(c / step, 4)))
        rows.append(Metric(ts=ts, service=s.name, metric="error_rate", value=round(float(rate[i]), 6),
                           count=c if counts else None))
        rows.append(Metric(ts=ts, service=s.name, metric="latency_p95", value=round(float(latency[i] * w.unit), 6),
                           count=c if counts else None))
        rows.append(Metric(ts=ts, service=s.name, metric="health", value=round(float(ready[i] / s.pods), 6),
                           count=float(s.pods) if counts else None))
    return rows


def _records(w: World, first_ts: dict[str, float]) -> list[Metric | Deploy]:
    rng = w.rng
    rows: list[Metric] = []
    for s in w.services:
        rows += _service_rows(w, s, first_ts.get(s.name, w.start_ts))
    rows.sort(key=lambda r: r.ts)
    records: list[Metric | Deploy] = list(rows)
    n = len(records)
    for _ in range(int(n * 0.0005)):  # a retried send
        i = int(rng.integers(0, n - 1))
        records.insert(i + 1, records[i])
    for _ in range(int(n * 0.0005)):  # a sample held back behind later ones
        i = int(rng.integers(0, len(records) - 100))
        records.insert(i + int(rng.integers(30, 100)), records.pop(i))
    deploys = sorted(((d.ts + float(rng.uniform(0, 10)), d) for d in w.deploys), key=lambda x: x[0])
    out: list[Metric | Deploy] = []
    j = 0
    for rec in records:
        while j < len(deploys) and deploys[j][0] <= rec.ts:
            out.append(deploys[j][1])
            j += 1
        out.append(rec)
    return out + [d for _, d in deploys[j:]]


# -- scenarios ---------------------------------------------------------------------------------

def _shop(rng: np.random.Generator, n: int, step_s: float) -> list[Service]:
    """``n`` services with drawn profiles and a random call graph (a service calls only later ones)."""
    names = list(NAMES[:n])
    out = []
    for i, name in enumerate(names):
        later = names[i + 1:]
        k = min(len(later), int(rng.integers(0, 4 if i == 0 else 3)))
        callees = [str(c) for c in rng.choice(later, size=k, replace=False)] if k else []
        calls = tuple((c, float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.3, 1.0))) for c in callees)
        out.append(Service(
            name=name, rps=float(math.exp(rng.uniform(math.log(3), math.log(400)))),
            p_err=float(math.exp(rng.uniform(math.log(5e-4), math.log(0.02)))),
            latency_s=float(math.exp(rng.uniform(math.log(0.02), math.log(0.8)))),
            pods=int(rng.integers(2, 13)), calls=calls,
            drift_tau_s=float(rng.uniform(600, 2400)), drift_sd=float(rng.uniform(0.1, 0.45)),
            kappa=float(math.exp(rng.uniform(math.log(200), math.log(3000)))),
            lat_tau_s=float(rng.uniform(20, 120)), lat_sd=float(rng.uniform(0.05, 0.15)),
            lat_df=float(rng.uniform(3, 5)), elasticity=float(rng.uniform(0.1, 0.5)),
            capacity=float(rng.uniform(1.5, 2.5))))
    return out


def scenario(seed: int, mode: str = "sim", hours: float = 4.0) -> tuple[list[Metric | Deploy], dict[str, Any]]:
    """A labelled world-2 stream (module doc); the same seed and mode give the same records."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    rng = np.random.default_rng([seed, MODES.index(mode), 2])
    if mode == "testbed":
        return _testbed(rng, seed)
    step = 30.0 if mode == "slow" else float(rng.choice([10.0, 12.0, 15.0]))
    counts = not (mode == "slow" and rng.random() < 1 / 3)
    services = _shop(rng, int(rng.integers(8, 11)), step)
    start = T0 + float(rng.uniform(0, 86400))
    w = World(rng, services, start, start + hours * 3600, step, counts, 1.0 if rng.random() < 0.5 else 1000.0)
    for s in services:
        w.versions[s.name] = [(f"{s.name[:3]}-r{int(rng.integers(100, 900))}", start - 86400)]
    short = rng.random() < 0.4  # the first deploys come 8-20 samples after the first sample
    ts = start + (float(rng.integers(8, 21)) * step + 1.0 if short else float(rng.uniform(1800, 2400)))
    kinds, weights = list(WEIGHTS), np.array(list(WEIGHTS.values()), dtype=float)
    while ts < w.end_ts - 1500:
        for due, kind, service in [x for x in w.later if x[0] <= ts]:
            w.later.remove((due, kind, service))
            _bad(w, service, due, "error_rate" if rng.random() < 0.5 else "latency_p95", True, kind=kind)
        kind = str(rng.choice(kinds, p=weights / weights.sum()))
        w.events.append({"kind": kind, "ts": ts})
        EVENTS[kind](w, ts)
        ts += float(rng.uniform(1500, 2100))
    records = _records(w, {})
    return records, _labels(w, seed, mode)


def _testbed(rng: np.random.Generator, seed: int) -> tuple[list[Metric | Deploy], dict[str, Any]]:
    """One testbed case: 14-18 min of history, then 1-6 services released at once, exactly one faulty."""
    step = 60.0
    services = _shop(rng, int(rng.integers(6, 11)), step)
    start = T0 + float(rng.uniform(0, 86400))
    release = start + float(rng.uniform(14, 18)) * 60
    w = World(rng, services, start, release + float(rng.uniform(20, 30)) * 60, step, False, 1000.0)
    for s in services:
        w.versions[s.name] = [(f"{s.name[:3]}-r{int(rng.integers(100, 900))}", start - 86400)]
    group = w.pick(release, int(rng.integers(1, 7)))
    faulty = group[0]
    metric = str(rng.choice(["error_rate", "latency_p95", "health"], p=[0.45, 0.45, 0.1]))
    for s in group:
        at = release + float(rng.uniform(0, 90))
        if s == faulty:
            _bad(w, s, at, metric, clear=rng.random() < 0.75 or metric == "health", kind="bad_in_release")
        else:
            w.deploy(s, at, "good", "good_in_release")
    w.events.append({"kind": "release", "ts": release, "services": group, "faulty": faulty})
    return _records(w, {}), _labels(w, seed, "testbed")


def _labels(w: World, seed: int, mode: str) -> dict[str, Any]:
    return {"seed": seed, "mode": mode, "start_ts": w.start_ts, "end_ts": w.end_ts, "step_s": w.step_s,
            "counts": w.counts, "latency_unit": "ms" if w.unit == 1000.0 else "s",
            "services": w.names(), "events": w.events, "deploys": sorted(w.labels, key=lambda d: d["ts"])}
