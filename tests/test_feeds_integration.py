"""The feeds with their real senders, publishing to the real broker: the OpenTelemetry SDK
exporter, a real Prometheus (scraped app, remote write, the bridge), recorded GitHub and Argo CD
deliveries, the exporter helper; and a 15 s broker outage during a feed loses no sample."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from backout.contracts import decode
from backout.exporter import Reporter
from backout.settings import KafkaSettings
from streams import topics
from streams.admin import create_topics
from streams.broker import EmbeddedBroker, free_port, wait_for_port
from streams.feeds.bridge import Bridge, State, instant_query
from streams.feeds.prometheus import load_config
from streams.feeds.publish import Publisher
from streams.feeds.receiver import ReceiverConfig, ReceiverSettings, application
from streams.topics import specs

pytestmark = pytest.mark.integration
PAYLOADS = Path(__file__).parent / "payloads"
EXAMPLE = Path(__file__).parent.parent / "examples" / "prometheus-bridge.yaml"
TOKEN = "t0ken"
SECRET = "gh-s3cret"


class Served:
    """The receiver's aiohttp application on a free port, in a thread of its own."""

    def __init__(self, app: web.Application) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def receiver(settings: KafkaSettings, max_buffered: int = 100_000, config: ReceiverConfig | None = None,
             **env: str) -> tuple[Served, Publisher]:
    publisher = Publisher.connect(settings, max_buffered)
    receiver_settings = ReceiverSettings.model_validate(
        {"BACKOUT_INGEST_TOKEN": TOKEN, "GITHUB_WEBHOOK_SECRET": SECRET, **env})
    return Served(application(publisher, config or ReceiverConfig(), receiver_settings)), publisher


def post(url: str, body: bytes, headers: dict[str, str] | None = None, token: str | None = TOKEN,
         content_type: str = "application/json") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def records_on(settings: KafkaSettings, topic: str, timeout_s: float = 30.0) -> list[dict]:
    """Every record of ``topic``, read until each partition reports its end. (Not
    ``streams.kafka.read_to_end``: the embedded tansu answers ListOffsets with the last batch's
    base offset + 1, so the end it finds misses the rest of a multi-record batch.)"""
    cons = Consumer(settings.confluent(**{"group.id": f"feeds-test-{uuid.uuid4().hex[:8]}",
                                          "enable.partition.eof": True, "enable.auto.commit": False}))
    try:
        meta = cons.list_topics(topic, timeout=timeout_s).topics[topic]
        cons.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        open_partitions, got = set(meta.partitions), []
        deadline = time.monotonic() + timeout_s
        while open_partitions and time.monotonic() < deadline:
            for msg in cons.consume(1000, 0.5):
                error = msg.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard(msg.partition())
                elif error is None:
                    got.append(json.loads(msg.value()))
        return got
    finally:
        cons.close()


