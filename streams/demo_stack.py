"""Everything ``backout demo`` runs, started in order and stopped in reverse, whatever happens.

The stack, all on 127.0.0.1 and all in one temporary directory:

* the embedded broker (tansu) with Backout's topics, one partition each;
* two environments of the ``checkout`` service (:mod:`streams.demo_service`): ``blue`` runs
  the good version, ``green`` the one to deploy;
* nginx in front (:mod:`streams.demo_nginx`), sending traffic to blue;
* ``backout worker`` and ``backout executor`` as child processes, the executor's
  ``bluegreen`` target pointed at this nginx;
* the service's exporter (:class:`~backout.exporter.Reporter`) and the users
  (:mod:`streams.demo_load`), who send requests through nginx and report what they saw.

:class:`DemoStack` is a context manager: leaving it — at the end, on an error or on Ctrl-C —
stops every process it started.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from types import TracebackType

from confluent_kafka import Producer

from backout.contracts import Deploy, Target
from backout.exporter import Reporter
from backout.settings import KafkaSettings
from streams import topics
from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.demo_load import LoadGenerator
from streams.demo_nginx import Nginx
from streams.demo_service import ServiceProcess
from streams.kafka import publish
from streams.processes import ExecutorProcess, WorkerProcess
from streams.runtime.sender import Sender

SERVICE = "checkout"
GOOD_VERSION = "v2.15.0"
PARTITIONS = 1  # one service: one partition is all the demo needs


class DemoStack:
    """The demo's processes and threads; ``green_version`` is the version the demo deploys."""

    def __init__(self, root: Path, green_version: str, rate_per_s: float, interval_s: float,
                 config: Path | None) -> None:
        self.root = root
        self.green_version = green_version
        self.rate_per_s = rate_per_s
        self.interval_s = interval_s
        self.config = config
        self._stack = ExitStack()

    def __enter__(self) -> DemoStack:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stack.close()

    def _start(self) -> None:
        stack, root = self._stack, self.root
        self.broker = stack.enter_context(EmbeddedBroker())
        self.kafka = KafkaSettings(bootstrap_servers=self.broker.bootstrap)
        create_topics(self.kafka, topics.specs(partitions=PARTITIONS, retention_hours=1))
        self.blue = self._service("blue", GOOD_VERSION, seed=1)
        self.green = self._service("green", self.green_version, seed=2)
        self.nginx = Nginx(root / "nginx")
        stack.callback(self.nginx.stop)
        self.nginx.start("blue", GOOD_VERSION, self.blue.address)
        self.worker = WorkerProcess(self.broker.bootstrap, root / "worker", partitions=PARTITIONS,
                                    store="memory://", config=str(self.config) if self.config else None,
                                    log=root / "worker.log").start()
        stack.callback(self.worker.stop)
        self.executor = start_executor(self.broker.bootstrap, root, self.nginx.executor_env(), self.config)
        stack.callback(self.executor.stop)
        self.worker.wait_ready()
        self.executor.wait_ready()
        self.reporter = Reporter(SERVICE, interval_s=self.interval_s, settings=self.kafka)
        stack.callback(self.reporter.close)
        self.load = LoadGenerator("127.0.0.1", self.nginx.port, self.rate_per_s, self.reporter).start()
        stack.callback(self.load.stop)

    def _service(self, environment: str, version: str, seed: int) -> ServiceProcess:
        service = ServiceProcess(environment, version, seed, self.root / f"{environment}.log")
        self._stack.callback(service.stop)
        return service.start()

    def target(self) -> Target:
        """The deploy's ``bluegreen`` target: which environment runs which version, and where."""
        return Target.model_validate({
            "kind": "bluegreen", "switch": "nginx", "include": self.nginx.include.name,
            "environments": {"blue": self.blue.address, "green": self.green.address},
            "versions": {GOOD_VERSION: "blue", self.green_version: "green"}})

    def deploy(self, deploy_id: str, ts: float) -> Deploy:
        """Deploy green: switch nginx to it, then publish the deploy event (stamped ``ts``)."""
        self.nginx.switch("green", self.green_version, self.green.address)
        record = Deploy(ts=ts, service=SERVICE, deploy_id=deploy_id, version=self.green_version,
                        previous_version=GOOD_VERSION, status="finished", target=self.target())
        producer = Producer(self.kafka.producer())
        out = Sender(producer)
        publish(out, topics.DEPLOYS, [record])
        out.flush(30.0)
        producer.close()  # now, not after the broker has gone (it would log the broker's exit)
        return record


def start_executor(bootstrap: str, root: Path, nginx_env: dict[str, str], config: Path | None) -> ExecutorProcess:
    """``backout executor`` on the demo's broker, its ``bluegreen`` target being the demo's nginx."""
    return ExecutorProcess(bootstrap, root / "executor", app_id="backout-executor", partitions=PARTITIONS,
                           store=None, config=str(config) if config else None,
                           log=root / "executor.log", env=nginx_env).start()
