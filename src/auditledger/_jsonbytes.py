"""orjson output that is kept: right-sized copies.

orjson writes into a buffer of at least 4 KiB and returns it as is. A result dropped at once
costs nothing (the allocator hands the same buffer to the next call), but a batch that keeps
2,000 results (canonical forms, spool records) keeps 2,000 fresh 4 KiB buffers: measured here,
2 µs per small value in page faults, against 0.15 µs for a copy of the right size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

_dumps = orjson.dumps


def dumps_kept(
    value: Any, default: Callable[[Any], Any] | None = None, option: int | None = None
) -> bytes:
    return memoryview(_dumps(value, default, option)).tobytes()
