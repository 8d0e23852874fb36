"""``backout ingest``: a file, the HTTP receiver, or the Prometheus bridge.

``backout ingest FILE.jsonl`` still works: a first argument that is not a
subcommand is the file of ``backout ingest file``.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import click

from backout.settings import KafkaSettings
from streams.feeds.publish import MAX_BUFFERED, Publisher
from streams.ingest import ingest as ingest_file


class _FileByDefault(click.Group):
    """A group whose first argument, when it names no subcommand, is a file for ``file``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["file", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_FileByDefault, invoke_without_command=False)
def ingest() -> None:
    """Put metric and deploy records on their topics: from a file, an HTTP receiver, or Prometheus.

    `backout ingest FILE.jsonl` is `backout ingest file FILE.jsonl`.
    """


ingest.add_command(ingest_file, name="file")

_buffer = click.option("--buffer-records", default=MAX_BUFFERED, show_default=True, type=click.IntRange(1),
                       envvar="BACKOUT_INGEST_BUFFER_RECORDS",
                       help="Records held while the broker is away (about 300 bytes each); then writes get 503.")


@ingest.command("http")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), envvar="BACKOUT_INGEST_CONFIG",
              help="YAML mapping of OTLP, remote write, GitHub and Argo CD to services (see the README).")
@_buffer
def http(host: str, port: int, config_path: str | None, buffer_records: int) -> None:
    """Receive records, OTLP metrics, remote write and deploy webhooks over HTTP.

    Paths: POST /records, /v1/metrics, /api/v1/write, /webhooks/github,
    /webhooks/argocd; GET /health, /metrics. BACKOUT_INGEST_TOKEN (bearer on
    every write path), GITHUB_WEBHOOK_SECRET and BACKOUT_INGEST_MAX_BODY_BYTES
    configure it.
    """
    from aiohttp import web

    from streams.feeds.receiver import ReceiverSettings, application, load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config, settings = load_config(config_path), ReceiverSettings()
    publisher = Publisher.connect(KafkaSettings(), buffer_records)
    try:
        web.run_app(application(publisher, config, settings), host=host, port=port, print=None,
                    handle_signals=True)
    finally:
        publisher.close()


@ingest.command("prometheus")
@click.option("--prometheus-url", required=True, envvar="BACKOUT_PROMETHEUS_URL",
              help="Base URL of Prometheus, e.g. http://prometheus:9090.")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="YAML file of queries (examples/prometheus-bridge.yaml).")
@click.option("--state", "state_path", type=click.Path(dir_okay=False), default="prometheus-bridge.state.json",
              show_default=True, envvar="BACKOUT_BRIDGE_STATE",
              help="Where the last published evaluation time of each query is kept across restarts.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), help="Serve the bridge's counts on this port.")
@_buffer
def prometheus(prometheus_url: str, config_path: str, state_path: str, metrics_port: int | None,
               buffer_records: int) -> None:
    """Evaluate declared PromQL queries on their intervals and publish the samples."""
    from prometheus_client import start_http_server

    from streams.feeds.bridge import Bridge, State, instant_query
    from streams.feeds.prometheus import load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(config_path)
    publisher = Publisher.connect(KafkaSettings(), buffer_records)
    if metrics_port:
        start_http_server(metrics_port, registry=publisher.counts.registry)
    stop = threading.Event()

    def stopping(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    click.echo(f"bridging {len(config.queries)} queries from {prometheus_url}", err=True)
    try:
        Bridge(config, instant_query(prometheus_url), publisher, State(Path(state_path))).run(stop)
    finally:
        publisher.close()
