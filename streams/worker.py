"""``backout worker``: the Faust app that runs the core on the live topics.

Two stages, the same parts as the backtest (:class:`detectors.engine.Engine`):

* the metrics stage (:mod:`streams.metrics_stage`, on the keyed-state runtime :mod:`streams.runtime`) — metric samples
  (partitioned by service) through one :class:`~detectors.monitor.MetricMonitor`
  per (service, metric), read in batches with confluent-kafka in a thread of
  its own, state checkpointed to a compacted changelog. Anomalies go to
  ``backout.anomalies``; anomalies and event-time watermarks also go to the
  single-partition internal decider topic.
* Faust agents: ``forward_deploys`` puts validated deploy records on the
  decider topic; ``decide`` runs the :class:`~detectors.decider.Decider` on that
  one ordered stream, its state in the changelog-backed ``decider`` table.
  Decisions go to ``backout.actions``, human messages to ``backout.alerts``.

Agents only decode, call the core and send. Anything that fails validation or
that the core refuses goes to ``backout.deadletter`` with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import click
import faust

from backout.contracts import Deploy, Record, dead_letter, decode, encode
from backout.errors import BackoutError, ContractError
from backout.settings import KafkaSettings, WorkerSettings, load_config
from detectors.config import BackoutConfig
from detectors.decider import Decider
from streams import topics
from streams.metrics_stage import metrics_consumer
from streams.published import PublishedActions
from streams.runtime.store import StateStore
from streams.telemetry import Telemetry

log = logging.getLogger("backout.worker")
DECIDER_KEY = "decider"


def create_app(settings: WorkerSettings, kafka: KafkaSettings, config: BackoutConfig) -> faust.App:
    """Build the Faust app, its topics, tables, agents and web pages."""
    app = faust.App(
        settings.app_id, **kafka.faust(), store=settings.store, datadir=settings.data_dir,
        topic_partitions=settings.partitions, web_port=settings.web_port, web_host="127.0.0.1",
        web_in_thread=False, consumer_auto_offset_reset="earliest", broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0, table_cleanup_interval=3600.0, producer_linger=0.01,
        recovery_consistency_check=False,  # see the note below create_app
    )

    def raw_topic(name: str, partitions: int) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw", partitions=partitions)

    deploys_topic = raw_topic(topics.DEPLOYS, settings.partitions)
    decider_topic = raw_topic(topics.DECIDER, 1)
    outputs = {name: raw_topic(name, settings.partitions)
               for name in (topics.ANOMALIES, topics.ACTIONS, topics.ALERTS, topics.DEADLETTER)}
    live_decider: Decider | None = None  # the decider table's state, unpacked; forgotten at every rebalance
    decider_table = app.Table("decider", default=None, partitions=1)
    telemetry = Telemetry(app)
    stage = metrics_consumer(settings.app_id, settings.partitions, kafka, config, telemetry,
                             checkpoint_s=settings.checkpoint_s, idle_after_s=settings.idle_after_s,
                             state_ttl_s=settings.state_ttl_s, max_keys=settings.max_keys,
                             store=StateStore(Path(settings.data_dir) / f"{settings.app_id}-monitors.sqlite"))
    count_buffer_waits(telemetry)
    published = PublishedActions(kafka)

    async def send(record: Record, topic: str, wait: bool = False) -> None:
        key = getattr(record, "service", None)
        fut = await outputs.get(topic, decider_topic).send(
            key=key.encode() if key else None, value=encode(record))
        if wait:  # a decision must be on the broker before the state that says it was made
            await fut

    async def send_dead_letter(event: faust.EventT, reason: str) -> None:
        msg = event.message
        telemetry.dead_letter(msg.topic, reason)
        await outputs[topics.DEADLETTER].send(key=msg.key, value=encode(
            dead_letter(msg.value, reason, msg.topic, msg.partition, msg.offset, msg.timestamp)))

    def consumed(event: faust.EventT) -> None:
        msg = event.message
        telemetry.consumed(msg.topic, msg.partition, msg.offset + 1)

    @app.task
    async def start_metrics_stage() -> None:
        loop = asyncio.get_running_loop()

        def stop_worker(exc: BaseException) -> None:  # the stage failed: the worker must not go on without it
            asyncio.run_coroutine_threadsafe(app.crash(exc), loop)

        stage.on_failure = stop_worker
        stage.start()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # faust's stub wants a `signal` kwarg
    async def stop_metrics_stage(sender: Any, **_: Any) -> None:
        await asyncio.to_thread(stage.stop)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def forget_live_decider(sender: Any, revoked: Any, **_: Any) -> None:
        nonlocal live_decider
        live_decider = None  # another worker may own it next; the table is the truth
        published.forget()

    @app.agent(deploys_topic)
    async def forward_deploys(stream: Any) -> None:
        async for event in stream.events():
            consumed(event)
            try:
                deploy = decode(event.value, expect=Deploy)
            except ContractError as exc:
                await send_dead_letter(event, str(exc))
                continue
            await send(deploy, topics.DECIDER)

    @app.agent(decider_topic)
    async def decide(stream: Any) -> None:
        nonlocal live_decider
        async for event in stream.events():
            consumed(event)
            await published.load()  # before the first decision is due, not when it is
            try:
                record = decode(event.value)
                decider = live_decider
                if decider is None:
                    state = decider_table.get(DECIDER_KEY)
                    decider = Decider(config) if state is None else Decider.from_state(state, config)
                    live_decider = decider
                outputs_ = decider.handle(record)
            except (ContractError, BackoutError) as exc:
                live_decider = None  # it may have changed half-way: reload the table's state
                await send_dead_letter(event, str(exc))
                continue
            except Exception as exc:  # a bug in the core must not stop the stream, nor lose the record
                live_decider = None
                log.exception("decider failed on %s", event.message)
                await send_dead_letter(event, f"internal error: {exc!r}")
                continue
            for out in outputs_:
                if out.type == "decision":
                    if not await published.first_time(out):
                        continue
                    telemetry.decision(out)
                    await send(out, topics.ACTIONS, wait=True)
                elif out.type == "alert":
                    await send(out, topics.ALERTS)
            decider_table[DECIDER_KEY] = decider.to_state()

    @app.page("/metrics")
    async def prometheus_metrics(web: Any, request: Any) -> Any:
        body, content_type = telemetry.exposition()
        return web.bytes(body, content_type=content_type)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        """200 once the worker owns its partitions and has read their states back; 503 before
        that and during a rebalance (a load balancer or orchestrator waits)."""
        assigned: dict[str, list[int]] = {topics.METRICS: stage.assigned()}
        for tp in app.consumer.assignment():
            assigned.setdefault(tp.topic, []).append(tp.partition)
        ready = (stage.ready and app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
                 and not app.rebalancing
                 and not app.in_recovery)
        return web.json({"status": "ok" if ready else "starting", "app": settings.app_id,
                         "assigned": {t: sorted(ps) for t, ps in sorted(assigned.items())}},
                        status=200 if ready else 503)

    return app

# Note on recovery_consistency_check: after a kill -9 on the embedded broker, RocksDB's persisted
# changelog offset was seen one past the topic's last offset (as in faust-streaming/faust#158),
# and Faust's check then crash-looped the restarted worker. RocksDB already holds every value
# the changelog does, so skipping the check loses nothing; the kill -9 test covers the restart.


@click.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Policy and detector YAML (default: $BACKOUT_CONFIG or built-in defaults).")
@click.option("--partitions", type=click.IntRange(1, 1024),
              help="Partitions of the metrics and deploys topics (default: $BACKOUT_PARTITIONS or 8).")
@click.option("--store", help="Table store: rocksdb:// (durable, default) or memory://.")
@click.option("--data-dir", help="Where RocksDB tables live (default: .backout/worker).")
@click.option("--web-port", type=click.IntRange(1, 65535),
              help="Port of /metrics and /health on 127.0.0.1 (default 6066).")
@click.option("--app-id", help="Consumer group and table prefix; workers sharing it share the load.")
@click.option("--loglevel", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="Log level.")
def worker(config_path: str | None, partitions: int | None, store: str | None, data_dir: str | None,
           web_port: int | None, app_id: str | None, loglevel: str) -> None:
    """Run the stream processor on KAFKA_BOOTSTRAP_SERVERS until interrupted."""
    overrides: dict[str, Any] = {k: v for k, v in dict(partitions=partitions, store=store, data_dir=data_dir,
                                       web_port=web_port, app_id=app_id).items() if v is not None}
    settings = WorkerSettings(**overrides)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    config = load_config(config_path or settings.config)
    app = create_app(settings, KafkaSettings(), config)
    _short_fetch_wait()
    _Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()


def _short_fetch_wait() -> None:
    """Faust hard-codes aiokafka's fetch_max_wait_ms to 1.5 s. While the busy metrics partitions
    have records buffered, the next fetch asks only for the quiet decider partition, and the
    broker holds it that long: up to 1.5 s on every decision. 50 ms keeps decisions prompt."""
    from faust.transport.drivers import aiokafka as driver

    create = driver.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "backout", False):
        return

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = 50
        return consumer

    create_worker_consumer.backout = True  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def count_buffer_waits(telemetry: Telemetry) -> None:
    """Faust logs a warning for every event that finds its producer buffer full (an ordinary burst
    of table writes): count them on /metrics (backout_producer_buffer_waits) instead."""
    def count(record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("producer buffer full"):
            telemetry.backpressure()
            return False
        return True

    logging.getLogger("faust.transport.producer").addFilter(count)


class _Worker(faust.Worker):
    """Faust's worker without its terminal spinner, which sets the root logger to DEBUG: every
    library's debug call then builds a log record (a tenth of the worker's time, measured)."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        pass


if __name__ == "__main__":
    worker()
