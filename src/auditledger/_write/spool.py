"""The local durable spool: where events wait when the database cannot take them.

A spool directory holds segment files. Each process appends to segments of its own, holding an
exclusive ``flock`` on each open segment; a segment whose lock is free was either sealed by its
owner or left behind by a dead process, and any process writing to the same database may replay
it. Segments carry the identity of their database (a fingerprint of its address, never a
credential) in their name and header: a folder shared by loggers of several databases replays
each segment only into its own database.

Records are framed so that damage costs only the records it hits (see ``spool_frames``). A
commit record (kind ``C``) says that every event before it in the segment is already in the
database (used by the write-ahead mode).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
    Captured,
    SanitisedJson,
    spooled_action,
    unspooled_action,
)
from .sanitise import Note, clean_text, safe_repr
from .spool_frames import COMMIT, EVENT, Damage, corrupt_file_bytes, frame, parse, segment_header

SUFFIX = ".seg"
MAX_SEGMENT_BYTES = 16 * 1024 * 1024


def default_spool_dir(fingerprint: str) -> Path:
    """A per-user spool folder, one per database (so events replay into the right one)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "auditledger" / "spool" / fingerprint


def encode_event(event_id: str, ev: Captured, scrub: Callable[[Captured], Captured]) -> bytes:
    """One spool record payload: the captured event and its id, as JSON. Never raises: a
    value JSON cannot carry (a lone surrogate in a text field) is made storable here, as the
    writer would have made it, and the notes say so.

    ``scrub`` redacts the event first (unless it was already): no secret reaches the disk."""
    ev = scrub(ev)
    with contextlib.suppress(Exception):  # the event must reach the spool whatever it holds
        return _record(event_id, ev)
    with contextlib.suppress(Exception):
        return _record(event_id, _storable(ev))
    # Last resort, for what nobody foresaw: JSON-able parts kept as they are, others as repr.
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
            # type(): str, or LibraryAction (the library's own record), kept as it was.
            out[index] = type(out[index])(_text(out[index], name, notes))
    ws = out[WORKSPACE_ID]
    if isinstance(ws, WorkspaceRef):
        out[WORKSPACE_ID] = WorkspaceRef(**_ref_fields(ws, notes, clean=True))
    elif isinstance(ws, str):
        out[WORKSPACE_ID] = _text(ws, "workspace_id", notes)
    out[NOTES] = notes or None
    return tuple(out)  # the scrubbed marker, if any, stays after the notes


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
    if type(ev[1]) is not str:
        out[2] = spooled_action(ev[1])
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
    if len(ev) > NOTES + 1:
        out.append(1)  # scrubbed: replay need not redact it again
    return dumps_kept(out)


def decode_event(payload: bytes) -> tuple[str, Captured]:
    data = orjson.loads(payload)
    event_id = data[0]
    ev = data[1:]
    if isinstance(ev[1], dict):
        ev[1] = unspooled_action(ev[1])
    ws = ev[WORKSPACE_ID]
    if isinstance(ws, dict):
        ev[WORKSPACE_ID] = WorkspaceRef(
            ws.get("team_id"), ws.get("enterprise_id"), ws.get("name"), ws.get("is_active")
        )
    if len(ev) > NOTES + 1:
        ev[NOTES + 1] = True
    return event_id, tuple(ev)


