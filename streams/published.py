"""Each (incident, action) is published once: the one place that knows what ``backout.actions``
already holds.

The decider's table may lag the actions topic by one decision (a decision is on the broker
before the state that says it was made), so a restarted decider can decide again what it
already said; this log, read from the topic itself, drops it. A question that later becomes
a rollback is a second action of the same incident, and goes out.
"""

from __future__ import annotations

import asyncio
import json

from backout.contracts import Decision
from backout.settings import KafkaSettings
from streams import topics
from streams.kafka import read_to_end


class PublishedActions:
    """(incident id, action) pairs on ``backout.actions``, read once from the topic, then kept."""

    def __init__(self, kafka: KafkaSettings, timeout_s: float = 20.0) -> None:
        self.kafka = kafka
        self.timeout_s = timeout_s
        self._said: set[tuple[str, str]] | None = None

    async def load(self) -> None:
        """Read the topic, unless already read since the last :meth:`forget`."""
        if self._said is None:
            self._said = await asyncio.to_thread(self._read)

    def forget(self) -> None:
        """Another worker may publish while this one does not own the decider: read again."""
        self._said = None

    async def first_time(self, decision: Decision) -> bool:
        """Whether ``decision`` says something new; if so it counts as said from now on."""
        await self.load()
        assert self._said is not None
        said = (decision.incident_id, decision.action)
        if said in self._said:
            return False
        self._said.add(said)
        return True

    def _read(self) -> set[tuple[str, str]]:
        said: set[tuple[str, str]] = set()
        for msg in read_to_end(self.kafka, topics.ACTIONS, timeout_s=self.timeout_s):
            try:
                decision = json.loads(msg.value() or b"")
                said.add((decision["incident_id"], decision["action"]))
            except (ValueError, KeyError, TypeError):
                pass  # not a decision; the actions topic may carry other tools' records
        return said
