"""Argo CD notifications as deploy records.

Argo CD's notifications controller posts the body of a template to a webhook
service when a trigger fires. Backout reads the body :data:`TEMPLATE` renders
(the README shows the ``argocd-notifications-cm`` lines): ``on-deployed`` and
``on-sync-succeeded`` are a ``finished`` deploy, ``on-sync-running`` a
``started`` one, ``on-sync-failed`` a ``failed`` one. The deploy id comes from
the application and the operation's start, so the triggers of one sync
(``on-deployed`` and ``on-sync-succeeded`` both fire) name the same deploy.

By default the service is the application's name and the version the synced
revision; :class:`ArgoMapping` rules (application globs, first match wins)
set the service, take the version from an image's tag instead, and attach a
target.
"""

from __future__ import annotations

import json
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from backout.contracts import Deploy, DeployStatus
from backout.errors import ContractError
from backout.names import check, valid
from streams.feeds.parsed import Parsed, Refusal
from streams.feeds.targets import target

STATUS: dict[str, DeployStatus] = {"on-deployed": "finished", "on-sync-succeeded": "finished",
                                   "on-sync-running": "started", "on-sync-failed": "failed"}

TEMPLATE = """{
  "event": "%s",
  "app": "{{.app.metadata.name}}",
  "namespace": "{{.app.spec.destination.namespace}}",
  "revision": "{{.app.status.operationState.syncResult.revision}}",
  "images": {{toJson .app.status.summary.images}},
  "phase": "{{.app.status.operationState.phase}}",
  "startedAt": "{{.app.status.operationState.startedAt}}",
  "finishedAt": "{{.app.status.operationState.finishedAt}}"
}"""


class ArgoRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    app: str = "*"
    service: str | None = None  # default: the application's name
    version: Literal["revision", "image"] = "revision"
    image: str | None = None  # with version: image, the repository whose tag is the version
    target: dict[str, str] | None = None

    @model_validator(mode="after")
    def _checked(self) -> ArgoRule:
        if self.service is not None and not valid("service", self.service):
            raise ValueError(f"service {self.service!r} is not a valid service name")
        if self.version == "image" and not self.image:
            raise ValueError("version: image needs image: the repository whose tag is the version")
        if self.target is not None:
            rest = dict(self.target)
            try:
                target(rest.pop("kind", ""), rest)
            except ContractError as exc:
                raise ValueError(str(exc)) from None
        return self


class ArgoMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[ArgoRule] = []


def to_records(body: bytes, mapping: ArgoMapping) -> Parsed:
    parsed = Parsed()
    try:
        data = json.loads(body)
        event, app = data["event"], data["app"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        parsed.refuse("body", "event, app", body[:80].decode(errors="replace"),
                      "the JSON of Backout's Argo CD template (see the README)", body)
        return parsed
    if event not in STATUS:
        parsed.refuse("body", "event", event, f"one of {', '.join(STATUS)}", body)
        return parsed
    rule = next((r for r in mapping.rules if fnmatchcase(str(app), r.app)), ArgoRule())
    try:
        started = _unix("startedAt", data.get("startedAt"))
        finished = _unix("finishedAt", data.get("finishedAt")) if STATUS[event] != "started" else started
        rest = dict(rule.target or {})
        parsed.records.append(Deploy(
            ts=finished, service=check("service", rule.service or app), deploy_id=f"argocd-{app}-{int(started)}",
            version=_version(data, rule), status=STATUS[event],
            target=target(rest.pop("kind"), rest) if rule.target else None))
    except ContractError as exc:
        parsed.refusals.append(Refusal("body", str(exc), body))
    return parsed


def _version(data: dict[str, object], rule: ArgoRule) -> str:
    if rule.version == "revision":
        return check("version", data.get("revision"))
    images = data.get("images")
    for image in images if isinstance(images, list) else []:
        repository, _, tag = str(image).rpartition(":")
        if repository == rule.image and "/" not in tag:
            return check("version", tag)
    raise ContractError(f"field 'images': got {images!r}, expected an image of {rule.image} with a tag")


def _unix(name: str, stamp: object) -> float:
    try:
        return datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        raise ContractError(f"field '{name}': got {stamp!r}, expected an ISO 8601 time "
                            "(the template's operationState times)") from None
