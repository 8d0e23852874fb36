"""What the Kubernetes executors (and the Kubernetes watcher) share.

* :class:`KubernetesSettings` — where the kubeconfig is, how versions are read, how long to wait.
* :func:`workload` — the target's fields, every name checked with :mod:`backout.names`.
* :class:`KubeClients` — one official-client ``ApiClient`` per kubeconfig context.
* :func:`call` — one API call, its JSON as the server sent it. Objects are read and written as raw
  JSON, not the client's models, so that fields newer than the client are copied back untouched;
  every patch's content type is set by the caller (the client guesses, and guesses JSON Patch even
  for a merge patch).
* :func:`template_version` — the version a pod template runs: the image tag of its container, or a
  label such as ``app.kubernetes.io/version`` (``version_label``).
* :func:`owned_replicasets` / :func:`replicaset_running` — a workload's history, as
  ``kubectl rollout undo`` lists it (selector, then controller owner reference), and the
  ReplicaSet that runs a version (revision numbers move after every rollback: never "revision − 1").
* :func:`poll_until` — read a workload until its controller says done or failed, or time runs out.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from actions.executors.base import ExecutionFailed
from backout.contracts import Target
from backout.errors import ConfigError, ContractError
from backout.names import check

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

Obj = dict[str, Any]
State = Literal["done", "waiting", "failed"]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"

# set on the workload by a rollback, so that a watcher (and a human) can tell it from a deploy
ROLLBACK_TO = "backout.io/rollback-to"
ROLLBACK_INCIDENT = "backout.io/incident"

_LABEL_KEY = re.compile(r"(?:[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


class KubernetesSettings(BaseSettings):
    """How the Kubernetes executors reach and read a cluster (``BACKOUT_KUBERNETES_*``)."""

    model_config = SettingsConfigDict(env_prefix="BACKOUT_KUBERNETES_", frozen=True, extra="ignore")

    kubeconfig: str | None = Field(default=None, description="kubeconfig file; default $KUBECONFIG or "
                                                             "~/.kube/config")
    in_cluster: bool = Field(default=False, description="use the pod's service account instead of a "
                                                        "kubeconfig")
    version_label: str | None = Field(default=None, description="pod-template label holding the version "
                                                                "(e.g. app.kubernetes.io/version); default: "
                                                                "the container image's tag")
    promote_full: bool = Field(default=True, description="Argo: when the version to go back to is not the "
                                                         "stable ReplicaSet, promote it fully (skip steps, "
                                                         "pauses and analysis) once the undo is observed")
    timeout_s: float = Field(default=600.0, gt=0, description="how long a rollback may take to complete")
    poll_s: float = Field(default=2.0, gt=0, description="how often the rollout's status is read")
    request_timeout_s: float = Field(default=30.0, gt=0, description="timeout of one API request")

    @field_validator("version_label")
    @classmethod
    def _label_key(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 317 or not _LABEL_KEY.fullmatch(value)):
            raise ValueError(f"{value!r} is not a Kubernetes label key ([prefix/]name, e.g. "
                             "app.kubernetes.io/version)")
        return value


def settings_from_env(**overrides: Any) -> KubernetesSettings:
    """:class:`KubernetesSettings` from the environment and ``overrides`` (``None`` ones ignored);
    :class:`ConfigError` naming the bad setting."""
    try:
        return KubernetesSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ConfigError(f"Kubernetes setting {error['loc'][0]!r} (BACKOUT_KUBERNETES_"
                          f"{str(error['loc'][0]).upper()}): {error['msg']}") from None


@dataclass(frozen=True)
class Workload:
    """A target's fields, checked: the object is ``namespace/name``; ``container`` carries the
    version (optional when the pod has one container); ``context`` picks a kubeconfig context."""

    namespace: str
    name: str
    container: str | None = None
    context: str | None = None

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def workload(target: Target) -> Workload:
    """The checked fields of a ``kubernetes`` or ``argo-rollout`` target; :class:`ContractError`
    naming the field if one is missing or not a valid name."""
    fields = target.model_dump()
    for key in ("namespace", "name"):
        if not fields.get(key):
            raise ContractError(f"{target.kind} target: field {key!r} is missing")
    container, context = fields.get("container"), fields.get("context")
    return Workload(
        namespace=check("namespace", fields["namespace"]),
        name=check("k8s_name", fields["name"]),
        container=None if container is None else check("container", container),
        context=None if context is None else check("kube_context", context),
    )


class KubeClients:
    """One ``ApiClient`` per kubeconfig context, made on first use (contexts must exist in it)."""

    def __init__(self, settings: KubernetesSettings) -> None:
        self.settings = settings
        self._clients: dict[str | None, ApiClient] = {}

    def get(self, context: str | None) -> ApiClient:
        if context not in self._clients:
            self._clients[context] = self._make(context)
        return self._clients[context]

    def _make(self, context: str | None) -> ApiClient:
        try:
            from kubernetes import client, config
            from kubernetes.config.config_exception import ConfigException
        except ImportError:
            raise ConfigError("the Kubernetes client is not installed: pip install 'backout[kubernetes]'") from None

        if self.settings.in_cluster:
            if context is not None:
                raise ContractError(f"target names kubeconfig context {context!r}, but the executor runs "
                                    "in-cluster with its service account (no contexts)")
            configuration = client.Configuration()
            try:
                config.load_incluster_config(client_configuration=configuration)
            except ConfigException as exc:
                raise ConfigError(f"BACKOUT_KUBERNETES_IN_CLUSTER is set but this is not a pod: {exc}") from None
            return client.ApiClient(configuration)
        path = self.settings.kubeconfig
        try:
            contexts, _ = config.list_kube_config_contexts(config_file=path)
            if context is not None and context not in {c["name"] for c in contexts}:
                raise ContractError(f"target names kubeconfig context {context!r}, which the kubeconfig "
                                    f"{path or '$KUBECONFIG'} does not have")
            return config.new_client_from_config(config_file=path, context=context, persist_config=False)
        except (ConfigException, OSError) as exc:
            raise ConfigError(f"cannot load the kubeconfig {path or '$KUBECONFIG'}: {exc}") from None


class KubeApiError(ExecutionFailed):
    """The API server answered an error (``code`` and ``reason`` from its Status) or could not be reached."""

    def __init__(self, message: str, code: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.code, self.reason = code, reason


def call(what: str, method: Callable[..., Any], *args: Any, timeout_s: float, **kwargs: Any) -> Obj:
    """``method(*args, **kwargs)`` of an official-client API, answering the JSON the server sent;
    :class:`KubeApiError` saying ``what`` failed and the server's reason."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        response = method(*args, _preload_content=False, _request_timeout=timeout_s, **kwargs)
    except ApiException as exc:
        try:
            status = json.loads(exc.body or "")
            message, reason = status.get("message") or exc.reason, status.get("reason") or exc.reason
        except (ValueError, AttributeError):
            message, reason = exc.reason, exc.reason
        raise KubeApiError(f"{what}: {message} ({exc.status} {reason})", exc.status, reason) from None
    except (HTTPError, OSError) as exc:
        raise KubeApiError(f"{what}: cannot reach the API server: {exc}") from None
    try:
        return json.loads(response.data)  # type: ignore[no-any-return]
    except (HTTPError, OSError) as exc:
        raise KubeApiError(f"{what}: the connection broke while reading the answer: {exc}") from None
    except ValueError:
        raise KubeApiError(f"{what}: the API server answered something that is not JSON") from None
    finally:
        response.release_conn()


