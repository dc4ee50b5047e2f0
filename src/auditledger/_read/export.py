"""Streamed exports to a file that appears whole or not at all.

Rows go to a temporary file next to the target, hashed as they are written; only a complete
export is fsynced and renamed over the target, so an error (or a kill) leaves no partial file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from .._events import AuditEvent
from .csvsafe import write_csv
from .rows import event_record

FORMATS = ("jsonl", "csv")
Progress = Callable[[int], None]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    events: int
    sha256: str
    format: str


def check_writable(path: Path) -> None:
    """Raises OSError naming the problem before any work is done (nothing is written)."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder")
    if not folder.is_dir():
        raise FileNotFoundError(f"the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write in {folder}")


class _HashingWriter(io.RawIOBase):
    """Bytes to the file and to SHA-256 at once: the export is never read back to hash it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.raw.write(view)
        return len(view)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[_HashingWriter]:
    """A hashing writer on a temporary file that replaces ``path`` only on success."""
    check_writable(path)
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        # The temporary file's random name means nothing to the user: name the target.
        raise OSError(f"cannot write {path} ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as raw:
            writer = _HashingWriter(raw)
            yield writer
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _counted(
    events: Iterable[AuditEvent], progress: Progress | None, box: list[int]
) -> Iterator[dict[str, Any]]:
    count = 0
    for event in events:
        yield event_record(event)
        count += 1
        if progress is not None and count % 1000 == 0:
            progress(count)
    box.append(count)
    if progress is not None:
        progress(count)


def export_lines(
    lines: Iterable[bytes], path: Path, progress: Progress | None = None
) -> ExportResult:
    """JSONL lines already encoded (PostgreSQL's fast path, see export_pg)."""
    count = 0
    with atomic_file(path) as out:
        buffered = io.BufferedWriter(out, 1 << 20)
        write = buffered.write
        for line in lines:
            write(line)
            count += 1
            if progress is not None and count % 1000 == 0:
                progress(count)
        buffered.flush()
        buffered.detach()
    if progress is not None:
        progress(count)
    return ExportResult(path, count, out.digest.hexdigest(), "jsonl")


def export_events(
    events: Iterable[AuditEvent], path: Path, fmt: str, progress: Progress | None = None
) -> ExportResult:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use jsonl or csv")
    box: list[int] = []
    with atomic_file(path) as out:
        records = _counted(events, progress, box)
        buffered = io.BufferedWriter(out, 1 << 20)
        if fmt == "jsonl":
            dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
            for record in records:
                buffered.write(dumps(record, option=newline))
            buffered.flush()
        else:
            text = io.TextIOWrapper(buffered, encoding="utf-8", newline="")
            write_csv(text, records)
            text.flush()
            text.detach()
            buffered.flush()
        buffered.detach()
    return ExportResult(path, box[0], out.digest.hexdigest(), fmt)
