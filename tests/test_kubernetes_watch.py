"""The Kubernetes watcher: ``to_records`` as a table, on the objects the simulated controller writes,
and the watch loop against the local API server (tests/kube_api.py) publishing to the real broker."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import AppsV1Api
from kubernetes.config import new_client_from_config

from actions.executors.base import Rollback
from actions.executors.kube import KubernetesSettings
from actions.executors.kubernetes import KubernetesExecutor
from backout.contracts import Decision, Target, decode
from backout.errors import ContractError
from streams.admin import create_topics
from streams.feeds.kubernetes import to_records, watch_deployments
from streams.kafka import read_to_end, sender
from streams.topics import TopicSpec
from tests.kube_api import KubeAPI

UID = "1f2e3d4c-0000-4000-8000-000000000001"
T0 = "2026-03-01T10:00:00Z"
T1 = "2026-03-01T10:05:00Z"


def _ts(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp).timestamp()


def deployment(image: str = "shop/checkout:v2", *, generation: int = 2, observed: int = 2, revision: str | None = "2",
               updated: int = 3, total: int = 3, available: int = 3, reason: str = "NewReplicaSetAvailable",
               paused: bool = False, annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None,
               pod_labels: dict[str, str] | None = None, containers: list[dict[str, str]] | None = None) -> dict:
    meta_annotations = {**({"deployment.kubernetes.io/revision": revision} if revision else {}),
                        **(annotations or {})}
    spec: dict[str, Any] = {"replicas": 3, "selector": {"matchLabels": {"app": "checkout"}},
                            "template": {"metadata": {"labels": {"app": "checkout", **(pod_labels or {})}},
                                         "spec": {"containers": containers or [{"name": "app", "image": image}]}}}
    if paused:
        spec["paused"] = True
    return {"metadata": {"name": "checkout", "namespace": "shop", "uid": UID, "generation": generation,
                         "creationTimestamp": T0, "labels": {"app": "checkout", **(labels or {})},
                         "annotations": meta_annotations},
            "spec": spec,
            "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                       "availableReplicas": available,
                       "conditions": [{"type": "Available", "status": "True", "lastUpdateTime": T0,
                                       "reason": "MinimumReplicasAvailable"},
                                      {"type": "Progressing", "status": "False" if "Exceeded" in reason else "True",
                                       "lastUpdateTime": T1, "reason": reason}]}}


def summary(event: dict, **options: str) -> list[tuple]:
    return [(r.service, r.version, r.status, r.deploy_id, r.ts, r.target.model_dump() if r.target else None)
            for r in to_records(event, **options)]


TARGET = {"kind": "kubernetes", "namespace": "shop", "name": "checkout"}
ID2 = "shop/checkout#2.1f2e3d4c"


@pytest.mark.parametrize(("event", "options", "expected"), [
    pytest.param({"type": "ADDED", "object": deployment()}, {},
                 [("checkout", "v2", "finished", ID2, _ts(T1), TARGET)], id="rolled out: finished, when it completed"),
    pytest.param({"type": "MODIFIED", "object": deployment(updated=1, total=4, available=3,
                                                           reason="ReplicaSetUpdated")}, {},
                 [("checkout", "v2", "started", ID2, _ts(T1), TARGET)], id="rolling out: started"),
    pytest.param({"type": "MODIFIED", "object": deployment(generation=3, observed=2)}, {}, [],
                 id="spec not observed: its revision is not known yet"),
    pytest.param({"type": "MODIFIED", "object": deployment(revision=None)}, {}, [], id="no revision yet"),
    pytest.param({"type": "MODIFIED", "object": deployment(updated=1, total=4, reason="ProgressDeadlineExceeded")},
                 {}, [("checkout", "v2", "failed", ID2, _ts(T1), TARGET)], id="deadline exceeded: failed"),
    pytest.param({"type": "MODIFIED", "object": deployment(annotations={"backout.io/rollback-to": "v2"})}, {},
                 [("checkout", "v2", "rolled_back", ID2, _ts(T1), TARGET)], id="rolled back by Backout"),
    pytest.param({"type": "MODIFIED", "object": deployment(annotations={"backout.io/rollback-to": "v1"})}, {},
                 [("checkout", "v2", "finished", ID2, _ts(T1), TARGET)], id="a deploy after Backout's rollback"),
    pytest.param({"type": "MODIFIED", "object": deployment(paused=True, updated=0, total=3)}, {}, [],
                 id="paused before rolling out"),
    pytest.param({"type": "MODIFIED", "object": deployment(paused=True)}, {},
                 [("checkout", "v2", "finished", ID2, _ts(T1), TARGET)], id="paused after rolling out"),
    pytest.param({"type": "DELETED", "object": deployment()}, {}, [], id="deleted"),
    pytest.param({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}, {}, [], id="bookmark"),
    pytest.param({"type": "ADDED", "object": deployment(pod_labels={"app.kubernetes.io/version": "2026.3.1"})},
                 {"version_label": "app.kubernetes.io/version"},
                 [("checkout", "2026.3.1", "finished", ID2, _ts(T1), TARGET)], id="version from a label"),
    pytest.param({"type": "ADDED", "object": deployment(labels={"app.kubernetes.io/name": "payments"})},
                 {"service_label": "app.kubernetes.io/name"},
                 [("payments", "v2", "finished", ID2, _ts(T1), TARGET)], id="service from a label"),
    pytest.param({"type": "ADDED", "object": deployment(containers=[
        {"name": "proxy", "image": "envoyproxy/envoy:v1.30.1"}, {"name": "app", "image": "shop/checkout:v2"}])},
                 {"container": "app", "context": "prod-eu"},
                 [("checkout", "v2", "finished", ID2, _ts(T1), {**TARGET, "container": "app", "context": "prod-eu"})],
                 id="the named container, the context in the target"),
])
def test_to_records(event: dict, options: dict, expected: list) -> None:
    assert summary(event, **options) == expected


@pytest.mark.parametrize(("obj", "options", "error"), [
    (deployment("shop/checkout@sha256:0f3a"), {}, "runs an image without a tag"),
    (deployment(containers=[{"name": "proxy", "image": "envoy:v1"}, {"name": "web", "image": "shop/web:v2"}]), {},
     "has containers proxy, web: the target must name the one"),
    (deployment(), {"service_label": "team"}, "has no label 'team' to name its service"),
    (deployment(labels={"app.kubernetes.io/name": "x" * 80}), {"service_label": "app.kubernetes.io/name"},
     "is not a valid service"),
    ({"metadata": {"name": "checkout"}}, {}, "not a Deployment"),
    ("not an object", {}, "not a Deployment"),
])
def test_a_deployment_that_cannot_be_read_is_refused(obj: Any, options: dict, error: str) -> None:
    with pytest.raises(ContractError, match=error):
        to_records({"type": "MODIFIED", "object": obj}, **options)


def test_records_from_what_the_controller_writes(tmp_path: Path) -> None:
    """Every event of a real-looking history: a deploy, a rollback by someone else, another deploy."""
    with KubeAPI(step_s=None) as api:
        api.create_deployment("shop", "checkout", "shop/checkout:v1")
        api.set_image("deployments", "shop", "checkout", "shop/checkout:v2")
        api.set_image("deployments", "shop", "checkout", "shop/checkout:v1")  # kubectl rollout undo, in effect
        api.set_image("deployments", "shop", "checkout", "shop/checkout:v3")
        history = api.events("deployments")

    seen = []
    for kind, obj in history:
        for record in to_records({"type": kind, "object": obj}):
            step = (record.version, record.status, record.deploy_id.split("#")[1].split(".")[0])
            if not seen or seen[-1] != step:
                seen.append(step)
    assert seen == [("v1", "finished", "1"), ("v2", "started", "2"), ("v2", "finished", "2"),
                    ("v1", "started", "3"), ("v1", "finished", "3"),  # the rollback: an earlier version, revision 3
                    ("v3", "started", "4"), ("v3", "finished", "4")]


@pytest.mark.integration
def test_the_watch_publishes_each_rollout_once_through_resumes_and_relists(kafka, unique, tmp_path: Path) -> None:
    topic, deadletters = f"deploys-{unique}", f"deadletter-{unique}"
    create_topics(kafka, [TopicSpec(topic, 2, 3_600_000), TopicSpec(deadletters, 1, 3_600_000)])
    with KubeAPI(step_s=0.05) as api:
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        api.create_deployment("shop", "checkout", "shop/checkout:v1")
        apps = AppsV1Api(new_client_from_config(config_file=str(kubeconfig), persist_config=False))
        out, stop, counts = sender(kafka), threading.Event(), {}
        watcher = threading.Thread(target=watch_deployments, args=(apps, out), kwargs=dict(
            namespace="shop", selector="app", topic=topic, deadletter_topic=deadletters, stop=stop, timeout_s=1,
            retry_s=0.2, counts=counts))
        watcher.start()
        try:
            api.wait_for(lambda: counts.get("published") == 1)  # v1, as listed at start
            api.set_image("deployments", "shop", "checkout", "shop/checkout:v2", settle=False)
            api.wait_for(lambda: counts.get("published") == 3)  # v2 started, finished
            # the watch's resourceVersion is compacted away: the next request gets 410 and lists again
            compacted, since = api.compact(), len(api.requests)
            api.wait_for(lambda: any(not r.query.get("watch") for r in api.requests[since:]))
            api.create_deployment("shop", "cart", "shop/cart:v7",
                                  extra_containers=[{"name": "proxy", "image": "envoy:v1"}])  # cannot tell
            api.wait_for(lambda: counts.get("deadlettered") == 1)
            kube = KubernetesExecutor(KubernetesSettings(kubeconfig=str(kubeconfig), poll_s=0.02, timeout_s=20))
            outcome = kube.execute(Rollback.of(Decision(
                ts=1000.0, incident_id="inc-3", service="checkout", action="rollback", from_version="v2",
                to_version="v1", confidence=0.99, reason="errors", target=Target(
                    kind="kubernetes", namespace="shop", name="checkout"))))
            assert outcome.status == "executed"
            api.wait_for(lambda: counts.get("published") == 5)
        finally:
            stop.set()
            watcher.join(timeout=30)
        out.flush(30)
        expired = [r for r in api.requests if r.query.get("resourceVersion") and
                   int(r.query["resourceVersion"]) < compacted]
        assert expired, "the watch never resumed from a compacted resourceVersion"

    records = [decode(m.value()) for m in read_to_end(kafka, topic)]  # one key, one partition: in order
    assert [(r.version, r.status, r.deploy_id.split("#")[1].split(".")[0]) for r in records] == [
        ("v1", "finished", "1"), ("v2", "started", "2"), ("v2", "finished", "2"),
        ("v1", "started", "3"), ("v1", "rolled_back", "3")]
    assert {m.key() for m in read_to_end(kafka, topic)} == {b"checkout"}
    assert all(r.target.model_dump() == {"kind": "kubernetes", "namespace": "shop", "name": "checkout"}
               for r in records)
    [letter] = [decode(m.value()) for m in read_to_end(kafka, deadletters)]
    assert "has containers app, proxy" in letter.reason and '"name": "cart"' in letter.value