class SegmentWriter:
    """Appends records to this process's segments, rotating them by size. Not thread-safe."""

    def __init__(
        self, directory: Path, stream: str, database: str, *, committed_only: bool = False
    ) -> None:
        self.directory = directory
        self.stream = stream
        self.database = database
        self._header = segment_header(database)
        # A write-ahead segment that only ever holds committed batches (see the writer): when
        # it rotates there is nothing in it to replay, so it is deleted instead of sealed.
        self.committed_only = committed_only
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._size = 0
        self._seq = 0
        self.sealed: set[str] = set()  # our sealed segments not yet replayed

    @property
    def path(self) -> Path | None:
        return self._path

    def append(self, kind: bytes, payloads: list[bytes]) -> int:
        """Append records; returns the bytes written."""
        if self._file is None or self._size >= MAX_SEGMENT_BYTES:
            if self.committed_only:
                self.discard()
            else:
                self.seal()
            self._open()
        assert self._file is not None
        data = b"".join([frame(kind, p) for p in payloads])
        self._file.write(data)
        self._size += len(data)
        return len(data)

    def flush(self, *, fsync: bool = False) -> None:
        if self._file is not None:
            self._file.flush()
            if fsync:
                os.fsync(self._file.fileno())

    def has_events(self) -> bool:
        return self._file is not None and self._size > len(self._header)

    def seal(self) -> None:
        """Close the open segment: its lock is released and any process may replay it."""
        if self._file is None:
            return
        self._file.flush()
        self._file.close()  # releases the flock
        assert self._path is not None
        if self._size > len(self._header):
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
        name = (
            f"{time.time_ns():020d}-{self.database}-{host}-{os.getpid()}-{self.stream}-"
            f"{self._seq:05d}{SUFFIX}"
        )
        path = self.directory / name
        # Created under another name and renamed once locked: a replayer in another process
        # could otherwise claim the new, still unlocked segment, find it empty and delete it
        # while this process goes on writing into the deleted file.
        draft = path.with_name(name + ".new")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        f = os.fdopen(fd, "wb", buffering=256 * 1024)
        f.write(self._header)
        f.flush()
        os.rename(draft, path)
        self._file, self._path, self._size = f, path, len(self._header)


def segment_database(name: str) -> str | None:
    """The database fingerprint in a segment's file name (the second part of it)."""
    parts = name.split("-", 2)
    return parts[1] if len(parts) == 3 and parts[0].isdigit() else None


@dataclass
class SegmentReplay:
    """A segment this process has locked for replay."""

    path: Path
    fd: int
    # Filled by events(): what could not be read, and how many events that cost.
    damage: list[Damage] = field(default_factory=list)
    lost: dict[str, int] = field(default_factory=dict)
    # Its intact header names another database than its file name: never replayed here.
    foreign: bool = False

    def read(self) -> bytes:
        with os.fdopen(os.dup(self.fd), "rb") as f:
            f.seek(0)
            return f.read()

    def events(self) -> Iterator[tuple[str, Captured]]:
        """The events not yet committed, in order. A damaged record costs that record only;
        what it cost is in ``damage`` and ``lost`` once the iteration is over."""
        parsed = parse(self.read())
        if parsed.database is not None and parsed.database != segment_database(self.path.name):
            self.foreign = True
            return
        self.damage = list(parsed.damage)
        pending: list[tuple[int, bytes]] = []
        for offset, kind, payload in parsed.records:
            if kind == COMMIT:
                pending.clear()
                # Damage before a commit record hit events that were stored already.
                for d in self.damage:
                    if d.offset < offset:
                        d.records = 0
            elif kind == EVENT:
                pending.append((offset, payload))
        # Decoded when asked for: replay reads a batch while the database stores the last.
        for offset, payload in pending:
            try:
                event = decode_event(payload)
            except Exception:  # noqa: BLE001 - framed intact but not an event: keep it aside
                self.damage.append(Damage(offset, payload, "unreadable_record", 1))
                continue
            yield event
        self.lost = {}
        for d in self.damage:
            if d.records:
                self.lost[d.reason] = self.lost.get(d.reason, 0) + d.records

    def done(self) -> None:
        """Every readable event is stored: keep the damaged bytes, if any, and delete it."""
        if self.damage:
            corrupt = self.path.with_name(self.path.name + ".corrupt")
            fd = os.open(corrupt, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(corrupt_file_bytes(self.damage))
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


def claim_segments(directory: Path, database: str | None) -> Iterator[SegmentReplay]:
    """Lock and yield, oldest first, each segment of ``database`` (None: of any database)
    whose owner sealed it or died."""
    for path in segment_paths(directory, database):
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


def segment_paths(directory: Path, database: str | None) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        path
        for path in directory.glob(f"*{SUFFIX}")
        if database is None or segment_database(path.name) == database
    )


def has_claimable_segments(directory: Path, database: str | None) -> bool:
    for segment in claim_segments(directory, database):
        segment.release()
        return True
    return False


def spool_bytes(directory: Path, database: str | None = None) -> int:
    total = 0
    for path in segment_paths(directory, database):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def segment_count(directory: Path, database: str | None = None) -> int:
    return len(segment_paths(directory, database))
