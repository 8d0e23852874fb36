"""A local Kubernetes API server for the executor and watcher tests (no real cluster runs here).

It answers the few calls Backout makes, over real HTTP, the way kube-apiserver and the
controllers behind it do, so that the official ``kubernetes`` client talks to it unchanged
(through a kubeconfig file, :meth:`KubeAPI.kubeconfig`):

* ``apps/v1`` Deployments: GET one, LIST (``labelSelector``, ``fieldSelector``, all namespaces
  or one), WATCH (``?watch=1``, ``resourceVersion``, ``timeoutSeconds``; JSON lines over chunked
  HTTP; a compacted ``resourceVersion`` gets an ``ERROR`` event with a 410 ``Expired`` Status),
  PATCH as ``application/json-patch+json`` (RFC 6902), ``application/merge-patch+json``
  (RFC 7386) or ``application/strategic-merge-patch+json`` (the subset Backout's tests need: lists
  of containers, env, ports, volumes and conditions merge by their key; ``$patch: replace``);
* their ReplicaSets: GET one, LIST in a namespace with ``labelSelector``;
* ``argoproj.io/v1alpha1`` Rollouts: GET, PATCH (JSON patch or merge patch; a strategic merge
  patch gets 415 as a CRD does), and the ``status`` subresource (optional, as on a CRD).

As the API server does: writes are defaulted (pod template, Deployment strategy), a change of
``spec`` bumps ``metadata.generation``, every write bumps the global ``resourceVersion``, a
patch that changes nothing writes nothing, the main resource ignores ``status`` and ``/status``
ignores everything else, and errors are ``Status`` objects (404 NotFound, 409 Conflict, 422
Invalid, 400 BadRequest, 415 UnsupportedMediaType).

Behind it, simulated controllers (Kubernetes' deployment controller and Argo Rollouts') react to
each change, either on their own ``step_s`` after it or when the test calls :meth:`KubeAPI.step`:

* Deployment: find the ReplicaSet whose template equals the Deployment's (ignoring
  ``pod-template-hash``) or create one named ``<deployment>-<hash>``; its
  ``deployment.kubernetes.io/revision`` becomes max(other revisions) + 1, also when an old one
  is reused (the old number goes to ``revision-history``), as ``getNewReplicaSet`` does; the
  Deployment's own revision annotation follows. A rollout takes two steps: observed (one new
  replica, old ones still up, ``ReplicaSetUpdated``), then complete (``NewReplicaSetAvailable``)
  or, after :meth:`KubeAPI.fail_rollouts`, ``Progressing=False`` with ``ProgressDeadlineExceeded``.
  A paused Deployment is observed but not rolled out.
* Rollout (canary): a new template becomes a canary held at its pause step (``Paused``) or, with
  ``hold=False``, is promoted at once; ``status.abort`` scales the canary down and marks the
  Rollout ``Degraded`` (``RolloutAborted``); ``status.promoteFull`` promotes the canary; a template
  that matches the stable ReplicaSet is promoted at once and clears the abort, as Argo does when
  rolling back to stable; a new template clears ``abort`` and ``promoteFull``.

Every request is recorded (:attr:`KubeAPI.requests`: method, path, query, content type, body), and
:attr:`KubeAPI.on_request` can act before one is served (someone else deploying meanwhile).
"""

from __future__ import annotations

import copy
import datetime as dt
import heapq
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

Obj = dict[str, Any]

HASH_LABEL = "pod-template-hash"
ROLLOUT_HASH_LABEL = "rollouts-pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
ROLLOUT_REVISION = "rollout.argoproj.io/revision"


@dataclass(frozen=True)
class Kind:
    """One resource the server serves."""

    resource: str  # plural, as in the path
    group: str
    version: str
    kind: str
    builtin: bool  # built-in (defaulted, strategic merge) or a custom resource
    hash_label: str
    revision_annotation: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def qualified(self) -> str:  # as in error messages: deployments.apps
        return f"{self.resource}.{self.group}"


DEPLOYMENTS = Kind("deployments", "apps", "v1", "Deployment", True, HASH_LABEL, REVISION)
REPLICASETS = Kind("replicasets", "apps", "v1", "ReplicaSet", True, HASH_LABEL, REVISION)
ROLLOUTS = Kind("rollouts", "argoproj.io", "v1alpha1", "Rollout", False, ROLLOUT_HASH_LABEL,
                ROLLOUT_REVISION)
KINDS = {k.resource: k for k in (DEPLOYMENTS, REPLICASETS, ROLLOUTS)}

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"

_PATH = re.compile(r"/apis/(?P<group>[^/]+)/(?P<version>[^/]+)(?:/namespaces/(?P<ns>[^/]+))?"
                   r"/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?")


@dataclass(frozen=True)
class Request:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any  # the decoded JSON body, or None


