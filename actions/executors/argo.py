"""Abort and undo an Argo Rollouts ``Rollout``, as ``kubectl argo rollouts abort`` and ``undo`` do.

* **abort** (``cmd/abort``): a merge patch ``{"status": {"abort": true}}`` on the ``status``
  subresource, or on the Rollout itself when the CRD has none (a 404). The controller scales
  the canary down and sends traffic back to the stable ReplicaSet at once. Only sent while an
  update is in progress (the stable ReplicaSet is not the current one): on a fully promoted
  Rollout the controller removes the abort again.
* **undo** (``cmd/undo``): a JSON Patch of ``/spec/template`` with the template of the ReplicaSet
  to go back to, minus its ``rollouts-pod-template-hash`` label. Argo's undo takes "revision − 1";
  Backout takes the ReplicaSet that runs ``to_version``, the stable one first. A template equal to
  the stable one is promoted at once (the abort is cleared, no steps run again). As for
  Deployments, the patch ``test``\\ s the template it replaces and marks the Rollout with the
  incident.
* **promote --full** (``cmd/promote``), when the version is not the stable one: it would go
  through the canary steps again, pauses included. With ``promote_full`` (the default) Backout
  sends ``{"status": {"promoteFull": true}}`` once the controller has observed the undo (a new
  template clears ``promoteFull``, so sooner would be lost).

Then it waits as ``kubectl argo rollouts status`` does (:func:`rollout_phase`): ``Healthy`` is done,
``Degraded`` failed, anything else waits, up to ``timeout_s``. Rollouts whose template lives in
another object (``spec.workloadRef``) are refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from actions.executors.base import ExecutionFailed, Outcome, Rollback
from actions.executors.kube import (
    JSON_PATCH,
    MERGE_PATCH,
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
    rollback_patch,
    template_version,
    without_label,
    workload,
)
from backout.contracts import Target
from backout.names import check

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "rollouts"
HASH_LABEL = "rollouts-pod-template-hash"
REVISION = "rollout.argoproj.io/revision"

def rollout_phase(rollout: Obj) -> tuple[State, str]:
    """Where a Rollout is, by Argo's rules (``rolloututil.GetRolloutPhase``, as the CLI's status).

    ``status.observedGeneration`` is a string in Argo; a non-numeric one (v0.9) counts as observed.

    >>> rollout_phase({"metadata": {"generation": 7}, "status": {"observedGeneration": "6",
    ...                                                          "phase": "Healthy"}})
    ('waiting', 'waiting for rollout spec update to be observed')
    >>> rollout_phase({"metadata": {"generation": 7}, "status": {"observedGeneration": "7",
    ...                "phase": "Degraded", "message": "RolloutAborted: Rollout aborted update to revision 3"}})
    ('failed', 'Degraded: RolloutAborted: Rollout aborted update to revision 3')
    """
    status = rollout.get("status") or {}
    if not observed(rollout):
        return "waiting", "waiting for rollout spec update to be observed"
    if status.get("controllerPause") and not status.get("pauseConditions"):
        return "waiting", "waiting for rollout to unpause"
    phase, message = status.get("phase") or "Progressing", status.get("message") or ""
    shown = f"{phase}: {message}" if message else phase
    if phase == "Healthy":
        return "done", shown
    if phase == "Degraded":
        return "failed", shown
    return "waiting", shown


def observed(rollout: Obj) -> bool:
    """Whether the controller has seen the Rollout's latest spec (``isGenerationObserved``)."""
    seen = str((rollout.get("status") or {}).get("observedGeneration", ""))
    return not seen.isdigit() or int(seen) >= rollout["metadata"].get("generation", 0)


