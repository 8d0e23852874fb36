"""The dead letter envelope: what could not be used, where it came from, and why.

Bad input is never dropped silently (DESIGN.md): it is published to
``backout.deadletter`` with the reason, byte for byte, and counted.
"""

from __future__ import annotations

import base64
import json

KEEP_BYTES = 256 * 1024  # a bigger record is cut: its envelope must fit the broker's default 1 MB limit


def envelope(raw: bytes | None, reason: str, topic: str, partition: int, offset: int, ts: float) -> bytes:
    """JSON for ``backout.deadletter``; ``ts`` is the broker timestamp of the bad record."""
    data = raw or b""
    size = len(data)
    data = data[:KEEP_BYTES]
    try:
        value, encoding = data.decode(), "utf-8"
    except UnicodeDecodeError:
        value, encoding = base64.b64encode(data).decode(), "base64"
    return json.dumps({
        "type": "deadletter", "ts": ts, "reason": reason, "topic": topic,
        "partition": partition, "offset": offset, "value": value, "encoding": encoding,
        **({"truncated_from_bytes": size} if size > KEEP_BYTES else {}),
    }).encode()
