"""Reference deciders that behave like Argo Rollouts and Flagger analyses, for comparison.

Both start an analysis when a service deploys a new version (not for
rollbacks), measure every ``interval_s`` for ``analysis_s`` after the deploy,
and roll back to the deploy's ``previous_version`` (the stable ReplicaSet)
once failed measurements reach ``failures``:

* Argo Rollouts–like: one measurement per 60 s, ``failureLimit: 2`` — the
  third failed measurement rolls back;
* Flagger-like: 60 s interval, ``threshold: 5`` failed checks.

A measurement averages the service's samples of the last interval and fails
when any metric crosses a fixed threshold, as in the usual templates
(success rate ≥ 98%, p95 ≤ 1 s, ≥ 80% of pods healthy). A newer deploy of
the same service supersedes the running analysis. They see every record in
stream order and use event time only, like Backout.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict, deque
from dataclasses import dataclass

from backout.contracts import Decision, Deploy, Metric

THRESHOLDS = {"error_rate": ("max", 0.02), "latency_p95": ("max", 1.0), "health": ("min", 0.8)}


@dataclass
class _Analysis:
    deploy: Deploy
    next_ts: float
    failures: int = 0
    done: bool = False


class ThresholdAnalysis:
    """Fixed-threshold analysis runs per deploy: the shape of Argo Rollouts and Flagger."""

    def __init__(self, name: str, failures: int, interval_s: float = 60.0, analysis_s: float = 1800.0,
                 thresholds: dict[str, tuple[str, float]] | None = None) -> None:
        self.name = name
        self.failures = failures
        self.interval_s = interval_s
        self.analysis_s = analysis_s
        self.thresholds = thresholds or THRESHOLDS
        self._samples: dict[tuple[str, str], deque[tuple[float, float, float]]] = defaultdict(deque)
        self._runs: dict[str, _Analysis] = {}
        self._seen: dict[str, set[str]] = defaultdict(set)
        self._started: set[str] = set()

    def feed(self, record: Metric | Deploy) -> list[Decision]:
        if isinstance(record, Deploy):
            return self._deploy(record)
        key = (record.service, record.metric)
        window = self._samples[key]
        window.append((record.ts, record.value, record.count or 1.0))
        while window and window[0][0] < record.ts - 2 * self.interval_s:
            window.popleft()
        run = self._runs.get(record.service)
        out: list[Decision] = []
        while run is not None and not run.done and record.ts >= run.next_ts:
            out += self._measure(run, run.next_ts)
            run.next_ts += self.interval_s
            if run.next_ts > run.deploy.ts + self.analysis_s:
                run.done = True
        return out

    def _deploy(self, d: Deploy) -> list[Decision]:
        seen = self._seen[d.service]
        rollback = d.status == "rolled_back" or (d.version in seen and d.version != d.previous_version)
        if d.previous_version:
            seen.add(d.previous_version)
        seen.add(d.version)
        if d.deploy_id in self._started or d.status == "failed":
            return []
        self._started.add(d.deploy_id)
        if rollback:
            self._runs.pop(d.service, None)
        else:
            self._runs[d.service] = _Analysis(d, d.ts + self.interval_s)
        return []

    def _measure(self, run: _Analysis, at: float) -> list[Decision]:
        failed = []
        for metric, (kind, limit) in self.thresholds.items():
            rows = [r for r in self._samples.get((run.deploy.service, metric), ()) if at - self.interval_s < r[0] <= at]
            if not rows:
                continue
            if metric == "error_rate":
                weight = sum(c for _, _, c in rows)
                value = sum(v * c for _, v, c in rows) / weight if weight else 0.0
            else:
                value = sum(v for _, v, _ in rows) / len(rows)
            if (kind == "max" and value > limit) or (kind == "min" and value < limit):
                failed.append(f"{metric}={value:.4g}")
        if not failed:
            return []
        run.failures += 1
        if run.failures < self.failures:
            return []
        run.done = True
        d = run.deploy
        incident = "ref-" + hashlib.sha1(f"{self.name}{d.service}{d.deploy_id}".encode()).hexdigest()[:12]
        return [Decision(ts=at, incident_id=incident, service=d.service, deploy_id=d.deploy_id, action="rollback",
                         from_version=d.version, to_version=d.previous_version, confidence=1.0,
                         reason=f"{self.name}: {run.failures} failed measurements ({', '.join(failed)})")]

    def finish(self) -> list[Decision]:
        return []


def argo_like() -> ThresholdAnalysis:
    return ThresholdAnalysis("argo-rollouts-like", failures=3)


def flagger_like() -> ThresholdAnalysis:
    return ThresholdAnalysis("flagger-like", failures=5)
