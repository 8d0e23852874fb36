"""``backout executor`` on a real broker, against real targets: a real nginx in front of two real
backends, the local Kubernetes API server (tests/kube_api.py; no cluster runs here), a webhook
receiver that checks the signature, and a recording "orchestrator" for the image target.

One executor serves the tests of the ``stack`` (each test its own services); the fault tests
(kill -9, two replicas, dry run) start their own broker and executors.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from actions.delivery import SIGNATURE_HEADER
from backout.contracts import Alert, Approval, Target
from backout.settings import KafkaSettings
from streams import topics
from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.processes import ExecutorProcess
from streams.topics import specs
from tests.executor_stack import (
    BASELINE,
    PARTITIONS,
    SHIFTED,
    approve,
    decision,
    image_env,
    image_target,
    records,
    samples,
    send,
    start_executor,
    statuses,
    wait_until,
)
from tests.fakes import unchecked
from tests.kube_api import KubeAPI
from tests.nginx import NGINX, Backend, Nginx
from tests.receiver import Receiver

SECRET = "webhook-secret"
TOKEN = "api-token"


@dataclass
class Stack:
    kafka: KafkaSettings
    executor: ExecutorProcess
    nginx: Nginx
    blue: Backend
    green: Backend
    api: KubeAPI
    receiver: Receiver
    images: Path

    def alerts(self, incident: str) -> list[Alert]:
        return [r for _, r in records(self.kafka, topics.ALERTS) if getattr(r, "incident_id", None) == incident]

    def post(self, incident: str, verb: str, token: str | None, by: str = "carol") -> tuple[int, dict]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.executor.web_port}/incidents/{incident}/{verb}",
                                         data=json.dumps({"by": by}).encode(), method="POST",
                                         headers={"Content-Type": "application/json",
                                                  **({"Authorization": f"Bearer {token}"} if token else {})})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("executor")
    images = root / "images"
    images.mkdir()
    with EmbeddedBroker() as broker, Backend("v1") as blue, Backend("v2") as green, \
            Nginx(root / "nginx", [green.address], include_name="checkout.conf") as nginx, \
            KubeAPI(step_s=0.05) as api:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        create_topics(kafka, specs(PARTITIONS))
        receiver = Receiver().listen()
        env = {"BACKOUT_NGINX_INCLUDE_DIR": str(nginx.include_dir), "BACKOUT_NGINX_BINARY": NGINX,
               "BACKOUT_NGINX_CONF": str(nginx.conf), "BACKOUT_NGINX_PID_FILE": str(nginx.pid_file),
               "BACKOUT_KUBERNETES_KUBECONFIG": str(api.kubeconfig(root / "kubeconfig")),
               "BACKOUT_KUBERNETES_POLL_S": "0.05", "BACKOUT_WEBHOOK_SECRET": SECRET, "BACKOUT_WEBHOOK_BACKOFF_S": "0.1",
               "BACKOUT_API_TOKEN": TOKEN, "BACKOUT_APPROVAL_TIMEOUT_S": "300", "BACKOUT_COOLDOWN_S": "0",
               "BACKOUT_VERIFY_WITHIN_S": "60", **image_env(images)}
        executor = start_executor(broker.bootstrap, root, env=env)
        try:
            yield Stack(kafka, executor, nginx, blue, green, api, receiver, images)
        finally:
            executor.stop()
            receiver.close()


def bluegreen(stack: Stack) -> Target:
    return Target(kind="bluegreen", switch="nginx", include="checkout.conf",
                  environments={"v1": stack.blue.address, "v2": stack.green.address})


def test_nginx_blue_green_switch_end_to_end(stack: Stack) -> None:
    stack.nginx.wait_for("v2", in_a_row=3)
    bad = decision("checkout", bluegreen(stack))
    send(stack.kafka, topics.ACTIONS, [bad])
    wait_until("executed", lambda: "executed" in statuses(stack.kafka, "inc-checkout"))
    stack.nginx.wait_for("v1")  # every request lands on the good backend now
    [executed] = [r for _, r in records(stack.kafka, topics.VERIFICATIONS)
                  if r.incident_id == "inc-checkout" and r.status == "executed"]
    assert stack.blue.address in executed.detail

    onset = bad.evidence[0]["onset_ts"]
    send(stack.kafka, topics.METRICS, samples("checkout", onset, executed.ts, SHIFTED)
         + samples("checkout", executed.ts + 5, executed.ts + 60, BASELINE))
    wait_until("verified", lambda: "verified" in statuses(stack.kafka, "inc-checkout"))
    assert statuses(stack.kafka, "inc-checkout") == ["executing", "executed", "verified"]
    [verified] = [r for k, r in records(stack.kafka, topics.VERIFICATIONS)
                  if r.incident_id == "inc-checkout" and r.status == "verified" and k == "checkout"]
    assert verified.before == {"error_rate": SHIFTED} and verified.after["error_rate"] < 0.01
    assert verified.detail.startswith("Error rate dropped from 5% back to 0.5%"), verified.detail
    texts = wait_until("three alerts", lambda: (t := [a.text for a in stack.alerts("inc-checkout")])[2:] and t)
    assert texts[0].startswith("Rolling back checkout from v2 to v1") and verified.detail in texts[2]
    exposition = stack.executor.metrics()
    assert 'backout_executor_executions_total{kind="bluegreen",outcome="executed"} 1.0' in exposition
    assert "backout_executor_decision_to_verified_seconds_count 1.0" in exposition


def test_kubernetes_and_argo_rollouts_through_the_broker(stack: Stack) -> None:
    api = stack.api
    api.create_deployment("shop", "cart", "registry.example.com/shop/cart:v1")
    api.set_image("deployments", "shop", "cart", "registry.example.com/shop/cart:v2")
    api.create_rollout("shop", "search", "registry.example.com/shop/search:v1")
    api.set_image("rollouts", "shop", "search", "registry.example.com/shop/search:v2")  # a canary, paused
    send(stack.kafka, topics.ACTIONS, [
        decision("cart", Target(kind="kubernetes", namespace="shop", name="cart")),
        decision("search", Target(kind="argo-rollout", namespace="shop", name="search"))])
    for service in ("cart", "search"):
        wait_until(f"{service} executed", lambda s=service: "executed" in statuses(stack.kafka, f"inc-{s}"))
    deployment = api.get("deployments", "shop", "cart")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v1")
    rollout = api.get("rollouts", "shop", "search")
    assert rollout["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v1")
    patch = next(r for r in api.requests if r.method == "PATCH" and r.path.endswith("/deployments/cart"))
    assert patch.content_type == "application/json-patch+json"


def test_webhook_target_is_signed(stack: Stack) -> None:
    send(stack.kafka, topics.ACTIONS, [decision("hooked", Target(kind="webhook", url=stack.receiver.url))])
    wait_until("executed", lambda: "executed" in statuses(stack.kafka, "inc-hooked"))
    [request] = stack.receiver.requests
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers[SIGNATURE_HEADER], expected)
    assert request.headers["X-Backout-Incident"] == "inc-hooked"
    assert json.loads(request.body)["incident_id"] == "inc-hooked"


def test_a_denial_runs_nothing(stack: Stack) -> None:
    (stack.images / "denied.version").write_text("v2")
    send(stack.kafka, topics.ACTIONS, [decision("denied", image_target("denied"), action="request_approval")])
    approve(stack.kafka, "inc-denied", False, by="bob")
    wait_until("denial alert", lambda: any("bob" in a.text for a in stack.alerts("inc-denied")))
    time.sleep(2)
    assert statuses(stack.kafka, "inc-denied") == [] and not (stack.images / "denied.argv").exists()


def test_an_approval_after_a_superseding_rollback_changes_nothing(stack: Stack) -> None:
    (stack.images / "late.version").write_text("v2")
    target = image_target("late")
    send(stack.kafka, topics.ACTIONS, [decision("late", target, action="request_approval")])
    send(stack.kafka, topics.ACTIONS, [decision("late", target, action="rollback")])  # clear-cut now
    wait_until("executed", lambda: "executed" in statuses(stack.kafka, "inc-late"))
    late = Approval(ts=time.time(), incident_id="inc-late", approved=True, by="dave", service="late")
    send(stack.kafka, topics.APPROVALS, [late])
    wait_until("the answer is acknowledged", lambda: any("dave" in a.text for a in stack.alerts("inc-late")))
    assert statuses(stack.kafka, "inc-late") == ["executing", "executed"]
    assert len((stack.images / "late.argv").read_text().splitlines()) == 1


@pytest.mark.parametrize("service,target,frm,to,says", [
    ("x; rm -rf /", None, "v2", "v1", "field 'service'"),
    ("evilns", {"kind": "kubernetes", "namespace": "../../etc", "name": "evil"}, "v2", "v1", "field 'target.namespace': got '../../etc'"),
    ("bigname", {"kind": "image", "image": "registry.example.com/shop/big", "service": "bigname"}, "v2", "v" * 10_000,
     "to_version"),
], ids=["shell in the service", "path in the namespace", "10 kB version"])
def test_malicious_names_are_refused_with_a_dead_letter(stack: Stack, service: str, target: dict | None, frm: str,
                                                          to: str, says: str) -> None:
    requests_before = len(stack.api.requests)
    bad = decision(service, unchecked(Target, **target) if target else image_target("evil"), incident=f"inc-bad-{len(says)}",
                   frm=frm, to=to)
    send(stack.kafka, topics.ACTIONS, [bad])
    letters = wait_until("dead letter", lambda: [r for _, r in records(stack.kafka, topics.DEADLETTER)
                                                 if bad.incident_id in r.value])
    assert says in letters[0].reason and letters[0].topic == topics.ACTIONS, letters[0].reason
    assert len(letters[0].reason) < 1000
    assert "executed" not in statuses(stack.kafka, bad.incident_id)
    assert len(stack.api.requests) == requests_before, "no request reached the API server"
    assert not list(stack.images.glob("*evil*")) and not (stack.images / "bigname.argv").exists()


def test_web_approval_needs_the_token(stack: Stack) -> None:
    (stack.images / "webbed.version").write_text("v2")
    send(stack.kafka, topics.ACTIONS, [decision("webbed", image_target("webbed"), action="request_approval")])
    assert stack.post("inc-webbed", "approve", None)[0] == 401
    assert stack.post("inc-webbed", "approve", "wrong")[0] == 401
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.executor.web_port}/incidents/inc-webbed/approve") as page:
        assert b"inc-webbed" in page.read() and page.status == 200
    answers: list = []
    try:
        status, body = wait_until("accepted", lambda: (r := stack.post("inc-webbed", "approve", TOKEN))[0] == 200
                                  and r or answers.append(r))
    except AssertionError:
        raise AssertionError(f"the approval was not accepted: {answers[-1:]}") from None
    assert all(a[0] == 404 for a in answers), answers  # only until the decision is on the topic
    assert body["approval"]["by"] == "carol via web" and body["approval"]["service"] == "webbed"
    assert any(isinstance(r, Approval) and r.incident_id == "inc-webbed" and r.by == "carol via web"
               for _, r in records(stack.kafka, topics.APPROVALS))
    wait_until("executed", lambda: "executed" in statuses(stack.kafka, "inc-webbed"))
    assert stack.post("inc-webbed", "approve", TOKEN)[0] == 409  # answered already
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.executor.web_port}/ui/incidents/inc-webbed") as page:
        assert page.status == 200 and b"webbed" in page.read()  # the web page, served by the executor


# -- each its own broker: timing, faults -------------------------------------------------------------


@pytest.fixture
def fresh() -> Iterator[KafkaSettings]:
    with EmbeddedBroker() as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap)
        create_topics(kafka, specs(PARTITIONS))
        yield kafka


def test_a_question_that_times_out_escalates(fresh: KafkaSettings, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "slow.version").write_text("v2")
    proc = start_executor(fresh.bootstrap_servers, tmp_path, env={**image_env(images), "BACKOUT_APPROVAL_TIMEOUT_S": "3"})
    try:
        send(fresh, topics.ACTIONS, [decision("slow", image_target("slow"), action="request_approval")])
        alerts = wait_until("timed out", lambda: [r for _, r in records(fresh, topics.ALERTS)
                                                  if isinstance(r, Alert) and r.severity == "critical"])
        assert alerts[0].incident_id == "inc-slow" and "3 seconds" in alerts[0].text, alerts[0].text
        approve_late = Approval(ts=time.time(), incident_id="inc-slow", approved=True, by="erin", service="slow")
        send(fresh, topics.APPROVALS, [approve_late])
        wait_until("the late answer is acknowledged", lambda: any(
            isinstance(r, Alert) and "erin" in r.text for _, r in records(fresh, topics.ALERTS)))
        assert statuses(fresh, "inc-slow") == [] and not (images / "slow.argv").exists()
    finally:
        proc.stop()


def test_kill_9_between_executing_and_executed_does_not_run_twice(fresh: KafkaSettings, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "payments.version").write_text("v2")
    env = image_env(images, sleep_s=60)  # the orchestrator sets the version, then takes its time
    first = start_executor(fresh.bootstrap_servers, tmp_path, "e1", env=env)
    try:
        send(fresh, topics.ACTIONS, [decision("payments", image_target("payments"))])
        wait_until("the command ran", lambda: (images / "payments.argv").exists())
        assert statuses(fresh, "inc-payments") == ["executing"]
    finally:
        first.kill()  # kill -9 during the rollout: executing recorded, executed not
    second = start_executor(fresh.bootstrap_servers, tmp_path, "e1", env=env)  # same data dir
    try:
        wait_until("executed", lambda: "executed" in statuses(fresh, "inc-payments"), timeout_s=90)
        assert statuses(fresh, "inc-payments") == ["executing", "executed"]
        [executed] = [r for _, r in records(fresh, topics.VERIFICATIONS) if r.status == "executed"]
        assert "nothing was run again" in executed.detail
        assert len((images / "payments.argv").read_text().splitlines()) == 1, "the command ran once"
    finally:
        second.stop()


def test_two_replicas_execute_each_rollback_once(fresh: KafkaSettings, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    services = [f"svc-{i}" for i in range(6)]
    for s in services:
        (images / f"{s}.version").write_text("v2")
    env = image_env(images)
    replicas = [start_executor(fresh.bootstrap_servers, tmp_path, f"r{i}", env=env) for i in (1, 2)]
    try:
        wait_until("both replicas own partitions",
                   lambda: all(r.health()["assigned"].get(topics.ACTIONS) for r in replicas), timeout_s=60)
        decisions = [decision(s, image_target(s)) for s in services]
        send(fresh, topics.ACTIONS, decisions + decisions)  # every decision twice: a redelivery
        for s in services:
            wait_until(f"{s} executed", lambda s=s: "executed" in statuses(fresh, f"inc-{s}"))
        time.sleep(2)
        for s in services:
            assert statuses(fresh, f"inc-{s}") == ["executing", "executed"], s
            assert len((images / f"{s}.argv").read_text().splitlines()) == 1, s
        owners = [set(r.health()["assigned"][topics.ACTIONS]) for r in replicas]
        assert owners[0] and owners[1] and not owners[0] & owners[1]
    finally:
        for r in replicas:
            r.stop()


def test_dry_run_touches_nothing_and_publishes_nothing(fresh: KafkaSettings, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "dry.version").write_text("v2")
    proc = start_executor(fresh.bootstrap_servers, tmp_path, "dry", env=image_env(images), args=("--dry-run",))
    try:
        send(fresh, topics.ACTIONS, [decision("dry", image_target("dry"))])
        log = tmp_path / "dry.log"
        wait_until("the plan is logged", lambda: "would roll dry back from v2 to v1" in log.read_text())
        assert "orchestrator.py" in log.read_text()  # the command it would run, in full
        assert not (images / "dry.argv").exists() and (images / "dry.version").read_text() == "v2"
        assert records(fresh, topics.VERIFICATIONS) == [] and records(fresh, topics.ALERTS) == []
        status = urllib.request.Request(f"http://127.0.0.1:{proc.web_port}/incidents/inc-dry/approve",
                                        data=b"{}", method="POST", headers={"Authorization": "Bearer x"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(status, timeout=10)
        assert refused.value.code == 403 and b"BACKOUT_API_TOKEN" in refused.value.read()
        assert proc.health()["app"] == "backout-executor-dry-run"
    finally:
        proc.stop()
