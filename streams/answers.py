"""Answering a rollback question: the one way an approval or a denial reaches ``backout.approvals``.

Every front end that lets someone answer (``backout approve`` / ``deny``, the
executor's web page, the MCP server) calls :func:`answer`, so an answer has one
shape, one key (its incident: the gate reads each incident's records in order)
and one validation of what the person typed.

>>> check_incident("inc-0123456789abcdef")
'inc-0123456789abcdef'
>>> check_by("alice@example.com")
'alice@example.com'
>>> check_incident("inc-1; rm -rf /")
Traceback (most recent call last):
...
backout.errors.ContractError: incident 'inc-1; rm -rf /' is not an incident id: letters, digits, '.', '_', ':' and '-', at most 128
"""

from __future__ import annotations

import re

from backout.contracts import Approval
from backout.errors import ContractError
from streams import topics
from streams.kafka import publish
from streams.runtime.sender import Sender

INCIDENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
BY = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@+-]{0,63}")


def check_incident(value: str) -> str:
    if not INCIDENT_ID.fullmatch(value):
        raise ContractError(f"incident {value[:80]!r} is not an incident id: letters, digits, '.', '_', ':' "
                            "and '-', at most 128")
    return value


def check_by(value: str) -> str:
    if not BY.fullmatch(value):
        raise ContractError(f"by {value[:80]!r} is not a name: letters, digits, spaces and '._@+-', at most 64")
    return value


def answer(out: Sender, incident_id: str, approved: bool, by: str, ts: float,
           topic: str = topics.APPROVALS) -> Approval:
    """Send one approval (``approved``) or denial of ``incident_id``'s rollback; call ``out.flush`` after."""
    record = Approval(ts=ts, incident_id=check_incident(incident_id), approved=approved, by=check_by(by))
    publish(out, topic, [record], key_field="incident_id")
    return record
