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
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import orjson
from sqlalchemy import Engine
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, Response, StreamingResponse

from .._read.csvsafe import csv_cells
from .._read.rows import SEED_COLUMNS, event_record
from .filters import Filters
from .responses import plain_error

if TYPE_CHECKING:
    from .._api.reader import AuditReader

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
    reader: AuditReader,
    workspace: uuid.UUID,
    filters: Filters,
    fmt: str,
    record: Callable[[dict[str, Any]], None],
    actor: str,
) -> Iterator[bytes]:
    """The file's bytes in chunks; ``record(details)`` runs once, when the stream ends."""
    query = reader.filters(workspace=workspace, **filters.reader_kwargs())
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
        for event in reader.stream(query):
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
    reader: AuditReader,
    workspace: uuid.UUID,
    filters: Filters,
    fmt: str,
    record: Callable[[dict[str, Any]], None],
    actor: str,
) -> Response:
    name = f"audit-{workspace}.{fmt}"
    return StreamingResponse(
        export_stream(reader, workspace, filters, fmt, record, actor),
        media_type=_MEDIA[fmt],
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


async def bundle_response(
    engine: Engine,
    audit: Any,
    public_keys: list[str],
    actor: str,
    workspace: uuid.UUID,
    filters: Filters,
) -> Response:
    """The self-verifying ZIP of the chain over since/until, written to a temporary file
    (a ZIP's directory comes last) and sent from there."""
    from .._api.exports import export_bundle
    from .._api.reader import AuditReader

    others = set(filters.reader_kwargs()) - {"since", "until"}
    if others:
        return plain_error(
            "bundle: a bundle holds a whole stretch of the chain, so only since and until"
            f" apply (not {', '.join(sorted(others))})",
            400,
        )
    folder = tempfile.mkdtemp(prefix="auditledger-bundle-")
    path = os.path.join(folder, f"audit-{workspace}.zip")
    # The bundle is recorded (audit_log.exported) as this actor, through our recorder.
    reader = AuditReader(engine=engine, actor=actor, recorder=audit)

    def run() -> None:
        export_bundle(
            reader,
            path,
            workspace=workspace,
            since=filters.since,
            until=filters.until,
            public_keys=list(public_keys),
        )

    try:
        await anyio.to_thread.run_sync(run)
    except LookupError:
        shutil.rmtree(folder, ignore_errors=True)
        return plain_error("bundle: no events in that range", 404)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(
        path,
        media_type="application/zip",
        filename=os.path.basename(path),
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )
