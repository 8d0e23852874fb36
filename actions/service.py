"""``backout executor``: the Faust app that turns decisions into rollbacks, exactly once per incident.

One agent reads ``backout.actions``, ``backout.approvals``, ``backout.deploys`` and
``backout.verifications`` (co-partitioned: every producer keys them by service with murmur2, so a
service is on one partition number in each, and one replica of the consumer group owns all of it).
Each record goes through the approval gate of its service (:mod:`actions.gate`, pure), whose state
is the ``gate`` table, keyed by service; the service publishes the records the gate returns and
carries out its commands in background tasks, so the agent keeps reading:

* :class:`~actions.gate.Execute` — :mod:`actions.execution`: the ``executing`` verification is on
  the broker (acknowledged) before this starts; it checks the topic, asks the target if an earlier
  attempt may have acted, acts, and publishes ``executed`` / ``failed``, which come back through
  the topic to the gate.
* :class:`~actions.gate.Verify` — :mod:`actions.verifier`: the recovery test on ``backout.metrics``;
  ``verified`` / ``not_recovered`` (which escalates, never rolls back again).

A timer ticks the gates whose questions are due (approval timeouts). At every partition assignment
the gates of the owned services are resumed (:meth:`~actions.gate.ServiceGate.resume`): in-flight
rollbacks are checked on their target first, recovery tests start again. Records that are not
valid, tombstones, and decisions whose names would reach a command unchecked go to
``backout.deadletter`` with the reason. Everything the service publishes is keyed by service.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import click
import faust

from actions import web
from actions.execution import Result, before_acting, carry_out, history
from actions.executors import Registry
from actions.gate import Execute, Ignored, Output, ServiceGate, Tick, Verify, step
from actions.settings import ExecutorSettings
from actions.telemetry import ExecutorTelemetry
from actions.verifier import verify
from backout import names
from backout.contracts import (
    Alert,
    Approval,
    Decision,
    Deploy,
    Record,
    Verification,
    dead_letter,
    decode,
    encode,
)
from backout.errors import BackoutError, ConfigError, ContractError
from backout.settings import KafkaSettings, load_config
from detectors.config import BackoutConfig
from streams import topics

log = logging.getLogger("backout.executor")

EXPECT: dict[str, type[Record]] = {topics.ACTIONS: Decision, topics.APPROVALS: Approval,
                                   topics.DEPLOYS: Deploy, topics.VERIFICATIONS: Verification}
HISTORY_ATTEMPTS = 3  # reads of the verifications topic before a rollback is failed unchecked


class ExecutorService:
    """The adapter around the gate: decode, step, publish, carry out (see module doc)."""

    def __init__(self, app: faust.App, settings: ExecutorSettings, kafka: KafkaSettings, config: BackoutConfig,
                 registry: Registry) -> None:
        self.app = app
        self.settings = settings
        self.kafka = kafka
        self.specs = config.metrics
        self.registry = registry
        self.gate_settings = settings.gate()
        self.table = app.Table("gate", default=None, partitions=settings.partitions, key_type=bytes,
                               use_partitioner=True)
        # use_partitioner: the changelog record of a service goes where murmur2 puts its key, the partition
        # number of its records on every input topic, so the timer and the background tasks can step a gate
        # outside the agent's iteration (every input record is checked to be keyed by its service). Faust's
        # RocksDB store cannot be written outside an agent's iteration, so the table is in memory, read
        # back from its compacted changelog at every start: a few hundred bytes per service.
        self.outputs = {name: self._raw_topic(name)
                        for name in (topics.VERIFICATIONS, topics.ALERTS, topics.DEADLETTER)}
        self.inputs = app.topic(*EXPECT, key_type=bytes, value_type=bytes, key_serializer="raw",
                                value_serializer="raw", partitions=settings.partitions)
        self.telemetry = ExecutorTelemetry(self.pending)
        self.due: dict[bytes, float] = {}  # service -> when a tick changes something
        self.executing: dict[str, asyncio.Task[None]] = {}  # incident -> its rollback, in this process
        self.verifying: dict[str, threading.Event] = {}  # incident -> stops its recovery test
        self.decided_ts: dict[str, float] = {}  # incident -> its decision's ts, for the histograms
        self.origins: dict[str, tuple[int, int, float]] = {}  # incident -> its decision's partition, offset, ts

    def _raw_topic(self, name: str) -> faust.TopicT:
        return self.app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw", partitions=self.settings.partitions)

    # -- input ----------------------------------------------------------------------------------

    async def handle(self, event: faust.EventT) -> None:
        """One input record: validated, then through its service's gate."""
        msg = event.message
        self.telemetry.records.labels(msg.topic).inc()
        try:
            record, service = self._read(msg.topic, msg.key, event.value)
        except ContractError as exc:
            await self.refuse(msg.value, str(exc), msg.topic, msg.partition, msg.offset, msg.timestamp, msg.key)
            return
        if isinstance(record, Decision):
            self.origins[record.incident_id] = (msg.partition, msg.offset, msg.timestamp)
        await self.step(service, record, msg)

    def _read(self, topic: str, key: bytes | None, value: bytes | None) -> tuple[Record, str]:
        """The record and its service; :class:`ContractError` if either is not acceptable."""
        expect = EXPECT[topic]
        if value is None:
            raise ContractError(f"a tombstone (no value) on {topic}: expected a {expect.__name__.lower()} record")
        record = decode(value, expect=expect)
        keyed = key.decode("utf-8", "replace") if key is not None else None
        service = getattr(record, "service", None) or keyed
        if service is None:
            raise ContractError(f"a {record.type} record without a service and without a key: it cannot reach "
                                "the gate of its service")
        try:
            names.check("service", service)
        except ContractError as exc:
            raise ContractError(f"a {record.type} record: field 'service': {exc}; nothing was run") from None
        if keyed != service:
            raise ContractError(f"a {record.type} record of service {service!r} keyed by {keyed!r}: records must be "
                                "keyed by their service, so that the replica owning the service reads them")
        if isinstance(record, Decision) and record.action != "escalate":
            for field in ("from_version", "to_version"):
                version = getattr(record, field)
                if version is not None:
                    try:
                        names.check("version", version)
                    except ContractError as exc:
                        raise ContractError(f"decision {record.incident_id[:80]!r}: field {field!r}: {exc}; "
                                            "nothing was run") from None
        return record, service

    async def step(self, service: str, record: Record | Tick, source: Any = None) -> None:
        """``record`` (read from the message ``source``, if any) through the gate of ``service``;
        publish and carry out what it returns."""
        key = service.encode()
        state = self.table.get(key)
        try:
            new_state, outputs = step(state, record, self.gate_settings)  # type: ignore[arg-type]
        except BackoutError as exc:  # a record the gate refuses: never a crash of the agent
            log.warning("the gate of %s refused %s: %s", service, record, exc)
            if source is not None:
                await self.refuse(source.value, str(exc), source.topic, source.partition, source.offset,
                                  source.timestamp, source.key)
            return
        if new_state is not None:
            self.table[key] = new_state  # reassigned: the changelog records it
            due = ServiceGate.from_state(new_state, self.gate_settings).next_due_ts
            if due is None:
                self.due.pop(key, None)
            else:
                self.due[key] = due
        for out in outputs:
            await self.emit(service, out, record)

    async def emit(self, service: str, out: Output, cause: Record | Tick | None) -> None:
        if isinstance(out, Verification):
            if out == cause:
                return  # the gate hands back the verification it was fed: it is on the topic already
            await self.publish(topics.VERIFICATIONS, service, out, wait=out.status == "executing")
        elif isinstance(out, Alert):
            await self.publish(topics.ALERTS, service, out)
        elif isinstance(out, Execute):
            if out.rollback.incident_id not in self.executing:
                self.executing[out.rollback.incident_id] = asyncio.create_task(self.execute(service, out))
        elif isinstance(out, Verify):
            if out.incident_id not in self.verifying:
                stop = self.verifying[out.incident_id] = threading.Event()
                asyncio.create_task(self.verify(service, out, stop))
        elif isinstance(out, Ignored):
            self.telemetry.ignored.inc()
            log.info("%s: %s", out.incident_id, out.reason)

    # -- output ---------------------------------------------------------------------------------

    async def publish(self, topic: str, service: str, record: Record, wait: bool = False) -> None:
        """Send ``record`` keyed by ``service``; ``wait``: until the broker acknowledged it."""
        if self.settings.dry_run:
            log.warning("dry run: would publish to %s: %s", topic, encode(record).decode())
            return
        fut = await self.outputs[topic].send(key=service.encode(), value=encode(record))
        if wait:
            await fut

    async def refuse(self, raw: bytes | None, reason: str, topic: str, partition: int, offset: int,
                     ts: float, key: bytes | None) -> None:
        """A dead letter of ``raw`` (the record as it came) with the reason."""
        self.telemetry.dead_letters.labels(topic).inc()
        letter = dead_letter(raw, reason, topic, partition, offset, ts)
        if self.settings.dry_run:
            log.warning("dry run: would dead-letter %s: %s", letter.id, reason)
            return
        await self.outputs[topics.DEADLETTER].send(key=key, value=encode(letter))

    # -- background work -----------------------------------------------------------------------

    async def execute(self, service: str, order: Execute) -> None:
        rollback = order.rollback
        incident = rollback.incident_id
        self.decided_ts[incident] = rollback.decision.ts
        try:
            if self.settings.dry_run:
                await self._dry_run(service, order)
                return
            result = await self._carry_out(order)
            if result is None:
                return
            self.telemetry.executions.labels(rollback.target.kind, result.outcome).inc()
            if result.refusal is not None:
                partition, offset, ts = self.origins.get(incident, (-1, -1, rollback.decision.ts))
                await self.refuse(encode(rollback.decision), f"decision {incident}: {result.refusal}",
                                  topics.ACTIONS, partition, offset, ts, service.encode())
            await self.publish(topics.VERIFICATIONS, service, result.verification, wait=True)
            if result.verification.status == "executed":
                self.telemetry.to_executed.observe(max(0.0, time.time() - rollback.decision.ts))
            log.info("%s: %s: %s", incident, result.verification.status, result.verification.detail)
        except Exception:
            log.exception("the rollback of %s stopped unrecorded; it resumes at the next assignment", incident)
        finally:
            self.executing.pop(incident, None)

    async def _carry_out(self, order: Execute) -> Result | None:
        """The outcome to publish; ``None`` when an earlier attempt's is on the topic already."""
        rollback = order.rollback
        try:
            executor = self.registry.get(rollback.target.kind)
        except ConfigError as exc:
            return Result(Verification(ts=time.time(), incident_id=rollback.incident_id, status="failed",
                                       detail=str(exc)), "failed")
        records: list[Verification] | None = None
        for attempt in range(HISTORY_ATTEMPTS):
            try:
                records = await asyncio.to_thread(history, self.kafka, topics.VERIFICATIONS, rollback.incident_id)
                break
            except BackoutError as exc:
                log.warning("reading %s before acting on %s (attempt %d): %s", topics.VERIFICATIONS,
                            rollback.incident_id, attempt + 1, exc)
                await asyncio.sleep(2.0 * (attempt + 1))
        if records is None:
            return Result(Verification(ts=time.time(), incident_id=rollback.incident_id, status="failed",
                                       detail=f"could not read {topics.VERIFICATIONS} to check whether this rollback "
                                              "ran already; nothing was done"), "failed")
        what, closed = before_acting(records, order.resume)
        if what == "done" and closed is not None:
            log.info("%s: %s already recorded; nothing to do", rollback.incident_id, closed.status)
            await self.step(rollback.service, closed)
            return None
        return await asyncio.to_thread(carry_out, rollback, executor, what)

    async def _dry_run(self, service: str, order: Execute) -> None:
        rollback = order.rollback
        try:
            steps = self.registry.get(rollback.target.kind).plan(rollback)
        except BackoutError as exc:
            steps = [f"nothing: it would fail: {exc}"]
        self.telemetry.executions.labels(rollback.target.kind, "dry_run").inc()
        log.warning("dry run: %s: would roll %s back from %s to %s on %s:\n  %s", rollback.incident_id, service,
                    rollback.from_version, rollback.to_version, rollback.target.kind, "\n  ".join(steps))
        await self.step(service, Verification(ts=time.time(), incident_id=rollback.incident_id, status="executed",
                                              detail="dry run: nothing was done"))

    async def verify(self, service: str, order: Verify, stop: threading.Event) -> None:
        try:
            if self.settings.dry_run:
                log.warning("dry run: would test the recovery of %s (%s) for %.0f s after the rollback",
                            service, ", ".join(b.metric for b in order.blamed), order.within_s)
                return
            verdict = await asyncio.to_thread(verify, order, self.kafka, self.specs,
                                              self.settings.verify_lateness_s, stop)
            if verdict is None or stop.is_set():
                return  # another replica owns the service now; it starts the test again
            await self.publish(topics.VERIFICATIONS, service, verdict, wait=True)
            self.telemetry.verdicts.labels(verdict.status).inc()
            decided = self.decided_ts.pop(order.incident_id, None)
            if decided is not None:
                self.telemetry.to_verified.observe(max(0.0, time.time() - decided))
            log.info("%s: %s: %s", order.incident_id, verdict.status, verdict.detail)
        except Exception:
            log.exception("the recovery test of %s stopped; it resumes at the next assignment", order.incident_id)
        finally:
            if self.verifying.get(order.incident_id) is stop:
                del self.verifying[order.incident_id]

    # -- time and partitions --------------------------------------------------------------------

    async def tick(self) -> None:
        now = time.time()
        for key, due in sorted(self.due.items()):
            if due <= now:
                await self.step(key.decode(), Tick(now))

    def revoked(self) -> None:
        """Partitions are moving: stop the recovery tests (the next owner starts them again) and
        forget what is due; rollbacks in flight finish (they are idempotent on the target)."""
        for stop in self.verifying.values():
            stop.set()
        self.verifying.clear()
        self.due.clear()

    async def resume(self) -> None:
        """The table holds the owned services again: resume what they were doing."""
        for key, state in list(self.table.items()):
            if state is None:
                continue
            gate = ServiceGate.from_state(state, self.gate_settings)
            if (due := gate.next_due_ts) is not None:
                self.due[key] = due
            for out in gate.resume():
                log.info("resuming %s", out)
                await self.emit(gate.service, out, None)

    # -- web ------------------------------------------------------------------------------------

    def pending(self) -> int:
        return sum(inc.get("phase") == "asking" for _, state in list(self.table.items()) if state
                   for inc in state["incidents"].values())

    def health(self) -> dict[str, Any]:
        assigned: dict[str, list[int]] = {}
        for tp in self.app.consumer.assignment():
            assigned.setdefault(tp.topic, []).append(tp.partition)
        return {"status": "ok", "app": self.settings.group, "dry_run": self.settings.dry_run,
                "targets": list(self.registry.kinds), "executing": sorted(self.executing),
                "verifying": sorted(self.verifying), "assigned": {t: sorted(p) for t, p in sorted(assigned.items())}}


def create_app(settings: ExecutorSettings, kafka: KafkaSettings, config: BackoutConfig,
               registry: Registry) -> faust.App:
    """Build the Faust app: the gate table, the agent, the timer, the signals and the web pages."""
    app = faust.App(
        settings.group, **kafka.faust(), store="memory://", datadir=settings.data_dir,
        topic_partitions=settings.partitions, web_port=settings.web_port, web_host=settings.web_host,
        web_in_thread=False, consumer_auto_offset_reset="earliest", broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0, producer_linger=0.0, table_cleanup_interval=3600.0,
        recovery_consistency_check=False,  # as the worker's: see the note in streams/worker.py
    )
    service = ExecutorService(app, settings, kafka, config, registry)

    @app.agent(service.inputs)
    async def gate(stream: Any) -> None:
        async for event in stream.events():
            await service.handle(event)

    @app.timer(settings.tick_s)
    async def tick() -> None:
        await service.tick()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # faust's stub wants a `signal` kwarg
    async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        service.revoked()

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, **_: Any) -> None:
        await service.resume()

    token = settings.api_token
    web.register(app, kafka, lambda: token.get_secret_value() if token is not None else None,
                 settings.approval_timeout_s, service.telemetry.exposition, service.health)
    return app


@click.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="The worker's YAML, for the metric specs of the recovery test (default: $BACKOUT_CONFIG).")
@click.option("--partitions", type=click.IntRange(1, 1024),
              help="Partitions of the actions, approvals, deploys and verifications topics ($BACKOUT_PARTITIONS, 8).")
@click.option("--data-dir", help="Faust's data directory ($BACKOUT_EXECUTOR_DATA_DIR, .backout/executor).")
@click.option("--web-port", type=click.IntRange(1, 65535),
              help="Port of the approve/deny pages, /metrics and /health ($BACKOUT_EXECUTOR_WEB_PORT, 6067).")
@click.option("--web-host", help="Address the web port binds ($BACKOUT_EXECUTOR_WEB_HOST, 127.0.0.1).")
@click.option("--app-id", help="Consumer group; replicas sharing it share the partitions ($BACKOUT_EXECUTOR_APP_ID).")
@click.option("--targets", help="Target kinds to act on, comma-separated ($BACKOUT_EXECUTOR_TARGETS, all).")
@click.option("--dry-run", is_flag=True, default=None,
              help="Log what each rollback would do and touch no target; publish nothing ($BACKOUT_DRY_RUN).")
@click.option("--loglevel", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="Log level.")
def executor(config_path: str | None, partitions: int | None, data_dir: str | None,
             web_port: int | None, web_host: str | None, app_id: str | None, targets: str | None,
             dry_run: bool | None, loglevel: str) -> None:
    """Run the rollback executor on KAFKA_BOOTSTRAP_SERVERS until interrupted."""
    given: dict[str, Any] = dict(partitions=partitions, data_dir=data_dir, web_port=web_port, web_host=web_host,
                 app_id=app_id, targets=targets, dry_run=dry_run, config=config_path)
    try:
        settings = ExecutorSettings(**{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        raise ConfigError(f"executor settings: {exc}") from None
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    config = load_config(settings.config)
    app = create_app(settings, KafkaSettings(), config, Registry(settings.targets))
    if settings.dry_run:
        log.warning("dry run: consumer group %s; no target is touched and nothing is published", settings.group)
    _Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()


class _Worker(faust.Worker):
    """Faust's worker without its terminal spinner (which sets the root logger to DEBUG)."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        pass
