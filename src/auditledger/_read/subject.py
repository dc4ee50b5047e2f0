"""Subject access (GDPR Art. 15): every event about one person, as a readable document.

An event is about the person when they are its actor (``user_id``), its subject
(``resource_id``), or named anywhere in ``details``, ``previous_value`` or ``new_value`` (their
id inside any string there): the same events ``gdpr erase`` would change.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Text, cast, or_, select

from .._db.schema import audit_logs
from .._events import AuditEvent
from .query import EVENT_COLUMNS, to_event
from .rows import event_record, utc_text

FORMAT = "auditledger/subject-export/v1"
_JSON = ("details", "previous_value", "new_value")
c = audit_logs.c


def json_form(user_id: str) -> str:
    """The id as it appears inside JSON text (quotes and control characters escaped)."""
    return orjson.dumps(user_id).decode()[1:-1]


def names_subject(event: AuditEvent, user_id: str) -> bool:
    if user_id in (event.user_id, event.resource_id):
        return True
    needle = json_form(user_id)
    return any(
        value is not None and needle in orjson.dumps(value).decode()
        for value in (event.details, event.previous_value, event.new_value)
    )


def subject_events(
    conn: Connection, user_id: str, workspace: uuid.UUID | None = None
) -> Iterator[AuditEvent]:
    """The person's events, oldest first."""
    needle = json_form(user_id)
    # LIKE narrows the rows (case-insensitively on SQLite); the exact test is names_subject.
    where: list[Any] = [
        or_(
            c.user_id == user_id,
            c.resource_id == user_id,
            *(cast(c[name], Text).contains(needle, autoescape=True) for name in _JSON),
        )
    ]
    if workspace is not None:
        where.append(c.workspace_id == workspace)
    query = select(*EVENT_COLUMNS).where(*where).order_by(c.created_at, c.id)
    # Fetched whole (one person's events), so it works on the reader's autocommit connections.
    for row in conn.execute(query):
        event = to_event(row)
        if names_subject(event, user_id):
            yield event


def document(user_id: str, workspace: uuid.UUID | None, events: list[AuditEvent]) -> dict[str, Any]:
    """What a person can read (a summary first) and a program can process."""
    by_action = Counter(e.action for e in events)
    by_workspace = Counter(
        "(none)" if e.workspace_id is None else str(e.workspace_id) for e in events
    )
    return {
        "format": FORMAT,
        "subject": user_id,
        "workspace": None if workspace is None else str(workspace),
        "generated_at": utc_text(datetime.now(UTC)),
        "summary": {
            "events": len(events),
            "first": utc_text(events[0].created_at) if events else None,
            "last": utc_text(events[-1].created_at) if events else None,
            "by_action": dict(sorted(by_action.items())),
            "by_workspace": dict(sorted(by_workspace.items())),
            "as_actor": sum(1 for e in events if e.user_id == user_id),
        },
        "events": [event_record(e) for e in events],
    }