def on_topic(settings: KafkaSettings, topic: str, keep: Callable[[dict], bool], expect: int,
             timeout_s: float = 60.0) -> list[dict]:
    """The records of ``topic`` that ``keep`` selects, once there are ``expect`` of them (or the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = [v for v in records_on(settings, topic) if keep(v)]
        if len(got) >= expect or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def settings(kafka: KafkaSettings) -> KafkaSettings:
    create_topics(kafka, specs(2))
    return kafka


@pytest.fixture
def served(settings) -> Iterator[tuple[Served, Publisher]]:
    server, publisher = receiver(settings)
    yield server, publisher
    server.stop()
    publisher.close()


def test_records_endpoint_keeps_the_valid_records_and_names_each_bad_one(settings, served, unique):
    server, _ = served
    service = f"rec-{unique}"
    good = [{"type": "metric", "ts": 1.7e9 + i, "service": service, "metric": "requests", "value": i}
            for i in range(3)]
    body = "\n".join([json.dumps(good[0]), '{"type":"metric","ts":"soon","service":"x","metric":"m","value":1}',
                      json.dumps(good[1]), json.dumps(good[2])]).encode()
    status, answer = post(f"{server.url}/records", body)
    assert status == 400
    refused = json.loads(answer)
    assert refused["accepted"] == 3
    assert refused["refused"][0]["where"] == "line 2"
    assert "field 'ts': got 'soon', expected a valid number" in refused["refused"][0]["reason"]
    got = on_topic(settings, topics.METRICS, lambda v: v.get("service") == service, 3)
    assert sorted(v["value"] for v in got) == [0, 1, 2]
    dead = on_topic(settings, topics.DEADLETTER, lambda v: "'soon'" in v["reason"] and v["topic"].startswith(
        "http:/records"), 1)
    assert dead and dead[0]["value"] == '{"type":"metric","ts":"soon","service":"x","metric":"m","value":1}'


def test_write_paths_need_the_token_and_refuse_big_bodies(settings, unique):
    server, publisher = receiver(settings, BACKOUT_INGEST_MAX_BODY_BYTES="4096")
    try:
        record = json.dumps({"type": "metric", "ts": 1.7e9, "service": f"auth-{unique}", "metric": "m", "value": 1})
        for path in ("/records", "/v1/metrics", "/api/v1/write", "/webhooks/argocd"):
            assert post(server.url + path, record.encode(), token=None)[0] == 401, path
            assert post(server.url + path, record.encode(), token="wrong")[0] == 401, path
        assert post(f"{server.url}/records", b"\n" * 5000)[0] == 413
        squeezed = gzip.compress((record + "\n" + " " * 8000).encode())  # small on the wire, big inside
        assert post(f"{server.url}/records", squeezed, {"Content-Encoding": "gzip"})[0] == 413
        assert post(f"{server.url}/records", gzip.compress(record.encode()), {"Content-Encoding": "gzip"})[0] == 200
        assert on_topic(settings, topics.METRICS, lambda v: v.get("service") == f"auth-{unique}", 1)
        assert publisher.counts.value("backout_feed_records_total", source="http:/records", type="metric") == 1
    finally:
        server.stop()
        publisher.close()


def github_delivery(server: Served, body: bytes, delivery: str, secret: str = SECRET) -> tuple[int, bytes]:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return post(f"{server.url}/webhooks/github", body, token=None, headers={
        "X-GitHub-Event": "deployment_status", "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": signature})


def test_github_deliveries_are_verified_deduped_and_published(settings, served, unique):
    server, publisher = served
    data = json.loads((PAYLOADS / "github-deployment_status-success.json").read_bytes())
    data["repository"]["name"] = f"gh-{unique}"
    body = json.dumps(data).encode()
    assert github_delivery(server, body, f"d1-{unique}", secret="not-the-secret")[0] == 401
    assert post(f"{server.url}/webhooks/github", body, token=None, headers={"X-GitHub-Event": "deployment_status"})[0] \
        == 401
    assert github_delivery(server, body, f"d1-{unique}")[0] == 200
    status, answer = github_delivery(server, body, f"d1-{unique}")  # GitHub's "redeliver"
    assert status == 200 and json.loads(answer)["duplicate"] == f"d1-{unique}"
    got = on_topic(settings, topics.DEPLOYS, lambda v: v.get("service") == f"gh-{unique}", 2, timeout_s=8)
    assert [(v["version"], v["status"], v["deploy_id"]) for v in got] == [("v2.15.1", "finished", "github-1894733021")]
    assert publisher.counts.value("backout_feed_skipped_total", source="http:/webhooks/github",
                                  reason="redelivery") == 1


def test_argocd_notifications_are_published(settings, unique):
    config = ReceiverConfig.model_validate({"argocd": {"rules": [{"app": "checkout", "service": f"argo-{unique}",
                                                                  "target": {"kind": "kubernetes", "namespace": "shop",
                                                                             "name": "checkout"}}]}})
    server, publisher = receiver(settings, config=config)
    try:
        for name in ("argocd-on-sync-running.json", "argocd-on-deployed.json"):
            assert post(f"{server.url}/webhooks/argocd", (PAYLOADS / name).read_bytes())[0] == 200
        got = on_topic(settings, topics.DEPLOYS, lambda v: v.get("service") == f"argo-{unique}", 2)
        assert [(v["status"], v["target"]["kind"]) for v in got] == [("started", "kubernetes"),
                                                                    ("finished", "kubernetes")]
        assert len({v["deploy_id"] for v in got}) == 1
    finally:
        server.stop()
        publisher.close()


def test_the_opentelemetry_sdk_exporter_feeds_the_receiver(settings, served, unique):
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import Resource

    server, _ = served
    service = f"otel-{unique}"
    exporter = OTLPMetricExporter(endpoint=f"{server.url}/v1/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=1000)
    provider = MeterProvider(resource=Resource.create({"service.name": service}), metric_readers=[reader], views=[
        View(instrument_name="http.server.request.duration",
             aggregation=ExplicitBucketHistogramAggregation([0.01, 0.05, 0.1, 0.5, 1.0]))])
    meter = provider.get_meter("checkout")
    duration = meter.create_histogram("http.server.request.duration", unit="s")
    queue = meter.create_up_down_counter("queue.depth")
    queue.add(4)
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            for i in range(20):  # 1 in 10 fails; failures are slow (0.2-0.5 s), the rest quick
                code = 500 if i % 10 == 0 else 200
                duration.record(0.3 if code == 500 else 0.02, {"http.response.status_code": code})
            time.sleep(0.1)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        got = on_topic(settings, topics.METRICS, lambda v: v.get("service") == service and v["metric"] == "error_rate",
                       3, timeout_s=60)
    finally:
        stop.set()
        thread.join()
        provider.shutdown()
    assert len(got) >= 3
    assert all(v["value"] == pytest.approx(0.1, abs=0.051) and v["count"] > 0 for v in got)
    everything = on_topic(settings, topics.METRICS, lambda v: v.get("service") == service, 1)
    by_metric: dict[str, list[dict]] = {}
    for v in everything:
        by_metric.setdefault(v["metric"], []).append(v)
    assert {"requests", "error_rate", "latency_p95", "queue_depth"} <= set(by_metric)
    assert all(0.1 < v["value"] <= 0.5 for v in by_metric["latency_p95"])  # p95 among the slow failures
    assert all(v["value"] == 4 for v in by_metric["queue_depth"])


class App:
    """A local HTTP app instrumented with prometheus_client, serving two services' traffic."""

    def __init__(self, services: list[str]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests", "Requests", ["service", "code"], registry=self.registry)
        self.duration = Histogram("http_request_duration_seconds", "Latency", ["service"], registry=self.registry,
                                  buckets=[0.01, 0.05, 0.1, 0.5, 1.0])
        self.port = free_port()
        self.server, self._thread = start_http_server(self.port, "127.0.0.1", registry=self.registry)
        self.services = services
        for service in services:  # a series for 5xx from the start, as an app that counts them has
            self.requests.labels(service, "500")
        self._stop = threading.Event()
        self._traffic = threading.Thread(target=self._run, daemon=True)
        self._traffic.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for n, service in enumerate(self.services):
                for i in range(10):  # the first service fails 1 in 10, the second never
                    failed = n == 0 and i == 0
                    self.requests.labels(service, "500" if failed else "200").inc()
                    self.duration.labels(service).observe(0.2 if failed else 0.02)
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()


class Prometheus:
    """The Debian package's Prometheus, with its own config, data dir and port."""

    def __init__(self, tmp: Path, app_port: int, remote_write_url: str | None = None) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed: make system-deps (apt-get install prometheus)"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (tmp / "rules.yml").write_text(json.dumps({"groups": [{"name": "backout", "interval": "1s", "rules": [
            {"record": "backout:error_rate",
             "expr": 'sum by (service) (rate(http_requests_total{code=~"5.."}[10s])) '
                     "/ sum by (service) (rate(http_requests_total[10s]))"},
            {"record": "backout:requests", "expr": "sum by (service) (rate(http_requests_total[10s]))"},
        ]}]}))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "external_labels": {"via": "remote"}},
            "rule_files": [str(tmp / "rules.yml")],
            "scrape_configs": [{"job_name": "shop", "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}]}],
        }
        if remote_write_url:
            config["remote_write"] = [{
                "url": remote_write_url,
                "authorization": {"credentials": TOKEN},
                "write_relabel_configs": [{"source_labels": ["__name__"], "regex": "backout:.*", "action": "keep"}],
                "queue_config": {"batch_send_deadline": "1s", "min_backoff": "100ms", "max_backoff": "1s"},
            }]
        (tmp / "prometheus.yml").write_text(json.dumps(config))
        self.log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115  # closed in stop()
        self.process = subprocess.Popen(
            [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log, stderr=subprocess.STDOUT)
        assert wait_for_port("127.0.0.1", self.port, 60), "prometheus did not start"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def test_a_real_prometheus_remote_writes_to_the_receiver(settings, served, tmp_path, unique):
    server, publisher = served
    services = [f"rw-a-{unique}", f"rw-b-{unique}"]
    app = App(services)
    prometheus = Prometheus(tmp_path, app.port, f"{server.url}/api/v1/write")
    try:
        got = on_topic(settings, topics.METRICS, lambda v: v.get("service") == services[0]
                       and v["metric"] == "error_rate" and v["labels"].get("via") == "remote", 5, timeout_s=90)
        rates = on_topic(settings, topics.METRICS, lambda v: v.get("service") == services[1]
                         and v["metric"] == "error_rate" and v["labels"].get("via") == "remote", 3)
    finally:
        prometheus.stop()
        app.stop()
    assert len(got) >= 5
    assert all(v["value"] == pytest.approx(0.1, abs=0.03) for v in got[2:])  # the first evaluations see little
    assert len(rates) >= 3 and all(v["value"] == 0 for v in rates)
    assert publisher.counts.value("backout_feed_records_total", source="http:/api/v1/write", type="metric") >= 5


def test_the_bridge_publishes_the_example_queries_once_per_time_across_a_restart(settings, tmp_path, unique):
    services = [f"br-a-{unique}", f"br-b-{unique}"]
    app = App(services)
    prometheus = Prometheus(tmp_path, app.port)
    example = load_config(EXAMPLE)
    config = example.model_copy(update={"interval_s": 2.0, "queries": [
        q.model_copy(update={"interval_s": None}) for q in example.queries]})
    state = tmp_path / "bridge.json"
    publisher = Publisher.connect(settings)

    def run_for(seconds: float) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=Bridge(config, instant_query(prometheus.url), publisher,
                                                State(state)).run, args=(stop,))
        thread.start()
        time.sleep(seconds)
        stop.set()
        thread.join(30)

    def published() -> list[dict]:
        return [v for v in records_on(settings, topics.METRICS) if v.get("service") in services and v["metric"] in ("error_rate", "latency_p95", "requests")]

    try:
        wait_for(lambda: json.loads(urllib.request.urlopen(
            f"{prometheus.url}/api/v1/query?query=sum(increase(http_requests_total[10s]))").read())
            ["data"]["result"], 60, "prometheus to scrape the app")
        run_for(8)
        time.sleep(5)  # the bridge is down: the times it misses are caught up after the restart
        run_for(8)
        got = published()
    finally:
        publisher.close()
        prometheus.stop()
        app.stop()
    keys = [(v["service"], v["metric"], v["ts"]) for v in got]
    assert len(keys) == len(set(keys)), "an evaluation time was published twice"
    for service in services:
        times = sorted(ts for s, m, ts in keys if s == service and m == "requests")
        assert len(times) >= 8 and all(t % 2 == 0 for t in times)
        assert [b - a for a, b in zip(times, times[1:], strict=False)] == [2.0] * (len(times) - 1), \
            f"a gap in {service}'s times (the restart's must be caught up): {times}"
    errors = {v["service"]: v for v in got if v["metric"] == "error_rate"}
    assert errors[services[0]]["value"] == pytest.approx(0.1, abs=0.03) and errors[services[0]]["count"] > 0
    assert errors[services[1]]["value"] == 0
    p95 = [v["value"] for v in got if v["metric"] == "latency_p95" and v["service"] == services[0]]
    assert p95 and all(0.1 < v <= 0.5 for v in p95[-3:])  # 10% are 0.2 s: the p95 lies in (0.1, 0.5]
    assert json.loads(state.read_text()).keys() == {q.key for q in config.queries}


def test_the_reporter_publishes_a_services_requests(settings, unique):
    service = f"rep-{unique}"
    reporter = Reporter(service=service, interval_s=1.0, settings=settings)
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        for i in range(20):
            reporter.observe_request(ok=i >= 2, latency_s=0.5 if i < 2 else 0.01)  # 10% fail, slowly
        time.sleep(0.05)
    reporter.close()
    got = on_topic(settings, topics.METRICS, lambda v: v.get("service") == service, 6)
    errors = [v for v in got if v["metric"] == "error_rate"]
    assert len(errors) >= 3 and all(v["value"] == pytest.approx(0.1) and v["count"] % 20 == 0 for v in errors)
    assert all(v["value"] == pytest.approx(0.5, rel=0.02) for v in got if v["metric"] == "latency_p95")
    assert reporter.dropped == 0


def test_a_15_s_broker_outage_during_a_feed_loses_no_sample(tmp_path, unique):
    """A sender posts batches all along; the broker stops answering for 15 s; the buffer fills,
    the receiver answers 503, the sender retries as Prometheus would: every sample arrives."""
    with EmbeddedBroker() as broker:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
        create_topics(settings, specs(2))
        server, publisher = receiver(settings, max_buffered=2_000)
        sent, refused_503 = 0, 0
        outage = threading.Thread(target=lambda: (time.sleep(3), os.kill(broker._process.pid, signal.SIGSTOP),
                                                  time.sleep(15), os.kill(broker._process.pid, signal.SIGCONT)))
        try:
            outage.start()
            start = time.monotonic()
            batch = 0
            while time.monotonic() - start < 25:
                body = "\n".join(json.dumps({"type": "metric", "ts": 1.7e9 + batch * 100 + i, "service": "checkout",
                                             "metric": "requests", "value": batch}) for i in range(100)).encode()
                while True:
                    status, _ = post(f"{server.url}/records", body)
                    if status != 503:
                        break
                    refused_503 += 1
                    time.sleep(0.5)
                assert status == 200
                sent += 100
                batch += 1
                time.sleep(0.05)
            outage.join()
            wait_for(lambda: publisher.buffered == 0, 120, "the buffer to drain after the outage")
            got = [decode(json.dumps(v)) for v in records_on(settings, topics.METRICS)]
        finally:
            server.stop()
            publisher.close()
    assert refused_503 > 0, "the outage should have filled the 2,000-record buffer"
    assert len({r.ts for r in got}) == sent
    assert publisher.counts.value("backout_feed_dropped_total", source="http:/records", reason="buffer full") > 0


def test_ingest_file_still_works_as_before_and_deploy_event_takes_typed_targets(settings, tmp_path, unique,
                                                                               monkeypatch):
    from click.testing import CliRunner

    from backout.cli import cli

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    feed = tmp_path / "feed.jsonl"
    feed.write_text(json.dumps({"type": "metric", "ts": 1.7e9, "service": f"file-{unique}", "metric": "requests",
                                "value": 3}) + "\n")
    for args in (["ingest", str(feed)], ["ingest", "file", str(feed)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
    assert len(on_topic(settings, topics.METRICS, lambda v: v.get("service") == f"file-{unique}", 2)) == 2
    result = CliRunner().invoke(cli, ["deploy-event", "--service", f"dep-{unique}", "--version", "v2",
                                      "--target", "kubernetes", "--namespace", "shop", "--name", "checkout",
                                      "--container", "app"])
    assert result.exit_code == 0, result.output
    got = on_topic(settings, topics.DEPLOYS, lambda v: v.get("service") == f"dep-{unique}", 1)
    assert got[0]["target"] == {"kind": "kubernetes", "namespace": "shop", "name": "checkout", "container": "app"}
    refused = CliRunner().invoke(cli, ["deploy-event", "--service", "x", "--version", "v2", "--target", "webhook"])
    assert refused.exit_code == 1 and "needs field 'url'" in refused.output


def test_otlp_json_over_http_and_its_partial_success(settings, served, unique):
    server, _ = served
    point = {"timeUnixNano": str(int(1.7e18)), "asDouble": 3.0}
    body = {"resourceMetrics": [
        {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": f"oj-{unique}"}}]},
         "scopeMetrics": [{"metrics": [{"name": "queue.depth", "gauge": {"dataPoints": [point]}}]}]},
        {"resource": {"attributes": []},
         "scopeMetrics": [{"metrics": [{"name": "queue.depth", "gauge": {"dataPoints": [point]}}]}]},
    ]}
    status, answer = post(f"{server.url}/v1/metrics", json.dumps(body).encode())
    assert status == 200
    partial = json.loads(answer)["partialSuccess"]
    assert partial["rejectedDataPoints"] == "1" and "resource.attributes.service.name" in partial["errorMessage"]
    got = on_topic(settings, topics.METRICS, lambda v: v.get("service") == f"oj-{unique}", 1)
    assert [(v["metric"], v["value"], v["ts"]) for v in got] == [("queue_depth", 3.0, 1.7e9)]
    assert post(f"{server.url}/v1/metrics", b"\x00garbage", content_type="application/x-protobuf")[0] == 400
