"""Following the log as it grows, every new event exactly once (``auditledger tail -f``).

Times cannot say what is new: ``created_at`` is the moment of the call, and a writer whose
transaction commits late (a slow batch, a replayed spool) stores events older than ones already
shown. Chain positions can: within a workspace they are gap-free and follow commit order, so
once a chain's head is at position n, every position up to n is committed and none will appear
below it later. The follower keeps each chain's last position shown and, on each poll, reads
the heads (one index probe per workspace) and then only the positions between.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import Connection, func, select

from .._chain.canonical import NO_WORKSPACE
from .._db.schema import audit_logs, workspaces
from .._events import AuditEvent
from .filters import Filters
from .query import EVENT_COLUMNS, conditions, post_filter, to_event

c = audit_logs.c
_CHUNK = 2000


class Follower:
    """Call ``start()`` once, then ``poll()`` as often as wanted: each returns the events
    committed since the last call that match the filters, in chain order."""

    def __init__(self, filters: Filters) -> None:
        self.filters = filters
        self.heads: dict[uuid.UUID, int] = {}
        self._keep: Callable[[AuditEvent], bool] | None = post_filter(filters)

    def current_heads(self, conn: Connection) -> dict[uuid.UUID, int]:
        newest = select(func.max(c.chain_seq))
        if self.filters.workspace is not None:
            chain = self.filters.workspace
            return {chain: conn.execute(newest.where(c.chain_id == chain)).scalar() or 0}
        # One index probe per workspace (a GROUP BY would read the whole chain index).
        per_workspace = select(
            workspaces.c.id, newest.where(c.chain_id == workspaces.c.id).scalar_subquery()
        )
        heads = {uuid.UUID(str(ws)): seq or 0 for ws, seq in conn.execute(per_workspace)}
        heads[NO_WORKSPACE] = conn.execute(newest.where(c.chain_id == NO_WORKSPACE)).scalar() or 0
        return heads

    def start(self, conn: Connection) -> dict[uuid.UUID, int]:
        """Remember where every chain is now; returns those positions."""
        self.heads = self.current_heads(conn)
        return dict(self.heads)

    def shown_at_start(self, event: AuditEvent) -> bool:
        """Whether an event read after ``start()`` is at or before the heads it recorded
        (a later one will come from ``poll()``: showing it now would show it twice)."""
        chain = NO_WORKSPACE if event.workspace_id is None else event.workspace_id
        return event.seq is not None and event.seq <= self.heads.get(chain, 0)

    def poll(self, conn: Connection) -> list[AuditEvent]:
        out: list[AuditEvent] = []
        for chain, head in sorted(self.current_heads(conn).items()):
            known = self.heads.get(chain, 0)
            if head <= known:
                continue
            out.extend(self._between(conn, chain, known, head))
            self.heads[chain] = head
        return out

    def _between(
        self, conn: Connection, chain: uuid.UUID, after: int, upto: int
    ) -> list[AuditEvent]:
        found: list[AuditEvent] = []
        where = conditions(self.filters)
        while after < upto:
            query = (
                select(*EVENT_COLUMNS)
                .where(*where, c.chain_id == chain, c.chain_seq > after, c.chain_seq <= upto)
                .order_by(c.chain_seq)
                .limit(_CHUNK)
            )
            rows = conn.execute(query).all()
            if not rows:
                break
            for row in rows:
                event = to_event(row)
                if self._keep is None or self._keep(event):
                    found.append(event)
            after = rows[-1].chain_seq
        return found
