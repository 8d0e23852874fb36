"""The local API server answers as kube-apiserver does where the executors rely on it.

Each case is one request through the official client and the answer the real server gives
(code, Status reason, the gist of its message), so that a test passing against the fake means
the request would have been accepted (or refused) by a real cluster in the same way.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import AppsV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from kubernetes.config import new_client_from_config

from tests.kube_api import KubeAPI, label_selector, strategic_merge_patch

JSON, MERGE, SMP = "application/json-patch+json", "application/merge-patch+json", \
    "application/strategic-merge-patch+json"


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    with KubeAPI(step_s=None) as server:
        server.create_deployment("shop", "checkout", "shop/checkout:v1")
        server.create_rollout("shop", "cart", "shop/cart:v1")
        yield server


@pytest.fixture
def apps(api: KubeAPI, tmp_path: Path) -> AppsV1Api:
    return AppsV1Api(new_client_from_config(config_file=str(api.kubeconfig(tmp_path / "kc")), persist_config=False))


def refusal(call) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiException) as info:
        call()
    status = json.loads(info.value.body)
    assert status["kind"] == "Status" and status["status"] == "Failure" and status["code"] == info.value.status
    return info.value.status, status["reason"], status["message"]


def test_refusals_are_status_objects(api: KubeAPI, apps: AppsV1Api) -> None:
    rv = api.get("deployments", "shop", "checkout")["metadata"]["resourceVersion"]
    cases = [
        (lambda: apps.read_namespaced_deployment("nope", "shop"), 404, "NotFound", 'deployments.apps "nope" not found'),
        (lambda: apps.patch_namespaced_deployment("checkout", "shop", {"metadata": {"resourceVersion": str(int(rv) - 1)},
                                                                       "spec": {"replicas": 5}}, _content_type=MERGE),
         409, "Conflict", "the object has been modified"),
        (lambda: apps.patch_namespaced_deployment("checkout", "shop", [
            {"op": "replace", "path": "/spec/template/metadata/labels", "value": {"app": "other"}}], _content_type=JSON),
         422, "Invalid", "`selector` does not match template `labels`"),
        (lambda: apps.patch_namespaced_deployment("checkout", "shop", [
            {"op": "test", "path": "/spec/replicas", "value": 9}], _content_type=JSON),
         422, "Invalid", "testing value /spec/replicas failed"),
        (lambda: apps.patch_namespaced_deployment("checkout", "shop", [
            {"op": "replace", "path": "/metadata/nothing/here", "value": 1}], _content_type=JSON),
         422, "Invalid", "doc is missing"),
        (lambda: apps.patch_namespaced_deployment("checkout", "shop", {"spec": {"selector": {"matchLabels": {
            "app": "checkout", "tier": "web"}}}}, _content_type=MERGE), 422, "Invalid", "field is immutable"),
    ]
    for call, code, reason, message in cases:
        got = refusal(call)
        assert got[:2] == (code, reason) and message in got[2], got
    # an object sent as a JSON Patch (the v37 client would turn it into a strategic merge patch itself)
    request = urllib.request.Request(f"{api.url}/apis/apps/v1/namespaces/shop/deployments/checkout", method="PATCH",
                                     data=b'{"spec": {"replicas": 2}}', headers={"Content-Type": JSON})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    status = json.loads(info.value.read())
    assert (info.value.code, status["reason"]) == (400, "BadRequest") and "cannot unmarshal object" in status["message"]
    assert api.get("deployments", "shop", "checkout")["metadata"]["resourceVersion"] == rv  # nothing written


def test_a_custom_resource_takes_no_strategic_merge_patch(api: KubeAPI, tmp_path: Path) -> None:
    client = new_client_from_config(config_file=str(api.kubeconfig(tmp_path / "kc")), persist_config=False)
    custom = CustomObjectsApi(client)
    code, reason, message = refusal(lambda: custom.patch_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "shop", "rollouts", "cart", {"spec": {"replicas": 2}}, _content_type=SMP))
    assert (code, reason) == (415, "UnsupportedMediaType")
    assert "application/json-patch+json, application/merge-patch+json" in message


def test_generation_moves_with_the_spec_only(api: KubeAPI, apps: AppsV1Api) -> None:
    before = api.get("deployments", "shop", "checkout")
    apps.patch_namespaced_deployment("checkout", "shop", {"metadata": {"annotations": {"note": "x"}}},
                                     _content_type=MERGE)
    annotated = api.get("deployments", "shop", "checkout")
    apps.patch_namespaced_deployment("checkout", "shop", {"status": {"replicas": 99}}, _content_type=MERGE)
    ignored = api.get("deployments", "shop", "checkout")  # status is a subresource: ignored here
    apps.patch_namespaced_deployment("checkout", "shop", {"spec": {"replicas": 4}}, _content_type=MERGE)
    scaled = api.get("deployments", "shop", "checkout")

    assert annotated["metadata"]["generation"] == before["metadata"]["generation"]
    assert int(annotated["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    assert ignored["metadata"]["resourceVersion"] == annotated["metadata"]["resourceVersion"]  # a no-op writes nothing
    assert scaled["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert scaled["status"]["observedGeneration"] == before["metadata"]["generation"]  # the controller has not run


def test_a_watch_resumes_after_a_resource_version_and_expires_when_compacted(api: KubeAPI, apps: AppsV1Api) -> None:
    start = apps.list_namespaced_deployment("shop", _preload_content=False)
    since = json.loads(start.data)["metadata"]["resourceVersion"]
    api.patch("deployments", "shop", "checkout", MERGE, {"spec": {"replicas": 5}})

    def watch(rv: str) -> list[dict]:
        response = apps.list_namespaced_deployment("shop", watch=True, resource_version=rv, timeout_seconds=1,
                                                   _preload_content=False)
        return [json.loads(line) for line in response.data.splitlines() if line.strip()]

    [modified] = watch(since)
    assert modified["type"] == "MODIFIED" and modified["object"]["spec"]["replicas"] == 5
    api.compact()
    [expired] = watch(since)
    assert expired["type"] == "ERROR"
    assert (expired["object"]["code"], expired["object"]["reason"]) == (410, "Expired")


@pytest.mark.parametrize(("selector", "labels", "matches"), [
    ("app=checkout", {"app": "checkout"}, True),
    ("app==checkout,tier!=db", {"app": "checkout", "tier": "web"}, True),
    ("tier in (web, api)", {"tier": "db"}, False),
    ("tier notin (db),app", {"tier": "web", "app": "x"}, True),
    ("!canary", {"canary": "true"}, False),
    ("", {"anything": "x"}, True),
])
def test_label_selectors(selector: str, labels: dict, matches: bool) -> None:
    assert label_selector(selector)(labels) is matches


def test_a_strategic_merge_patch_merges_containers_by_name() -> None:
    doc = {"containers": [{"name": "app", "image": "a:1", "ports": [{"containerPort": 80}]},
                          {"name": "proxy", "image": "envoy:1"}]}
    patched = strategic_merge_patch(doc, {"containers": [{"name": "app", "image": "a:2"}]})
    assert patched == {"containers": [{"name": "app", "image": "a:2", "ports": [{"containerPort": 80}]},
                                      {"name": "proxy", "image": "envoy:1"}]}
