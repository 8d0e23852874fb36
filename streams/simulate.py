"""``backout simulate``: realistic, labelled metric and deploy streams.

A small shop of services (``frontend`` calls ``checkout``, which calls
``payments`` …) sampled every ``step_s`` by exporters with their own phase:

* traffic is diurnal (plus surges), requests per interval are Poisson;
* error counts are beta-binomial: the rate itself wanders sample to sample, so
  counts are overdispersed as in production, not binomially tidy;
* p95 latency is log-normal around its level with AR(1) noise, and grows with load;
* health is the fraction of healthy pods, with the odd pod restart;
* noise: single and double spikes, gaps in the samples, duplicated and
  out-of-order records, deploy records read a little late.

On top, *events*, each labelled: bad deploys (error, latency, health;
immediate, ramped over a slow rollout, delayed like a leak), good deploys,
shared incidents (a dependency outside the shop fails), degradations that
began before a deploy, traffic surges, concurrent deploys of a service and its
caller, deploys in quick succession, hotfixes and manual rollbacks.

Scenario generation is pure: :func:`scenario` takes a seed and returns the
records and the labels. The command writes ``OUT.jsonl`` (metric and deploy
records, in the order a consumer would read them) and ``OUT.labels.json``::

    {"seed": 7, "start_ts": …, "end_ts": …, "services": [...], "step_s": 10,
     "events": [{"kind": "bad_error", "service": …, "ts": …}, …],
     "deploys": [{"deploy_id": …, "service": …, "version": …, "previous_version": …,
                  "ts": …, "label": "bad"|"good", "clarity": "clear"|"ambiguous"|null,
                  "onset_ts": …|null, "acceptable_targets": [...], "kind": …}, …]}

``acceptable_targets`` are the versions a rollback of a bad deploy may go to:
the ones that ran long and clean before it (a version deployed minutes before
the bad one is unproven; a bad one never qualifies).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from backout.contracts import Deploy, Metric, Target, encode
from detectors.config import CLEAN_S

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
METRICS = ("requests", "error_rate", "latency_p95", "health")


@dataclass(frozen=True)
class Profile:
    name: str
    rps: float
    error_rate: float
    latency_s: float
    pods: int
    calls: tuple[str, ...] = ()  # services this one calls


SHOP = (
    Profile("frontend", 240.0, 0.004, 0.180, 12, ("checkout", "catalog", "search", "auth", "cart")),
    Profile("checkout", 45.0, 0.006, 0.320, 8, ("payments", "auth", "inventory")),
    Profile("payments", 30.0, 0.003, 0.450, 6),
    Profile("catalog", 160.0, 0.002, 0.090, 10, ("inventory",)),
    Profile("search", 90.0, 0.005, 0.260, 8, ("catalog",)),
    Profile("auth", 300.0, 0.001, 0.040, 6),
    Profile("cart", 70.0, 0.004, 0.120, 6, ("inventory",)),
    Profile("inventory", 110.0, 0.003, 0.070, 6),
    Profile("shipping", 20.0, 0.008, 0.380, 4),
    Profile("recommend", 130.0, 0.010, 0.220, 8, ("catalog",)),
)


@dataclass
class Effect:
    """A change in one (service, metric) from ``start_ts``: multiplier ``factor`` reached over ``ramp_s``.

    For health, ``factor`` is the healthy fraction reached (0.6 = 40% of pods down).
    """

    service: str
    metric: str
    start_ts: float
    factor: float
    ramp_s: float = 0.0
    end_ts: float = math.inf

    def weight(self, t: np.ndarray) -> np.ndarray:
        on = (t >= self.start_ts) & (t < self.end_ts)
        frac = np.ones_like(t) if self.ramp_s <= 0 else np.clip((t - self.start_ts) / self.ramp_s, 0, 1)
        return np.where(on, frac, 0.0)


@dataclass
class World:
    """What happens during a scenario; the events write effects, deploys and labels into it."""

    rng: np.random.Generator
    services: list[Profile]
    start_ts: float
    end_ts: float
    step_s: float
    effects: list[Effect] = field(default_factory=list)
    deploys: list[Deploy] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # service -> [(version, since)]
    bad: set[tuple[str, str]] = field(default_factory=set)
    busy_until: dict[str, float] = field(default_factory=dict)  # a service in an event is left alone
    now: float = 0.0
    counter: int = 0

    def profile(self, name: str) -> Profile:
        return next(p for p in self.services if p.name == name)

    def current(self, service: str) -> str:
        return self.versions[service][-1][0]

    def good_targets(self, service: str, before_ts: float, clean_s: float = CLEAN_S) -> list[str]:
        """Versions that ran at least ``clean_s`` before ``before_ts`` and are not bad (latest first)."""
        hist = self.versions[service]
        out = []
        for i, (version, since) in enumerate(hist):
            until = hist[i + 1][1] if i + 1 < len(hist) else before_ts
            if (until - since >= clean_s or since < self.start_ts) and (service, version) not in self.bad:
                out.append(version)
        return list(dict.fromkeys(reversed(out)))

    def deploy(self, service: str, ts: float, label: str, kind: str, clarity: str | None = None,
               onset_ts: float | None = None, rollout_s: float | None = None, version: str | None = None,
               status_rolled_back: bool = False, incident: str | None = None) -> Deploy:
        """Record a deploy (started + finished records) and its label."""
        self.counter += 1
        prev = self.current(service)
        if version is None:
            major, minor, patch = (int(x) for x in prev.lstrip("v").split("."))
            version = f"v{major}.{minor + 1}.0" if self.rng.random() < 0.7 else f"v{major}.{minor}.{patch + 1}"
            while any(v == version for v, _ in self.versions[service]):
                major, minor, patch = (int(x) for x in version.lstrip("v").split("."))
                version = f"v{major}.{minor}.{patch + 1}"
        targets = self.good_targets(service, ts)
        deploy_id = f"{service}-{self.counter:03d}"
        target = Target.model_validate({"kind": "kubernetes", "namespace": "shop", "name": service})
        if status_rolled_back:
            self.bad.add((service, prev))
            records = [Deploy(ts=ts, service=service, deploy_id=deploy_id, version=version,
                              previous_version=prev, status="rolled_back", target=target)]
        else:
            rollout_s = rollout_s if rollout_s is not None else float(self.rng.uniform(40, 150))
            records = [Deploy(ts=ts, service=service, deploy_id=deploy_id, version=version, previous_version=prev,
                              status="started", target=target),
                       Deploy(ts=ts + rollout_s, service=service, deploy_id=deploy_id, version=version,
                              previous_version=prev, status="finished", target=target)]
        self.deploys += records
        self.versions[service].append((version, ts))
        self.busy_until[service] = max(self.busy_until.get(service, 0.0), ts + 1500.0)
        if label == "bad":
            self.bad.add((service, version))
        self.labels.append({"deploy_id": deploy_id, "service": service, "version": version,
                            "previous_version": prev, "ts": ts, "label": label, "kind": kind,
                            "clarity": clarity, "onset_ts": onset_ts,
                            "acceptable_targets": targets if label == "bad" else [],
                            "rollback": status_rolled_back,
                            "incident": (incident or deploy_id) if label == "bad" else None})
        return records[0]

    def effect(self, service: str, metric: str, start_ts: float, factor: float, ramp_s: float = 0.0,
               end_ts: float = math.inf, propagate: bool = True) -> None:
        self.effects.append(Effect(service, metric, start_ts, factor, ramp_s, end_ts))
        if not propagate or metric not in ("error_rate", "latency_p95"):
            return
        for caller in self.services:  # callers see part of a callee's errors and latency, a little later
            if service in caller.calls:
                lag = float(self.rng.uniform(5, 25))
                share = float(self.rng.uniform(0.3, 0.7))
                if metric == "error_rate":
                    extra = share * (factor - 1) * self.profile(service).error_rate / caller.error_rate
                else:
                    extra = share * (factor - 1) * self.profile(service).latency_s / caller.latency_s * 0.5
                if extra > 0.05:
                    self.effect(caller.name, metric, start_ts + lag, 1 + extra, ramp_s, end_ts, propagate=False)


# -- the events --------------------------------------------------------------------------------

def _fix_later(w: World, service: str, ts: float) -> float:
    """A human deals with a bad deploy 8-15 min in: a manual rollback or a hotfix. Returns when."""
    at = ts + float(w.rng.uniform(480, 900))
    if w.rng.random() < 0.5:
        hist = w.versions[service]
        back = [v for v in w.good_targets(service, at) if v != w.current(service)]
        w.deploy(service, at, "good", "manual_rollback", version=back[0] if back else hist[0][0],
                 status_rolled_back=True)
    else:
        w.deploy(service, at, "good", "hotfix")
    return at + 30.0


def ev_bad(w: World, ts: float, metric: str, clear: bool, service: str | None = None) -> None:
    service = service or _pick(w)
    delay = float(w.rng.uniform(0, 30))
    if metric == "error_rate":
        factor = float(w.rng.uniform(5, 20) if clear else w.rng.uniform(2.0, 3.5))
    elif metric == "latency_p95":
        factor = float(w.rng.uniform(3, 5) if clear else w.rng.uniform(1.4, 2.0))
    else:
        factor = float(w.rng.uniform(0.4, 0.7))
    d = w.deploy(service, ts, "bad", f"bad_{metric}", "clear" if clear else "ambiguous", ts + delay)
    w.effect(service, metric, d.ts + delay, factor, end_ts=_fix_later(w, service, ts))


def ev_slow_rollout(w: World, ts: float) -> None:
    service = _pick(w)
    rollout = float(w.rng.uniform(600, 1200))
    d = w.deploy(service, ts, "bad", "bad_slow_rollout", "ambiguous", ts, rollout_s=rollout)
    w.effect(service, "error_rate", d.ts, float(w.rng.uniform(6, 15)), ramp_s=rollout,
             end_ts=_fix_later(w, service, ts + rollout / 2))


def ev_leak(w: World, ts: float) -> None:
    service = _pick(w)
    delay = float(w.rng.uniform(300, 1200))
    metric = "latency_p95" if w.rng.random() < 0.6 else "error_rate"
    factor = float(w.rng.uniform(2.5, 4) if metric == "latency_p95" else w.rng.uniform(5, 10))
    w.deploy(service, ts, "bad", "bad_leak", "ambiguous", ts + delay)
    w.effect(service, metric, ts + delay, factor, ramp_s=float(w.rng.uniform(180, 600)),
             end_ts=_fix_later(w, service, ts + delay))


def ev_good(w: World, ts: float) -> None:
    service = _pick(w)
    w.deploy(service, ts, "good", "good")
    if w.rng.random() < 0.3:  # a good deploy may even improve things
        w.effect(service, "latency_p95", ts + 30, float(w.rng.uniform(0.8, 0.95)), propagate=False)


def ev_shared(w: World, ts: float) -> None:
    """A dependency outside the shop (a database, a DNS) fails for most services; one had just deployed."""
    deployer = _pick(w)
    w.deploy(deployer, ts, "good", "good_during_shared_incident")
    at = ts + float(w.rng.uniform(60, 400))
    names = [p.name for p in w.services]
    hit = list(w.rng.choice(names, size=max(3, int(math.ceil(0.75 * len(names)))), replace=False))
    if deployer not in hit:
        hit[0] = deployer
    end = at + float(w.rng.uniform(300, 900))
    metric = "error_rate" if w.rng.random() < 0.6 else "latency_p95"
    for name in hit:
        factor = float(w.rng.uniform(4, 15) if metric == "error_rate" else w.rng.uniform(2, 4))
        w.effect(name, metric, at + float(w.rng.uniform(0, 30)), factor, end_ts=end, propagate=False)
    w.events.append({"kind": "shared_incident", "ts": at, "services": sorted(hit), "metric": metric})


def ev_surge(w: World, ts: float) -> None:
    """A traffic surge: more requests everywhere, latency grows with load; one service had just deployed."""
    deployer = _pick(w)
    w.deploy(deployer, ts, "good", "good_during_traffic_surge")
    at = ts + float(w.rng.uniform(30, 300))
    end = at + float(w.rng.uniform(600, 1200))
    surge = float(w.rng.uniform(1.8, 3.0))
    for p in w.services:
        start = at + float(w.rng.uniform(0, 40))
        w.effect(p.name, "requests", start, surge, ramp_s=60, end_ts=end, propagate=False)
        w.effect(p.name, "latency_p95", start, 1 + (surge - 1) * float(w.rng.uniform(0.3, 0.7)),
                 ramp_s=60, end_ts=end, propagate=False)
    w.events.append({"kind": "traffic_surge", "ts": at, "factor": surge})


def ev_before(w: World, ts: float) -> None:
    """A degradation that began before a deploy (the deploy may be an attempt to fix it)."""
    service = _pick(w)
    start = ts - float(w.rng.uniform(60, 300))
    w.effect(service, "error_rate", start, float(w.rng.uniform(5, 12)), end_ts=ts + float(w.rng.uniform(600, 900)))
    w.deploy(service, ts, "good", "good_after_degradation_began")
    w.events.append({"kind": "degradation_before_deploy", "ts": start, "service": service})


def ev_concurrent(w: World, ts: float) -> None:
    """A service and one of its callers deploy together; the callee is bad, the caller only suffers."""
    callee = str(w.rng.choice(["payments", "inventory", "catalog", "auth"]))
    if callee not in [p.name for p in w.services]:
        callee = _pick(w)
    callers = [p.name for p in w.services if callee in p.calls] or [_pick(w, exclude=callee)]
    caller = str(w.rng.choice(callers))
    w.deploy(caller, ts + float(w.rng.uniform(-60, 20)), "good", "good_concurrent_caller")
    ev_bad(w, ts, "error_rate", True, service=callee)
    if not any(callee in p.calls for p in w.services if p.name == caller):  # make the caller suffer anyway
        w.effect(caller, "error_rate", ts + 40, 3.0, end_ts=ts + 900, propagate=False)


def ev_succession(w: World, ts: float) -> None:
    """Two deploys of one service minutes apart; one of them is bad."""
    service = _pick(w)
    gap = float(w.rng.uniform(40, 240))
    if w.rng.random() < 0.5:  # the second is bad
        w.deploy(service, ts, "good", "good_quick_succession")
        ev_bad(w, ts + gap, "error_rate", True, service=service)
    else:  # the first is bad, the second lands before anyone noticed
        delay = float(w.rng.uniform(gap + 10, gap + 60))
        first = w.deploy(service, ts, "bad", "bad_quick_succession", "ambiguous", ts + delay)
        # the second deploy ships the first one's bug too: rolling it back is right, to before both
        w.deploy(service, ts + gap, "bad", "bad_quick_succession_carrier", "ambiguous", ts + delay,
                 incident=first.deploy_id)
        w.effect(service, "error_rate", ts + delay, float(w.rng.uniform(6, 12)),
                 end_ts=_fix_later(w, service, ts + gap))


EVENTS = {
    "bad_error": lambda w, ts: ev_bad(w, ts, "error_rate", True),
    "bad_error_moderate": lambda w, ts: ev_bad(w, ts, "error_rate", False),
    "bad_latency": lambda w, ts: ev_bad(w, ts, "latency_p95", True),
    "bad_latency_moderate": lambda w, ts: ev_bad(w, ts, "latency_p95", False),
    "bad_health": lambda w, ts: ev_bad(w, ts, "health", True),
    "bad_slow_rollout": ev_slow_rollout,
    "bad_leak": ev_leak,
    "good": ev_good,
    "shared_incident": ev_shared,
    "traffic_surge": ev_surge,
    "degradation_before_deploy": ev_before,
    "concurrent_deploys": ev_concurrent,
    "quick_succession": ev_succession,
}


def _pick(w: World, exclude: str | None = None) -> str:
    """A service not in the middle of another event."""
    names = [p.name for p in w.services if p.name != exclude]
    idle = [n for n in names if w.busy_until.get(n, 0.0) <= w.now]
    return str(w.rng.choice(idle or names))


# -- sampling ----------------------------------------------------------------------------------

def _series(w: World, p: Profile, offset_s: float) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    rng = w.rng
    t = np.arange(w.start_ts + offset_s, w.end_ts, w.step_s)
    n = len(t)

    def mult(metric: str) -> np.ndarray:
        m = np.ones(n)
        for e in w.effects:
            if e.service == p.name and e.metric == metric:
                m *= 1 + (e.factor - 1) * e.weight(t)
        return m

    diurnal = 1 + 0.35 * np.sin(2 * np.pi * (t - T0) / 86400 - 2.0)
    load = diurnal * mult("requests")
    requests = rng.poisson(p.rps * w.step_s * load).astype(float)
    p_err = np.clip(p.error_rate * mult("error_rate"), 1e-6, 0.9)
    kappa = 250.0  # beta-binomial concentration: the rate wanders around its level
    p_draw = rng.beta(p_err * kappa, (1 - p_err) * kappa)
    errors = rng.binomial(requests.astype(int), p_draw)
    error_rate = np.where(requests > 0, errors / np.maximum(requests, 1), 0.0)
    ar = np.zeros(n)
    eps = rng.normal(0, 0.05, n)
    for i in range(1, n):
        ar[i] = 0.8 * ar[i - 1] + eps[i]
    latency = p.latency_s * np.exp(ar) * (1 + 0.25 * np.maximum(load - 1, 0)) * mult("latency_p95")
    healthy_level = np.ones(n)
    for e in w.effects:
        if e.service == p.name and e.metric == "health":
            healthy_level -= (1 - e.factor) * e.weight(t)
    down = rng.binomial(p.pods, np.clip(1 - healthy_level + 0.003, 0, 1))
    health = (p.pods - down) / p.pods
    # spikes: single and double, about one of each per service-hour, errors or latency
    hours = (w.end_ts - w.start_ts) / 3600
    for length in (1, 2):
        for _ in range(rng.poisson(hours)):
            i = int(rng.integers(0, max(n - length, 1)))
            if rng.random() < 0.5:
                error_rate[i:i + length] = np.minimum(error_rate[i:i + length] * rng.uniform(4, 10) + 0.01, 1)
            else:
                latency[i:i + length] *= rng.uniform(2, 5)
    return {"requests": (t, requests / w.step_s, None), "error_rate": (t, error_rate, requests),
            "latency_p95": (t, latency, requests), "health": (t, health, np.full(n, float(p.pods)))}


def _records(w: World, metrics: tuple[str, ...]) -> list[Metric | Deploy]:
    rng = w.rng
    rows: list[tuple[float, int, Metric]] = []
    for p in w.services:
        offset = float(rng.uniform(0, w.step_s))
        series = _series(w, p, offset)
        t = series["requests"][0]
        keep = np.ones(len(t), dtype=bool)
        for _ in range(rng.poisson((w.end_ts - w.start_ts) / 7200)):  # gaps: an exporter stalls
            i = int(rng.integers(0, len(t)))
            keep[i:i + int(rng.integers(3, 12))] = False
        for metric in metrics:
            ts, values, counts = series[metric]
            for k in np.flatnonzero(keep):
                i = int(k)
                sample = Metric(ts=round(float(ts[i]), 3), service=p.name, metric=metric,
                             value=round(float(values[i]), 6),
                             count=None if counts is None else float(counts[i]), labels={"env": "prod"})
                rows.append((sample.ts, 0, sample))
    rows.sort(key=lambda r: (r[0], r[1]))
    records: list[Metric | Deploy] = [r[2] for r in rows]
    n = len(records)
    for _ in range(int(n * 0.001)):  # duplicates: a retried send
        i = int(rng.integers(0, n - 1))
        records.insert(i + 1, records[i])
    for _ in range(int(n * 0.001)):  # out of order: a sample held back behind later ones of its stream
        i = int(rng.integers(0, len(records) - 200))
        held = records.pop(i)
        records.insert(i + int(rng.integers(60, 200)), held)
    # deploy records come from another system: read up to 10 s late, slotted in by read time
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

def scenario(seed: int, kinds: list[str] | None = None, hours: float = 4.0, services: int = 8,
             step_s: float = 10.0, warmup_s: float = 1800.0, spacing_s: float = 2400.0,
             metrics: tuple[str, ...] = METRICS, tail_s: float = 1500.0) -> tuple[list[Metric | Deploy], dict[str, Any]]:
    """A labelled stream: ``hours`` of ``services`` services with events every ~``spacing_s``.

    ``kinds`` (names of :data:`EVENTS`) are played in order, cycling; by default a
    random mix. Returns (records in reading order, labels).
    """
    rng = np.random.default_rng(seed)
    profiles = list(SHOP[:services]) if services <= len(SHOP) else _more(services, rng)
    start = T0 + float(rng.uniform(0, 86400))
    w = World(rng, profiles, start, start + hours * 3600, step_s)
    for p in profiles:
        w.versions[p.name] = [(f"v{int(rng.integers(1, 5))}.{int(rng.integers(0, 30))}.0", start - 86400)]
    names = list(EVENTS)
    ts = start + warmup_s
    i = 0
    while ts < w.end_ts - tail_s:
        kind = kinds[i % len(kinds)] if kinds else str(rng.choice(names))
        w.events.append({"kind": kind, "ts": ts})
        w.now = ts
        EVENTS[kind](w, ts)
        if rng.random() < 0.5:  # an unrelated good deploy elsewhere, between events
            quiet = ts + spacing_s / 2 + float(rng.uniform(-120, 120))
            if quiet < w.end_ts - 600:
                w.now = quiet
                ev_good(w, quiet)
        ts += spacing_s * float(rng.uniform(0.875, 1.125))
        i += 1
    records = _records(w, metrics)
    labels = {"seed": seed, "start_ts": w.start_ts, "end_ts": w.end_ts, "step_s": step_s,
              "services": [p.name for p in profiles], "events": w.events,
              "deploys": sorted(w.labels, key=lambda d: d["ts"])}
    return records, labels


def _more(n: int, rng: np.random.Generator) -> list[Profile]:
    out = list(SHOP)
    for i in range(len(SHOP), n):
        base = SHOP[i % len(SHOP)]
        out.append(Profile(f"{base.name}-{i}", base.rps * float(rng.uniform(0.5, 2)), base.error_rate,
                           base.latency_s * float(rng.uniform(0.7, 1.5)), base.pods))
    return out


def demo_scenario(seed: int = 7) -> list[Metric | Deploy]:
    """The demo: 4 services, one hour; a good deploy, then a clear bad deploy (labelled in the record)."""
    records, labels = scenario(seed, kinds=["good", "bad_error"], hours=1.0, services=4,
                               warmup_s=1500.0, spacing_s=600.0, tail_s=900.0)
    by_id = {d["deploy_id"]: d["label"] for d in labels["deploys"]}
    return [Deploy.model_validate({**r.model_dump(), "label": by_id[r.deploy_id]}) if isinstance(r, Deploy) else r
            for r in records]


@click.command()
@click.argument("out", type=click.Path(dir_okay=False, writable=True))
@click.option("--seed", default=1, show_default=True, help="Random seed: the same seed writes the same files.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(sorted(EVENTS)),
              help="Event kinds to play, in order, cycling (repeatable). Default: a random mix of all.")
@click.option("--hours", default=4.0, show_default=True, type=click.FloatRange(min=0.5),
              help="Length of the scenario in event time.")
@click.option("--services", default=8, show_default=True, type=click.IntRange(2, 200), help="Number of services.")
@click.option("--step", "step_s", default=10.0, show_default=True, type=click.FloatRange(min=1),
              help="Sampling interval of the exporters, in seconds.")
@click.option("--spacing", "spacing_s", default=2400.0, show_default=True, type=click.FloatRange(min=600),
              help="Seconds between events (the first comes after a 30 min warm-up).")
def simulate(out: str, seed: int, kinds: tuple[str, ...], hours: float, services: int, step_s: float,
             spacing_s: float) -> None:
    """Write a realistic labelled scenario: OUT.jsonl (metrics and deploys) and OUT.labels.json.

    OUT may be given with or without the .jsonl suffix. Replay it with
    'backout backtest OUT.jsonl'; score it with bench/decisions.py.
    """
    base = Path(out[:-6] if out.endswith(".jsonl") else out)
    records, labels = scenario(seed, list(kinds) or None, hours, services, step_s, spacing_s=spacing_s)
    with open(f"{base}.jsonl", "wb") as fh:
        for rec in records:
            fh.write(encode(rec) + b"\n")
    Path(f"{base}.labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    bad = sum(d["label"] == "bad" for d in labels["deploys"])
    click.echo(f"wrote {base}.jsonl ({len(records)} records, {len(labels['deploys'])} deploys, {bad} bad) "
               f"and {base}.labels.json", err=True)


def demo_records(seed: int = 7) -> list[Metric | Deploy]:
    """The demo scenario in event-time order, as a live stream or a dump would hold it."""
    return sorted(demo_scenario(seed), key=lambda r: r.ts)