def image_tag(image: str) -> str | None:
    """The tag of an image reference; ``None`` for a bare name or a digest only.

    >>> image_tag("registry.example.com:5000/shop/checkout:v2.15.1@sha256:0f3a")
    'v2.15.1'
    >>> image_tag("registry.example.com:5000/shop/checkout") is None
    True
    """
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def pick_container(template: Obj, container: str | None, workload_name: str) -> Obj:
    """The container that carries the version: the named one, the only one, or the one named like
    the workload; :class:`ContractError` if the target must say which."""
    containers = (template.get("spec") or {}).get("containers") or []
    names = [c.get("name") for c in containers]
    wanted = container or (None if len(containers) == 1 else workload_name)
    if wanted is None:
        return containers[0]  # type: ignore[no-any-return]
    for candidate in containers:
        if candidate.get("name") == wanted:
            return candidate  # type: ignore[no-any-return]
    if container is None:
        raise ContractError(f"{workload_name} has containers {', '.join(map(str, names))}: the target must "
                            "name the one that carries the version in 'container'")
    raise ContractError(f"target names container {container!r}, but {workload_name} has "
                        f"{', '.join(map(str, names)) or 'no containers'}")


def template_version(template: Obj, container: str | None, version_label: str | None,
                     workload_name: str) -> str | None:
    """The version a pod template runs: ``version_label``'s value, or its container's image tag."""
    if version_label is not None:
        return ((template.get("metadata") or {}).get("labels") or {}).get(version_label)
    image = pick_container(template, container, workload_name).get("image") or ""
    return image_tag(image)


def without_label(template: Obj, label: str) -> Obj:
    """A copy of a pod template without one label (``pod-template-hash``: it names a ReplicaSet)."""
    out = copy.deepcopy(template)
    labels = (out.get("metadata") or {}).get("labels")
    if labels is not None:
        labels.pop(label, None)
        if not labels:
            del out["metadata"]["labels"]
    return out


