"""The local durable spool: where events wait when the database cannot take them.

A spool directory holds segment files. Each process appends to segments of its own, holding an
exclusive ``flock`` on each open segment; a segment whose lock is free was either sealed by its
owner or left behind by a dead process, and any process may replay it.

Every record is framed as ``kind (1 byte) | length (4) | crc32 (4) | payload``, so a crash in
the middle of an append leaves a torn last record that replay detects and ignores, instead of
a half-written batch that poisons the rest. A commit record (kind ``C``) says that every event
before it in the segment is already in the database (used by the write-ahead mode).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from .._events import WorkspaceRef
from .._jsonbytes import dumps_kept
from .capture import (
    ACTION,
    JSON_FIELDS,
    NOTES,
    T_NS,
    TEXT_FIELDS,
    WORKSPACE_ID,
    BadAction,
    Captured,
    SanitisedJson,
)
from .sanitise import Note, clean_text, safe_repr

MAGIC = b"AUDITLEDGER-SPOOL-1\n"
SUFFIX = ".seg"
_HEADER = struct.Struct(">cII")
EVENT, COMMIT = b"E", b"C"
MAX_SEGMENT_BYTES = 16 * 1024 * 1024


def default_spool_dir(fingerprint: str) -> Path:
    """A per-user spool folder, one per database (so events replay into the right one)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "auditledger" / "spool" / fingerprint


def encode_event(event_id: str, ev: Captured) -> bytes:
    """One spool record payload: the captured event and its id, as JSON. Never raises: a
    value JSON cannot carry (a lone surrogate in a text field) is made storable here, as the
    writer would have made it, and the notes say so."""
    with contextlib.suppress(Exception):  # the event must reach the spool whatever it holds
        return _record(event_id, ev)
    with contextlib.suppress(Exception):
        return _record(event_id, _storable(ev))
    # Last resort, for what nobody foresaw: each part that JSON takes is kept as it is (the
    # JSON values are text already), the others as their repr; replay stores or quarantines.
    parts: list[Any] = [event_id]
    for value in ev:
        try:
            orjson.dumps(value)
            parts.append(value)
        except Exception:  # noqa: BLE001 - this part is the one JSON cannot carry
            parts.append(safe_repr(value))
    if not isinstance(parts[1 + T_NS], int):
        parts[1 + T_NS] = time.time_ns()
    return dumps_kept(parts)


def _storable(ev: Captured) -> Captured:
    """The event with every text storable (lone surrogates and NUL replaced, with notes)."""
    notes: list[Note] = []
    for note in ev[NOTES] or []:
        try:
            orjson.dumps(note)
            notes.append(note)
        except Exception:  # noqa: BLE001 - a note made of unstorable text
            notes.append({"field": "?", "change": safe_repr(note)})
    out = list(ev)
    for index, name in (*TEXT_FIELDS.items(), (ACTION, "action")):
        if isinstance(out[index], str):
            out[index] = _text(out[index], name, notes)
    ws = out[WORKSPACE_ID]
    if isinstance(ws, WorkspaceRef):
        out[WORKSPACE_ID] = WorkspaceRef(**_ref_fields(ws, notes, clean=True))
    elif isinstance(ws, str):
        out[WORKSPACE_ID] = _text(ws, "workspace_id", notes)
    out[NOTES] = notes or None
    return tuple(out)


def _ref_fields(ref: WorkspaceRef, notes: list[Note], *, clean: bool) -> dict[str, Any]:
    """A workspace ref's fields as the writer stores them (see Preparer._clean_ref): text or
    None, and a bool or None, so that a replayed event names the same workspace row."""
    fields: dict[str, Any] = {}
    for name in ("team_id", "enterprise_id", "name"):
        try:
            value = getattr(ref, name)
        except Exception:  # noqa: BLE001 - a hostile subclass
            value = None
            notes.append({"field": f"workspace.{name}", "change": "unreadable, dropped"})
        if value is not None and not isinstance(value, str):
            notes.append({"field": f"workspace.{name}", "change": "stored as text"})
            value = safe_repr(value)
        if clean and value is not None:
            value = _text(value, f"workspace.{name}", notes)
        fields[name] = value
    active = getattr(ref, "is_active", None)
    if active is not None and not isinstance(active, bool):
        notes.append({"field": "workspace.is_active", "change": "not a bool, ignored"})
        active = None
    fields["is_active"] = active
    return fields


def _text(value: str, field: str, notes: list[Note]) -> str:
    text, change = clean_text(value)
    if change:
        notes.append({"field": field, "change": change})
    return text


def _record(event_id: str, ev: Captured) -> bytes:
    notes = list(ev[NOTES]) if ev[NOTES] else []
    out: list[Any] = [event_id, *ev[:NOTES]]
    action = ev[1]
    if isinstance(action, BadAction):
        out[2] = {"bad_action": action.text}
    ws = ev[WORKSPACE_ID]
    if isinstance(ws, WorkspaceRef):
        out[1 + WORKSPACE_ID] = _ref_fields(ws, notes, clean=False)
    elif isinstance(ws, uuid.UUID):
        out[1 + WORKSPACE_ID] = str(uuid.UUID(int=ws.int))  # a subclass's __str__ may lie
    elif ws is not None:
        out[1 + WORKSPACE_ID] = str(ws)
    for index in JSON_FIELDS:
        value = ev[index]
        if isinstance(value, SanitisedJson):
            notes.extend(value.notes)
            value = value.data
        out[1 + index] = value
    out.append(notes or None)
    return dumps_kept(out)


