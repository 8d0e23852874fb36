"""Detector figures: delay against the information bound, false alarms on realistic noise, TCPDBench, speed.

    .venv/bin/python bench/detectors.py --json      # one JSON object on stdout
    .venv/bin/python bench/detectors.py             # the same, indented

Writes ``bench/results/tcpd_predictions.json`` ({series: [change point indices]}).
Measures as defined in ../shared/DETECTION.md:

* ``delay_ratio_to_bound``: per case, the median over runs of the delay (number of
  shifted samples seen when the alarm comes: alarm index - change index + 1)
  divided by the effective bound ``max(ln(ARL0)/KL, k+1)``; the median over cases.
  Error rate p0 = 0.5% (binomial) times 2, 3, 10 at 20, 200, 2000 requests per
  sample; latency log-normal, sigma 0.1 in log units, times 1.5 and 2 (these
  i.i.d. models are the ones the bound is stated for).
  Each run learns 600 clean samples first; runs that alarm before the change are
  counted in ``early_alarms`` and left out; runs with no alarm within the horizon
  (6 bounds) count as infinite delays (``missed``; a case whose median is beyond
  the horizon has ``ratio: null`` and counts as infinite in the median of cases).
* ``false_alarms_per_1e5``: anomalies per 100,000 samples on long clean streams
  with the noise of production metrics: beta-binomial error counts (kappa 250
  and 60) on diurnal Poisson traffic of 2-300 rps, AR(1) log-latency (rho 0.8)
  growing with load, pod health with restarts, single and double spikes
  (~1 per hour each), exporter gaps (~1 per 2 h).
* ``tcpd_*``: the generic gauge monitor run online over the TCPD univariate series
  at the settings ``TCPD_SPEC`` (two-sided, no effect floor, a local-line
  baseline since most of these series trend by nature, every confirmed shift
  accepted at once as the new level, so each anomaly is one change point at
  its onset index), scored as the paper does (bench/tcpd.py). With
  ``--sensitivity``, ``tcpd_sensitivity`` repeats the run with the defaults
  moved (trend half-life x slope t, warm-up, baseline half-life, no trend):
  25 series are few, and a score that holds only at one setting means little.
* ``anchored``: the deploy-anchored test (:mod:`detectors.anchored`) at its default
  ``alpha`` (false flags per good deploy per metric). ``false_flags_per_deploy``:
  deploys placed every ~100 samples on long clean streams, each test run for its
  horizon (60 samples), on the production-like noise above (``clean``) and on
  noise it was not designed on (``drifting``: the base error rate a multiplicative
  AR(1), 20 min time constant, sd 0.3, beta-binomial counts; Student-t AR(1) log
  latency; ``no counts``: the error rates of both without their ``count``, as
  an exporter of ratios sends them), for a warm stream (90 samples in the window, long-run noise learnt)
  and young streams whose whole history is 8, 16 or 30 samples. ``delays``: the
  number of shifted samples seen at the flag, per case as in ``delay_cases``,
  against ``max(ln(1/alpha)/KL, k+1)``, warm and with 8 samples of history.
* ``reference``: river's generic drift detectors (``river.drift.ADWIN`` and
  ``river.drift.PageHinkley``, at their defaults) fed the same sample values,
  scored the same way (delay ratio to the bound, false alarms per 100,000
  samples on the clean streams): what an engineer gets without the
  calibrated, count-aware, spike-proof tests.
* ``updates_per_s``: samples through ``MetricMonitor.update`` per second on one
  core, the three tested metrics interleaved; ``bytes_per_key``: the largest JSON
  state seen.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
from river import drift

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backout.contracts import Metric  # noqa: E402
from bench import tcpd  # noqa: E402
from detectors.anchored import RecentWindow  # noqa: E402
from detectors.calibration import delay_bound  # noqa: E402
from detectors.monitor import MetricMonitor  # noqa: E402
from detectors.spec import MetricSpec, spec_for  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
STEP_S = 10.0
T0 = 1_767_225_600.0
TCPD_SPEC = MetricSpec(kind="gauge", direction="both", min_ratio=1.0, log_scale=False, min_sigma=0.0,
                       warmup_samples=10, baseline_halflife_samples=20.0, trend_halflife_samples=10.0,
                       accept_s=0.0)


def _kl_binomial(n: float, p0: float, p1: float) -> float:
    return n * (p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0)))


def _run_delay(metric: str, values: np.ndarray, counts: np.ndarray | None, change: int) -> int | None:
    """Index of the first alarm (relative to the change, 1 = first shifted sample), or -1 if before it."""
    mon = MetricMonitor("bench", metric, spec_for(metric))
    for i, v in enumerate(values):
        c = None if counts is None else float(counts[i])
        if mon.update(Metric(ts=T0 + STEP_S * i, service="bench", metric=metric, value=float(v), count=c)):
            return i - change + 1 if i >= change else -1
    return None


REFERENCE = {"adwin": drift.ADWIN, "page_hinkley": drift.PageHinkley}


def _reference_delay(make: type) -> Callable[[str, np.ndarray, np.ndarray | None, int], int | None]:
    """:func:`_run_delay` for a river drift detector: its first drift, relative to the change."""
    def run(metric: str, values: np.ndarray, counts: np.ndarray | None, change: int) -> int | None:
        detector = make()
        for i, v in enumerate(values):
            detector.update(float(v))
            if detector.drift_detected:
                return i - change + 1 if i >= change else -1
        return None
    return run


def delay_cases(runs: int, seed: int, run_delay: Callable = _run_delay) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    warm = 600
    cases = [("error_rate", f, n) for f in (2.0, 3.0, 10.0) for n in (20, 200, 2000)]
    cases += [("latency_p95", f, None) for f in (1.5, 2.0)]
    for metric, factor, n in cases:
        spec = spec_for(metric)
        assert spec is not None
        if n is not None:
            p0 = 0.005
            kl = _kl_binomial(n, p0, p0 * factor)
        else:
            sigma = 0.1
            kl = math.log(factor) ** 2 / (2 * sigma * sigma)
        bound = delay_bound(spec.arl0, kl, spec.spike_samples)
        horizon = int(warm + max(60, 6 * bound))
        delays, early, missed = [], 0, 0
        for _ in range(runs):
            if n is not None:
                counts = np.full(horizon, float(n))
                p = np.where(np.arange(horizon) >= warm, p0 * factor, p0)
                values = rng.binomial(n, p) / n
            else:
                counts = None
                values = 0.3 * np.exp(rng.normal(0, sigma, horizon)) * np.where(np.arange(horizon) >= warm, factor, 1)
            d = run_delay(metric, values, counts, warm)
            if d is None:
                missed += 1
                delays.append(math.inf)  # counted: a miss is a delay beyond the horizon
            elif d < 0:
                early += 1
            else:
                delays.append(d)
        med = statistics.median(delays) if delays else math.inf
        name = f"{metric} x{factor:g}" + (f" at {n} req" if n else "")
        finite = math.isfinite(med)
        out.append({"case": name, "kl_per_sample": round(kl, 4), "bound": round(bound, 2),
                    "median_delay": med if finite else None, "ratio": round(med / bound, 3) if finite else None,
                    "horizon": horizon - warm, "runs": len(delays),
                    "early_alarms": early, "missed": missed})
    return out


def _clean_streams(seed: int, samples: int) -> list[tuple[str, list[Metric]]]:
    """Long clean streams with production-like noise (see module doc)."""
    rng = np.random.default_rng(seed)
    streams = []
    t = T0 + STEP_S * np.arange(samples)
    diurnal = 1 + 0.35 * np.sin(2 * np.pi * (t - T0) / 86400 - 2.0)
    hours = samples * STEP_S / 3600
    for j, (rps, p, kappa) in enumerate([(2.0, 0.01, 250.0), (20.0, 0.005, 60.0), (100.0, 0.004, 250.0),
                                          (300.0, 0.002, 60.0)]):
        keep = np.ones(samples, dtype=bool)
        for _ in range(rng.poisson(hours / 2)):
            i = int(rng.integers(0, samples))
            keep[i:i + int(rng.integers(3, 12))] = False
        requests = rng.poisson(rps * STEP_S * diurnal).astype(float)
        pdraw = rng.beta(p * kappa, (1 - p) * kappa, samples)
        errors = rng.binomial(requests.astype(int), pdraw)
        rate = np.where(requests > 0, errors / np.maximum(requests, 1), 0.0)
        ar = np.zeros(samples)
        eps = rng.normal(0, 0.05, samples)
        for i in range(1, samples):
            ar[i] = 0.8 * ar[i - 1] + eps[i]
        latency = (0.1 + 0.1 * j) * np.exp(ar) * (1 + 0.25 * np.maximum(diurnal - 1, 0))
        pods = 6 + 2 * j
        health = (pods - rng.binomial(pods, 0.003, samples)) / pods
        for length in (1, 2):
            for _ in range(rng.poisson(hours)):
                i = int(rng.integers(0, samples - length))
                rate[i:i + length] = np.minimum(rate[i:i + length] * rng.uniform(4, 10) + 0.01, 1)
            for _ in range(rng.poisson(hours)):
                i = int(rng.integers(0, samples - length))
                latency[i:i + length] *= rng.uniform(2, 5)
        idx = np.flatnonzero(keep)
        svc = f"s{j}"
        streams.append(("error_rate", [Metric(ts=float(t[i]), service=svc, metric="error_rate",
                                              value=float(rate[i]), count=float(requests[i])) for i in idx]))
        streams.append(("latency_p95", [Metric(ts=float(t[i]), service=svc, metric="latency_p95",
                                               value=float(latency[i]), count=float(requests[i])) for i in idx]))
        streams.append(("health", [Metric(ts=float(t[i]), service=svc, metric="health",
                                          value=float(health[i]), count=float(pods)) for i in idx]))
    return streams


ANCHOR_ALPHA = 0.003  # the default of detectors.anchored.AnchoredTest
ANCHOR_HORIZON = 60  # samples a test runs for (600 s at 10 s)


def _drifting_streams(seed: int, samples: int) -> list[tuple[str, list[Metric]]]:
    """Clean streams with noise the anchored test was not designed on (see module doc)."""
    rng = np.random.default_rng(seed)
    t = T0 + STEP_S * np.arange(samples)
    streams = []
    phi_rate = math.exp(-STEP_S / 1200.0)
    for j, (rps, p) in enumerate([(5.0, 0.01), (30.0, 0.005), (100.0, 0.003), (300.0, 0.002)]):
        z = np.zeros(samples)
        eps = rng.normal(0, 0.3 * math.sqrt(1 - phi_rate ** 2), samples)
        for i in range(1, samples):
            z[i] = phi_rate * z[i - 1] + eps[i]
        requests = rng.poisson(rps * STEP_S, samples).astype(float)
        prate = np.clip(p * np.exp(z), 1e-6, 0.5)
        errors = rng.binomial(requests.astype(int), rng.beta(prate * 1000, (1 - prate) * 1000))
        rate = np.where(requests > 0, errors / np.maximum(requests, 1), 0.0)
        a = np.zeros(samples)
        tnoise = rng.standard_t(4, samples) * 0.05 * math.sqrt(0.5)
        for i in range(1, samples):
            a[i] = 0.8 * a[i - 1] + tnoise[i]
        latency = (0.1 + 0.1 * j) * np.exp(a)
        svc = f"d{j}"
        streams.append(("error_rate", [Metric(ts=float(t[i]), service=svc, metric="error_rate",
                                              value=float(rate[i]), count=float(requests[i])) for i in range(samples)]))
        streams.append(("latency_p95", [Metric(ts=float(t[i]), service=svc, metric="latency_p95",
                                               value=float(latency[i])) for i in range(samples)]))
    return streams


def anchored_false_flags(seed: int, samples: int, stride: int = 97) -> dict:
    """False flags per good deploy of the anchored test: warm streams and young ones (see module doc)."""
    out: dict[str, dict] = {}
    clean, drifting = _clean_streams(seed, samples), _drifting_streams(seed, samples)
    bare = [(m, [Metric(ts=r.ts, service=r.service, metric=m, value=r.value) for r in records])
            for m, records in clean + drifting if m == "error_rate"]
    for noise, streams in (("clean", clean), ("drifting", drifting), ("no counts", bare)):
        for history in ("warm", 8, 16, 30):
            flags: dict[str, int] = {}
            tests: dict[str, int] = {}
            for metric, records in streams:
                spec = spec_for(metric)
                assert spec is not None
                win = RecentWindow(spec)
                for i, r in enumerate(records):
                    if history == "warm" and i >= 600 and i % stride == 0 and i + ANCHOR_HORIZON < len(records):
                        test = win.start(r.ts - 1.0)
                    elif history != "warm" and i % stride == 0 and i >= 600 and i + ANCHOR_HORIZON < len(records):
                        young = RecentWindow(spec)
                        for q in records[i - int(history):i]:
                            young.add(q.value, q.count, q.ts)
                        test = young.start(r.ts - 1.0)
                    else:
                        test = None
                    win.add(r.value, r.count, r.ts)
                    if test is None:
                        continue
                    tests[metric] = tests.get(metric, 0) + 1
                    for q in records[i:i + ANCHOR_HORIZON]:
                        if test.update(q.value, q.count, q.ts):
                            flags[metric] = flags.get(metric, 0) + 1
                            break
            total = sum(tests.values())
            out[f"{noise} {history}"] = {
                "deploys": total, "flags": sum(flags.values()),
                "per_deploy": round(sum(flags.values()) / total, 4) if total else None,
                "per_metric": {m: round(flags.get(m, 0) / n, 4) for m, n in sorted(tests.items())}}
    return {"alpha": ANCHOR_ALPHA, **out}


def anchored_delays(runs: int, seed: int) -> list[dict]:
    """Delay of the anchored test, in shifted samples, against ``max(ln(1/alpha)/KL, k+1)``."""
    rng = np.random.default_rng(seed)
    cases = [("error_rate", f, n) for f in (2.0, 3.0, 10.0) for n in (20, 200, 2000)]
    cases += [("latency_p95", f, None) for f in (1.5, 2.0)]
    out = []
    for metric, factor, n in cases:
        spec = spec_for(metric)
        assert spec is not None
        p0, sigma = 0.005, 0.1
        kl = _kl_binomial(n, p0, p0 * factor) if n is not None else math.log(factor) ** 2 / (2 * sigma * sigma)
        bound = max(math.log(1 / ANCHOR_ALPHA) / kl, spec.spike_samples + 1.0)
        row: dict = {"case": f"{metric} x{factor:g}" + (f" at {n} req" if n else ""),
                     "kl_per_sample": round(kl, 4), "bound": round(bound, 2)}
        for history in (600, 8):
            delays = []
            for _ in range(runs):
                total = history + ANCHOR_HORIZON
                shifted = np.arange(total) >= history
                if n is not None:
                    values = rng.binomial(n, np.where(shifted, p0 * factor, p0)) / n
                else:
                    values = 0.3 * np.exp(rng.normal(0, sigma, total)) * np.where(shifted, factor, 1.0)
                win = RecentWindow(spec)
                for i in range(history):
                    win.add(float(values[i]), None if n is None else float(n), STEP_S * i)
                test = win.start(STEP_S * history - 1.0)
                assert test is not None
                delay = math.inf
                for i in range(history, total):
                    if test.update(float(values[i]), None if n is None else float(n), STEP_S * i):
                        delay = i - history + 1
                        break
                delays.append(delay)
            med = statistics.median(delays)
            key = "warm" if history == 600 else f"history_{history}"
            row[key] = {"median_delay": med if math.isfinite(med) else None,
                        "ratio": round(med / bound, 3) if math.isfinite(med) else None,
                        "missed": sum(math.isinf(d) for d in delays)}
        out.append(row)
    return out


def false_alarms(seed: int, samples: int) -> tuple[dict, int, float]:
    streams = _clean_streams(seed, samples)
    alarms: dict[str, int] = {}
    seen: dict[str, int] = {}
    biggest = 0
    updates, elapsed = 0, 0.0
    for metric, records in streams:
        mon = MetricMonitor(records[0].service, metric, spec_for(metric))  # type: ignore[arg-type]
        start = time.perf_counter()
        fired = sum(mon.update(r) is not None for r in records)
        elapsed += time.perf_counter() - start
        updates += len(records)
        alarms[metric] = alarms.get(metric, 0) + fired
        seen[metric] = seen.get(metric, 0) + len(records)
        biggest = max(biggest, len(json.dumps(mon.to_state())))
    per = {m: round(alarms[m] / seen[m] * 1e5, 3) for m in alarms}
    total = sum(alarms.values()) / sum(seen.values()) * 1e5
    return {"per_metric": per, "samples": sum(seen.values()), "alarms": sum(alarms.values()),
            "total": round(total, 3)}, biggest, updates / elapsed


def reference(runs: int, seed: int, samples: int) -> dict:
    """The river drift detectors on the same delay cases and clean streams (seeds as for the CUSUM)."""
    out = {}
    streams = _clean_streams(seed + 1, samples)
    for name, make in REFERENCE.items():
        cases = delay_cases(runs, seed, _reference_delay(make))
        ratios = [math.inf if c["ratio"] is None else c["ratio"] for c in cases]
        alarms = 0
        for _, records in streams:
            detector = make()
            for r in records:
                detector.update(r.value)
                alarms += detector.drift_detected
        total = sum(len(records) for _, records in streams)
        median = statistics.median(ratios)
        out[name] = {"delay_ratio_to_bound": median if math.isfinite(median) else None,  # null: beyond the horizon
                     "runs": runs * len(cases), "missed": sum(c["missed"] for c in cases), "early_alarms": sum(c["early_alarms"] for c in cases),
                     "false_alarms_per_1e5": round(alarms / total * 1e5, 3)}
    return out


def tcpd_run(spec: MetricSpec = TCPD_SPEC, write: bool = True) -> dict:
    series, annotations = tcpd.load()
    preds, f1s, covers = {}, [], []
    for name, values in series.items():
        mon = MetricMonitor("tcpd", name, spec)
        cps = []
        for i, v in enumerate(values):
            a = mon.update(Metric(ts=float(i + 1), service="tcpd", metric=name, value=v))
            if a is not None:
                cps.append(int(round(a.onset_ts)) - 1)
        preds[name] = tcpd.clean(cps, len(values))
        f1s.append(tcpd.f_measure(annotations[name], preds[name]))
        covers.append(tcpd.covering(annotations[name], preds[name], len(values)))
    if write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "tcpd_predictions.json").write_text(json.dumps(preds, indent=1) + "\n")
    pub = tcpd.published(series)
    return {"tcpd_f1": round(sum(f1s) / len(f1s), 4), "tcpd_cover": round(sum(covers) / len(covers), 4),
            "tcpd_series": len(series),
            "tcpd_published_default": {m: {k: round(v, 4) for k, v in s.items()} for m, s in pub.items()},
            "tcpd_spec": spec.model_dump(mode="json", exclude_defaults=True)}


def tcpd_sensitivity() -> list[dict]:
    """TCPD F1 / cover with the defaults moved: is the score a plateau or a peak?"""
    grid: list[dict] = [{"trend_slope_t": t, "trend_halflife_samples": h}
                        for t in (2.0, 2.5, 3.0) for h in (8.0, 10.0, 12.0, 15.0, 20.0)]
    grid += [{"warmup_samples": w} for w in (8, 12)]
    grid += [{"baseline_halflife_samples": h} for h in (15.0, 30.0)]
    grid += [{"trend_halflife_samples": None}]
    out = []
    for change in grid:
        r = tcpd_run(TCPD_SPEC.model_copy(update=change), write=False)
        out.append({**change, "f1": r["tcpd_f1"], "cover": r["tcpd_cover"]})
    return out


def speed(seed: int, samples: int) -> float:
    """Updates per second, the three tested metrics of several services interleaved, one core."""
    streams = _clean_streams(seed, samples)
    mons = {(r[0].service, m): MetricMonitor(r[0].service, m, spec_for(m)) for m, r in streams}  # type: ignore[arg-type]
    records = sorted((r for _, rs in streams for r in rs), key=lambda r: r.ts)
    start = time.perf_counter()
    for r in records:
        mons[(r.service, r.metric)].update(r)
    return len(records) / (time.perf_counter() - start)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print one compact JSON object")
@click.option("--runs", default=20, show_default=True, help="runs per delay case")
@click.option("--samples", default=60000, show_default=True, help="samples per clean stream (12 streams)")
@click.option("--seed", default=1, show_default=True, help="random seed")
@click.option("--sensitivity", is_flag=True, help="also TCPD scores with the defaults moved (a few seconds)")
def main(as_json: bool, runs: int, samples: int, seed: int, sensitivity: bool) -> None:
    """Print the detector figures of DETECTION.md."""
    cases = delay_cases(runs, seed)
    fa, biggest, fa_rate = false_alarms(seed + 1, samples)
    ratios = [math.inf if c["ratio"] is None else c["ratio"] for c in cases]  # null: median beyond the horizon
    out = {"delay_ratio_to_bound": statistics.median(ratios), "delay_cases": cases,
           "false_alarms_per_1e5": fa["total"], "false_alarms": fa}
    out.update(tcpd_run())
    delays = anchored_delays(runs, seed)
    warm = [math.inf if c["warm"]["ratio"] is None else c["warm"]["ratio"] for c in delays]
    out["anchored"] = {"false_flags": anchored_false_flags(seed + 3, min(samples, 20000)),
                       "delay_ratio_to_bound_warm": statistics.median(warm), "delays": delays}
    if sensitivity:
        out["tcpd_sensitivity"] = tcpd_sensitivity()
    out["reference"] = reference(runs, seed, samples)
    out["updates_per_s"] = round(speed(seed + 2, 20000))
    out["updates_per_s_clean_run"] = round(fa_rate)
    out["bytes_per_key"] = biggest
    print(json.dumps(out) if as_json else json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
