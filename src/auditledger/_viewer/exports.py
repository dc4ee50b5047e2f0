"""Downloads of exactly what the filters select, streamed, and recorded when they end.

The rows come from ``AuditReader.stream`` one chunk at a time (memory stays flat) and are
formatted by the read side's own row and CSV code (``_read``), so a download from the page has
the lines and cells ``auditledger export`` writes. The ``audit_log.exported`` record is
appended when the stream ends, with the number of events sent and the SHA-256 of the bytes
sent; a download the client broke off is recorded too, as incomplete.
"""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response, StreamingResponse

from .._read.csvsafe import csv_cells
from .._read.rows import SEED_COLUMNS, event_record
from .filters import Filters

if TYPE_CHECKING:
    from .app import AuditViewer

_MEDIA = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
_BATCH = 500  # events per chunk sent


def _jsonl(events: list[Any]) -> bytes:
    return b"".join(orjson.dumps(event_record(e)) + b"\n" for e in events)


def _csv(events: list[Any]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    for e in events:
        writer.writerow(csv_cells(event_record(e)))
    return buffer.getvalue().encode()


def _csv_header() -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerow(SEED_COLUMNS)
    return buffer.getvalue().encode()


def export_stream(
    viewer: AuditViewer,
    workspace: uuid.UUID,
    filters: Filters,
    fmt: str,
    record: Callable[[dict[str, Any]], None],
    actor: str,
) -> Iterator[bytes]:
    """The file's bytes in chunks; ``record(details)`` runs once, when the stream ends."""
    query = viewer.reader.filters(workspace=workspace, **filters.reader_kwargs())
    digest = hashlib.sha256()
    count = 0
    complete = False
    encode = _jsonl if fmt == "jsonl" else _csv
    try:
        if fmt == "csv":
            head = _csv_header()
            digest.update(head)
            yield head
        batch: list[Any] = []
        for event in viewer.reader.stream(query):
            batch.append(event)
            if len(batch) >= _BATCH:
                chunk = encode(batch)
                digest.update(chunk)
                count += len(batch)
                batch = []
                yield chunk
        if batch:
            chunk = encode(batch)
            digest.update(chunk)
            count += len(batch)
            yield chunk
        complete = True
    finally:
        record(
            {
                "actor": actor,
                "via": "viewer",
                "format": fmt,
                "filters": filters.describe(),
                "events": count,
                "sha256": digest.hexdigest(),
                "complete": complete,
            }
        )


def export_response(
    viewer: AuditViewer,
    workspace: uuid.UUID,
    filters: Filters,
    fmt: str,
    record: Callable[[dict[str, Any]], None],
    actor: str,
) -> Response:
    name = f"audit-{workspace}.{fmt}"
    return StreamingResponse(
        export_stream(viewer, workspace, filters, fmt, record, actor),
        media_type=_MEDIA[fmt],
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )
