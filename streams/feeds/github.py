"""GitHub ``deployment_status`` webhooks as deploy records.

GitHub calls the webhook each time a deployment changes state. ``success``
is a ``finished`` deploy, ``failure`` and ``error`` a ``failed`` one,
``in_progress`` a ``started`` one; ``queued``, ``pending`` and ``inactive``
(a newer deployment replaced it) are skipped and counted, as is every other
event (``ping`` when the hook is created).

By default the service is the repository's name (``shop`` for ``acme/shop``)
and the version the deployment's ``ref``, falling back to its ``sha`` when
the ref is empty or not a version name (a branch such as ``feature/x``).
:class:`GithubMapping` narrows the environments taken and maps repository and
environment (globs, first matching rule wins) to service, version and target.

The body is authenticated before it is read: ``X-Hub-Signature-256`` is the
HMAC-SHA256 of the body with the hook's secret (``GITHUB_WEBHOOK_SECRET``),
compared in constant time (:func:`signature_ok`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from backout.contracts import Deploy, DeployStatus, Target
from backout.errors import ContractError
from backout.names import check, valid
from streams.feeds.parsed import Parsed, Refusal
from streams.feeds.targets import target

STATUS: dict[str, DeployStatus] = {"success": "finished", "failure": "failed", "error": "failed",
                                   "in_progress": "started"}


class GithubRule(BaseModel):
    """Deployments of ``repository`` (``owner/name``) to ``environment`` (globs) become deploys of
    ``service`` (default: the repository's name) at ``version``, with ``target``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    repository: str = "*"
    environment: str = "*"
    service: str | None = None
    version: Literal["ref", "sha"] | None = None  # None: the ref, else the sha
    target: dict[str, str] | None = None

    @model_validator(mode="after")
    def _checked(self) -> GithubRule:
        if self.service is not None and not valid("service", self.service):
            raise ValueError(f"service {self.service!r} is not a valid service name")
        if self.target is not None:
            try:
                _target(self.target)
            except ContractError as exc:
                raise ValueError(str(exc)) from None
        return self


class GithubMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    environments: list[str] | None = None  # globs; None takes every environment
    rules: list[GithubRule] = []


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` (``sha256=<hex>``) is the HMAC-SHA256 of ``body`` with ``secret``."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256="))


def to_records(event: str, body: bytes, mapping: GithubMapping) -> Parsed:
    """The deploy a webhook delivery of ``event`` (its ``X-GitHub-Event``) stands for, if any."""
    parsed = Parsed()
    if event != "deployment_status":
        parsed.skip(f"event {event!r} (only deployment_status is used)")
        return parsed
    try:
        data = json.loads(body)
        status, deployment = data["deployment_status"], data["deployment"]
        repository = data["repository"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        got = f"no {exc}" if isinstance(exc, KeyError) else "not a JSON object"
        parsed.refuse("body", "deployment_status, deployment, repository", got,
                      "a deployment_status event (GitHub's webhook schema)", body)
        return parsed
    state = status.get("state")
    if state not in STATUS:
        parsed.skip(f"deployment state {state!r}")
        return parsed
    environment = status.get("environment") or deployment.get("environment") or ""
    if mapping.environments is not None and not any(fnmatchcase(environment, g) for g in mapping.environments):
        parsed.skip("environment not taken")
        return parsed
    full_name = str(repository.get("full_name") or "")
    rule = next((r for r in mapping.rules if fnmatchcase(full_name, r.repository)
                 and fnmatchcase(environment, r.environment)), GithubRule())
    try:
        service = check("service", rule.service or repository.get("name"))
        version = _version(deployment, rule)
        record = Deploy(ts=_unix(status.get("updated_at") or status.get("created_at")), service=service,
                        deploy_id=f"github-{deployment['id']}", version=version, status=STATUS[state],
                        target=_target(rule.target) if rule.target else None)
    except KeyError as exc:
        parsed.refuse("body", f"deployment.{exc.args[0]}", None, "a value (GitHub always sends it)", body)
        return parsed
    except (ContractError, ValueError) as exc:
        parsed.refusals.append(Refusal("body", str(exc), body))
        return parsed
    parsed.records.append(record)
    return parsed


def _version(deployment: dict[str, Any], rule: GithubRule) -> str:
    ref, sha = deployment.get("ref"), deployment.get("sha")
    if rule.version == "sha" or (rule.version is None and not valid("version", ref)):
        return check("version", sha)
    return check("version", ref)


def _target(fields: dict[str, str]) -> Target:
    rest = dict(fields)
    return target(rest.pop("kind", ""), rest)


def _unix(stamp: object) -> float:
    if not isinstance(stamp, str):
        raise ContractError(f"field 'deployment_status.updated_at': got {stamp!r}, expected an ISO 8601 time")
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        raise ContractError(f"field 'deployment_status.updated_at': got {stamp!r}, expected an ISO 8601 time") from None
