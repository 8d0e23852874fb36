"""Deployment rollouts as deploy records: ``backout watch kubernetes``.

:func:`to_records` is the pure part: one Deployment watch event in, at most one deploy record out,
decided from the object alone, so that one state always gives the same record. A restart or a
re-list sends records again; they are identical, and the deploy tracker drops exact repeats.

==============================================  ==============================================
the Deployment                                  record
==============================================  ==============================================
spec not observed yet (generation >             none: its revision annotation is not the new
observedGeneration), or paused mid-rollout      one yet / nothing is rolling out
rolling out (``kubectl rollout status`` waits)  ``started`` at the Progressing condition's time
rolled out                                      ``finished`` at the time it completed, or
                                                ``rolled_back`` if Backout rolled it back to
                                                this version (``backout.io/rollback-to``)
``ProgressDeadlineExceeded``                    ``failed``
deleted; a bookmark                             none
==============================================  ==============================================

One ``deploy_id`` per revision of one Deployment (``shop/checkout#7.1f2e3d4c``: namespace, name,
revision, uid). An image change is a new revision; so is a rollback by someone else (the
controller gives the old ReplicaSet the next revision), whose earlier version tells the deploy
tracker it is a rollback. The version is the container's image tag, or ``--version-label``; the
service is the Deployment's name, or ``--service-label``; the target is ``kubernetes``.

The watch (:func:`watch_deployments`) lists the Deployments, then watches from the list's
``resourceVersion``, resumes from the last one it saw, and lists again when that is too old
(410); it publishes a record only when a Deployment's (deploy_id, status) changes, and
dead-letters a Deployment it cannot read (once per state).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from typing import Any

import click

from actions.executors.kube import ROLLBACK_TO, KubeApiError, KubeClients, call, template_version
from actions.executors.kubernetes import REVISION, rollout_status
from backout.contracts import Deploy, DeployStatus, Target, dead_letter, encode
from backout.errors import ContractError
from backout.names import check
from backout.settings import KafkaSettings
from streams import topics
from streams.kafka import publish, sender
from streams.runtime.sender import Sender

log = logging.getLogger(__name__)

SOURCE = "kubernetes:deployments"  # the dead letters' source
_STATUS: dict[str, DeployStatus] = {"waiting": "started", "failed": "failed", "done": "finished"}


def to_records(event: dict[str, Any], *, service_label: str | None = None, version_label: str | None = None,
               container: str | None = None, context: str | None = None) -> list[Deploy]:
    """The deploy record a Deployment watch event says, if any; :class:`ContractError` if the
    Deployment cannot be read as one (no version to find, a name Backout refuses)."""
    if event.get("type") not in ("ADDED", "MODIFIED"):
        return []
    obj = event.get("object")
    shape = "not a Deployment: metadata.namespace, metadata.name, metadata.uid and spec.template are required"
    if not isinstance(obj, dict):
        raise ContractError(shape)
    try:
        meta, spec, status = obj["metadata"], obj["spec"], obj.get("status") or {}
        namespace, name, uid, template = meta["namespace"], meta["name"], meta["uid"], spec["template"]
    except (KeyError, TypeError):
        raise ContractError(shape) from None
    revision = (meta.get("annotations") or {}).get(REVISION)
    if meta.get("generation", 0) > status.get("observedGeneration", 0) or revision is None:
        return []
    state, _ = rollout_status(obj)
    if spec.get("paused") and state != "done":
        return []
    where = f"Deployment {namespace}/{name}"
    version = template_version(template, container, version_label, where)
    if version is None:
        raise ContractError(f"{where} runs an image without a tag"
                            + (f" and has no label {version_label!r}" if version_label else "")
                            + ": no version to report (set --version-label to read it from a label)")
    service = (meta.get("labels") or {}).get(service_label) if service_label else name
    if service is None:
        raise ContractError(f"{where} has no label {service_label!r} to name its service")
    deploy_status = _STATUS[state]
    if deploy_status == "finished" and (meta.get("annotations") or {}).get(ROLLBACK_TO) == version:
        deploy_status = "rolled_back"
    fields = {k: v for k, v in (("namespace", namespace), ("name", name), ("container", container),
                                ("context", context)) if v is not None}
    return [Deploy(ts=_event_time(obj, state), service=check("service", service),
                   deploy_id=f"{namespace}/{name}#{revision}.{uid[:8]}", version=check("version", version),
                   status=deploy_status, target=Target(kind="kubernetes", **fields))]


def _event_time(obj: dict[str, Any], state: str) -> float:
    """When the rollout reached its state: the Progressing condition's last update (the controller
    sets it when a rollout progresses, completes or times out, and leaves it alone after)."""
    conditions = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []}
    for stamp in ((conditions.get("Progressing") or {}).get("lastUpdateTime"),
                  (conditions.get("Available") or {}).get("lastUpdateTime"),
                  obj["metadata"].get("creationTimestamp")):
        if stamp:
            return dt.datetime.fromisoformat(stamp).timestamp()
    raise ContractError(f"Deployment {obj['metadata']['namespace']}/{obj['metadata']['name']} ({state}) "
                        "carries no time: no Progressing condition, no creationTimestamp")


def watch_deployments(apps: Any, out: Sender, *, namespace: str | None = None, selector: str | None = None,
                      topic: str = topics.DEPLOYS, deadletter_topic: str = topics.DEADLETTER,
                      stop: threading.Event | None = None, timeout_s: int = 60, retry_s: float = 5.0,
                      counts: dict[str, int] | None = None, **options: str | None) -> dict[str, int]:
    """Watch Deployments (one namespace or all, a label selector) until ``stop`` is set, publishing
    their deploy records to ``topic``; ``options`` go to :func:`to_records`. Each watch request
    lasts ``timeout_s``; ``counts`` (events, published, deadlettered) are kept up to date."""
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    stop = stop or threading.Event()
    counts = counts if counts is not None else {}
    for name in ("events", "published", "deadlettered"):
        counts.setdefault(name, 0)
    last: dict[str, tuple[str, str]] = {}  # Deployment uid -> (deploy_id, status) last published, or refused
    args, method = ((namespace,), apps.list_namespaced_deployment) if namespace else \
        ((), apps.list_deployment_for_all_namespaces)
    selection: dict[str, Any] = {"label_selector": selector} if selector else {}
    resource_version: str | None = None
    while not stop.is_set():
        try:
            if resource_version is None:  # list, then watch from the list's resourceVersion (as informers do)
                listed = call("list Deployments", method, *args, timeout_s=timeout_s, **selection)
                for item in listed.get("items") or []:
                    _handle({"type": "ADDED", "object": item}, out, topic, deadletter_topic, last, counts, options)
                resource_version = str(listed["metadata"]["resourceVersion"])
            watcher = watch.Watch(return_type=object)  # raw JSON objects, as the API server sent them
            for event in watcher.stream(method, *args, resource_version=resource_version, timeout_seconds=timeout_s,
                                        allow_watch_bookmarks=True, _request_timeout=timeout_s + 30, **selection):
                counts["events"] += 1
                resource_version = watcher.resource_version
                _handle({"type": event["type"], "object": event["raw_object"]}, out, topic, deadletter_topic,
                        last, counts, options)
                out.poll()  # delivery reports, and records the broker refused sent again
                if stop.is_set():
                    watcher.stop()
        except ApiException as exc:
            if exc.status == 410:  # our resourceVersion was compacted away: list again (repeats are dropped)
                log.info("watch of Deployments expired (%s); listing them again", exc.reason)
                resource_version = None
                continue
            log.warning("watching Deployments failed (%s %s); again in %.0f s", exc.status, exc.reason, retry_s)
            stop.wait(retry_s)
        except (KubeApiError, HTTPError, OSError) as exc:
            log.warning("watching Deployments failed (%s); again in %.0f s", exc, retry_s)
            stop.wait(retry_s)
        out.poll()
    return counts


def _handle(event: dict[str, Any], out: Sender, topic: str, deadletter_topic: str,
            last: dict[str, tuple[str, str]], counts: dict[str, int], options: dict[str, str | None]) -> None:
    obj = event.get("object")
    meta = (obj.get("metadata") or {}) if isinstance(obj, dict) else {}
    uid = str(meta.get("uid", ""))
    try:
        records = to_records(event, **options)
    except ContractError as exc:
        if last.get(uid) == (str(exc), "refused"):
            return  # the same Deployment refused again: one dead letter is enough
        last[uid] = (str(exc), "refused")
        log.warning("%s (dead-lettered)", exc)
        raw = json.dumps(event).encode()
        rv = meta.get("resourceVersion") or "0"
        out.send(deadletter_topic, encode(dead_letter(raw, str(exc), SOURCE, -1, int(rv) if rv.isdigit() else 0,
                                                      time.time())))
        counts["deadlettered"] += 1
        return
    if event.get("type") == "DELETED":
        last.pop(uid, None)
    for record in records:
        if last.get(uid) == (record.deploy_id, record.status):
            continue  # a status update within the same rollout state
        last[uid] = (record.deploy_id, record.status)
        publish(out, topic, [record])
        counts["published"] += 1


@click.group()
def watch() -> None:
    """Turn what a platform does into deploy records on backout.deploys."""


@watch.command("kubernetes")
@click.option("--namespace", "-n", help="Watch one namespace (default: all the kubeconfig's user may list).")
@click.option("--selector", "-l", help="Label selector of the Deployments to watch, e.g. 'team=shop'.")
@click.option("--service-label", help="Deployment label naming the service (default: the Deployment's name).")
@click.option("--version-label", help="Pod-template label holding the version, e.g. app.kubernetes.io/version "
                                      "(default: the container image's tag; BACKOUT_KUBERNETES_VERSION_LABEL).")
@click.option("--container", help="Container whose image tag is the version (default: the only one, or the one "
                                  "named like the Deployment).")
@click.option("--context", help="kubeconfig context to watch (default: the current one); recorded in targets.")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False),
              help="kubeconfig file (default: BACKOUT_KUBERNETES_KUBECONFIG, $KUBECONFIG or ~/.kube/config).")
def watch_kubernetes(namespace: str | None, selector: str | None, service_label: str | None,
                     version_label: str | None, container: str | None, context: str | None,
                     kubeconfig: str | None) -> None:
    """Publish a deploy record for each Deployment rollout: started, finished, failed, rolled back.

    Runs until interrupted. The kubeconfig's user needs list and watch on deployments.apps.
    """
    import signal

    from actions.executors.kube import settings_from_env

    settings = settings_from_env(kubeconfig=kubeconfig, version_label=version_label)
    if namespace is not None:
        check("namespace", namespace)
    if container is not None:
        check("container", container)
    if context is not None:
        check("kube_context", context)
    from kubernetes.client import AppsV1Api

    apps = AppsV1Api(KubeClients(settings).get(context))
    signal.signal(signal.SIGTERM, _interrupt)  # a blocked read only ends on an exception
    out = sender(KafkaSettings())
    counts: dict[str, int] = {}
    click.echo(f"watching Deployments in {namespace or 'all namespaces'}"
               f"{f' matching {selector!r}' if selector else ''}; Ctrl-C stops", err=True)
    try:
        watch_deployments(apps, out, namespace=namespace, selector=selector, counts=counts,
                          service_label=service_label, version_label=settings.version_label, container=container,
                          context=context)
    except KeyboardInterrupt:
        pass
    finally:
        out.flush(30)
        click.echo(f"published {counts.get('published', 0)} deploy records; {counts.get('deadlettered', 0)} "
                   "dead-lettered", err=True)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt
