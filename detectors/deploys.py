"""Deploy tracking per service: what changed when, what runs now, what is known to be good.

The decider asks "as of event time T" questions, because deploy records come
from another topic than the metrics and may be read before or after samples
stamped later than them: only records stamped at or before T count, whatever
order they were read in. Answers are rebuilt from the (short) list of a
service's deploy records each time, so that a late record slots into place.

Rules (DESIGN.md):

* a deploy whose version the service ran before, or whose status is
  ``rolled_back``, is a rollback done by someone else: the version it leaves
  counts as bad, and it is not a change to blame;
* a record's ``previous_version`` is authoritative about what it replaced;
* ``started`` and ``finished`` records of one ``deploy_id`` are one change,
  starting at the first record (a slow rollout moves metrics before it ends);
  a ``failed`` deploy puts the previous version back and is not blamed;
* a version is *known good* once it ran ``clean_s`` without being blamed or
  rolled back; the version a service ran before its first deploy we saw is
  assumed good (it ran before we watched). A bad version is never a target.

>>> from backout.contracts import Deploy
>>> t = DeployTracker(clean_s=600)
>>> _ = t.add(Deploy(ts=1000, service="a", deploy_id="d1", version="v2", previous_version="v1"))
>>> _ = t.add(Deploy(ts=2000, service="a", deploy_id="d2", version="v3", previous_version="v2"))
>>> v = t.view("a", as_of_ts=2100)
>>> v.current, [c.version for c in v.changes], v.known_good
('v3', ['v2', 'v3'], ['v1', 'v2'])
>>> t.mark_bad("a", "v2")
>>> t.view("a", as_of_ts=2100).target(exclude=("v3",))
'v1'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backout.contracts import Deploy
from detectors.config import CLEAN_S

# bounds that keep the state compact whatever the history
MAX_VERSIONS = 32
MIN_EVENTS = 8


@dataclass(frozen=True)
class Change:
    """One deploy that changed the running version: a candidate to blame."""

    deploy_id: str
    version: str
    previous_version: str | None
    ts: float


@dataclass
class ServiceView:
    """A service's deploy history as of one event time."""

    current: str | None = None
    since_ts: float = float("-inf")
    changes: list[Change] = field(default_factory=list)
    known_good: list[str] = field(default_factory=list)  # oldest first
    bad: set[str] = field(default_factory=set)
    seen: list[str] = field(default_factory=list)  # oldest first, bounded

    def target(self, exclude: tuple[str | None, ...] = ()) -> str | None:
        """The last version known to be good that is not bad nor excluded, if any."""
        for version in reversed(self.known_good):
            if version not in self.bad and version not in exclude:
                return version
        return None


# a deploy record, compactly: [ts, deploy_id, version, previous_version, status]
Event = tuple[float, str, str, str | None, str]


class _Service:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.base = ServiceView()  # history folded out of ``events``
        self.decided_bad: list[str] = []  # versions blamed by a decision


