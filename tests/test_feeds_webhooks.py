"""GitHub and Argo CD webhooks, from recorded payloads: which deploy each delivery stands for."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.feeds import argocd, github
from streams.feeds.targets import target

PAYLOADS = Path(__file__).parent / "payloads"
K8S = {"kind": "kubernetes", "namespace": "shop", "name": "checkout", "container": "app"}


def payload(name: str, **changes: object) -> bytes:
    data = json.loads((PAYLOADS / name).read_bytes())
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = data
        for key in parents:
            node = node[key]
        node[leaf] = value
    return json.dumps(data).encode()


def deploys(parsed) -> list[tuple]:
    return [(r.ts, r.service, r.deploy_id, r.version, r.status, r.target.model_dump() if r.target else None)
            for r in parsed.records]


def utc(hh: int, mm: int, ss: int) -> float:
    return datetime(2026, 12, 1, hh, mm, ss, tzinfo=UTC).timestamp()


T_SUCCESS = utc(14, 5, 42)
GH = github.GithubMapping
GITHUB_CASES = [
    ("success", "deployment_status", payload("github-deployment_status-success.json"), GH(),
     [(T_SUCCESS, "shop", "github-1894733021", "v2.15.1", "finished", None)], [], {}),
    ("failure", "deployment_status", payload("github-deployment_status-failure.json"), GH(),
     [(utc(14, 9, 3), "shop", "github-1894733021", "v2.15.1", "failed", None)], [], {}),
    ("error-on-a-branch-takes-the-sha", "deployment_status", payload("github-deployment_status-error-branch.json"),
     GH(), [(utc(15, 0, 10), "shop", "github-1894733099", "9f2c1e4b7a3d5f6e8c0b1a2d3e4f5a6b7c8d9e0f", "failed", None)],
     [], {}),
    ("in-progress-is-started", "deployment_status",
     payload("github-deployment_status-success.json", deployment_status__state="in_progress"), GH(),
     [(T_SUCCESS, "shop", "github-1894733021", "v2.15.1", "started", None)], [], {}),
    ("inactive-skipped", "deployment_status", payload("github-deployment_status-inactive.json"), GH(),
     [], [], {"deployment state 'inactive'": 1}),
    ("ping-skipped", "ping", payload("github-ping.json"), GH(), [], [],
     {"event 'ping' (only deployment_status is used)": 1}),
    ("environment-not-taken", "deployment_status", payload("github-deployment_status-error-branch.json"),
     GH(environments=["prod*"]), [], [], {"environment not taken": 1}),
    ("rule-maps-service-version-target", "deployment_status", payload("github-deployment_status-success.json"),
     GH(rules=[github.GithubRule(repository="acme/other", service="nope"),
               github.GithubRule(repository="acme/*", environment="prod*", service="checkout", version="sha",
                                 target=K8S)]),
     [(T_SUCCESS, "checkout", "github-1894733021", "9f2c1e4b7a3d5f6e8c0b1a2d3e4f5a6b7c8d9e0f", "finished", K8S)],
     [], {}),
    ("hostile-repository-name", "deployment_status",
     payload("github-deployment_status-success.json", repository__name="shop;reboot"), GH(),
     [], ["service 'shop;reboot' is not a valid service"], {}),
    ("not-json", "deployment_status", b"{", GH(), [], ["field 'deployment_status, deployment, repository'"], {}),
    ("no-deployment", "deployment_status", json.dumps({"deployment_status": {}}).encode(), GH(), [],
     ["got \"no 'deployment'\""], {}),
    ("bad-time", "deployment_status",
     payload("github-deployment_status-success.json", deployment_status__updated_at="yesterday"), GH(), [],
     ["field 'deployment_status.updated_at': got 'yesterday', expected an ISO 8601 time"], {}),
]


@pytest.mark.parametrize("event, body, mapping, records, refused, skipped", [c[1:] for c in GITHUB_CASES],
                         ids=[c[0] for c in GITHUB_CASES])
def test_github_deployment_status(event, body, mapping, records, refused, skipped):
    parsed = github.to_records(event, body, mapping)
    assert deploys(parsed) == records
    assert len(parsed.refusals) == len(refused)
    for refusal, reason in zip(parsed.refusals, refused, strict=True):
        assert reason in refusal.reason and refusal.raw == body
    assert dict(parsed.skipped) == skipped


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("secret, header, ok", [
    ("s3cret", sign("s3cret", b"body"), True),
    ("s3cret", sign("other", b"body"), False),
    ("s3cret", sign("s3cret", b"body ").removeprefix("sha256="), False),  # no scheme
    ("s3cret", None, False),
    ("", sign("", b"body"), False),  # no secret configured: nothing is trusted
    ("s3cret", "sha1=" + hmac.new(b"s3cret", b"body", hashlib.sha1).hexdigest(), False),
])
def test_github_signature(secret, header, ok):
    assert github.signature_ok(secret, b"body", header) is ok


@pytest.mark.parametrize("rule, message", [
    ({"target": {"kind": "kubernetes", "namespace": "../../etc", "name": "x"}}, "not a valid namespace"),
    ({"target": {"kind": "ssh", "host": "x"}}, "not one the executors know"),
    ({"service": "a b"}, "not a valid service name"),
    ({"version": "tag"}, "'ref' or 'sha'"),
    ({"repo": "acme/shop"}, "Extra inputs are not permitted"),
])
def test_github_rules_are_checked_when_loaded(rule, message):
    with pytest.raises(ValueError, match=message):
        github.GithubMapping.model_validate({"rules": [rule]})


T_SYNCED, T_STARTED = utc(14, 3, 5), utc(14, 2, 31)
AR = argocd.ArgoMapping
ARGO_CASES = [
    ("on-deployed", payload("argocd-on-deployed.json"), AR(),
     [(T_SYNCED, "checkout", f"argocd-checkout-{int(T_STARTED)}", "3c9d5e0a7f1b2c4d6e8f0a1b3c5d7e9f1a2b4c6d",
       "finished", None)], []),
    ("on-sync-succeeded-same-deploy", payload("argocd-on-sync-succeeded.json"), AR(),
     [(T_SYNCED, "checkout", f"argocd-checkout-{int(T_STARTED)}", "3c9d5e0a7f1b2c4d6e8f0a1b3c5d7e9f1a2b4c6d",
       "finished", None)], []),
    ("running-is-started-at-its-start", payload("argocd-on-sync-running.json"), AR(),
     [(T_STARTED, "checkout", f"argocd-checkout-{int(T_STARTED)}", "3c9d5e0a7f1b2c4d6e8f0a1b3c5d7e9f1a2b4c6d",
       "started", None)], []),
    ("failed", payload("argocd-on-sync-failed.json"), AR(),
     [(utc(14, 4, 40), "checkout", f"argocd-checkout-{int(T_STARTED)}",
       "3c9d5e0a7f1b2c4d6e8f0a1b3c5d7e9f1a2b4c6d", "failed", None)], []),
    ("version-from-image-tag-with-target", payload("argocd-on-deployed.json"),
     AR(rules=[argocd.ArgoRule(app="check*", service="checkout-api", version="image",
                               image="registry.acme.example/shop/checkout", target=K8S)]),
     [(T_SYNCED, "checkout-api", f"argocd-checkout-{int(T_STARTED)}", "v2.15.1", "finished", K8S)], []),
    ("image-not-found", payload("argocd-on-deployed.json"),
     AR(rules=[argocd.ArgoRule(version="image", image="registry.acme.example/shop/cart")]),
     [], ["field 'images'"]),
    ("unknown-event", payload("argocd-on-deployed.json", event="on-health-degraded"), AR(),
     [], ["field 'event': got 'on-health-degraded', expected one of on-deployed"]),
    ("not-the-template", b'{"application": "x"}', AR(), [], ["the JSON of Backout's Argo CD template"]),
    ("unrendered-time", payload("argocd-on-deployed.json", finishedAt="<no value>"), AR(),
     [], ["field 'finishedAt': got '<no value>'"]),
]


@pytest.mark.parametrize("body, mapping, records, refused", [c[1:] for c in ARGO_CASES],
                         ids=[c[0] for c in ARGO_CASES])
def test_argocd_notifications(body, mapping, records, refused):
    parsed = argocd.to_records(body, mapping)
    assert deploys(parsed) == records
    assert len(parsed.refusals) == len(refused)
    for refusal, reason in zip(parsed.refusals, refused, strict=True):
        assert reason in refusal.reason


def test_the_documented_template_renders_to_what_the_parser_reads():
    rendered = (argocd.TEMPLATE % "on-deployed").replace("{{toJson .app.status.summary.images}}", '["a/b:v1"]')
    for field, value in {"app": "checkout", "namespace": "shop", "revision": "abc123",
                         "phase": "Succeeded", "startedAt": "2026-12-01T14:02:31Z",
                         "finishedAt": "2026-12-01T14:03:05Z"}.items():
        rendered = rendered.replace(next(line.split(": ", 1)[1].strip().rstrip(",").strip('"')
                                         for line in rendered.splitlines() if f'"{field}"' in line), value)
    parsed = argocd.to_records(rendered.encode(), AR())
    assert deploys(parsed) == [(T_SYNCED, "checkout", f"argocd-checkout-{int(T_STARTED)}", "abc123", "finished",
                                None)]


@pytest.mark.parametrize("kind, fields, message", [
    ("kubernetes", {"namespace": "shop", "name": "checkout"}, None),
    ("kubernetes", {"name": "checkout"}, "needs field 'namespace'"),
    ("kubernetes", {"namespace": "shop", "name": "Check Out"}, "not a valid k8s name"),
    ("argo-rollout", {"namespace": "shop", "name": "checkout", "container": "x" * 300}, "not a valid k8s name"),
    ("image", {"image": "registry.acme.example:5000/shop/checkout"}, None),
    ("image", {"image": "Shop/Checkout;rm"}, "not a valid image"),
    ("webhook", {"url": "https://deploy.acme.example/rollback"}, None),
    ("webhook", {"url": "file:///etc/passwd"}, "expected an http\\(s\\) URL"),
    ("bluegreen", {"name": "checkout", "upstream_file": "/etc/nginx/checkout.conf"}, None),
    ("lambda", {}, "not one the executors know"),
])
def test_targets_are_checked_by_kind(kind, fields, message):
    if message is None:
        assert target(kind, fields).model_dump() == {"kind": kind, **fields}
    else:
        with pytest.raises(Exception, match=message):
            target(kind, fields)


def test_the_receivers_example_config_loads():
    from streams.feeds.receiver import load_config as load_receiver_config

    config = load_receiver_config(Path(__file__).parent.parent / "examples" / "ingest-http.yaml")
    assert config.github.rules[0].target == {"kind": "kubernetes", "namespace": "shop", "name": "checkout",
                                             "container": "app"}
    assert config.otlp.rename == {"app.health": "health"} and config.argocd.rules[0].version == "image"
