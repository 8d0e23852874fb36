"""Recovery-test figures: how often a rollback is verified, how soon, and how often wrongly.

    .venv/bin/python bench/recovery.py --json      # one JSON object on stdout
    .venv/bin/python bench/recovery.py             # a table

Each run feeds :class:`detectors.recovery.Recovery` one blamed metric, a sample every 10 s:
12 samples at the shifted level from the shift's onset to the rollback (what the executor
reads back from the onset), then 30 after it (the 5-minute ``verify_within_s``). Noise as in
the detector bench (bench/detectors.py) and the simulator: beta-binomial error counts
(kappa 250 and 60: the rate itself wanders sample to sample) at 200 and 2000 requests per
sample, AR(1) log-latency (sd 0.1, lag-1 correlation 0 and 0.8). Scenarios after the rollback:

* ``recovers``: two more samples at the shifted level (old pods draining), then the baseline;
* ``spiky``: the baseline with every third sample back at the shifted level for three
  minutes, then the baseline;
* ``stays``: the shifted level throughout (the rollback did not help).

Per case: ``verified`` (fraction of runs), ``median_samples`` (samples from the first one
back at the baseline to the verdict, counting both), and for ``spiky`` ``early`` (verified
while the spikes still came). For ``stays`` ``verified`` is the false-verification rate.
A spiky stretch of a small shift (latency 1.5x, error rate 3x) averages 1.17x and 1.67x the
baseline, at or near the monitor's minimum effect (``min_ratio`` 1.2 and 1.5): by the
monitor's own definition that level is hardly a shift any more, and ``early`` counts it.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backout.contracts import Metric  # noqa: E402
from detectors.recovery import Blamed, Recovery  # noqa: E402
from detectors.spec import DEFAULT_SPECS  # noqa: E402

STEP_S = 10.0
T0 = 1_767_225_600.0  # the rollback is executed here
BEFORE = 12  # samples from the onset to the rollback
AFTER = 30
SPIKY = [0, 0, 1] * 6  # 1: a sample back at the shifted level


def levels(scenario: str, baseline: float, shifted: float) -> list[float]:
    if scenario == "recovers":
        after = [shifted] * 2 + [baseline] * (AFTER - 2)
    elif scenario == "spiky":
        after = [shifted if s else baseline for s in SPIKY] + [baseline] * (AFTER - len(SPIKY))
    else:
        after = [shifted] * AFTER
    return [shifted] * BEFORE + after


def rate_noise(rng: np.random.Generator, kappa: float, requests: int) -> Any:
    return lambda p: (rng.binomial(requests, rng.beta(p * kappa, (1 - p) * kappa)) / requests, float(requests))


def latency_noise(rng: np.random.Generator, rho: float) -> Any:
    state = [0.0]

    def draw(level: float) -> tuple[float, None]:
        state[0] = rho * state[0] + np.sqrt(1 - rho * rho) * rng.normal(0.0, 0.1)
        return float(level * np.exp(state[0])), None
    return draw


def run(blamed: Blamed, scenario: str, noise: Any) -> tuple[str, int | None]:
    """(status, index after the rollback of the sample that settled it)."""
    rec = Recovery("inc-b", "svc", "v2", T0, (blamed,), DEFAULT_SPECS)
    start = T0 - BEFORE * STEP_S
    for i, level in enumerate(levels(scenario, blamed.baseline, blamed.shifted)):
        value, count = noise(level)
        out = rec.update(Metric(ts=start + (i + 1) * STEP_S, service="svc", metric=blamed.metric,
                                value=value, count=count))
        if out is not None:
            return out.status, i - BEFORE
    out = rec.tick(T0 + 1e6)
    assert out is not None
    return out.status, None


def case(blamed: Blamed, scenario: str, make_noise: Any, runs: int) -> dict[str, Any]:
    back = {"recovers": 2, "spiky": len(SPIKY), "stays": 0}[scenario]  # first sample back for good
    results = [run(blamed, scenario, make_noise(np.random.default_rng(seed))) for seed in range(runs)]
    verified = [i for status, i in results if status == "verified" and i is not None]
    out: dict[str, Any] = {"verified": round(len(verified) / runs, 3)}
    if scenario != "stays":
        settled = [i - back + 1 for i in verified if i >= back]
        out["median_samples"] = statistics.median(settled) if settled else None
    if scenario == "spiky":
        out["early"] = round(sum(i < back for i in verified) / runs, 3)
    return out


def cases() -> list[tuple[str, Blamed, Any]]:
    out = []
    for kappa in (250.0, 60.0):
        for requests in (2000, 200):
            for factor in (10.0, 3.0):
                name = f"error_rate {factor:.0f}x kappa {kappa:.0f} n {requests}"
                out.append((name, Blamed("error_rate", 0.005, 0.005 * factor, T0 - BEFORE * STEP_S),
                            lambda rng, k=kappa, n=requests: rate_noise(rng, k, n)))
    for rho in (0.0, 0.8):
        for factor in (3.0, 1.5):
            name = f"latency_p95 {factor}x ar1 {rho}"
            out.append((name, Blamed("latency_p95", 0.2, 0.2 * factor, T0 - BEFORE * STEP_S),
                        lambda rng, r=rho: latency_noise(rng, r)))
    return out


@click.command()
@click.option("--runs", default=300, show_default=True, type=click.IntRange(10, 100_000),
              help="Seeded runs per case and scenario.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def main(runs: int, as_json: bool) -> None:
    result = {name: {scenario: case(blamed, scenario, noise, runs) for scenario in ("recovers", "spiky", "stays")}
              for name, blamed, noise in cases()}
    if as_json:
        click.echo(json.dumps({"runs": runs, "cases": result}))
        return
    click.echo(f"{'case':36} {'recovers':>18} {'spiky (early)':>22} {'stays: verified':>16}")
    for name, r in result.items():
        rec, spiky = r["recovers"], r["spiky"]
        click.echo(f"{name:36} {rec['verified']:>8.3f} {str(rec['median_samples']):>8}  "
                   f"{spiky['verified']:>8.3f} {str(spiky['median_samples']):>6} ({spiky['early']:.3f})"
                   f" {r['stays']['verified']:>16.3f}")


if __name__ == "__main__":
    main()
