"""The one row layout: where each column sits in a row that crosses a layer.

The writer prepares rows in ``AUDIT_LOG_COLUMNS`` order (positions 0-12); the sinks store
them, followed by the ``CHAIN_COLUMNS`` (13-17); the verifier reads rows in that same order.
Plain tuples rather than NamedTuples: tens of thousands are built a second on the writer's
path, and psycopg's COPY takes them as they are. Every reader names a position from here,
never ``row[12]``; a test checks these against the schema's column lists.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

(
    ROW_ID,
    ROW_USER,
    ROW_WORKSPACE,
    ROW_IP,
    ROW_UA,
    ROW_ACTION,
    ROW_RESOURCE,
    ROW_RESOURCE_ID,
    ROW_DETAILS,
    ROW_PREVIOUS,
    ROW_NEW,
    ROW_CREATED,
    ROW_SANITISED,
) = range(13)
ROW_CHAIN, ROW_SEQ, ROW_HASH, ROW_CANONICAL, ROW_SALT = range(13, 18)

# A prepared event, in AUDIT_LOG_COLUMNS order: ids as UUIDs, created_at a datetime, JSON
# columns as JSON text (already sanitised and redacted).
Row = tuple[Any, ...]
# A quarantined event: (id, reason, the raw event as JSON bytes, received at).
QuarantineRow = tuple[uuid.UUID, str, bytes, datetime]
