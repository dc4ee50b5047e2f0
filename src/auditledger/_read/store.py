"""Reading the log back: newest events, filtered, as ``AuditEvent`` objects."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, func, select

from .._db.engine import make_engine
from .._db.schema import audit_logs, audit_quarantine, workspaces
from .._events import AuditEvent, QuarantinedEvent
from .query import EVENT_COLUMNS, to_event


class AuditStore:
    """Read access to an auditledger database (``AuditStore(url)``; close it when done)."""

    def __init__(self, database_url: str | None = None, *, engine: Engine | None = None) -> None:
        self._engine = engine or make_engine(database_url)
        self._owns_engine = engine is None

    def events(
        self,
        *,
        workspace_id: uuid.UUID | str | None = None,
        user_id: str | None = None,
        action: str | None = None,
        limit: int = 50,
    ) -> list[AuditEvent]:
        """The newest events first, optionally of one workspace, user or action."""
        query = select(*EVENT_COLUMNS).order_by(
            audit_logs.c.created_at.desc(), audit_logs.c.id.desc()
        )
        if workspace_id is not None:
            ws = workspace_id if isinstance(workspace_id, uuid.UUID) else uuid.UUID(workspace_id)
            query = query.where(audit_logs.c.workspace_id == ws)
        if user_id is not None:
            query = query.where(audit_logs.c.user_id == user_id)
        if action is not None:
            query = query.where(audit_logs.c.action == str(action))
        with self._engine.connect() as conn:
            return [to_event(r) for r in conn.execute(query.limit(limit))]

    def resolve_workspace(self, text: str) -> uuid.UUID:
        """A workspace named by its id, a unique prefix of its id, or its Slack team id.

        Raises LookupError saying why when none or several match.
        """
        try:
            return uuid.UUID(text)
        except ValueError:
            pass
        found = self.workspace_of_team(text)
        return found if found is not None else self.workspace_by_prefix(text)

    def workspace_of_team(self, team_id: str) -> uuid.UUID | None:
        """The workspace of a Slack team id (a row's team id and id never change)."""
        with self._engine.connect() as conn:
            by_team = conn.execute(
                select(workspaces.c.id).where(workspaces.c.team_id == team_id)
            ).all()
        return uuid.UUID(str(by_team[0][0])) if len(by_team) == 1 else None

    def workspace_by_prefix(self, text: str) -> uuid.UUID:
        """The one workspace whose id starts with ``text``; LookupError otherwise."""
        prefix = text.lower().replace("-", "")
        if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
            raise LookupError(f"no workspace has the team id {text!r}")
        # Prefixes are matched in Python: ids are uuid on PostgreSQL, hex text on SQLite.
        with self._engine.connect() as conn:
            ids = [uuid.UUID(str(r[0])) for r in conn.execute(select(workspaces.c.id))]
        matches = [i for i in ids if i.hex.startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise LookupError(f"no workspace id starts with {text!r}")
        raise LookupError(f"{len(matches)} workspace ids start with {text!r}: give more of it")

    def has_workspace(self, workspace_id: uuid.UUID) -> bool:
        with self._engine.connect() as conn:
            query = select(workspaces.c.id).where(workspaces.c.id == workspace_id)
            return conn.execute(query).first() is not None

    def get(self, event_id: uuid.UUID) -> AuditEvent | None:
        with self._engine.connect() as conn:
            query = select(*EVENT_COLUMNS).where(audit_logs.c.id == event_id)
            row = conn.execute(query).first()
        return None if row is None else to_event(row)

    def quarantined(self, *, limit: int = 50) -> list[QuarantinedEvent]:
        query = select(audit_quarantine).order_by(audit_quarantine.c.quarantined_at.desc())
        with self._engine.connect() as conn:
            return [
                QuarantinedEvent(
                    id=r.id, reason=r.reason, payload=r.payload, created_at=r.created_at
                )
                for r in conn.execute(query.limit(limit))
            ]

    def count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(audit_logs)).scalar_one())

    def quarantine_count(self) -> int:
        with self._engine.connect() as conn:
            query = select(func.count()).select_from(audit_quarantine)
            return int(conn.execute(query).scalar_one())

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