def decode_event(payload: bytes) -> tuple[str, Captured]:
    data = orjson.loads(payload)
    event_id = data[0]
    ev = data[1:]
    if isinstance(ev[1], dict):
        ev[1] = BadAction(str(ev[1].get("bad_action")))
    ws = ev[WORKSPACE_ID]
    if isinstance(ws, dict):
        ev[WORKSPACE_ID] = WorkspaceRef(
            ws.get("team_id"), ws.get("enterprise_id"), ws.get("name"), ws.get("is_active")
        )
    return event_id, tuple(ev)


def frame(kind: bytes, payload: bytes) -> bytes:
    return _HEADER.pack(kind, len(payload), zlib.crc32(payload)) + payload


class SegmentWriter:
    """Appends records to this process's segments, rotating them by size. Not thread-safe."""

    def __init__(self, directory: Path, stream: str, *, committed_only: bool = False) -> None:
        self.directory = directory
        self.stream = stream
        # A write-ahead segment that only ever holds committed batches (see the writer): when
        # it rotates there is nothing in it to replay, so it is deleted instead of sealed.
        self.committed_only = committed_only
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._size = 0
        self._seq = 0
        self.sealed: set[str] = set()  # our sealed segments not yet replayed

    def append(self, kind: bytes, payloads: list[bytes]) -> int:
        """Append records; returns the bytes written."""
        if self._file is None or self._size >= MAX_SEGMENT_BYTES:
            if self.committed_only:
                self.discard()
            else:
                self.seal()
            self._open()
        assert self._file is not None
        data = b"".join(frame(kind, p) for p in payloads)
        self._file.write(data)
        self._size += len(data)
        return len(data)

    def flush(self, *, fsync: bool = False) -> None:
        if self._file is not None:
            self._file.flush()
            if fsync:
                os.fsync(self._file.fileno())

    def has_events(self) -> bool:
        return self._file is not None and self._size > len(MAGIC)

    def seal(self) -> None:
        """Close the open segment: its lock is released and any process may replay it."""
        if self._file is None:
            return
        self._file.flush()
        self._file.close()  # releases the flock
        assert self._path is not None
        if self._size > len(MAGIC):
            self.sealed.add(self._path.name)
        else:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
        self._file = None
        self._path = None

    def discard(self) -> None:
        """Close and delete the open segment (every event in it is stored)."""
        if self._file is None:
            return
        self._file.close()
        assert self._path is not None
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        self._file = None
        self._path = None

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's segment without writing to it."""
        if self._file is not None:
            # The buffer was flushed before the fork, so closing writes nothing; the parent's
            # lock stays, as it belongs to the open file description the parent still holds.
            self._file.close()
        self._file = None
        self._path = None
        self._size = 0
        self.sealed = set()

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._seq += 1
        host = socket.gethostname()
        name = f"{time.time_ns():020d}-{host}-{os.getpid()}-{self.stream}-{self._seq:05d}{SUFFIX}"
        path = self.directory / name
        # Created under another name and renamed once locked: a replayer in another process
        # could otherwise claim the new, still unlocked segment, find it empty and delete it
        # while this process goes on writing into the deleted file.
        draft = path.with_name(name + ".new")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        f = os.fdopen(fd, "wb", buffering=256 * 1024)
        f.write(MAGIC)
        f.flush()
        os.rename(draft, path)
        self._file, self._path, self._size = f, path, len(MAGIC)


@dataclass
class SegmentReplay:
    """A segment this process has locked for replay."""

    path: Path
    fd: int

    def events(self) -> Iterator[tuple[str, Captured]]:
        """The events not yet committed, in order; a torn tail is ignored."""
        pending: list[bytes] = []
        for kind, payload in read_records(self.fd):
            if kind == COMMIT:
                pending.clear()
            elif kind == EVENT:
                pending.append(payload)
        for payload in pending:
            yield decode_event(payload)

    def done(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)

    def release(self) -> None:
        os.close(self.fd)

    def set_aside(self) -> None:
        """Rename an unreadable segment to *.corrupt (kept for a human, never replayed)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.rename(self.path.with_name(self.path.name + ".corrupt"))
        os.close(self.fd)


def read_records(fd: int) -> Iterator[tuple[bytes, bytes]]:
    with os.fdopen(os.dup(fd), "rb") as f:
        f.seek(0)
        if f.read(len(MAGIC)) != MAGIC:
            return
        while True:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return
            kind, length, crc = _HEADER.unpack(header)
            payload = f.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return  # torn write at the end of a crashed process's segment
            yield kind, payload


def claim_segments(directory: Path) -> Iterator[SegmentReplay]:
    """Lock and yield, oldest first, each segment whose owner sealed it or died."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its owner is alive and writing, or another process is replaying it
            continue
        if os.fstat(fd).st_nlink == 0:
            os.close(fd)  # replayed and removed by another process after we opened it
            continue
        yield SegmentReplay(path, fd)


def has_claimable_segments(directory: Path) -> bool:
    for segment in claim_segments(directory):
        segment.release()
        return True
    return False


def spool_bytes(directory: Path) -> int:
    total = 0
    if directory.is_dir():
        for path in directory.glob(f"*{SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
    return total


def segment_count(directory: Path) -> int:
    return len(list(directory.glob(f"*{SUFFIX}"))) if directory.is_dir() else 0
