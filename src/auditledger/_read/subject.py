"""Subject access (GDPR Art. 15): every event about one person, as a readable document.

Which events and quarantined calls are about the person is decided by ``subject_match`` (the
rule, in one place); this module finds them. ``gdpr erase`` finds what to erase through the
same functions, so what an export shows is exactly what an erasure removes.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Select, Text, bindparam, cast, literal_column, or_, select
from sqlalchemy.sql.elements import ColumnElement

from .._db.schema import audit_logs, audit_quarantine
from .._events import AuditEvent
from .query import EVENT_COLUMNS, to_event
from .rows import event_record, utc_text
from .subject_match import JSON_FIELDS, SubjectMatcher, json_form

__all__ = [
    "QuarantinedCall",
    "SubjectMatcher",
    "document",
    "json_form",
    "matching_events",
    "matching_quarantine",
    "subject_events",
]

FORMAT = "auditledger/subject-export/v1"
c = audit_logs.c
q = audit_quarantine.c


@dataclass(frozen=True)
class QuarantinedCall:
    """A quarantined call about the person, and which of its payload's fields are theirs."""

    id: uuid.UUID
    reason: str
    payload: Any
    created_at: datetime
    fields: frozenset[str]


# The JSON values of an event as one text, on PostgreSQL: what ``auditledger gdpr index``
# puts a trigram index on (``_gdpr/index.py``), so this must stay the indexed expression,
# character for character. The spaces keep one value's end and the next one's start apart.
SUBJECT_TEXT_PG = (
    "(coalesce(details::text, '') || ' ' || coalesce(previous_value::text, '') || ' ' ||"
    " coalesce(new_value::text, '') || ' ' || coalesce(sanitised::text, ''))"
)


def _narrowing(matcher: SubjectMatcher, dialect: str) -> ColumnElement[bool]:
    """A superset of the rows the rule matches, for the database to find: equal ids, or the
    id's JSON form anywhere in a JSON value's text (on SQLite LIKE also ignores case)."""
    if dialect == "postgresql":
        # The pattern inline (safely quoted), not a parameter: a generic plan for a prepared
        # statement cannot know the pattern is selective, and would scan the table.
        pattern = bindparam(
            "subject_pattern", _like_pattern(matcher.needle), type_=Text, literal_execute=True
        )
        in_json: ColumnElement[bool] = literal_column(SUBJECT_TEXT_PG).like(pattern, escape="/")
    else:
        in_json = or_(
            *(cast(c[n], Text).contains(matcher.needle, autoescape=True) for n in JSON_FIELDS)
        )
    return or_(c.user_id == matcher.user_id, c.resource_id == matcher.user_id, in_json)


def _like_pattern(text: str) -> str:
    escaped = text.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def subject_query(
    matcher: SubjectMatcher,
    dialect: str,
    workspace: uuid.UUID | None = None,
    extra: tuple[Any, ...] = (),
) -> Select[Any]:
    where: list[Any] = [_narrowing(matcher, dialect)]
    if workspace is not None:
        where.append(c.workspace_id == workspace)
    return select(*EVENT_COLUMNS, *extra).where(*where).order_by(c.created_at, c.id)


def matching_events(
    conn: Connection,
    matcher: SubjectMatcher,
    workspace: uuid.UUID | None = None,
    extra: tuple[Any, ...] = (),
) -> Iterator[tuple[AuditEvent, frozenset[str], Any]]:
    """Each event about the person, oldest first, with its fields that are theirs and the
    row (``extra`` columns after the event's)."""
    query = subject_query(matcher, conn.dialect.name, workspace, extra)
    # Fetched whole (one person's events), so it works on the reader's autocommit connections.
    for row in conn.execute(query).fetchall():
        event = to_event(row)
        fields = matcher.fields(event)
        if fields:
            yield event, fields, row


def matching_quarantine(conn: Connection, matcher: SubjectMatcher) -> list[QuarantinedCall]:
    """The quarantined calls about the person, oldest first (they belong to no chain, so to
    no workspace: only a request across every workspace includes them)."""
    query = (
        select(q.id, q.reason, q.payload, q.created_at)
        .where(cast(q.payload, Text).contains(matcher.needle, autoescape=True))
        .order_by(q.created_at, q.id)
    )
    found = []
    for row in conn.execute(query).fetchall():
        fields = matcher.quarantine_fields(row.payload)
        if fields:
            found.append(QuarantinedCall(row.id, row.reason, row.payload, row.created_at, fields))
    return found


def subject_events(
    conn: Connection, user_id: str, workspace: uuid.UUID | None = None
) -> Iterator[AuditEvent]:
    """The person's events, oldest first (InvalidSubjectId for an id that cannot name one
    person)."""
    for event, _, _ in matching_events(conn, SubjectMatcher(user_id), workspace):
        yield event


def document(
    user_id: str,
    workspace: uuid.UUID | None,
    events: list[AuditEvent],
    quarantined: list[QuarantinedCall] | None = None,
) -> dict[str, Any]:
    """What a person can read (a summary first) and a program can process."""
    calls = quarantined or []
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
            "quarantined": len(calls),
        },
        "events": [event_record(e) for e in events],
        # Calls the library could not store as events (invalid action, bad values...), as
        # the caller gave them.
        "quarantined": [
            {
                "id": str(call.id),
                "reason": call.reason,
                "created_at": utc_text(call.created_at),
                "payload": call.payload,
            }
            for call in calls
        ],
    }
