"""The rows of a saved window as base64 of their IEEE-754 doubles.

A monitor's state is written to the changelog a few seconds after every change, so its encoding is
on the hot path: ``json.dumps`` of a window's few hundred floats costs ~50x a detector update, a
packed block a small fraction of that, and it is exact (no decimal round trip). ``None`` is NaN.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterable
from itertools import chain


def pack_rows(rows: Iterable[tuple[float | None, ...]]) -> str:
    flat = list(chain.from_iterable(rows))
    try:
        raw = struct.pack(f"<{len(flat)}d", *flat)
    except struct.error:  # a None among them
        raw = struct.pack(f"<{len(flat)}d", *(math.nan if v is None else v for v in flat))
    return base64.b64encode(raw).decode()


def unpack_rows(block: str, width: int) -> list[tuple[float, ...]]:
    """The rows of :func:`pack_rows`, ``width`` floats each (NaN where ``None`` was packed)."""
    raw = base64.b64decode(block)
    floats = iter(struct.unpack(f"<{len(raw) // 8}d", raw))
    return list(zip(*[floats] * width, strict=True))
