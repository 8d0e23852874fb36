"""The one small interface every rollback target implements.

An executor knows one ``target.kind`` (the deploy's target, copied into the
decision). The executor service (``backout executor``) owns everything around
it — the approval gate, "exactly once per incident", recording ``executing``
before and ``executed``/``failed`` after, verification — so an executor only
answers three questions, and keeps its side effects behind them:

* :meth:`Executor.current_version` — what runs on the target now. Asked after
  a crash between ``executing`` and ``executed`` (did the rollback happen?)
  and before acting (has someone else acted already?).
* :meth:`Executor.plan` — what :meth:`execute` would do, in words, for
  ``--dry-run`` and the logs.
* :meth:`Executor.execute` — roll back and wait until the target says it is
  done (or failed). Idempotent: executing a rollback that is already in place
  returns ``skipped``, never acts twice.

Every name taken from the message is checked with :mod:`backout.names` before
it reaches an API, a path or a command; a bad one raises
:class:`~backout.errors.ContractError` and nothing runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

from backout.contracts import Decision, Target
from backout.errors import BackoutError

OutcomeStatus = Literal["executed", "skipped", "failed"]


class ExecutionFailed(BackoutError):
    """The target refused or did not complete a rollback (the step fails; a human is told)."""


@dataclass(frozen=True)
class Rollback:
    """One rollback to carry out: everything an executor needs, taken from the decision."""

    incident_id: str
    service: str
    from_version: str | None  # the blamed version, running now
    to_version: str  # the last version known to be good
    target: Target
    decision: Decision  # as published (the webhook target posts it verbatim)

    @classmethod
    def of(cls, decision: Decision) -> Rollback:
        """The rollback a ``rollback`` decision asks for; :class:`ExecutionFailed` if it names none."""
        if decision.to_version is None or decision.target is None:
            raise ExecutionFailed(f"decision {decision.incident_id} names no target or no version to roll back to")
        return cls(decision.incident_id, decision.service, decision.from_version, decision.to_version,
                   decision.target, decision)


@dataclass(frozen=True)
class Outcome:
    """What happened on the target: ``executed`` (it runs ``version`` now), ``skipped`` (it
    already did), or ``failed`` (``detail`` says why)."""

    status: OutcomeStatus
    detail: str
    version: str | None = None


class Executor(Protocol):
    """Rolls back one kind of target."""

    kind: ClassVar[str]

    def current_version(self, target: Target) -> str | None:
        """The version the target runs now; ``None`` when the target cannot tell."""
        ...

    def plan(self, rollback: Rollback) -> list[str]:
        """The steps :meth:`execute` would take, one sentence each (nothing is done)."""
        ...

    def execute(self, rollback: Rollback) -> Outcome:
        """Roll back and wait for the target to finish; idempotent."""
        ...
