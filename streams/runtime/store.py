"""Where the states a worker is not holding in memory wait for their key's next record.

The changelog is the truth, but Kafka cannot be asked for one key, so the
runtime keeps a local copy of every saved state of the partitions it owns in
SQLite: written when a state is saved, refilled from the changelog when a
partition is assigned. Memory then holds only the live states (bounded by
``max_keys``); a key idle for ``state_ttl_s`` leaves memory and is read back
from here when it speaks again. Losing the file loses nothing: it is rebuilt
from the changelog at the next assignment, so it is written without a journal
and without syncs.

>>> store = StateStore()
>>> store.put(0, [(b"checkout", 17, b'{"n":3}')])
>>> store.get(0, b"checkout"), store.get(1, b"checkout")
((17, b'{"n":3}'), None)
>>> store.drop([0]); store.get(0, b"checkout")
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

CACHE_KIB = 8 * 1024  # SQLite's page cache; the rest of the file stays on disk


class StateStore:
    """Saved states by (partition, key): ``(offset of the last record in it, state bytes)``."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        if str(path) != ":memory:":
            Path(path).unlink(missing_ok=True)  # a copy from an earlier run: the changelog will be read again
        self._db = sqlite3.connect(str(path), check_same_thread=False)  # used by the runtime's thread only
        for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{CACHE_KIB}", "temp_store=MEMORY"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute("CREATE TABLE IF NOT EXISTS states (partition INTEGER, key BLOB, offset INTEGER, "
                         "state BLOB, PRIMARY KEY (partition, key))")

    def get(self, partition: int, key: bytes) -> tuple[int, bytes] | None:
        row = self._db.execute("SELECT offset, state FROM states WHERE partition = ? AND key = ?",
                               (partition, key)).fetchone()
        return None if row is None else (row[0], row[1])

    def put(self, partition: int, entries: Iterable[tuple[bytes, int, bytes]]) -> None:
        """Store ``(key, offset, state)`` entries of one partition, in one transaction."""
        with self._db:  # one transaction
            self._db.executemany("INSERT OR REPLACE INTO states VALUES (?, ?, ?, ?)",
                                 ((partition, key, offset, state) for key, offset, state in entries))

    def drop(self, partitions: Iterable[int]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM states WHERE partition = ?", ((p,) for p in partitions))

    def count(self, partition: int) -> int:
        return int(self._db.execute("SELECT count(*) FROM states WHERE partition = ?", (partition,)).fetchone()[0])

    def close(self) -> None:
        self._db.close()