@dataclass(frozen=True)
class _Prepared:
    ref: Workload
    rollout: Obj
    running: str | None
    to_version: str
    replicaset: Obj | None  # None: the Rollout already runs to_version
    abort: bool  # an update is in progress: abort it first
    promote: bool  # the ReplicaSet is not the stable one: promote it fully after the undo

    def steps(self) -> list[str]:
        if self.replicaset is None:
            return [f"Rollout {self.ref} already runs {self.to_version}: nothing to do"]
        rs = self.replicaset
        steps = [f"abort Rollout {self.ref} (merge patch {{\"status\": {{\"abort\": true}}}} on its status)"] \
            if self.abort else []
        steps.append(f"patch Rollout {self.ref} (application/json-patch+json): /spec/template := the template "
                     f"of ReplicaSet {rs['metadata']['name']} ({self.to_version}) without its {HASH_LABEL} label, "
                     f"if the template is still the one running {self.running}")
        if self.promote:
            steps.append(f"once the undo is observed, promote Rollout {self.ref} fully (merge patch "
                         "{\"status\": {\"promoteFull\": true}}): it is not the stable ReplicaSet")
        return [*steps, "wait until the Rollout is Healthy, as 'kubectl argo rollouts status' does"]


class ArgoRolloutExecutor:
    """Aborts and undoes a Rollout (target ``{"kind": "argo-rollout", "namespace", "name",
    "container"?, "context"?}``)."""

    kind: ClassVar[str] = "argo-rollout"

    def __init__(self, settings: KubernetesSettings | None = None, clients: KubeClients | None = None) -> None:
        self.settings = settings or KubernetesSettings()
        self._clients = clients or KubeClients(self.settings)

    def current_version(self, target: Target) -> str | None:
        ref = workload(target)
        return self._version(ref, self._template(ref, self._read(ref)))

    def plan(self, rollback: Rollback) -> list[str]:
        return self._prepare(rollback).steps()

    def execute(self, rollback: Rollback) -> Outcome:
        """Abort, undo and wait. Raises :class:`ExecutionFailed` when it refuses or cannot act; returns a
        ``failed`` outcome when the undo was applied but the Rollout did not become Healthy."""
        prepared = self._prepare(rollback)
        ref, rs = prepared.ref, prepared.replicaset
        if rs is None:
            return Outcome("skipped", f"Rollout {ref} already runs {prepared.to_version}", prepared.to_version)
        if prepared.abort:
            self._abort(ref)
        template = without_label(rs["spec"]["template"], HASH_LABEL)
        ops = rollback_patch(prepared.rollout, template, rollback.incident_id, prepared.to_version)
        log.info("undoing Rollout %s from %s to %s (ReplicaSet %s)", ref, prepared.running, prepared.to_version,
                 rs["metadata"]["name"])
        try:
            call(f"patch Rollout {ref}", self._custom(ref).patch_namespaced_custom_object, GROUP, VERSION,
                 ref.namespace, PLURAL, ref.name, ops, _content_type=JSON_PATCH,
                 timeout_s=self.settings.request_timeout_s)
        except KubeApiError as exc:
            if exc.code == 422 and self._read(ref)["spec"]["template"] != prepared.rollout["spec"]["template"]:
                raise ExecutionFailed(f"Rollout {ref} changed while rolling back (its template is no longer the "
                                      f"one running {prepared.running}): someone else acted; "
                                      f"{'it was aborted but ' if prepared.abort else ''}its template was not "
                                      "patched") from None
            raise
        return self._wait(prepared, rs)

    def _prepare(self, rollback: Rollback) -> _Prepared:
        ref = workload(rollback.target)
        to_version = check("version", rollback.to_version)
        if rollback.from_version is not None:
            check("version", rollback.from_version)
        rollout = self._read(ref)
        running = self._version(ref, self._template(ref, rollout))
        if running == to_version:
            return _Prepared(ref, rollout, running, to_version, None, False, False)
        status = rollout.get("status") or {}
        stable = status.get("stableRS")

        def read(template: Obj) -> str | None:
            return self._version(ref, template)

        def is_stable(rs: Obj) -> bool:
            return bool(stable) and ((rs.get("metadata") or {}).get("labels") or {}).get(HASH_LABEL) == stable

        replicasets = owned_replicasets(self._apps(ref), rollout, self.settings.request_timeout_s)
        rs = replicaset_running(replicasets, to_version, read, REVISION, prefer=is_stable)
        if rs is None:
            raise ExecutionFailed(f"no ReplicaSet of Rollout {ref} runs {to_version}, so there is no template to "
                                  f"go back to (its ReplicaSets run: {history(replicasets, read, REVISION)})")
        in_progress = bool(stable) and stable != status.get("currentPodHash")
        return _Prepared(ref, rollout, running, to_version, rs, in_progress and not status.get("abort"),
                         self.settings.promote_full and not is_stable(rs))

    def _abort(self, ref: Workload) -> None:
        log.info("aborting Rollout %s", ref)
        self._patch_status(f"abort Rollout {ref}", ref, {"abort": True})

    def _patch_status(self, what: str, ref: Workload, status: Obj) -> None:
        """A merge patch of the status, as the CLI sends it: to the status subresource, or to the Rollout
        itself when the CRD has none (a 404)."""
        api, body = self._custom(ref), {"status": status}
        try:
            call(what, api.patch_namespaced_custom_object_status, GROUP, VERSION, ref.namespace, PLURAL, ref.name,
                 body, _content_type=MERGE_PATCH, timeout_s=self.settings.request_timeout_s)
        except KubeApiError as exc:
            if exc.code != 404:
                raise
            call(what, api.patch_namespaced_custom_object, GROUP, VERSION, ref.namespace, PLURAL, ref.name, body,
                 _content_type=MERGE_PATCH, timeout_s=self.settings.request_timeout_s)

    def _wait(self, prepared: _Prepared, rs: Obj) -> Outcome:
        ref, to = prepared.ref, prepared.to_version
        target_hash = ((rs.get("metadata") or {}).get("labels") or {}).get(HASH_LABEL)
        promote = prepared.promote

        def promote_once_observed(rollout: Obj) -> None:
            nonlocal promote
            status = rollout.get("status") or {}
            if promote and observed(rollout) and status.get("currentPodHash") == target_hash != status.get("stableRS"):
                log.info("promoting Rollout %s fully to %s", ref, to)
                self._patch_status(f"promote Rollout {ref}", ref, {"promoteFull": True})
                promote = False

        state, message, rollout = poll_until(lambda: self._read(ref), rollout_phase, self.settings,
                                             promote_once_observed)
        if state == "done" and rollout is not None:
            now = self._version(ref, rollout["spec"]["template"])
            if now != to:
                return Outcome("failed", f"set Rollout {ref} back to {to}, but it now runs {now}: someone else "
                                         "deployed meanwhile", now)
            how = ("aborted and " if prepared.abort else "") + ("fully promoted, " if prepared.promote else "")
            return Outcome("executed", f"rolled Rollout {ref} back from {prepared.running} to {to} ({how}ReplicaSet "
                                       f"{rs['metadata']['name']}); Healthy", now)
        if state == "timeout":
            message = f"it was not Healthy within {self.settings.timeout_s:g} s: {message}"
        elif state == "deleted":
            message = f"it was deleted ({message})"
        else:
            message = f"it is {message}"
        return Outcome("failed", f"set Rollout {ref} back to {to}, but {message}")

    @staticmethod
    def _template(ref: Workload, rollout: Obj) -> Obj:
        spec = rollout.get("spec") or {}
        if spec.get("workloadRef"):
            kind = spec["workloadRef"].get("kind", "workload")
            raise ExecutionFailed(f"Rollout {ref} takes its pod template from a {kind} (spec.workloadRef): Backout "
                                  "does not roll those back; target the referenced object or roll back by hand")
        return spec["template"]  # type: ignore[no-any-return]

    def _custom(self, ref: Workload) -> Any:
        from kubernetes.client import CustomObjectsApi

        return CustomObjectsApi(self._clients.get(ref.context))

    def _apps(self, ref: Workload) -> Any:
        from kubernetes.client import AppsV1Api

        return AppsV1Api(self._clients.get(ref.context))

    def _read(self, ref: Workload) -> Obj:
        return call(f"read Rollout {ref}", self._custom(ref).get_namespaced_custom_object, GROUP, VERSION,
                    ref.namespace, PLURAL, ref.name, timeout_s=self.settings.request_timeout_s)

    def _version(self, ref: Workload, template: Obj) -> str | None:
        return template_version(template, ref.container, self.settings.version_label, f"Rollout {ref}")
