"""Where prepared batches go: the contract every sink keeps, and what they share.

A sink stores one batch in one transaction: workspace references resolved, unknown workspaces
made harmless, replayed events de-duplicated by id, rows and quarantine rows written together.
It is used by the writer thread only.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from enum import Enum

import orjson

from .._chain.canonical import Sealed
from .._chain.checkpoints import Checkpoint, CheckpointSchedule, Signer
from .._db.rows import ROW_ID, ROW_SANITISED, ROW_WORKSPACE, QuarantineRow, Row
from .._events import WorkspaceRef


class ErrorKind(Enum):
    TRANSIENT = "transient"  # retry later; the outcome of the batch may be unknown
    PERMANENT = "permanent"  # configuration or schema problem: needs a human
    DATA = "data"  # something in this batch is refused: split it to find the event
    CONFLICT = "conflict"  # another writer stored some of these events first: dedupe, retry


class SinkError(Exception):
    """A batch could not be stored; ``kind`` says what the writer should do about it."""

    def __init__(self, kind: ErrorKind, code: str) -> None:
        super().__init__(f"{kind.value} error ({code})")
        self.kind = kind
        self.code = code  # an error class or SQLSTATE: safe to log, never a value


class Sink(ABC):
    """Stores batches. Subclasses provide the database-specific statements."""

    def __init__(self) -> None:
        self._known_workspaces: set[uuid.UUID] = set()
        self._workspace_keys: dict[str, uuid.UUID] = {}
        # Learnt inside the current transaction; cached only once it commits (a row created
        # by a transaction that rolled back does not exist, and its id must not be reused).
        self._pending_known: set[uuid.UUID] = set()
        self._pending_keys: dict[str, uuid.UUID] = {}

    @abstractmethod
    def write(
        self,
        rows: list[Row],
        quarantined: list[QuarantineRow],
        *,
        replay: bool,
        sealed: list[Sealed] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[int, int]:
        """Store the batch atomically and return (events, quarantined) stored, or raise
        SinkError. With ``replay``, events already stored are left out, not stored twice.
        ``sealed``: rows already resolved from cache and their canonical forms (see
        ``resolve_from_cache``).

        ``meanwhile``: the writer's next piece of work (preparing the next batch). A sink that
        waits on a database server calls it once the batch is sent, before it waits for the
        server to finish, so both run at the same time; a sink that does not wait on a server
        ignores it (the writer then runs it afterwards). It never raises.
        """

    @abstractmethod
    def abort(self) -> None:
        """Called from another thread when a write overran its deadline: unblock it."""

    @abstractmethod
    def close(self) -> None: ...

    def tick(self, now: float) -> None:
        """Called on the writer thread once per cycle (about every ``flush_interval``), under
        the same client-side deadline as a write: for periodic work such as checkpoints."""
        schedule = self.checkpoint_schedule
        if schedule is not None and schedule.due(now):
            self.write_checkpoint(schedule.signer)

    # ---- tamper evidence (see _chain/canonical.py and _chain/checkpoints.py) --------------

    # Set by AuditLogger(signing_key=...): the writer then signs chain heads on a schedule.
    checkpoint_schedule: CheckpointSchedule | None = None

    def write_checkpoint(self, signer: Signer) -> Checkpoint:
        """Sign every chain head now and store the checkpoint; raises SinkError."""
        raise NotImplementedError(f"{type(self).__name__} keeps no checkpoints")

    # Called inside the sink's transaction.
    @abstractmethod
    def _existing_workspaces(self, ids: list[uuid.UUID]) -> set[uuid.UUID]: ...

    @abstractmethod
    def _ensure_workspaces(self, refs: list[WorkspaceRef]) -> dict[str, uuid.UUID]: ...

    @abstractmethod
    def _existing_event_ids(self, ids: list[uuid.UUID]) -> set[uuid.UUID]: ...

    def resolve_workspaces(self, rows: list[Row]) -> list[Row]:
        """Rows whose workspace_id names an existing workspace, or is null with a note why.

        Called inside the sink's transaction; the sink calls ``workspaces_committed()`` after
        its commit. Anything learnt by an earlier transaction that did not commit is forgotten.
        """
        self._pending_keys = {}
        self._pending_known = set()
        keys = self._workspace_keys
        known = self._known_workspaces
        refs: dict[str | None, WorkspaceRef] = {}
        for row in rows:
            ws = row[ROW_WORKSPACE]
            if not isinstance(ws, WorkspaceRef):
                continue
            # Refreshes (install, uninstall) reach the sink even for cached workspaces. Within a
            # batch they merge, later values winning, and a plain ref never hides one.
            earlier = refs.get(ws.key)
            if ws.refreshes:
                refs[ws.key] = _merge(earlier, ws) if earlier is not None else ws
            elif earlier is None and ws.key not in keys:
                refs[ws.key] = ws
        if refs:
            self._pending_keys = self._ensure_workspaces(list(refs.values()))
        unknown = {
            ws
            for row in rows
            if isinstance(ws := row[ROW_WORKSPACE], uuid.UUID) and ws not in known
        }
        if unknown:
            self._pending_known = self._existing_workspaces(list(unknown))
        pending_keys, pending_known = self._pending_keys, self._pending_known
        out: list[Row] = []
        for row in rows:
            ws = row[ROW_WORKSPACE]
            if isinstance(ws, WorkspaceRef):
                assert ws.key is not None
                resolved = pending_keys.get(ws.key) or keys[ws.key]
                row = (*row[:ROW_WORKSPACE], resolved, *row[ROW_WORKSPACE + 1 :])
            elif ws is not None and ws not in known and ws not in pending_known:
                note = {
                    "field": "workspace_id",
                    "change": "names no workspace",
                    "original": str(ws),
                }
                row = _with_note((*row[:ROW_WORKSPACE], None, *row[ROW_WORKSPACE + 1 :]), note)
            out.append(row)
        return out

    def resolve_from_cache(self, rows: list[Row]) -> list[Row] | None:
        """The rows resolved from committed caches alone, or None when any needs the database.

        Runs while the previous batch is being stored (``write``'s ``meanwhile``; reads
        only), so that the canonical form is built while the database works.
        """
        keys, known = self._workspace_keys, self._known_workspaces
        out: list[Row] = []
        for row in rows:
            ws = row[ROW_WORKSPACE]
            if ws is None or (type(ws) is uuid.UUID and ws in known):
                out.append(row)
            elif type(ws) is WorkspaceRef and not ws.refreshes and ws.key in keys:
                out.append((*row[:ROW_WORKSPACE], keys[ws.key], *row[ROW_WORKSPACE + 1 :]))
            else:
                return None
        return out

    def forget_unresolved(self) -> None:
        """A batch that needs no resolution (``sealed`` given): whatever an earlier, failed
        transaction learnt must not be cached when this one commits."""
        self._pending_keys = {}
        self._pending_known = set()

    def workspaces_committed(self) -> None:
        """The transaction that resolved the last batch committed: cache what it learnt."""
        self._workspace_keys.update(self._pending_keys)
        self._known_workspaces.update(self._pending_known)
        self._pending_keys = {}
        self._pending_known = set()

    def drop_stored(
        self, rows: list[Row], quarantined: list[QuarantineRow], sealed: list[Sealed] | None
    ) -> tuple[list[Row], list[QuarantineRow], list[Sealed] | None]:
        """For replays: leave out events already stored, and repeats within the batch
        (``sealed``, when given, is the rows' canonical forms: kept alongside).

        A batch whose outcome was unknown can reach the spool twice (the writer spools it
        after its deadline, ``close()`` spools what the stuck writer held), so one replay
        batch may carry the same id twice.
        """
        ids = [r[ROW_ID] for r in rows] + [q[0] for q in quarantined]
        if not ids:
            return rows, quarantined, sealed
        seen = self._existing_event_ids(ids)
        kept_rows: list[Row] = []
        kept_sealed: list[Sealed] | None = None if sealed is None else []
        for index, r in enumerate(rows):
            if r[ROW_ID] not in seen:
                seen.add(r[ROW_ID])
                kept_rows.append(r)
                if kept_sealed is not None and sealed is not None:
                    kept_sealed.append(sealed[index])
        kept_quarantined: list[QuarantineRow] = []
        for q in quarantined:
            if q[0] not in seen:
                seen.add(q[0])
                kept_quarantined.append(q)
        return kept_rows, kept_quarantined, kept_sealed


def _merge(earlier: WorkspaceRef, later: WorkspaceRef) -> WorkspaceRef:
    return WorkspaceRef(
        later.team_id or earlier.team_id,
        later.enterprise_id or earlier.enterprise_id,
        later.name if later.name is not None else earlier.name,
        later.is_active if later.is_active is not None else earlier.is_active,
    )


def _with_note(row: Row, note: dict[str, str]) -> Row:
    existing = row[ROW_SANITISED]
    notes = orjson.loads(existing) if existing else []
    notes.append(note)
    return (
        *row[:ROW_SANITISED],
        orjson.dumps(notes, option=orjson.OPT_SORT_KEYS).decode(),
        *row[ROW_SANITISED + 1 :],
    )
