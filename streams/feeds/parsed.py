"""What a feed made of one payload: the records it could use, and why it refused the rest.

Every feed's ``to_records`` returns a :class:`Parsed`, so the receiver, the
bridge and the publish path treat all sources alike: records go to their
topics, each :class:`Refusal` goes to the dead letter topic with its reason,
and ``skipped`` counts what was deliberately not turned into a record (a
Prometheus stale marker, the first point of a cumulative counter) so that
nothing disappears without a count.

>>> p = Parsed()
>>> p.refuse("line 3", "ts", "soon", "a number of unix seconds", b'{"ts":"soon"}')
>>> str(p.refusals[0])
"line 3: field 'ts': got 'soon', expected a number of unix seconds"
>>> p.skip("stale marker"); p.skip("stale marker"); dict(p.skipped)
{'stale marker': 2}
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from backout.contracts import Deploy, Metric


@dataclass(frozen=True)
class Refusal:
    """One item of a payload that could not become a record.

    ``where`` locates it in the payload (``line 3``, ``timeseries 12``,
    ``metric 'http.server.request.duration' point 2``); ``reason`` names the
    field, the value and the expectation; ``raw`` is the item as received,
    for the dead letter.
    """

    where: str
    reason: str
    raw: bytes = b""

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class Parsed:
    records: list[Metric | Deploy] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def refuse(self, where: str, name: str, value: object, expected: str, raw: bytes = b"") -> None:
        """Record a refusal in the contracts' wording: field, value, expectation."""
        self.refusals.append(Refusal(where, f"field '{name}': got {_shown(value)}, expected {expected}", raw))

    def skip(self, reason: str, times: int = 1) -> None:
        self.skipped[reason] += times

    def extend(self, other: Parsed) -> Parsed:
        self.records += other.records
        self.refusals += other.refusals
        self.skipped.update(other.skipped)
        return self


def _shown(value: object) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}… ({len(text)} chars)"
