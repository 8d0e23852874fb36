"""The Deployment executor against the local API server (tests/kube_api.py): no cluster runs here.

Each test checks what reached the server (method, path, content type, patch body) as well as the
outcome, so a wrong request fails even when the fake would have accepted it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from actions.executors.base import ExecutionFailed, Rollback
from actions.executors.kube import (
    ROLLBACK_INCIDENT,
    ROLLBACK_TO,
    KubernetesSettings,
    settings_from_env,
)
from actions.executors.kubernetes import KubernetesExecutor, rollout_status
from backout.contracts import Decision, Target
from backout.errors import ConfigError, ContractError
from tests.fakes import unchecked
from tests.kube_api import KubeAPI

NS, NAME = "shop", "checkout"
DEPLOYMENT = f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}"


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    with KubeAPI(step_s=0.05) as server:
        yield server


def executor(api: KubeAPI, tmp_path: Path, **settings: object) -> KubernetesExecutor:
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig", context="prod")
    options: dict[str, object] = {"kubeconfig": str(kubeconfig), "poll_s": 0.02, "timeout_s": 20.0, **settings}
    return KubernetesExecutor(KubernetesSettings(**options))  # type: ignore[arg-type]


def rollback(to_version: str, from_version: str | None = "v2", **target: str) -> Rollback:
    fields = {"namespace": NS, "name": NAME, **target}
    return Rollback.of(unchecked(Decision, ts=1000.0, incident_id="inc-7", service=NAME, action="rollback",
                                 from_version=from_version, to_version=to_version, confidence=0.99,
                                 reason="error rate 10x after v2", target=unchecked(Target, kind="kubernetes", **fields)))


def patches(api: KubeAPI) -> list:
    return [r for r in api.requests if r.method == "PATCH"]


def replicaset_for(api: KubeAPI, image: str) -> dict:
    return next(rs for rs in api.list("replicasets", NS)
                if rs["spec"]["template"]["spec"]["containers"][0]["image"] == image)


def test_rolls_back_to_the_replicaset_running_the_version_with_a_json_patch(api: KubeAPI, tmp_path: Path) -> None:
    api.create_deployment(NS, NAME, "registry.example.com/shop/checkout:v1")
    before = api.set_image("deployments", NS, NAME, "registry.example.com/shop/checkout:v2")
    old_rs = replicaset_for(api, "registry.example.com/shop/checkout:v1")
    api.clear_requests()

    outcome = executor(api, tmp_path).execute(rollback("v1"))

    assert (outcome.status, outcome.version) == ("executed", "v1")
    [patch] = patches(api)
    assert (patch.path, patch.content_type) == (DEPLOYMENT, "application/json-patch+json")
    test, replace, *marks = patch.body
    assert test == {"op": "test", "path": "/spec/template", "value": before["spec"]["template"]}
    expected = old_rs["spec"]["template"]
    del expected["metadata"]["labels"]["pod-template-hash"]
    assert replace == {"op": "replace", "path": "/spec/template", "value": expected}
    assert "pod-template-hash" not in str(patch.body)
    assert {m["path"]: m["value"] for m in marks} == {"/metadata/annotations/backout.io~1rollback-to": "v1",
                                                     "/metadata/annotations/backout.io~1incident": "inc-7"}
    # the ReplicaSets were listed by the Deployment's selector, in its namespace
    [listing] = [r for r in api.requests if r.path == f"/apis/apps/v1/namespaces/{NS}/replicasets"]
    assert listing.query["labelSelector"] == "app=checkout"
    # the controller reused v1's ReplicaSet (no new one) and gave it the next revision
    after = api.get("deployments", NS, NAME)
    assert len(api.list("replicasets", NS)) == 2
    reused = api.get("replicasets", NS, old_rs["metadata"]["name"])
    assert reused["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert reused["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    assert reused["spec"]["replicas"] == 3
    assert after["metadata"]["annotations"][ROLLBACK_TO] == "v1"
    assert after["metadata"]["annotations"][ROLLBACK_INCIDENT] == "inc-7"
    assert rollout_status(after)[0] == "done"


def test_picks_the_version_not_revision_minus_one_after_an_earlier_rollback(api: KubeAPI, tmp_path: Path) -> None:
    api.create_deployment(NS, NAME, "shop/checkout:v1")  # revision 1
    api.set_image("deployments", NS, NAME, "shop/checkout:v2")  # 2
    api.set_image("deployments", NS, NAME, "shop/checkout:v3")  # 3
    api.set_image("deployments", NS, NAME, "shop/checkout:v1")  # someone rolled back: v1's ReplicaSet is now 4
    api.set_image("deployments", NS, NAME, "shop/checkout:v4")  # 5
    revisions = {rs["spec"]["template"]["spec"]["containers"][0]["image"]:
                 int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
                 for rs in api.list("replicasets", NS)}
    assert revisions == {"shop/checkout:v1": 4, "shop/checkout:v2": 2, "shop/checkout:v3": 3,
                         "shop/checkout:v4": 5}  # so "revision - 1" (4) would be v1, not v3

    outcome = executor(api, tmp_path).execute(rollback("v3", from_version="v4"))

    assert (outcome.status, outcome.version) == ("executed", "v3")
    template = api.get("deployments", NS, NAME)["spec"]["template"]
    assert template["spec"]["containers"][0]["image"] == "shop/checkout:v3"
    assert replicaset_for(api, "shop/checkout:v3")["metadata"]["annotations"][
        "deployment.kubernetes.io/revision"] == "6"
    assert len(api.list("replicasets", NS)) == 4


def test_a_paused_deployment_is_refused_and_not_patched(api: KubeAPI, tmp_path: Path) -> None:
    api.create_deployment(NS, NAME, "shop/checkout:v1")
    api.set_image("deployments", NS, NAME, "shop/checkout:v2")
    api.patch("deployments", NS, NAME, "application/merge-patch+json", {"spec": {"paused": True}})
    api.clear_requests()

    with pytest.raises(ExecutionFailed, match="paused.*kubectl rollout resume deployment/checkout -n shop"):
        executor(api, tmp_path).execute(rollback("v1"))
    assert patches(api) == []


def test_a_deployment_already_running_the_version_is_skipped(api: KubeAPI, tmp_path: Path) -> None:
    api.create_deployment(NS, NAME, "shop/checkout:v1")
    api.set_image("deployments", NS, NAME, "shop/checkout:v2")
    api.set_image("deployments", NS, NAME, "shop/checkout:v1")  # someone already acted
    api.clear_requests()

    outcome = executor(api, tmp_path).execute(rollback("v1"))

    assert (outcome.status, outcome.version) == ("skipped", "v1")
    assert patches(api) == []


def test_a_rollout_that_exceeds_its_progress_deadline_fails(api: KubeAPI, tmp_path: Path) -> None:
    api.create_deployment(NS, NAME, "shop/checkout:v1")
    api.set_image("deployments", NS, NAME, "shop/checkout:v2")
    api.fail_rollouts(NS, NAME)

    outcome = executor(api, tmp_path).execute(rollback("v1"))

    assert outcome.status == "failed"
    assert 'exceeded its progress deadline: ReplicaSet "checkout-' in outcome.detail
    assert len(patches(api)) == 1


def test_a_rollout_that_does_not_finish_in_time_fails(tmp_path: Path) -> None:
    with KubeAPI(step_s=None) as api:  # the controller never acts on the patch
        api.create_deployment(NS, NAME, "shop/checkout:v1")
        api.set_image("deployments", NS, NAME, "shop/checkout:v2")

        outcome = executor(api, tmp_path, timeout_s=0.3).execute(rollback("v1"))

    assert outcome.status == "failed"
    assert "did not complete within 0.3 s: Waiting for deployment spec update to be observed" in outcome.detail


def test_a_deploy_made_meanwhile_is_not_overwritten(api: KubeAPI, tmp_path: Path) -> None:
    api.create_deployment(NS, NAME, "shop/checkout:v1")
    api.set_image("deployments", NS, NAME, "shop/checkout:v2")

    def deploy_v3_first(request: object) -> None:
        if getattr(request, "method", None) == "PATCH":
            api.on_request = None
            api.set_image("deployments", NS, NAME, "shop/checkout:v3", settle=False)

    api.on_request = deploy_v3_first
    with pytest.raises(ExecutionFailed, match="changed while rolling back.*nothing was patched"):
        executor(api, tmp_path).execute(rollback("v1"))
    assert api.get("deployments", NS, NAME)["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "shop/checkout:v3"


def test_no_replicaset_running_the_version_is_refused(api: KubeAPI, tmp_path: Path) -> None:
    api.create_deployment(NS, NAME, "shop/checkout:v1")
    api.set_image("deployments", NS, NAME, "shop/checkout:v2")

    with pytest.raises(ExecutionFailed, match=r"no ReplicaSet .* runs v0.*run: v2 \(revision 2\), v1 \(revision 1\)"):
        executor(api, tmp_path).execute(rollback("v0"))
    assert patches(api) == []


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("namespace", "../../etc", "namespace '../../etc' is not a valid namespace"),
    ("name", "x; rm -rf /", "k8s name 'x; rm -rf /' is not a valid k8s name"),
    ("name", "a" * 10_000, "k8s name 'aaa.*10000 chars"),
    ("container", "app && curl evil", "container 'app && curl evil' is not a valid container"),
    ("context", "$(id)", r"kube context '\$\(id\)' is not a valid kube context"),
    ("version", "v1;reboot", "version 'v1;reboot' is not a valid version"),
    ("from_version", "../v2", "version '../v2' is not a valid version"),
])
def test_malicious_names_are_refused_before_any_request(api: KubeAPI, tmp_path: Path, field: str, value: str,
                                                        expected: str) -> None:
    api.create_deployment(NS, NAME, "shop/checkout:v1")
    api.clear_requests()
    kube = executor(api, tmp_path)
    if field == "version":
        bad = rollback(value)
    elif field == "from_version":
        bad = rollback("v1", from_version=value)
    else:
        bad = rollback("v1", **{field: value})

    for attempt in (kube.execute, kube.plan):
        with pytest.raises(ContractError, match=expected):
            attempt(bad)
    if field not in ("version", "from_version"):
        with pytest.raises(ContractError, match=expected):
            kube.current_version(bad.target)
    assert api.requests == []


def test_a_context_missing_from_the_kubeconfig_is_refused(api: KubeAPI, tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="context 'staging', which the kubeconfig .* does not have"):
        executor(api, tmp_path).execute(rollback("v1", context="staging"))
    assert api.requests == []


def test_current_version_reads_the_template(api: KubeAPI, tmp_path: Path) -> None:
    api.create_deployment(NS, NAME, "shop/checkout:v1", labels={"app.kubernetes.io/version": "2024.06.1"},
                          extra_containers=[{"name": "proxy", "image": "envoyproxy/envoy:v1.30.1"}])
    target = Target(kind="kubernetes", namespace=NS, name=NAME)

    assert executor(api, tmp_path).current_version(target.model_copy(update={"container": "app"})) == "v1"
    assert executor(api, tmp_path).current_version(target.model_copy(update={"container": "proxy"})) == "v1.30.1"
    assert executor(api, tmp_path, version_label="app.kubernetes.io/version").current_version(target) == "2024.06.1"
    with pytest.raises(ContractError, match="has containers app, proxy: the target must name"):
        executor(api, tmp_path).current_version(target)


def test_plan_says_what_it_would_do_and_changes_nothing(api: KubeAPI, tmp_path: Path) -> None:
    api.create_deployment(NS, NAME, "shop/checkout:v1")
    api.set_image("deployments", NS, NAME, "shop/checkout:v2")
    api.clear_requests()

    steps = executor(api, tmp_path).plan(rollback("v1"))

    assert "ReplicaSet checkout-" in steps[0] and "(revision 1, v1)" in steps[0]
    assert {r.method for r in api.requests} == {"GET"}


def _deployment(generation: int, observed: int, replicas: int, updated: int, total: int, available: int,
                reason: str = "ReplicaSetUpdated") -> dict:
    return {"metadata": {"name": "web", "generation": generation}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                       "availableReplicas": available,
                       "conditions": [{"type": "Progressing", "reason": reason, "message": "m"}]}}


@pytest.mark.parametrize(("deployment", "state", "says"), [
    (_deployment(5, 4, 3, 3, 3, 3), "waiting", "spec update to be observed"),
    (_deployment(5, 5, 3, 1, 4, 3), "waiting", "1 out of 3 new replicas have been updated"),
    (_deployment(5, 5, 3, 3, 4, 3), "waiting", "1 old replicas are pending termination"),
    (_deployment(5, 5, 3, 3, 3, 2), "waiting", "2 of 3 updated replicas are available"),
    (_deployment(5, 5, 3, 3, 3, 3, "NewReplicaSetAvailable"), "done", "successfully rolled out"),
    (_deployment(5, 5, 3, 1, 4, 3, "ProgressDeadlineExceeded"), "failed", "exceeded its progress deadline"),
    (_deployment(5, 6, 3, 3, 3, 3), "done", "successfully rolled out"),  # observed newer than asked
    (_deployment(6, 5, 3, 1, 4, 3, "ProgressDeadlineExceeded"), "waiting", "observed"),  # an old failure
])
def test_rollout_status_follows_kubectl(deployment: dict, state: str, says: str) -> None:
    got_state, message = rollout_status(deployment)
    assert got_state == state
    assert says in message


def test_in_cluster_takes_no_context_and_bad_settings_are_named(api: KubeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    in_cluster = KubernetesExecutor(KubernetesSettings(in_cluster=True))
    with pytest.raises(ContractError, match="context 'prod', but the executor runs in-cluster"):
        in_cluster.execute(rollback("v1", context="prod"))
    monkeypatch.setenv("BACKOUT_KUBERNETES_VERSION_LABEL", "not a label")
    with pytest.raises(ConfigError, match="'version_label' .*BACKOUT_KUBERNETES_VERSION_LABEL.*not a Kubernetes label"):
        settings_from_env()
    assert api.requests == []
