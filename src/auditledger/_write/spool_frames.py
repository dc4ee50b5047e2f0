"""How spool records are framed on disk, and how a damaged segment is read back.

A segment is ``MAGIC``, a header record naming the database the segment belongs to, then
records. Every record is framed as::

    SYNC (4) | kind (1) | length (4) | crc32 of payload (4) | crc32 of the 9 bytes before (4)

``SYNC`` holds the bytes 0xFF and 0xFE, which never occur in UTF-8, and every payload is UTF-8
JSON (or empty): a sync marker is therefore only ever found at the start of a record, so after
damage, reading resumes at the next one instead of losing everything behind it. The header's
own checksum tells a record cut short by a crash (its header is intact, its payload runs past
the end of the file: a *torn tail*, normal after a crash) from a damaged length.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import orjson

MAGIC = b"AUDITLEDGER-SPOOL-2\n"
SYNC = b"\xffAL\xfe"
HEAD, EVENT, COMMIT = b"H", b"E", b"C"
_FRAME = struct.Struct(">4scII")
_FRAME_CRC = struct.Struct(">I")
FRAME_SIZE = _FRAME.size + _FRAME_CRC.size
# A record is one event (at most a few hundred KiB with the caps) or a header: a length beyond
# this is damage, whatever its checksum says.
MAX_RECORD = 64 * 1024 * 1024


def frame(kind: bytes, payload: bytes) -> bytes:
    head = _FRAME.pack(SYNC, kind, len(payload), zlib.crc32(payload))
    return head + _FRAME_CRC.pack(zlib.crc32(head[4:])) + payload


def segment_header(database: str) -> bytes:
    """What a segment starts with: the magic line and the database it belongs to."""
    return MAGIC + frame(HEAD, orjson.dumps({"database": database}))


@dataclass
class Damage:
    """A stretch of a segment that could not be read; its bytes are kept for a human."""

    offset: int
    data: bytes
    # "corrupt_record" (framing damaged), "unreadable_record" (framed, but not an event) or
    # "corrupt_header" (only the header: no record lost)
    reason: str
    records: int  # how many records it held, as far as their sync markers tell


@dataclass
class Parsed:
    """What reading a segment found: its records in order, and what could not be read."""

    records: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # (offset, kind, payload)
    damage: list[Damage] = field(default_factory=list)
    database: str | None = None  # from an intact header; None when the header is damaged
    header_damaged: bool = False


_TORN = object()


def _record_at(data: bytes, pos: int) -> tuple[bytes, bytes, int] | object | None:
    """The record starting at ``pos`` as (kind, payload, end), ``_TORN`` when it is cut
    short by the end of the file, or None when the bytes there are not a record."""
    rest = len(data) - pos
    if rest < FRAME_SIZE:
        return _TORN if data[pos:].startswith(SYNC[: min(rest, len(SYNC))]) else None
    sync, kind, length, crc = _FRAME.unpack_from(data, pos)
    if sync != SYNC:
        return None
    (head_crc,) = _FRAME_CRC.unpack_from(data, pos + _FRAME.size)
    if head_crc != zlib.crc32(data[pos + 4 : pos + _FRAME.size]) or length > MAX_RECORD:
        return None
    start = pos + FRAME_SIZE
    end = start + length
    if end > len(data):
        return _TORN
    payload = data[start:end]
    if zlib.crc32(payload) != crc:
        return None
    return kind, payload, end


def parse(data: bytes) -> Parsed:
    """Every record that can be read, resynchronising on the next sync marker after damage.

    The damaged stretches are returned with an estimate of the records they held: one per
    sync marker inside, plus the record whose own marker was hit, or their size divided by
    the typical record's when that is more. A torn tail is silent.
    """
    out = Parsed()
    head = _record_at(data, len(MAGIC))  # the header always sits right after the magic
    header_end: int | None = None
    if isinstance(head, tuple) and head[0] == HEAD:
        try:
            out.database = str(orjson.loads(head[1])["database"])
            header_end = head[2]
        except Exception:  # noqa: BLE001 - an intact frame around a bad header is damage too
            out.database = None
    if data.startswith(MAGIC) and header_end is not None:
        pos = header_end
    else:
        # A damaged header must not cost the records behind it: start at the first one.
        out.header_damaged = True
        pos = header_end if header_end is not None else _first_record(data)
        lost = data.count(SYNC, 0, pos) - (1 if data.startswith(SYNC, len(MAGIC)) else 0)
        reason = "corrupt_record" if lost > 0 else "corrupt_header"
        out.damage.append(Damage(0, data[:pos], reason, max(0, lost)))
    bad_from: int | None = None
    while pos < len(data):
        rec = _record_at(data, pos)
        if isinstance(rec, tuple):
            if bad_from is not None:
                out.damage.append(_damage(data, bad_from, pos))
                bad_from = None
            kind, payload, end = rec
            out.records.append((pos, kind, payload))
            pos = end
            continue
        if rec is _TORN and _no_record_after(data, pos):
            break  # a crash in the middle of an append: the last record was never complete
        if bad_from is None:
            bad_from = pos
        nxt = data.find(SYNC, pos + 1)
        pos = nxt if nxt >= 0 else len(data)
    if bad_from is not None:
        out.damage.append(_damage(data, bad_from, pos))
    if out.records:
        # Where the damage wiped the markers too (a zeroed page), its size says more.
        typical = sum(FRAME_SIZE + len(p) for _, _, p in out.records) / len(out.records)
        for d in out.damage:
            if d.reason == "corrupt_record":
                d.records = max(d.records, round(len(d.data) / typical))
    return out


def _first_record(data: bytes) -> int:
    found = data.find(SYNC)
    while found >= 0:
        rec = _record_at(data, found)
        if isinstance(rec, tuple) and rec[0] != HEAD:
            return found
        found = data.find(SYNC, found + 1)
    return len(data)


def _no_record_after(data: bytes, pos: int) -> bool:
    found = data.find(SYNC, pos + 1)
    while found >= 0:
        if isinstance(_record_at(data, found), tuple):
            return False
        found = data.find(SYNC, found + 1)
    return True


def _damage(data: bytes, start: int, end: int) -> Damage:
    markers = data.count(SYNC, start, end)
    hit_marker = not data.startswith(SYNC, start)
    return Damage(start, data[start:end], "corrupt_record", markers + (1 if hit_marker else 0))


def corrupt_file_bytes(damage: list[Damage]) -> bytes:
    """The damaged stretches of one segment, each after a line saying where it was."""
    parts = []
    for d in damage:
        line = f"# offset={d.offset} length={len(d.data)} reason={d.reason}\n"
        parts.append(line.encode() + d.data + b"\n")
    return b"".join(parts)