class DeployTracker:
    """Deploy records of every service, answered as of an event time."""

    def __init__(self, clean_s: float = CLEAN_S, keep_s: float = 7200.0) -> None:
        if clean_s <= 0 or keep_s <= 0:
            raise ValueError(f"clean_s and keep_s must be > 0, got {clean_s!r}, {keep_s!r}")
        self.clean_s = clean_s
        self.keep_s = keep_s
        self._services: dict[str, _Service] = {}

    def add(self, deploy: Deploy) -> bool:
        """Record one deploy record; False if the very same record was seen already."""
        svc = self._services.setdefault(deploy.service, _Service())
        event: Event = (deploy.ts, deploy.deploy_id, deploy.version, deploy.previous_version, deploy.status)
        if event in svc.events:
            return False
        svc.events.append(event)
        svc.events.sort(key=lambda e: (e[0], e[1], e[4]))
        return True

    def mark_bad(self, service: str, version: str | None) -> None:
        """A decision blamed ``version``: never count it good, never roll back to it."""
        if not version:
            return
        svc = self._services.setdefault(service, _Service())
        if version not in svc.decided_bad:
            svc.decided_bad = (svc.decided_bad + [version])[-MAX_VERSIONS:]

    def view(self, service: str, as_of_ts: float) -> ServiceView:
        """The service's history from records stamped at or before ``as_of_ts``."""
        svc = self._services.get(service)
        if svc is None:
            return ServiceView()
        view = _copy(svc.base)
        view.bad |= set(svc.decided_bad)
        started: dict[str, str | None] = {}  # deploy_id -> version it replaced
        for event in svc.events:
            if event[0] > as_of_ts:
                break
            self._apply(view, event, started)
        if view.current and as_of_ts - view.since_ts >= self.clean_s:
            _good(view, view.current)
        return view

    def deployed_near(self, ts: float, within_s: float, as_of_ts: float, other_than: str) -> list[str]:
        """Services but ``other_than`` with a deploy record stamped within ``within_s`` of ``ts``
        (and at or before ``as_of_ts``): the rest of a release train."""
        return sorted(name for name, svc in self._services.items() if name != other_than and any(
            abs(e[0] - ts) <= within_s and e[0] <= as_of_ts and e[4] != "failed" for e in svc.events))

    def prune(self, now_ts: float) -> None:
        """Fold records older than ``keep_s`` into each service's base, keeping the last few."""
        horizon = now_ts - self.keep_s
        for svc in self._services.values():
            old = [e for e in svc.events[:-MIN_EVENTS] if e[0] < horizon]
            if not old:
                continue
            started: dict[str, str | None] = {}
            for event in old:
                self._apply(svc.base, event, started)
            svc.events = svc.events[len(old):]
            svc.base.changes = []  # older than any correlation window
            svc.base.bad = set(sorted(svc.base.bad)[-MAX_VERSIONS:])

    def _apply(self, view: ServiceView, event: Event, started: dict[str, str | None]) -> None:
        ts, deploy_id, version, previous, status = event
        if deploy_id in started:  # a later record of the same deploy
            if status == "failed":
                view.current, view.since_ts = started[deploy_id], ts
                view.changes = [c for c in view.changes if c.deploy_id != deploy_id]
            return
        if status == "failed":  # failed before we saw it start: nothing changed
            return
        before = previous if previous is not None else view.current
        if before is not None and before != view.current:
            # the record's previous version is authoritative; if we did not know it ran, it ran before
            # we watched (or a deploy record was lost): assume it was good, as for the first deploy seen
            view.since_ts = float("-inf")
            if before not in view.seen:
                _good(view, before)
        started[deploy_id] = before
        if before is not None and ts - view.since_ts >= self.clean_s:
            _good(view, before)
        rollback = status == "rolled_back" or (version in view.seen and version != before)
        if rollback and before is not None and before != version:
            view.bad.add(before)
        elif version != before:
            view.changes.append(Change(deploy_id, version, before, ts))
        for v in (before, version):
            if v is not None and v not in view.seen:
                view.seen = (view.seen + [v])[-MAX_VERSIONS:]
        view.current, view.since_ts = version, ts


def _good(view: ServiceView, version: str) -> None:
    if version in view.bad:
        return
    if version in view.known_good:
        view.known_good.remove(version)
    view.known_good = (view.known_good + [version])[-MAX_VERSIONS:]


def _copy(view: ServiceView) -> ServiceView:
    return ServiceView(view.current, view.since_ts, list(view.changes), list(view.known_good),
                       set(view.bad), list(view.seen))


def tracker_to_state(tracker: DeployTracker) -> dict[str, Any]:
    """Compact JSON form of a tracker (see :meth:`DeployTracker.prune` for the bound)."""
    out: dict[str, Any] = {}
    for name, svc in tracker._services.items():
        b = svc.base
        out[name] = {
            "e": [list(e) for e in svc.events],
            "b": [b.current, None if b.since_ts == float("-inf") else b.since_ts,
                  [[c.deploy_id, c.version, c.previous_version, c.ts] for c in b.changes],
                  b.known_good, sorted(b.bad), b.seen],
            "x": svc.decided_bad,
        }
    return out


def tracker_from_state(state: dict[str, Any], clean_s: float, keep_s: float) -> DeployTracker:
    tracker = DeployTracker(clean_s, keep_s)
    for name, data in state.items():
        svc = _Service()
        svc.events = [(float(e[0]), e[1], e[2], e[3], e[4]) for e in data["e"]]
        cur, since, changes, good, bad, seen = data["b"]
        svc.base = ServiceView(cur, float("-inf") if since is None else float(since),
                               [Change(c[0], c[1], c[2], float(c[3])) for c in changes],
                               list(good), set(bad), list(seen))
        svc.decided_bad = list(data["x"])
        tracker._services[name] = svc
    return tracker
