"""Carrying out one rollback the gate returned (:class:`~actions.gate.Execute`), at most once.

The executor service has published the incident's ``executing`` verification, and the broker has
acknowledged it, before anything here runs. Then, in a thread of its own:

1. :func:`history` reads ``backout.verifications`` to its end, keeping the incident's records.
2. :func:`before_acting` decides from them: an ``executed`` or ``failed`` there already closes the
   step (an earlier attempt finished; nothing is done); an ``executing`` of an earlier attempt, or
   a resumed rollback (a restart, a partition handover), means the target may have been changed
   already, so it is *asked* first; otherwise it acts.
3. :func:`carry_out` asks or acts. Asked: a target already at ``to_version`` is recorded
   ``executed`` without acting; one still at ``from_version`` is rolled back; anything else (a
   version no one expected, or a target that cannot tell) fails the step for a human. Acting:
   the executor's own checks refuse a bad name before any command, path or API call.

The result is one ``executed`` or ``failed`` verification; a refusal of the decision's contents
also names the reason for its dead letter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from actions.executors.base import ExecutionFailed, Executor, Rollback
from backout.contracts import Verification, decode
from backout.errors import ConfigError, ContractError
from backout.settings import KafkaSettings

log = logging.getLogger(__name__)

Step = Literal["act", "ask", "done"]


Outcome = Literal["executed", "skipped", "failed", "refused"]


@dataclass(frozen=True)
class Result:
    """The verification to publish, what happened (for ``/metrics``), and why the decision is
    dead-lettered (a refusal of its contents), if it is."""

    verification: Verification
    outcome: Outcome
    refusal: str | None = None


def history(kafka: KafkaSettings, topic: str, incident_id: str, timeout_s: float = 30.0) -> list[Verification]:
    """The incident's verifications on ``topic``, read to its end (invalid records are skipped:
    the agent dead-letters them)."""
    from streams.kafka import read_to_end

    found = []
    needle = incident_id.encode()
    for msg in read_to_end(kafka, topic, timeout_s=timeout_s):
        value = msg.value() or b""
        if needle not in value:  # cheap filter before decoding
            continue
        try:
            record = decode(value, expect=Verification)
        except ContractError:
            continue
        if record.incident_id == incident_id:
            found.append(record)
    return found


def before_acting(records: Iterable[Verification], resume: bool) -> tuple[Step, Verification | None]:
    """What to do given the incident's verifications (ours, ``executing``, among them).

    >>> executing, failed = (Verification(ts=1.0, incident_id="i", status=s) for s in ("executing", "failed"))
    >>> [before_acting(records, resume)[0] for records, resume in
    ...  [([executing], False), ([executing, executing], False), ([executing], True), ([executing, failed], True)]]
    ['act', 'ask', 'ask', 'done']
    """
    records = list(records)
    closed = next((v for v in records if v.status in ("executed", "failed")), None)
    if closed is not None:
        return "done", closed
    attempts = sum(v.status == "executing" for v in records)
    return ("ask" if resume or attempts > 1 else "act"), None


def carry_out(rollback: Rollback, executor: Executor, step: Step) -> Result:
    """Ask the target (``step == "ask"``) or act; never raises."""
    try:
        if step == "ask":
            asked = _ask(rollback, executor)
            if asked is not None:
                return asked
        outcome = executor.execute(rollback)
    except ContractError as exc:
        return _failed(rollback, f"refused: {exc}; nothing was run", refusal=str(exc), outcome="refused")
    except (ConfigError, ExecutionFailed) as exc:
        return _failed(rollback, str(exc))
    except Exception as exc:  # a bug in an executor must fail the step, not the service
        log.exception("executor %s failed on %s", executor.kind, rollback.incident_id)
        return _failed(rollback, f"internal error in the {executor.kind} executor: {exc!r}")
    if outcome.status == "failed":
        return _failed(rollback, outcome.detail)
    executed = outcome.status == "executed"
    return Result(Verification(ts=time.time(), incident_id=rollback.incident_id, status="executed",
                               detail=outcome.detail if executed else f"already in place: {outcome.detail}"),
                  "executed" if executed else "skipped")


def _ask(rollback: Rollback, executor: Executor) -> Result | None:
    """After an interrupted attempt: ``executed`` if the target is at ``to_version``, ``None`` (act)
    if still at ``from_version``, ``failed`` otherwise."""
    now = executor.current_version(rollback.target)
    where = f"{rollback.service} ({rollback.target.kind})"
    if now is not None and now == rollback.to_version:
        return Result(Verification(ts=time.time(), incident_id=rollback.incident_id, status="executed",
                                   detail=f"{where} runs {now} already: an earlier attempt, interrupted before "
                                          "it was recorded, had rolled it back; nothing was run again"),
                      "skipped")
    if now is not None and now == rollback.from_version:
        return None
    seen = "cannot tell which version it runs" if now is None else f"runs {now}"
    return _failed(rollback, f"an earlier attempt of this rollback was interrupted, and {where} {seen}, neither "
                             f"{rollback.from_version} nor {rollback.to_version}: a human must check it; nothing "
                             "was run")


def _failed(rollback: Rollback, detail: str, refusal: str | None = None, outcome: Outcome = "failed") -> Result:
    return Result(Verification(ts=time.time(), incident_id=rollback.incident_id, status="failed", detail=detail),
                  outcome, refusal)
