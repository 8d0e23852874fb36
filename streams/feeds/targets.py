"""The deploy targets a feed may attach, checked before they reach a record.

A deploy's ``target`` is what a rollback will act on (DESIGN.md: the
executor is chosen by ``target.kind``), so every feed that builds one —
``backout deploy-event``, the GitHub and Argo CD mappings — builds it here:
the kind must be one the executors know, the fields it needs present, and
each name in the format of the system that will receive it
(:mod:`backout.names`). Other fields pass through for the executor.

>>> target("kubernetes", {"namespace": "shop", "name": "checkout"}).model_dump()
{'kind': 'kubernetes', 'namespace': 'shop', 'name': 'checkout'}
>>> target("kubernetes", {"namespace": "shop"})
Traceback (most recent call last):
...
backout.errors.ContractError: target kind 'kubernetes' needs field 'name' (the Deployment)
"""

from __future__ import annotations

from backout.contracts import TARGET_FIELDS, Target, http_url, validate
from backout.errors import ContractError
from backout.names import check

KINDS = TARGET_FIELDS  # one table: the contract checks the same fields on every record


def target(kind: str, fields: dict[str, str]) -> Target:
    """A checked :class:`Target`; :class:`ContractError` naming the kind, field and expectation."""
    if kind not in KINDS:
        raise ContractError(f"target kind {kind!r} is not one the executors know: expected one of "
                            f"{', '.join(KINDS)}")
    for field, (required, name_kind, what) in KINDS[kind].items():
        value = fields.get(field)
        if value is None:
            if required:
                raise ContractError(f"target kind {kind!r} needs field {field!r} ({what})")
        elif name_kind is not None:
            check(name_kind, value)
        else:
            _check_url(value)
    return validate(Target, {"kind": kind, **fields}, f"{kind} target")


def _check_url(url: str) -> None:
    if not http_url(url):
        raise ContractError(f"target field 'url': got {url!r}, expected an http(s) URL with a host")