def selector_string(selector: Obj) -> str:
    """A ``LabelSelector`` as the ``labelSelector`` query string (as LabelSelectorAsSelector).

    >>> selector_string({"matchLabels": {"app": "checkout"},
    ...                  "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]})
    'app=checkout,tier in (api,web)'
    """
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], ",".join(sorted(expr.get("values") or []))
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}[op])
    return ",".join(sorted(parts))


def revision(obj: Obj, annotation: str) -> int:
    try:
        return int(((obj.get("metadata") or {}).get("annotations") or {}).get(annotation, 0))
    except ValueError:
        return 0


def owned_replicasets(apps: Any, owner: Obj, timeout_s: float) -> list[Obj]:
    """The ReplicaSets ``owner`` controls: listed by its selector, kept if their controller owner
    reference is ``owner`` (as kubectl's listReplicaSets)."""
    meta = owner["metadata"]
    listed = call(f"list the ReplicaSets of {meta['namespace']}/{meta['name']}", apps.list_namespaced_replica_set,
                  meta["namespace"], label_selector=selector_string(owner["spec"]["selector"]),
                  timeout_s=timeout_s)
    return [rs for rs in listed.get("items") or []
            if any(ref.get("uid") == meta["uid"] and ref.get("controller")
                   for ref in (rs.get("metadata") or {}).get("ownerReferences") or [])]


def replicaset_running(replicasets: list[Obj], version: str, read: Callable[[Obj], str | None],
                       annotation: str, prefer: Callable[[Obj], bool] = lambda rs: False) -> Obj | None:
    """The ReplicaSet whose template runs ``version``: a preferred one (Argo's stable) first, then the
    highest revision (the latest template of that version). Templates that cannot tell are skipped."""
    def runs(rs: Obj) -> bool:
        try:
            return read(rs["spec"]["template"]) == version
        except ContractError:
            return False

    candidates = [rs for rs in replicasets if runs(rs)]
    return max(candidates, key=lambda rs: (prefer(rs), revision(rs, annotation)), default=None)


def history(replicasets: list[Obj], read: Callable[[Obj], str | None], annotation: str) -> str:
    """The versions a workload's ReplicaSets run, newest revision first, for error messages."""
    def version(rs: Obj) -> str:
        try:
            return str(read(rs["spec"]["template"]))
        except ContractError:
            return "?"

    ordered = sorted(replicasets, key=lambda rs: -revision(rs, annotation))
    return ", ".join(f"{version(rs)} (revision {revision(rs, annotation)})" for rs in ordered) or "none"


def rollback_patch(current: Obj, template: Obj, incident_id: str, to_version: str) -> list[Obj]:
    """The JSON Patch of a rollback: replace ``/spec/template`` only if it is still the one we read
    (the ``test`` makes a concurrent change fail the patch instead of being overwritten), and mark the
    object with the incident (metadata annotations: they change no pod template, so no ReplicaSet)."""
    annotations = (current.get("metadata") or {}).get("annotations")
    marks = {ROLLBACK_TO: to_version, ROLLBACK_INCIDENT: incident_id}
    ops: list[Obj] = [{"op": "test", "path": "/spec/template", "value": current["spec"]["template"]},
                      {"op": "replace", "path": "/spec/template", "value": template}]
    if annotations is None:
        return [*ops, {"op": "add", "path": "/metadata/annotations", "value": marks}]
    return [*ops, *({"op": "add", "path": f"/metadata/annotations/{key.replace('~', '~0').replace('/', '~1')}",
                     "value": value} for key, value in marks.items())]


def poll_until(read: Callable[[], Obj], judge: Callable[[Obj], tuple[State, str]], settings: KubernetesSettings,
               on_waiting: Callable[[Obj], None] = lambda obj: None) -> tuple[str, str, Obj | None]:
    """Read the workload every ``poll_s`` and ``judge`` it until it is ``done`` or ``failed``; ``timeout``
    after ``timeout_s``, ``deleted`` if it disappears. Errors of the API server in between are waited
    out (their message is the last word if time runs out). Returns (state, message, last object)."""
    deadline = time.monotonic() + settings.timeout_s
    message, obj = "the change has not been observed yet", None
    while True:
        try:
            obj = read()
        except KubeApiError as exc:
            if exc.code == 404:
                return "deleted", str(exc), None
            message = str(exc)
        else:
            state, message = judge(obj)
            if state != "waiting":
                return state, message, obj
            on_waiting(obj)
        if time.monotonic() + settings.poll_s > deadline:
            return "timeout", message, obj
        time.sleep(settings.poll_s)
