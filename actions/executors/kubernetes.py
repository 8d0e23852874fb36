"""Roll a Deployment back the way ``kubectl rollout undo`` does, to the version a decision names.

kubectl's rollback (``polymorphichelpers/rollback.go``) lists the ReplicaSets the Deployment
owns, takes the template of the one for the wanted revision, refuses a paused Deployment, skips
when the template already matches, and JSON-Patches ``/spec/template`` with that template minus
its ``pod-template-hash`` label; the deployment controller then reuses that ReplicaSet and gives
it the next revision number. Backout does the same with two differences:

* the ReplicaSet is the one whose template runs ``to_version`` (its image tag, or the
  ``version_label``), never "revision − 1": revision numbers move after every rollback, so the
  previous revision may be the bad version itself;
* the patch first ``test``\\ s that ``/spec/template`` is still the one it read, so a deploy made
  meanwhile fails the rollback instead of being overwritten, and it marks the Deployment with
  the incident (annotations ``backout.io/rollback-to``, ``backout.io/incident``).

Then it waits as ``kubectl rollout status`` does (:func:`rollout_status`), up to ``timeout_s``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from actions.executors.base import ExecutionFailed, Outcome, Rollback
from actions.executors.kube import (
    JSON_PATCH,
    KubeApiError,
    KubeClients,
    KubernetesSettings,
    Obj,
    State,
    Workload,
    call,
    history,
    owned_replicasets,
    poll_until,
    replicaset_running,
    revision,
    rollback_patch,
    template_version,
    without_label,
    workload,
)
from backout.contracts import Target
from backout.names import check

log = logging.getLogger(__name__)

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"

def rollout_status(deployment: Obj) -> tuple[State, str]:
    """Where a Deployment's rollout is, by kubectl's rules (``DeploymentStatusViewer.Status``).

    >>> rollout_status({"metadata": {"name": "web", "generation": 4}, "spec": {"replicas": 2},
    ...                 "status": {"observedGeneration": 4, "replicas": 3, "updatedReplicas": 2,
    ...                            "availableReplicas": 2}})
    ('waiting', 'Waiting for deployment "web" rollout to finish: 1 old replicas are pending termination...')
    """
    name, status = deployment["metadata"]["name"], deployment.get("status") or {}
    if deployment["metadata"].get("generation", 0) > status.get("observedGeneration", 0):
        return "waiting", "Waiting for deployment spec update to be observed..."
    progressing = next((c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), None)
    if progressing is not None and progressing.get("reason") == DEADLINE_EXCEEDED:
        return "failed", f'deployment "{name}" exceeded its progress deadline: {progressing.get("message", "")}'
    desired = (deployment.get("spec") or {}).get("replicas")
    updated, replicas = status.get("updatedReplicas", 0), status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if desired is not None and updated < desired:
        return "waiting", (f'Waiting for deployment "{name}" rollout to finish: {updated} out of {desired} new '
                           "replicas have been updated...")
    if replicas > updated:
        return "waiting", (f'Waiting for deployment "{name}" rollout to finish: {replicas - updated} old '
                           "replicas are pending termination...")
    if available < updated:
        return "waiting", (f'Waiting for deployment "{name}" rollout to finish: {available} of {updated} '
                           "updated replicas are available...")
    return "done", f'deployment "{name}" successfully rolled out'


@dataclass(frozen=True)
class _Prepared:
    """What a rollback of one Deployment will do, decided from what the API server says now."""

    ref: Workload
    deployment: Obj
    running: str | None
    to_version: str
    replicaset: Obj | None  # None: the Deployment already runs to_version

    def steps(self) -> list[str]:
        if self.replicaset is None:
            return [f"Deployment {self.ref} already runs {self.to_version}: nothing to do"]
        rs = self.replicaset
        return [f"patch Deployment {self.ref} (application/json-patch+json): /spec/template := the "
                f"template of ReplicaSet {rs['metadata']['name']} (revision {revision(rs, REVISION)}, "
                f"{self.to_version}) without its {HASH_LABEL} label, if the template is still the one running "
                f"{self.running}",
                "wait until the rollout completes, as 'kubectl rollout status' does"]


class KubernetesExecutor:
    """Rolls back a Deployment (target ``{"kind": "kubernetes", "namespace", "name", "container"?,
    "context"?}``)."""

    kind: ClassVar[str] = "kubernetes"

    def __init__(self, settings: KubernetesSettings | None = None, clients: KubeClients | None = None) -> None:
        self.settings = settings or KubernetesSettings()
        self._clients = clients or KubeClients(self.settings)

    def current_version(self, target: Target) -> str | None:
        ref = workload(target)
        deployment = self._read(ref)
        return self._version(ref, deployment["spec"]["template"])

    def plan(self, rollback: Rollback) -> list[str]:
        return self._prepare(rollback).steps()

    def execute(self, rollback: Rollback) -> Outcome:
        """Roll back and wait. Raises :class:`ExecutionFailed` when it refuses or cannot act (nothing
        was changed); returns a ``failed`` outcome when the rollback was applied but did not complete."""
        prepared = self._prepare(rollback)
        ref, rs = prepared.ref, prepared.replicaset
        if rs is None:
            return Outcome("skipped", f"Deployment {ref} already runs {prepared.to_version}", prepared.to_version)
        template = without_label(rs["spec"]["template"], HASH_LABEL)
        ops = rollback_patch(prepared.deployment, template, rollback.incident_id, prepared.to_version)
        log.info("rolling back Deployment %s from %s to %s (ReplicaSet %s, revision %d)", ref, prepared.running,
                 prepared.to_version, rs["metadata"]["name"], revision(rs, REVISION))
        try:
            call(f"patch Deployment {ref}", self._apps(ref).patch_namespaced_deployment, ref.name, ref.namespace,
                 ops, _content_type=JSON_PATCH, timeout_s=self.settings.request_timeout_s)
        except KubeApiError as exc:
            if exc.code == 422 and self._read(ref)["spec"]["template"] != prepared.deployment["spec"]["template"]:
                raise ExecutionFailed(f"Deployment {ref} changed while rolling back (its template is no longer "
                                      f"the one running {prepared.running}): someone else acted; nothing was "
                                      "patched") from None
            raise
        return self._wait(prepared, rs)

    def _prepare(self, rollback: Rollback) -> _Prepared:
        ref = workload(rollback.target)
        to_version = check("version", rollback.to_version)
        if rollback.from_version is not None:
            check("version", rollback.from_version)
        deployment = self._read(ref)
        if (deployment.get("spec") or {}).get("paused"):
            raise ExecutionFailed(f"Deployment {ref} is paused: Backout does not roll back a paused Deployment "
                                  f"(someone is working on it); resume it with 'kubectl rollout resume "
                                  f"deployment/{ref.name} -n {ref.namespace}' or roll back by hand")
        running = self._version(ref, deployment["spec"]["template"])
        if running == to_version:
            return _Prepared(ref, deployment, running, to_version, None)
        replicasets = owned_replicasets(self._apps(ref), deployment, self.settings.request_timeout_s)

        def read(template: Obj) -> str | None:
            return self._version(ref, template)

        rs = replicaset_running(replicasets, to_version, read, REVISION)
        if rs is None:
            raise ExecutionFailed(f"no ReplicaSet of Deployment {ref} runs {to_version}, so there is no template "
                                  f"to roll back to (its ReplicaSets run: {history(replicasets, read, REVISION)})")
        return _Prepared(ref, deployment, running, to_version, rs)

    def _wait(self, prepared: _Prepared, rs: Obj) -> Outcome:
        ref, to = prepared.ref, prepared.to_version
        state, message, deployment = poll_until(lambda: self._read(ref), rollout_status, self.settings)
        if state == "done" and deployment is not None:
            now = self._version(ref, deployment["spec"]["template"])
            if now != to:
                return Outcome("failed", f"rolled Deployment {ref} back to {to}, but it now runs {now}: someone "
                                         "else deployed meanwhile", now)
            available = (deployment.get("status") or {}).get("availableReplicas", 0)
            return Outcome("executed", f"rolled Deployment {ref} back from {prepared.running} to {to} (ReplicaSet "
                                       f"{rs['metadata']['name']}, now revision {revision(deployment, REVISION)}); "
                                       f"{available} replicas available", now)
        if state == "timeout":
            message = f"the rollout did not complete within {self.settings.timeout_s:g} s: {message}"
        elif state == "deleted":
            message = f"it was deleted ({message})"
        return Outcome("failed", f"rolled Deployment {ref} back to {to}, but {message}")

    def _apps(self, ref: Workload) -> Any:
        from kubernetes.client import AppsV1Api

        return AppsV1Api(self._clients.get(ref.context))

    def _read(self, ref: Workload) -> Obj:
        return call(f"read Deployment {ref}", self._apps(ref).read_namespaced_deployment, ref.name, ref.namespace,
                    timeout_s=self.settings.request_timeout_s)

    def _version(self, ref: Workload, template: Obj) -> str | None:
        return template_version(template, ref.container, self.settings.version_label, f"Deployment {ref}")
