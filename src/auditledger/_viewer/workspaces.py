"""Workspaces named by the host or in a URL, resolved exactly (never by prefix)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine, select

from .._db.schema import workspaces


@dataclass(frozen=True)
class Workspace:
    id: uuid.UUID
    team_id: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        if self.name and self.team_id:
            return f"{self.name} ({self.team_id})"
        return self.name or self.team_id or str(self.id)


class WorkspaceCatalog:
    """Maps Slack team ids to workspace ids, cached: a team's id never changes its row."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._by_team: dict[str, uuid.UUID] = {}
        self._lock = threading.Lock()

    def resolve(self, text: str | uuid.UUID) -> uuid.UUID | None:
        """The workspace a UUID or a team id names; None if none does.

        Exact matches only: a prefix is handy on a command line, but an authorization list or a
        URL that matches by prefix could name a workspace the host never meant to grant.
        """
        if isinstance(text, uuid.UUID):
            return text
        try:
            return uuid.UUID(text)
        except ValueError:
            pass
        with self._lock:
            known = self._by_team.get(text)
        if known is not None:
            return known
        with self._engine.connect() as conn:
            row = conn.execute(select(workspaces.c.id).where(workspaces.c.team_id == text)).first()
        if row is None:
            return None
        found = uuid.UUID(str(row[0]))
        with self._lock:
            if len(self._by_team) > 100_000:
                self._by_team.clear()
            self._by_team[text] = found
        return found

    def describe(self, ids: Iterable[uuid.UUID]) -> list[Workspace]:
        """The workspaces with their team ids and names, in the order given."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(workspaces.c.id, workspaces.c.team_id, workspaces.c.name).where(
                    workspaces.c.id.in_(wanted)
                )
            ).all()
        found = {
            uuid.UUID(str(r.id)): Workspace(uuid.UUID(str(r.id)), r.team_id, r.name) for r in rows
        }
        return [found.get(i, Workspace(i)) for i in wanted]

    def all(self, limit: int = 1000) -> list[Workspace]:
        """Every workspace (the operator's picker), by team id."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(workspaces.c.id, workspaces.c.team_id, workspaces.c.name)
                .order_by(workspaces.c.team_id)
                .limit(limit)
            ).all()
        return [Workspace(uuid.UUID(str(r.id)), r.team_id, r.name) for r in rows]
