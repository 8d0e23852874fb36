"""The whole core in one process: what ``backout backtest`` runs.

The live worker composes the same parts across Kafka (see ``streams/worker.py``):
one :class:`~detectors.monitor.MetricMonitor` per (service, metric) and a
:class:`~detectors.watermark.PartitionClock` per metrics partition in stage 1,
one :class:`~detectors.decider.Decider` in stage 2. A deploy record goes to
the decider and to every monitor of its service, which opens its
deploy-anchored test (:mod:`detectors.anchored`). Here there is one
partition (0) and the stages are plain calls, in the same order as the
worker's agents make them: the anomaly reaches the decider before the
watermark of the sample that raised it. The same event-time rules refuse a
sample far ahead of the partition's time, or a new stream's far behind it
(:meth:`~detectors.watermark.PartitionClock.admit`); with no Kafka timestamp
here, the file's first sample sets the time.
"""

from __future__ import annotations

from backout.contracts import Alert, Anomaly, Decision, Deploy, Metric, Record
from backout.errors import UnexpectedRecord
from detectors.config import BackoutConfig
from detectors.decider import Decider
from detectors.monitor import MetricMonitor
from detectors.watermark import PartitionClock

Output = Anomaly | Decision | Alert


def require_input(record: Record) -> Metric | Deploy:
    """The record, if it is one the core takes as input; :class:`~backout.errors.UnexpectedRecord` if not."""
    if not isinstance(record, Metric | Deploy):
        raise UnexpectedRecord(f"expected a metric or deploy record, got {getattr(record, 'type', None)!r}")
    return record


class Engine:
    """Metric samples and deploy records in; anomalies, decisions and alerts out."""

    def __init__(self, config: BackoutConfig) -> None:
        self.config = config
        self.decider = Decider(config)
        self._clock = PartitionClock(0, config.watermark_interval_s, 1, config.max_future_skew_s, config.max_lateness_s)
        self._monitors: dict[tuple[str, str], MetricMonitor] = {}
        self._metrics: dict[str, list[str]] = {}  # service -> its monitored metrics, for deploy anchors

    def feed(self, record: Record) -> list[Output]:
        """Process one input record; raises :class:`~backout.errors.SampleRejected` for records the core refuses.

        Only metric and deploy records are taken (:class:`~backout.errors.UnexpectedRecord`),
        metrics of the configuration only (:class:`~backout.errors.UnknownMetric`).
        """
        record = require_input(record)
        if isinstance(record, Deploy):
            return self._deploy(record)
        key = (record.service, record.metric)
        monitor = self._monitors.get(key)
        if monitor is None:
            monitor = MetricMonitor(record.service, record.metric, self.config.require_spec(record.metric))
        # no Kafka timestamp here: the first sample sets the time (see detectors.watermark)
        self._clock.admit(record.ts, record.service, record.metric, new_stream=key not in self._monitors)
        anomaly = monitor.update(record)  # DuplicateSample / OutOfOrderSample propagate
        if key not in self._monitors:
            self._metrics.setdefault(record.service, []).append(record.metric)
        self._monitors[key] = monitor
        out: list[Output] = []
        if anomaly is not None:
            out.append(anomaly)
            out += self.decider.handle(anomaly)
        if monitor.warmed_up:
            self._clock.establish(record.service)
        mark = self._clock.observe(record.ts)
        if mark is not None:
            out += self.decider.handle(mark)
        return out

    def _deploy(self, deploy: Deploy) -> list[Output]:
        """To the decider, and to the monitors of the service: each opens its anchored test."""
        out: list[Output] = list(self.decider.handle(deploy))
        if deploy.status not in ("started", "finished") or deploy.version == deploy.previous_version:
            return out
        finished = deploy.ts if deploy.status == "finished" else None
        for metric in self._metrics.get(deploy.service, ()):
            anomaly = self._monitors[(deploy.service, metric)].anchor(deploy.deploy_id, deploy.ts, finished)
            if anomaly is not None:
                out.append(anomaly)
                out += self.decider.handle(anomaly)
        return out

    def finish(self) -> list[Output]:
        """Flush the last watermark. Candidates not yet due stay undecided, as they would live."""
        mark = self._clock.flush()
        return list(self.decider.handle(mark)) if mark is not None else []