class ApiError(Exception):
    """An error answered as the API server's ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        out: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            out["details"] = self.details
        return out


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind.qualified} "{name}" not found',
                    {"name": name, "group": kind.group, "kind": kind.resource})


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- patches -------------------------------------------------------------------------------------

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f'JSON pointer must start with "/": {path!r}')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, path: str, op: str) -> tuple[Any, str]:
    parts = _pointer(path)
    if not parts:
        raise ApiError(422, "Invalid", f"{op} operation does not apply to the document root")
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise ApiError(422, "Invalid", f'{op} operation does not apply: doc is missing path: "{path}"')
    return node, parts[-1]


def _get(doc: Any, path: str, op: str) -> Any:
    node = doc
    for part in _pointer(path):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise ApiError(422, "Invalid", f"{op} operation does not apply: doc is missing key: {path}")
    return node


def _remove(doc: Any, path: str, op: str) -> Any:
    node, key = _parent(doc, path, op)
    if isinstance(node, dict) and key in node:
        return node.pop(key)
    if isinstance(node, list) and key.isdigit() and int(key) < len(node):
        return node.pop(int(key))
    raise ApiError(422, "Invalid", f"Unable to remove nonexistent key: {key}: missing value")


def _add(doc: Any, path: str, value: Any, op: str) -> Any:
    if path == "":
        return copy.deepcopy(value)
    node, key = _parent(doc, path, op)
    if isinstance(node, dict):
        node[key] = copy.deepcopy(value)
    elif isinstance(node, list) and (key == "-" or (key.isdigit() and int(key) <= len(node))):
        node.insert(len(node) if key == "-" else int(key), copy.deepcopy(value))
    else:
        raise ApiError(422, "Invalid", f'{op} operation does not apply: doc is missing path: "{path}"')
    return doc


def json_patch(doc: Obj, ops: Any) -> Obj:
    """RFC 6902, as evanphx/json-patch applies it (the API server's library)."""
    if not isinstance(ops, list) or not all(isinstance(o, dict) for o in ops):
        raise ApiError(400, "BadRequest",
                       "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    out: Any = copy.deepcopy(doc)
    for op in ops:
        kind, path = op.get("op"), op.get("path")
        if not isinstance(path, str):
            raise ApiError(422, "Invalid", f"operation missing path field: {op}")
        if kind in ("add", "replace", "test") and "value" not in op:
            raise ApiError(422, "Invalid", f"operation missing value field: {op}")
        if kind == "add":
            out = _add(out, path, op["value"], "add")
        elif kind == "remove":
            _remove(out, path, "remove")
        elif kind == "replace":
            _get(out, path, "replace")
            if path == "":
                out = copy.deepcopy(op["value"])
            else:
                node, key = _parent(out, path, "replace")
                node[int(key) if isinstance(node, list) else key] = copy.deepcopy(op["value"])
        elif kind == "test":
            try:
                found = _get(out, path, "test")
            except ApiError:
                found = None
            if found != op["value"]:
                raise ApiError(422, "Invalid", f"testing value {path} failed: test failed")
        elif kind in ("move", "copy"):
            source = op.get("from")
            if not isinstance(source, str):
                raise ApiError(422, "Invalid", f"operation missing from field: {op}")
            value = _remove(out, source, kind) if kind == "move" else copy.deepcopy(_get(out, source, kind))
            out = _add(out, path, value, kind)
        else:
            raise ApiError(422, "Invalid", f"Unexpected kind: {kind}")
    return out  # type: ignore[no-any-return]


def merge_patch(doc: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# the patchMergeKey of the lists Backout's tests patch (k8s.io/api struct tags)
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "ports": "containerPort",
               "volumes": "name", "volumeMounts": "mountPath", "conditions": "type"}


def strategic_merge_patch(doc: Any, patch: Any, key: str | None = None) -> Any:
    """A strategic merge patch: a merge patch whose keyed lists merge item by item."""
    if isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        out = copy.deepcopy(doc) if isinstance(doc, dict) else {}
        for k, value in patch.items():
            if value is None:
                out.pop(k, None)
            else:
                out[k] = strategic_merge_patch(out.get(k), value, k)
        return out
    merge_key = _MERGE_KEYS.get(key or "")
    if isinstance(patch, list) and merge_key and isinstance(doc, list):
        out_list = copy.deepcopy(doc)
        for item in patch:
            index = next((i for i, old in enumerate(out_list)
                          if isinstance(item, dict) and old.get(merge_key) == item.get(merge_key)), None)
            if isinstance(item, dict) and item.get("$patch") == "delete":
                if index is not None:
                    out_list.pop(index)
            elif index is None:
                out_list.append(copy.deepcopy(item))
            else:
                out_list[index] = strategic_merge_patch(out_list[index], item)
        return out_list
    return copy.deepcopy(patch)


# --- selectors -----------------------------------------------------------------------------------

_REQUIREMENT = re.compile(r"\s*(?:(?P<not>!)\s*(?P<nkey>[\w./-]+)|(?P<key>[\w./-]+)\s*(?:"
                          r"(?P<op>==|=|!=)\s*(?P<value>[\w.-]*)|\s+(?P<setop>in|notin)\s*\((?P<set>[^)]*)\))?)\s*")


def label_selector(text: str) -> Callable[[dict[str, str]], bool]:
    """A predicate for a label selector string (equality- and set-based, as labels.Parse)."""
    tests: list[Callable[[dict[str, str]], bool]] = []
    for part in re.split(r",(?![^(]*\))", text.strip()) if text.strip() else []:
        m = _REQUIREMENT.fullmatch(part)
        if m is None:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
        if m["not"]:
            tests.append(lambda labels, k=m["nkey"]: k not in labels)
        elif m["op"]:
            want, negate = m["value"], m["op"] == "!="
            tests.append(lambda labels, k=m["key"], v=want, n=negate: (labels.get(k) == v) != n)
        elif m["setop"]:
            values = {v.strip() for v in m["set"].split(",") if v.strip()}
            if m["setop"] == "in":
                tests.append(lambda labels, k=m["key"], vs=values: labels.get(k) in vs)
            else:
                tests.append(lambda labels, k=m["key"], vs=values: labels.get(k) not in vs)
        else:
            tests.append(lambda labels, k=m["key"]: k in labels)
    return lambda labels: all(test(labels) for test in tests)


def field_selector(text: str) -> Callable[[Obj], bool]:
    """``metadata.name`` and ``metadata.namespace`` (=, ==, !=), the fields every resource supports."""
    tests: list[Callable[[Obj], bool]] = []
    for part in (p for p in text.split(",") if p.strip()):
        m = re.fullmatch(r"\s*(metadata\.name|metadata\.namespace)\s*(==|=|!=)\s*([^,]*)\s*", part)
        if m is None:
            raise ApiError(400, "BadRequest", f'"{part.split("=")[0].strip("!")}" is not a known field selector: '
                                              'only "metadata.name", "metadata.namespace"')
        attr, negate, want = m[1].split(".")[1], m[2] == "!=", m[3]
        tests.append(lambda obj, a=attr, w=want, n=negate: (obj["metadata"].get(a) == w) != n)
    return lambda obj: all(test(obj) for test in tests)


# --- defaulting, hashing, validation --------------------------------------------------------------

def default_pod_template(template: Obj) -> Obj:
    """The core/v1 defaults the API server fills into a pod template (the ones templates show)."""
    t = copy.deepcopy(template)
    t.setdefault("metadata", {}).setdefault("creationTimestamp", None)
    spec = t.setdefault("spec", {})
    for container in spec.get("containers") or []:
        image = str(container.get("image", ""))
        latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("resources", {})
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
    for key, value in (("restartPolicy", "Always"), ("terminationGracePeriodSeconds", 30),
                       ("dnsPolicy", "ClusterFirst"), ("securityContext", {}),
                       ("schedulerName", "default-scheduler")):
        spec.setdefault(key, value)
    return t


def template_hash(template: Obj) -> str:
    """A pod-template-hash: FNV-1a of the template, encoded as rand.SafeEncodeString does."""
    value = 0x811C9DC5
    for byte in json.dumps(template, sort_keys=True).encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(alphabet[ord(c) % len(alphabet)] for c in str(value))


def without_label(template: Obj, label: str) -> Obj:
    t = copy.deepcopy(template)
    labels = t.get("metadata", {}).get("labels")
    if labels is not None:
        labels.pop(label, None)
        if not labels:
            del t["metadata"]["labels"]
    return t


def validate(kind: Kind, old: Obj | None, new: Obj) -> None:
    """The validation that guards what Backout writes (a 422 listing every cause, as the API server):
    labels match the selector, containers have a name and an image, a Deployment's selector is immutable."""
    if kind.resource not in ("deployments", "rollouts"):
        return
    name, spec = new["metadata"]["name"], new.get("spec") or {}
    causes: list[tuple[str, str, str]] = []  # (field, reason, message)

    def invalid(field_path: str, value: Any, detail: str) -> None:
        causes.append((field_path, "FieldValueInvalid", f"Invalid value: {json.dumps(value)}: {detail}"))

    if kind is DEPLOYMENTS and old is not None and (old.get("spec") or {}).get("selector") != spec.get("selector"):
        invalid("spec.selector", spec.get("selector"), "field is immutable")
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        invalid("spec.template.metadata.labels", labels, "`selector` does not match template `labels`")
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    if not containers:
        causes.append(("spec.template.spec.containers", "FieldValueRequired", "Required value"))
    for i, container in enumerate(containers):
        for key in ("name", "image"):
            if not container.get(key):
                causes.append((f"spec.template.spec.containers[{i}].{key}", "FieldValueRequired", "Required value"))
    if causes:
        listed = [f"{field_path}: {message}" for field_path, _, message in causes]
        shown = listed[0] if len(listed) == 1 else f"[{', '.join(listed)}]"
        raise ApiError(422, "Invalid", f'{kind.kind}.{kind.group} "{name}" is invalid: {shown}',
                       {"name": name, "group": kind.group, "kind": kind.kind,
                        "causes": [{"reason": r, "message": m, "field": f} for f, r, m in causes]})


# --- the store and the server --------------------------------------------------------------------

@dataclass(order=True)
class _Due:
    at: float
    seq: int
    key: tuple[str, str, str] = field(compare=False)


class KubeAPI:
    """The server: an in-memory store, the simulated controllers, and an HTTP front in a thread.

    ``step_s``: how long the controllers wait before each step after a change (``None``: only
    when the test calls :meth:`step`). ``status_subresource``: whether Rollouts have one (the
    Argo CRD does; the CLI falls back to the main resource on 404). ``history``: how many events
    a watch can resume from before its resourceVersion counts as compacted.
    """

    def __init__(self, step_s: float | None = 0.05, status_subresource: bool = True,
                 history: int = 1000) -> None:
        self.step_s = step_s
        self.status_subresource = status_subresource
        self.history = history
        self.requests: list[Request] = []
        self.on_request: Callable[[Request], None] | None = None  # called before each request is served
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._events: list[tuple[int, str, str, Obj]] = []  # (rv, resource, type, object)
        self._compacted_rv = 0
        self._rv = 100
        self._pending: dict[tuple[str, str, str], list[str]] = {}
        self._failing: set[tuple[str, str]] = set()
        self._hold: dict[tuple[str, str, str], bool] = {}  # Rollout: keep the next template a canary
        self._due: list[_Due] = []
        self._seq = 0
        self._lock = threading.Condition()
        self._closed = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.api = self  # type: ignore[attr-defined]
        self._threads = [threading.Thread(target=self._server.serve_forever, args=(0.05,), name="kube-api",
                                          daemon=True),
                         threading.Thread(target=self._controller_loop, name="kube-controllers", daemon=True)]

    # lifecycle
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> KubeAPI:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> KubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kubeconfig(self, path: Path, context: str = "local", namespace: str = "default") -> Path:
        """Write a kubeconfig whose context ``context`` points at this server."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "local", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "test-token"}}],
            "contexts": [{"name": context, "context": {"cluster": "local", "user": "tester",
                                                       "namespace": namespace}}],
        }))
        return path

    # test-side helpers
    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        with self._lock:
            obj = self._objects.get((resource, namespace, name))
            if obj is None:
                raise not_found(KINDS[resource], name)
            return copy.deepcopy(obj)

    def list(self, resource: str, namespace: str) -> list[Obj]:
        with self._lock:
            return [copy.deepcopy(o) for (r, ns, _), o in sorted(self._objects.items()) if r == resource
                    and ns == namespace]

    def create_deployment(self, namespace: str, name: str, image: str, *, replicas: int = 3,
                          container: str = "app", labels: dict[str, str] | None = None,
                          paused: bool = False, extra_containers: list[Obj] | None = None) -> Obj:
        """A Deployment, rolled out to completion (its first ReplicaSet has revision 1)."""
        selector = {"app": name}
        template = {"metadata": {"labels": {**selector, **(labels or {})}},
                    "spec": {"containers": [{"name": container, "image": image}, *(extra_containers or [])]}}
        obj = {"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": name, "namespace": namespace, "labels": dict(selector)},
               "spec": {"replicas": replicas, "selector": {"matchLabels": selector}, "template": template,
                        "paused": paused}}
        if not paused:
            del obj["spec"]["paused"]
        self._create(DEPLOYMENTS, obj)
        self.settle("deployments", namespace, name)
        return self.get("deployments", namespace, name)

    def create_rollout(self, namespace: str, name: str, image: str, *, replicas: int = 4,
                       container: str = "app") -> Obj:
        """A canary Rollout (20 % then a pause), fully promoted to ``image``."""
        selector = {"app": name}
        obj = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
               "metadata": {"name": name, "namespace": namespace},
               "spec": {"replicas": replicas, "selector": {"matchLabels": selector},
                        "template": {"metadata": {"labels": dict(selector)},
                                     "spec": {"containers": [{"name": container, "image": image}]}},
                        "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}}}
        self._create(ROLLOUTS, obj)
        self.settle("rollouts", namespace, name)
        return self.get("rollouts", namespace, name)

    def set_image(self, resource: str, namespace: str, name: str, image: str, *, container: str = "app",
                  settle: bool = True, hold: bool = True) -> Obj:
        """``kubectl set image`` (a strategic merge patch of the container), as a user deploys.

        ``settle``: run the controllers to the end now. ``hold`` (Rollouts): keep the new
        version as a canary at its pause step instead of promoting it.
        """
        key = (resource, namespace, name)
        with self._lock:
            if resource == "deployments":
                patch: Any = {"spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}}
                self._patch(DEPLOYMENTS, namespace, name, None, STRATEGIC_PATCH, patch)
            else:  # a CRD takes no strategic merge patch: replace the one image
                containers = self._objects[key]["spec"]["template"]["spec"]["containers"]
                index = next(i for i, c in enumerate(containers) if c["name"] == container)
                self._hold[key] = hold
                self._patch(ROLLOUTS, namespace, name, None, JSON_PATCH, [
                    {"op": "replace", "path": f"/spec/template/spec/containers/{index}/image", "value": image}])
        if settle:
            self.settle(resource, namespace, name)
        return self.get(resource, namespace, name)

    def patch(self, resource: str, namespace: str, name: str, content_type: str, body: Any) -> Obj:
        """A change made by someone else (``kubectl patch``), through the same path as a PATCH request."""
        with self._lock:
            return self._patch(KINDS[resource], namespace, name, None, content_type, body)

    def fail_rollouts(self, namespace: str, name: str) -> None:
        """From now on, rollouts of this object exceed their progress deadline instead of completing."""
        with self._lock:
            self._failing.add((namespace, name))

    def step(self, resource: str, namespace: str, name: str) -> bool:
        """Run the controllers' next pending step for one object now; False if none was pending."""
        with self._lock:
            return self._run_step((resource, namespace, name))

    def settle(self, resource: str, namespace: str, name: str) -> Obj:
        """Run every pending controller step for one object now."""
        while self.step(resource, namespace, name):
            pass
        return self.get(resource, namespace, name)

    def events(self, resource: str) -> list[tuple[str, Obj]]:
        """Every write of one resource so far, as a watch from the start would see it: (type, object)."""
        with self._lock:
            return [(kind, copy.deepcopy(obj)) for _, r, kind, obj in self._events if r == resource]

    def compact(self) -> int:
        """Forget past events, as etcd compaction does after other writes moved the revision on; a
        watch from an older resourceVersion gets 410. Returns the oldest resourceVersion kept."""
        with self._lock:
            self._events.clear()
            self._rv += 1  # a write elsewhere in the cluster
            self._compacted_rv = self._rv
            return self._rv

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            time.sleep(0.02)

    # store (callers hold the lock)
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _write(self, kind: Kind, obj: Obj, event: str) -> None:
        meta = obj["metadata"]
        meta["resourceVersion"] = self._next_rv()
        self._objects[(kind.resource, meta["namespace"], meta["name"])] = obj
        self._events.append((self._rv, kind.resource, event, copy.deepcopy(obj)))
        if len(self._events) > self.history:
            dropped = self._events.pop(0)
            self._compacted_rv = dropped[0]
        self._lock.notify_all()

    def _create(self, kind: Kind, obj: Obj) -> Obj:
        with self._lock:
            obj = copy.deepcopy(obj)
            meta = obj["metadata"]
            meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=_now())
            obj = self._defaulted(kind, obj)
            validate(kind, None, obj)
            self._write(kind, obj, "ADDED")
            self._changed(kind, meta["namespace"], meta["name"])
            return copy.deepcopy(obj)

    def _defaulted(self, kind: Kind, obj: Obj) -> Obj:
        if not kind.builtin:
            return obj  # a CRD has no defaulting webhook here, as Argo's
        spec = obj.setdefault("spec", {})
        if "template" in spec:
            spec["template"] = default_pod_template(spec["template"])
        if kind is DEPLOYMENTS:
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault("strategy", {"type": "RollingUpdate",
                                         "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        return obj

    def _patch(self, kind: Kind, namespace: str, name: str, sub: str | None, content_type: str | None,
               body: Any) -> Obj:
        """Apply one PATCH as the API server does; the caller holds the lock."""
        accepted = [JSON_PATCH, MERGE_PATCH, "application/apply-patch+yaml"]
        if kind.builtin:
            accepted.insert(2, STRATEGIC_PATCH)
        ctype = (content_type or "").split(";")[0].strip()
        if ctype not in accepted or ctype == "application/apply-patch+yaml":
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types "
                           f"include: {', '.join(accepted)}")
        old = self._objects.get((kind.resource, namespace, name))
        if old is None:
            raise not_found(kind, name)
        if ctype == JSON_PATCH:
            new = json_patch(old, body)
        elif not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "json: cannot unmarshal array into Go value of type "
                                              "map[string]interface {}")
        elif ctype == MERGE_PATCH:
            new = merge_patch(old, body)
        else:
            new = strategic_merge_patch(old, body)
        if not isinstance(new, dict) or new.get("metadata", {}).get("name") != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        rv = new.get("metadata", {}).get("resourceVersion")
        if rv is not None and rv != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind.qualified} "{name}": the '
                                            "object has been modified; please apply your changes to the "
                                            "latest version and try again",
                           {"name": name, "group": kind.group, "kind": kind.resource})
        has_status_sub = kind.builtin or self.status_subresource
        if sub == "status":  # only status changes
            new = {**copy.deepcopy(old), "status": new.get("status", {})}
        elif has_status_sub:  # status changes are ignored on the main resource
            new["status"] = copy.deepcopy(old.get("status", {}))
            if not old.get("status"):
                new.pop("status", None)
        for key in ("uid", "creationTimestamp", "namespace", "generation", "resourceVersion"):
            new["metadata"][key] = old["metadata"][key]
        new = self._defaulted(kind, new)
        validate(kind, old, new)
        if new == old:
            return copy.deepcopy(old)  # a no-op patch writes nothing
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        self._write(kind, new, "MODIFIED")
        self._changed(kind, namespace, name)
        return copy.deepcopy(new)

    # HTTP entry points (the handler calls these)
    def handle(self, method: str, url: str, content_type: str | None, raw: bytes,
               stream: Callable[[bytes], None] | None) -> tuple[int, Obj | None]:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError as exc:
            body = None
            error: ApiError | None = ApiError(400, "BadRequest", f"error decoding patch: {exc}")
        else:
            error = None
        request = Request(method, parts.path, query, content_type, body)
        with self._lock:
            self.requests.append(request)
        if self.on_request is not None:
            self.on_request(request)
        if error is not None:
            return error.code, error.status()
        try:
            return self._route(method, parts.path, query, content_type, body, stream)
        except ApiError as exc:
            return exc.code, exc.status()

    def _route(self, method: str, path: str, query: dict[str, str], content_type: str | None, body: Any,
               stream: Callable[[bytes], None] | None) -> tuple[int, Obj | None]:
        m = _PATH.fullmatch(path)
        kind = KINDS.get(m["resource"]) if m else None
        if m is None or kind is None or (m["group"], m["version"]) != (kind.group, kind.version) \
                or (m["sub"] not in (None, "status")) \
                or (m["sub"] == "status" and (kind is not ROLLOUTS or not self.status_subresource)):
            return 404, ApiError(404, "NotFound", "the server could not find the requested resource",
                                 {}).status()
        namespace, name = m["ns"], m["name"]
        if name is None:
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the "
                                                        f"requested resource ({method})")
            labels = label_selector(query.get("labelSelector", ""))
            fields = field_selector(query.get("fieldSelector", ""))

            def match(obj: Obj) -> bool:
                return ((namespace is None or obj["metadata"]["namespace"] == namespace)
                        and labels(obj["metadata"].get("labels") or {}) and fields(obj))

            if query.get("watch") in ("1", "true", "True") and stream is not None:
                self._watch(kind, match, query, stream)
                return 200, None
            return 200, self._list(kind, match)
        if namespace is None:
            return 404, ApiError(404, "NotFound", "the server could not find the requested resource", {}).status()
        if method == "GET":
            return 200, self.get(kind.resource, namespace, name)
        if method == "PATCH":
            with self._lock:
                return 200, self._patch(kind, namespace, name, m["sub"], content_type, body)
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                                                f"resource ({method})")

    def _list(self, kind: Kind, match: Callable[[Obj], bool]) -> Obj:
        with self._lock:
            items = [copy.deepcopy(o) for (r, _, _), o in sorted(self._objects.items())
                     if r == kind.resource and match(o)]
            if kind.builtin:  # typed lists carry kind and apiVersion on the list only
                for item in items:
                    item.pop("kind", None)
                    item.pop("apiVersion", None)
            return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                    "metadata": {"resourceVersion": str(self._rv)}, "items": items}

    def _watch(self, kind: Kind, match: Callable[[Obj], bool], query: dict[str, str],
               send: Callable[[bytes], None]) -> None:
        timeout_s = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout_s
        since = query.get("resourceVersion", "")

        def line(event_type: str, obj: Obj) -> bytes:
            return (json.dumps({"type": event_type, "object": obj}) + "\n").encode()

        with self._lock:  # what the watch starts from
            if since in ("", "0"):
                batch = [line("ADDED", obj) for (r, _, _), obj in sorted(self._objects.items())
                         if r == kind.resource and match(obj)]
                cursor = self._rv
            elif int(since) < self._compacted_rv:
                batch = [line("ERROR", ApiError(410, "Expired", f"too old resource version: {since} "
                                                                f"({self._compacted_rv})").status())]
                cursor = -1
            else:
                batch, cursor = [], int(since)
        while True:
            for chunk in batch:  # written outside the lock: a slow reader holds up no one else
                send(chunk)
            if cursor < 0:
                return
            with self._lock:
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return
                if self._rv <= cursor:
                    self._lock.wait(min(remaining, 0.5))
                batch = [line(event_type, obj) for rv, resource, event_type, obj in self._events
                         if rv > cursor and resource == kind.resource and match(obj)]
                cursor = max(cursor, self._rv)

    # controllers
    def _changed(self, kind: Kind, namespace: str, name: str) -> None:
        """An object changed: its controller has work to do (callers hold the lock)."""
        obj = self._objects[(kind.resource, namespace, name)]
        if kind is DEPLOYMENTS:
            if obj["metadata"]["generation"] > (obj.get("status") or {}).get("observedGeneration", 0):
                self._schedule((kind.resource, namespace, name), ["observe", "finish"])
        elif kind is ROLLOUTS:  # Argo reconciles on any change, spec or status
            self._schedule((kind.resource, namespace, name), ["sync"])

    def _schedule(self, key: tuple[str, str, str], steps: list[str]) -> None:
        self._pending[key] = list(steps)
        if self.step_s is None:
            return
        for i in range(len(steps)):
            self._seq += 1
            heapq.heappush(self._due, _Due(time.monotonic() + self.step_s * (i + 1), self._seq, key))
        self._lock.notify_all()

    def _controller_loop(self) -> None:
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                while self._due and self._due[0].at <= now:
                    self._run_step(heapq.heappop(self._due).key)
                self._lock.wait(min(0.5, self._due[0].at - now) if self._due else 0.5)

    def _run_step(self, key: tuple[str, str, str]) -> bool:
        steps = self._pending.get(key)
        if not steps or key not in self._objects:
            return False
        step = steps.pop(0)
        if key[0] == "deployments":
            self._sync_deployment(key[1], key[2], step)
        else:
            self._sync_rollout(key[1], key[2])
        return True

    def _owned(self, owner: Obj) -> list[Obj]:
        uid = owner["metadata"]["uid"]
        return [o for (r, ns, _), o in sorted(self._objects.items())
                if r == "replicasets" and ns == owner["metadata"]["namespace"]
                and any(ref.get("uid") == uid and ref.get("controller") for ref in
                        o["metadata"].get("ownerReferences", []))]

    def _new_replicaset(self, kind: Kind, owner: Obj, desired: Obj) -> tuple[Obj, str]:
        """The ReplicaSet running ``desired`` (reused or created) with the revision logic of
        getNewReplicaSet: max(other revisions) + 1, the old number kept in revision-history."""
        namespace, label = owner["metadata"]["namespace"], kind.hash_label
        owned = self._owned(owner)
        match = next((rs for rs in sorted(owned, key=lambda o: o["metadata"]["creationTimestamp"])
                      if without_label(rs["spec"]["template"], label) == without_label(desired, label)), None)
        others = [rs for rs in owned if rs is not match]
        revision = 1 + max((int(rs["metadata"].get("annotations", {}).get(kind.revision_annotation, 0))
                            for rs in others), default=0)
        if match is None:
            pod_hash = template_hash(desired)
            template = copy.deepcopy(desired)
            template["metadata"].setdefault("labels", {})[label] = pod_hash
            rs = {"metadata": {"name": f"{owner['metadata']['name']}-{pod_hash}", "namespace": namespace,
                               "uid": str(uuid.uuid4()), "generation": 1, "creationTimestamp": _now(),
                               "labels": dict(template["metadata"]["labels"]),
                               "annotations": {kind.revision_annotation: str(revision)},
                               "ownerReferences": [{"apiVersion": kind.api_version, "kind": kind.kind,
                                                    "name": owner["metadata"]["name"],
                                                    "uid": owner["metadata"]["uid"], "controller": True,
                                                    "blockOwnerDeletion": True}]},
                  "spec": {"replicas": 0, "selector": {"matchLabels": {
                      **owner["spec"]["selector"]["matchLabels"], label: pod_hash}}, "template": template},
                  "status": {"replicas": 0, "observedGeneration": 1}}
            self._write(REPLICASETS, rs, "ADDED")
            return rs, "NewReplicaSetCreated"
        annotations = match["metadata"].setdefault("annotations", {})
        old_revision = int(annotations.get(kind.revision_annotation, 0))
        if old_revision < revision:
            annotations[kind.revision_annotation] = str(revision)
            if old_revision:
                history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h]
                annotations[REVISION_HISTORY] = ",".join([*history, str(old_revision)])
            self._write(REPLICASETS, match, "MODIFIED")
        return match, "FoundNewReplicaSet"

    def _scale(self, rs: Obj, replicas: int) -> None:
        if rs["spec"]["replicas"] == replicas and rs["status"].get("replicas") == replicas:
            return
        rs["spec"]["replicas"] = replicas
        rs["status"] = {"replicas": replicas, "fullyLabeledReplicas": replicas, "readyReplicas": replicas,
                        "availableReplicas": replicas, "observedGeneration": rs["metadata"]["generation"]}
        if not replicas:
            rs["status"] = {"replicas": 0, "observedGeneration": rs["metadata"]["generation"]}
        self._write(REPLICASETS, rs, "MODIFIED")

    @staticmethod
    def _condition(status: Obj, type_: str, state: str, reason: str, message: str) -> None:
        now = _now()
        conditions = status.setdefault("conditions", [])
        old = next((c for c in conditions if c["type"] == type_), None)
        if old is not None and old["reason"] == reason and old["status"] == state:
            return  # unchanged: the controller keeps its lastUpdateTime
        new = {"type": type_, "status": state, "lastUpdateTime": now,
               "lastTransitionTime": old["lastTransitionTime"] if old and old["status"] == state else now,
               "reason": reason, "message": message}
        status["conditions"] = [c for c in conditions if c["type"] != type_] + [new]

    def _sync_deployment(self, namespace: str, name: str, step: str) -> None:
        dep = copy.deepcopy(self._objects[("deployments", namespace, name)])
        spec, status = dep["spec"], copy.deepcopy(dep.get("status") or {})
        replicas = spec["replicas"]
        status["observedGeneration"] = dep["metadata"]["generation"]
        if spec.get("paused"):
            self._condition(status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused")
            dep["status"] = status
            self._write(DEPLOYMENTS, dep, "MODIFIED")
            self._pending.pop(("deployments", namespace, name), None)
            return
        new_rs, reason = self._new_replicaset(DEPLOYMENTS, dep, spec["template"])
        rs_name = new_rs["metadata"]["name"]
        revision = new_rs["metadata"]["annotations"][REVISION]
        if dep["metadata"].get("annotations", {}).get(REVISION) != revision:
            dep["metadata"].setdefault("annotations", {})[REVISION] = revision
        old = [rs for rs in self._owned(dep) if rs["metadata"]["uid"] != new_rs["metadata"]["uid"]]
        old_up = sum(rs["spec"]["replicas"] for rs in old)
        failing = (namespace, name) in self._failing
        if step == "observe" and old_up:
            self._scale(new_rs, min(1, replicas))
            status.update(replicas=old_up + new_rs["spec"]["replicas"], updatedReplicas=new_rs["spec"]["replicas"],
                          readyReplicas=old_up, availableReplicas=old_up,
                          unavailableReplicas=new_rs["spec"]["replicas"])
            message = (f'Created new replica set "{rs_name}"' if reason == "NewReplicaSetCreated"
                       else f'ReplicaSet "{rs_name}" is progressing.')
            self._condition(status, "Progressing", "True", "ReplicaSetUpdated" if reason == "FoundNewReplicaSet"
                            else reason, message)
        elif failing and old_up:
            self._condition(status, "Progressing", "False", "ProgressDeadlineExceeded",
                            f'ReplicaSet "{rs_name}" has timed out progressing.')
        else:  # complete
            self._scale(new_rs, replicas)
            for rs in old:
                self._scale(rs, 0)
            status.update(replicas=replicas, updatedReplicas=replicas, readyReplicas=replicas,
                          availableReplicas=replicas)
            status.pop("unavailableReplicas", None)
            self._condition(status, "Available", "True", "MinimumReplicasAvailable",
                            "Deployment has minimum availability.")
            self._condition(status, "Progressing", "True", "NewReplicaSetAvailable",
                            f'ReplicaSet "{rs_name}" has successfully progressed.')
            self._pending.pop(("deployments", namespace, name), None)
        dep["status"] = status
        self._write(DEPLOYMENTS, dep, "MODIFIED")

    def _sync_rollout(self, namespace: str, name: str) -> None:
        ro = copy.deepcopy(self._objects[("rollouts", namespace, name)])
        spec, status = ro["spec"], copy.deepcopy(ro.get("status") or {})
        key = ("rollouts", namespace, name)
        hold = self._hold.pop(key, True)
        replicas = spec.get("replicas", 1)
        desired = default_pod_template(spec["template"])  # as PodTemplateEqualIgnoreHash compares
        new_rs, _ = self._new_replicaset(ROLLOUTS, ro, desired)
        new_hash = new_rs["metadata"]["labels"][ROLLOUT_HASH_LABEL]
        revision = new_rs["metadata"]["annotations"][ROLLOUT_REVISION]
        template_changed = new_hash != status.get("currentPodHash")
        stable = next((rs for rs in self._owned(ro)
                       if rs["metadata"]["labels"][ROLLOUT_HASH_LABEL] == status.get("stableRS")), None)
        if template_changed:  # resetRolloutStatus: a new template clears the abort and a full promotion
            for reset in ("abort", "abortedAt", "pauseConditions", "controllerPause", "promoteFull"):
                status.pop(reset, None)
        status.update(currentPodHash=new_hash, observedGeneration=str(ro["metadata"]["generation"]))
        steps = len(spec.get("strategy", {}).get("canary", {}).get("steps", []))
        failing = (namespace, name) in self._failing
        if stable is None or new_hash == status.get("stableRS") or not hold or status.get("promoteFull"):
            # first rollout, rollback to stable, or (fully) promoted: the new ReplicaSet is stable, alone
            self._scale(new_rs, replicas)
            for rs in self._owned(ro):
                if rs["metadata"]["uid"] != new_rs["metadata"]["uid"]:
                    self._scale(rs, 0)
            for reset in ("abort", "abortedAt", "promoteFull"):  # a fully promoted rollout is never aborted
                status.pop(reset, None)
            status.update(stableRS=new_hash, currentStepIndex=steps, phase="Healthy", message="",
                          replicas=replicas, updatedReplicas=replicas, readyReplicas=replicas,
                          availableReplicas=replicas, controllerPause=False)
            status.pop("pauseConditions", None)
            self._condition(status, "Progressing", "True", "NewReplicaSetAvailable",
                            "Rollout has completed; all steps have completed successfully")
        elif status.get("abort"):
            self._scale(new_rs, 0)
            self._scale(stable, replicas)
            status.setdefault("abortedAt", _now())
            status.update(phase="Degraded", message=f"RolloutAborted: Rollout aborted update to revision "
                                                    f"{revision}", currentStepIndex=0, replicas=replicas,
                          updatedReplicas=0, readyReplicas=replicas, availableReplicas=replicas,
                          controllerPause=False)
            status.pop("pauseConditions", None)
            self._condition(status, "Progressing", "False", "RolloutAborted",
                            f"Rollout aborted update to revision {revision}")
        elif failing:
            status.update(phase="Degraded", message="ProgressDeadlineExceeded: ReplicaSet "
                                                    f'"{new_rs["metadata"]["name"]}" has timed out progressing.')
            self._condition(status, "Progressing", "False", "ProgressDeadlineExceeded",
                            f'ReplicaSet "{new_rs["metadata"]["name"]}" has timed out progressing.')
        else:  # a canary at 20 %, paused
            canary = max(1, replicas // 5)
            self._scale(new_rs, canary)
            self._scale(stable, replicas - canary)
            status.update(phase="Paused", message="CanaryPauseStep", currentStepIndex=1, replicas=replicas,
                          updatedReplicas=canary, readyReplicas=replicas, availableReplicas=replicas,
                          controllerPause=True,
                          pauseConditions=[{"reason": "CanaryPauseStep", "startTime": _now()}])
            self._condition(status, "Progressing", "True", "RolloutPaused", "Rollout is paused")
        ro["status"] = status
        self._write(ROLLOUTS, ro, "MODIFIED")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _serve(self, method: str) -> None:
        api: KubeAPI = self.server.api  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        started = False

        def send(chunk: bytes) -> None:
            nonlocal started
            if not started:  # a watch answers 200 and streams, whatever it sends
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                started = True
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()

        try:
            code, body = api.handle(method, self.path, self.headers.get("Content-Type"), raw, send)
            if body is None:  # a watch that ended: the last chunk
                send(b"")
                return
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")
