"""The dead letter envelope: what could not be used, where it came from, and why.

Bad input is never dropped silently (DESIGN.md): it is published to
``backout.deadletter`` with the reason, byte for byte, and counted.
"""

from __future__ import annotations

import base64
import json


def envelope(raw: bytes | None, reason: str, topic: str, partition: int, offset: int, ts: float) -> bytes:
    """JSON for ``backout.deadletter``; ``ts`` is the broker timestamp of the bad record."""
    data = raw or b""
    try:
        value, encoding = data.decode(), "utf-8"
    except UnicodeDecodeError:
        value, encoding = base64.b64encode(data).decode(), "base64"
    return json.dumps({
        "type": "deadletter", "ts": ts, "reason": reason, "topic": topic,
        "partition": partition, "offset": offset, "value": value, "encoding": encoding,
    }).encode()
