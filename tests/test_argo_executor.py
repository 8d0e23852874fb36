"""The Argo Rollouts executor against the local API server (tests/kube_api.py): no cluster runs here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from actions.executors.argo import ArgoRolloutExecutor, rollout_phase
from actions.executors.base import ExecutionFailed, Rollback
from actions.executors.kube import ROLLBACK_INCIDENT, KubernetesSettings
from backout.contracts import Decision, Target
from backout.errors import ContractError
from tests.fakes import unchecked
from tests.kube_api import KubeAPI

NS, NAME = "shop", "cart"
ROLLOUT = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/rollouts/{NAME}"
HASH = "rollouts-pod-template-hash"


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    with KubeAPI(step_s=0.05) as server:
        yield server


def executor(api: KubeAPI, tmp_path: Path, **settings: object) -> ArgoRolloutExecutor:
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
    options: dict[str, object] = {"kubeconfig": str(kubeconfig), "poll_s": 0.02, "timeout_s": 20.0, **settings}
    return ArgoRolloutExecutor(KubernetesSettings(**options))  # type: ignore[arg-type]


def rollback(to_version: str, from_version: str = "v2", **target: str) -> Rollback:
    fields = {"namespace": NS, "name": NAME, **target}
    return Rollback.of(unchecked(Decision, ts=1000.0, incident_id="inc-9", service=NAME, action="rollback",
                                 from_version=from_version, to_version=to_version, confidence=0.97,
                                 reason="latency 4x after v2", target=unchecked(Target, kind="argo-rollout", **fields)))


def patches(api: KubeAPI) -> list:
    return [r for r in api.requests if r.method == "PATCH"]


def image(obj: dict) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


def test_a_canary_in_progress_is_aborted_then_undone_to_the_stable_replicaset(api: KubeAPI, tmp_path: Path) -> None:
    api.create_rollout(NS, NAME, "shop/cart:v1")
    canary = api.set_image("rollouts", NS, NAME, "shop/cart:v2", hold=True)
    assert canary["status"]["phase"] == "Paused" and canary["status"]["stableRS"] != canary["status"]["currentPodHash"]
    stable = next(rs for rs in api.list("replicasets", NS) if image(rs) == "shop/cart:v1")
    api.clear_requests()

    outcome = executor(api, tmp_path).execute(rollback("v1"))

    assert (outcome.status, outcome.version) == ("executed", "v1")
    abort, undo = patches(api)
    assert (abort.path, abort.content_type, abort.body) == (f"{ROLLOUT}/status", "application/merge-patch+json",
                                                            {"status": {"abort": True}})
    assert (undo.path, undo.content_type) == (ROLLOUT, "application/json-patch+json")
    test, replace, *_ = undo.body
    assert test == {"op": "test", "path": "/spec/template", "value": canary["spec"]["template"]}
    expected = stable["spec"]["template"]
    del expected["metadata"]["labels"][HASH]
    assert replace == {"op": "replace", "path": "/spec/template", "value": expected}
    assert HASH not in str(undo.body)
    after = api.get("rollouts", NS, NAME)
    assert after["status"]["phase"] == "Healthy"
    assert after["status"]["stableRS"] == after["status"]["currentPodHash"] == stable["metadata"]["labels"][HASH]
    assert "abort" not in after["status"]  # undoing to stable clears the abort
    assert after["metadata"]["annotations"][ROLLBACK_INCIDENT] == "inc-9"
    assert len(api.list("replicasets", NS)) == 2  # the stable ReplicaSet was reused


def test_without_a_status_subresource_the_abort_goes_to_the_rollout(tmp_path: Path) -> None:
    with KubeAPI(step_s=0.05, status_subresource=False) as api:
        api.create_rollout(NS, NAME, "shop/cart:v1")
        api.set_image("rollouts", NS, NAME, "shop/cart:v2", hold=True)
        api.clear_requests()

        outcome = executor(api, tmp_path).execute(rollback("v1"))

        assert outcome.status == "executed"
        assert [(r.path, r.content_type) for r in patches(api)] == [
            (f"{ROLLOUT}/status", "application/merge-patch+json"),  # 404: no subresource
            (ROLLOUT, "application/merge-patch+json"),
            (ROLLOUT, "application/json-patch+json")]


def test_a_fully_promoted_bad_version_is_undone_then_promoted_fully(api: KubeAPI, tmp_path: Path) -> None:
    api.create_rollout(NS, NAME, "shop/cart:v1")
    api.set_image("rollouts", NS, NAME, "shop/cart:v2", hold=False)  # v2 is the stable one: no abort
    api.clear_requests()

    outcome = executor(api, tmp_path).execute(rollback("v1"))

    assert outcome.status == "executed"
    undo, promote = patches(api)
    assert (undo.path, undo.content_type) == (ROLLOUT, "application/json-patch+json")
    assert (promote.path, promote.content_type, promote.body) == (
        f"{ROLLOUT}/status", "application/merge-patch+json", {"status": {"promoteFull": True}})
    # sent only once the controller had observed the undo (a new template clears promoteFull)
    undone = next(i for i, r in enumerate(api.requests) if r is undo)
    assert any(r.method == "GET" and r.path == ROLLOUT for r in api.requests[undone + 1:api.requests.index(promote)])
    after = api.get("rollouts", NS, NAME)
    assert image(after) == "shop/cart:v1"
    assert after["status"]["phase"] == "Healthy"
    assert after["status"]["stableRS"] == after["status"]["currentPodHash"]


def test_without_promote_full_the_undo_waits_for_the_canary_steps(api: KubeAPI, tmp_path: Path) -> None:
    api.create_rollout(NS, NAME, "shop/cart:v1")
    api.set_image("rollouts", NS, NAME, "shop/cart:v2", hold=False)

    outcome = executor(api, tmp_path, promote_full=False, timeout_s=0.5).execute(rollback("v1"))

    assert outcome.status == "failed"
    assert "not Healthy within 0.5 s: Paused: CanaryPauseStep" in outcome.detail
    assert [r.body for r in patches(api) if r.path.endswith("/status")] == []


def test_a_rollout_already_running_the_version_is_skipped(api: KubeAPI, tmp_path: Path) -> None:
    api.create_rollout(NS, NAME, "shop/cart:v1")
    api.clear_requests()

    outcome = executor(api, tmp_path).execute(rollback("v1"))

    assert (outcome.status, outcome.version) == ("skipped", "v1")
    assert patches(api) == []


def test_an_undo_to_a_version_that_degrades_fails(api: KubeAPI, tmp_path: Path) -> None:
    api.create_rollout(NS, NAME, "shop/cart:v1")
    api.set_image("rollouts", NS, NAME, "shop/cart:v2", hold=False)  # v2 is stable now
    api.set_image("rollouts", NS, NAME, "shop/cart:v3", hold=True)  # a v3 canary
    api.fail_rollouts(NS, NAME)

    outcome = executor(api, tmp_path).execute(rollback("v1", from_version="v3"))  # v1 is not the stable one

    assert outcome.status == "failed"
    assert "Degraded: ProgressDeadlineExceeded" in outcome.detail


def test_a_rollout_with_a_workload_ref_is_refused(api: KubeAPI, tmp_path: Path) -> None:
    api.create_rollout(NS, NAME, "shop/cart:v1")
    api.patch("rollouts", NS, NAME, "application/merge-patch+json",
              {"spec": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cart"}}})
    api.clear_requests()

    with pytest.raises(ExecutionFailed, match=r"from a Deployment \(spec.workloadRef\)"):
        executor(api, tmp_path).execute(rollback("v0"))
    assert patches(api) == []


@pytest.mark.parametrize(("target", "expected"), [
    ({"namespace": "kube-system/../x"}, "is not a valid namespace"),
    ({"name": "cart`id`"}, "is not a valid k8s name"),
    ({"name": ""}, "field 'name' is missing"),
])
def test_malicious_names_are_refused_before_any_request(api: KubeAPI, tmp_path: Path, target: dict,
                                                        expected: str) -> None:
    with pytest.raises(ContractError, match=expected):
        executor(api, tmp_path).execute(rollback("v1", **target))
    with pytest.raises(ContractError, match="is not a valid version"):
        executor(api, tmp_path).execute(rollback("v1 --force"))
    assert api.requests == []


def test_current_version_reads_the_rollout_template(api: KubeAPI, tmp_path: Path) -> None:
    api.create_rollout(NS, NAME, "shop/cart:v1")
    api.set_image("rollouts", NS, NAME, "shop/cart:v2", hold=True)

    assert executor(api, tmp_path).current_version(Target(kind="argo-rollout", namespace=NS, name=NAME)) == "v2"


@pytest.mark.parametrize(("status", "generation", "state", "says"), [
    ({"observedGeneration": "3", "phase": "Healthy"}, 4, "waiting", "spec update to be observed"),
    ({"observedGeneration": "4", "phase": "Healthy"}, 4, "done", "Healthy"),
    ({"observedGeneration": "4", "phase": "Paused", "message": "CanaryPauseStep",
      "controllerPause": True, "pauseConditions": [{"reason": "CanaryPauseStep"}]}, 4, "waiting", "CanaryPauseStep"),
    ({"observedGeneration": "4", "phase": "Paused", "controllerPause": True}, 4, "waiting", "unpause"),
    ({"observedGeneration": "4", "phase": "Degraded", "message": "RolloutAborted: x"}, 4, "failed", "RolloutAborted"),
    ({"observedGeneration": "5c7d9b", "phase": "Healthy"}, 4, "done", "Healthy"),  # v0.9: a hash, counts as seen
    ({}, 1, "waiting", "Progressing"),
])
def test_rollout_phase_follows_argo(status: dict, generation: int, state: str, says: str) -> None:
    got_state, message = rollout_phase({"metadata": {"generation": generation}, "status": status})
    assert got_state == state
    assert says in message
