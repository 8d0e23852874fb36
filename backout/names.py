"""The formats of the names Backout takes from messages, in one place.

Names arrive from anyone who can produce to a topic and end up in state keys,
log lines, Kubernetes API paths and command arguments, so each has a format
and a length, modelled on the system that will receive it:

=============  ===============================================  ======  =========================
name           characters                                       length  model
=============  ===============================================  ======  =========================
service        letters, digits, ``.``, ``_``, ``-``; starts      1-63    a DNS label (RFC 1123),
               and ends with a letter or digit                           relaxed to case and ``_``
metric         letters, digits, ``_``, ``:``; not a digit first  1-128   Prometheus metric names
k8s name       lower-case letters, digits, ``-``, ``.``;         1-253   DNS-1123 subdomain
               alphanumeric at each end of each label                    (Deployment, Rollout)
namespace      lower-case letters, digits, ``-``                 1-63    DNS-1123 label
container      lower-case letters, digits, ``-``                 1-63    DNS-1123 label
kube context   letters, digits, ``.``, ``_``, ``:``, ``/``,      1-253   kubeconfig context names
               ``@``, ``-``; a letter or digit first                     (``arn:aws:eks:…/prod``)
version        letters, digits, ``_``, ``.``, ``-``; not ``.``   1-128   an OCI image tag
               or ``-`` first
image          an OCI repository: ``[host[:port]/]path``,         1-255   the distribution spec's
               lower-case path components                                reference grammar
address        ``host:port``: a DNS name, an IPv4 address or a   1-261   nginx's ``server``
               bracketed IPv6 address; port 1-65535                      address (no unix sockets)
id             letters, digits, ``.``, ``_``, ``-``, ``:``,      1-512   deploy and incident ids:
               ``@``, ``+``, ``/``, ``#``; a letter or digit             uuids, hashes, ``svc-017``,
               first                                                     ``shop/checkout#7.1f2e3d4c``
label          letters, digits, ``_``, ``.``, ``:``, ``/``,      1-128   Prometheus label names,
               ``-``; not a digit first                                  OpenTelemetry attribute keys
target_kind    lower-case letters, digits, ``_``, ``-``;         1-32    it picks an executor
               a letter first
=============  ===============================================  ======  =========================

Nothing here allows a space, a quote, ``$``, ``;``, ``/`` (except between an
image's path components, and in a kubeconfig context name, an id or a label
key, which name things and go into no path) or ``..``: a name that passed can
go into a path, an argument list or a log line as it is.

>>> check("service", "checkout")
'checkout'
>>> check("version", "v2.15.1")
'v2.15.1'
>>> check("namespace", "../../etc")
Traceback (most recent call last):
...
backout.errors.ContractError: namespace '../../etc' is not a valid namespace: lower-case letters, digits and '-', at most 63, alphanumeric at both ends (a DNS-1123 label)
"""

from __future__ import annotations

import re
from typing import Literal

from backout.errors import ContractError

NameKind = Literal["service", "metric", "k8s_name", "namespace", "container", "kube_context", "version",
                   "image", "address", "id", "label", "target_kind"]

_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_HOST_LABEL = r"[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
FORMATS: dict[str, tuple[re.Pattern[str], int, str]] = {
    "service": (re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"), 63,
                "letters, digits, '.', '_' and '-', at most 63, a letter or digit at both ends"),
    "metric": (re.compile(r"[A-Za-z_:][A-Za-z0-9_:]{0,127}"), 128,
               "letters, digits, '_' and ':', not a digit first, at most 128 (a Prometheus metric name)"),
    "k8s_name": (re.compile(rf"{_LABEL}(?:\.{_LABEL})*"), 253,
                 "lower-case letters, digits, '-' and '.', at most 253 (a DNS-1123 subdomain)"),
    "namespace": (re.compile(_LABEL), 63,
                  "lower-case letters, digits and '-', at most 63, alphanumeric at both ends "
                  "(a DNS-1123 label)"),
    "container": (re.compile(_LABEL), 63,
                  "lower-case letters, digits and '-', at most 63, alphanumeric at both ends "
                  "(a DNS-1123 label)"),
    "kube_context": (re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,252}"), 253,
                     "letters, digits, '.', '_', ':', '/', '@' and '-', a letter or digit first, at most 253 "
                     "(a kubeconfig context name)"),
    "version": (re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"), 128,
                "letters, digits, '_', '.' and '-', not '.' or '-' first, at most 128 (an OCI image tag)"),
    "image": (re.compile(r"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*"
                         r"(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"), 255,
              "an OCI repository such as registry.example.com:5000/shop/checkout, at most 255"),
    "address": (re.compile(rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9A-Fa-f:.]{{2,45}}\]):{_PORT}"), 261,
                "host:port, the host a DNS name, an IPv4 address or a bracketed IPv6 address, "
                "the port 1-65535 (an nginx upstream server)"),
    "id": (re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+/#-]{0,511}"), 512,
           "letters, digits, '.', '_', '-', ':', '@', '+', '/' and '#', a letter or digit first, at most 512"),
    "label": (re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]{0,127}"), 128,
              "letters, digits, '_', '.', ':', '/' and '-', not a digit first, at most 128 (a Prometheus label "
              "name or an OpenTelemetry attribute key)"),
    "target_kind": (re.compile(r"[a-z][a-z0-9_-]{0,31}"), 32,
                    "lower-case letters, digits, '_' and '-', a letter first, at most 32"),
}


def valid(kind: NameKind, value: object) -> bool:
    """Whether ``value`` is a string in the format of ``kind``."""
    pattern, limit, _ = FORMATS[kind]
    return (isinstance(value, str) and len(value) <= limit and ".." not in value
            and pattern.fullmatch(value) is not None)


def check(kind: NameKind, value: object) -> str:
    """``value`` if it is a valid ``kind`` name; else :class:`ContractError` naming the rule."""
    if valid(kind, value):
        return value  # type: ignore[return-value]  # valid() checked it is a str
    shown = value if not isinstance(value, str) or len(value) <= 80 else f"{value[:60]}… ({len(value)} chars)"
    raise ContractError(f"{kind.replace('_', ' ')} {shown!r} is not a valid {kind.replace('_', ' ')}: "
                        f"{FORMATS[kind][2]}")
