"""Time-ordered event ids (UUIDv7, RFC 9562), generated on the client.

Ids come from the client so that a batch retried or replayed from the spool is recognised as
already stored instead of being stored twice.
"""

from __future__ import annotations

import os
import uuid

_VERSION_7 = 0x7 << 76
_VARIANT = 0x2 << 62


def uuid7_from_ns(time_ns: int, rand: bytes) -> uuid.UUID:
    """A UUIDv7 for the moment ``time_ns``; ``rand`` supplies 10 random bytes."""
    ms = time_ns // 1_000_000
    # rand_a carries the sub-millisecond fraction (RFC 9562 method 3) so ids of one process
    # sort in call order even within a millisecond.
    sub_ms = ((time_ns % 1_000_000) * 4096) // 1_000_000
    rand_b = int.from_bytes(rand[2:10], "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | _VERSION_7 | sub_ms << 64 | _VARIANT | rand_b
    return _uuid_from_int(value)


_new = object.__new__
_set = object.__setattr__
# An enum member looked up once: each SafeUUID.unknown is a descriptor call (~0.4 µs).
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown


def _uuid_from_int(value: int) -> uuid.UUID:
    """``uuid.UUID(int=value)`` without its argument checks (our value is built in range):
    a third of the cost, on the writer's path for every event. UUID.__setstate__ does the
    same when unpickling."""
    u = _new(uuid.UUID)
    _set(u, "int", value)
    _set(u, "is_safe", _UNKNOWN_SAFETY)
    return u


def uuid7_batch(times_ns: list[int]) -> list[uuid.UUID]:
    """One id for each moment, drawing the randomness in one system call."""
    pool = os.urandom(10 * len(times_ns))
    return [uuid7_from_ns(t, pool[i * 10 : i * 10 + 10]) for i, t in enumerate(times_ns)]
