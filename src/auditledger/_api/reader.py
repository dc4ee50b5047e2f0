"""``AuditReader``: search, page and stream the log; exports and views can be recorded.

It lives above the read side (``_read/``) because recording a read appends an event to the
workspace's chain, which only the writer may do: the reader hands that to an ``AuditLogger``.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError

from .._actions import LibraryAction
from .._chain.canonical import micros
from .._db.engine import make_engine
from .._db.urls import is_postgres, normalise_url, resolve_url
from .._errors import InvalidCursor, MissingExtraError
from .._events import AuditEvent
from .._read import cursor as cursors
from .._read import pages, query
from .._read.cursor import Position
from .._read.filters import Filters, aware, check_limit, check_window, parse_ip
from .._read.keys import cursor_key
from .._read.store import AuditStore

if TYPE_CHECKING:
    from .._read.subject import QuarantinedCall
    from .logger import AuditLogger

WorkspaceArg = uuid.UUID | str | None
IpArg = str | ipaddress.IPv4Network | ipaddress.IPv6Network | None
When = datetime | timedelta | None
_TEAM_CACHE = 4096

VIEWED = "audit_log.viewed"
EXPORTED = "audit_log.exported"
SUBJECT_EXPORTED = "gdpr.subject_export"


def _read_engine(database_url: str | None) -> Engine:
    """The writer-side engine's settings, minus the pre-ping: a page must cost one round trip,
    not two. A connection found dead instead is replaced and the page retried once.

    Reads need no transaction: in autocommit a page is one round trip, not BEGIN, the query
    and a ROLLBACK. Set once per connection here, not on every checkout and return."""
    url = normalise_url(resolve_url(database_url))
    if not is_postgres(url):
        return make_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("postgres", "psycopg") from exc
    return create_engine(url, pool_reset_on_return=None, isolation_level="AUTOCOMMIT")


def _fast_json(dbapi_connection: Any, _record: Any) -> None:
    # psycopg decodes jsonb with the standard json module by default: with 50 rows of JSON
    # values a page, that was most of the time a page took in Python.
    from psycopg.types.json import set_json_loads

    set_json_loads(orjson.loads, dbapi_connection)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _moment(name: str, value: When, now: datetime) -> tuple[datetime | None, timedelta | None]:
    """A filter's time, and its span back from ``now`` when it was given as one."""
    if value is None:
        return None, None
    if not isinstance(value, timedelta):
        return aware(value), None
    if value < timedelta(0):
        raise ValueError(f"{name}: a span back from now cannot be negative ({value})")
    try:
        return now - value, value
    except OverflowError as exc:
        raise ValueError(f"{name}: {value} back from now is before year 1") from exc


@dataclass(frozen=True)
class Page:
    """One page of events. ``next_cursor``: newest first, None on the last page; oldest
    first, always a cursor to resume from (it returns nothing until newer events exist)."""

    items: list[AuditEvent]
    next_cursor: str | None


class AuditReader:
    """Read access to an auditledger database: ``AuditReader(url)``, then ``events()``.

    ``actor``: who reads; when given, every ``events()`` call is recorded in the workspace's
    chain as ``audit_log.viewed``, in the background (``flush()`` waits for those records;
    ``close()`` writes them). Exports are always recorded as ``audit_log.exported``, before
    they return. ``cursor_key``: the secret that authenticates cursors (default:
    AUDITLEDGER_CURSOR_KEY, else a random key kept in the database). ``recorder``: the logger
    read records go through (default: one opened on the same database, closed with the reader).
    ``clock``: what "now" is for relative times (default: the system's clock, in UTC).
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        actor: str | None = None,
        cursor_key: bytes | str | None = None,
        recorder: AuditLogger | None = None,
        engine: Engine | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._url = database_url
        self._clock = clock or _utc_now
        self._owns_engine = engine is None
        if engine is None:
            self._base_engine = self._engine = _read_engine(database_url)
        else:
            # The caller's engine keeps its isolation level; our reads switch to autocommit
            # for their checkout only.
            self._base_engine = engine
            self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        if self._engine.dialect.name == "postgresql":
            event.listen(self._base_engine, "connect", _fast_json)
        self.actor = actor
        self._given_key = cursor_key
        self._key: bytes | None = None
        self._recorder = recorder
        self._owns_recorder = recorder is None
        if actor is not None and recorder is None:
            # Made now, not at the first view: a page must not wait for a logger to start.
            self._recorder = self._new_recorder()
        # Slack team id -> workspace id: a row's team id never changes once stored.
        self._teams: dict[str, uuid.UUID] = {}

    def filters(
        self,
        *,
        workspace: WorkspaceArg = None,
        user_id: str | None = None,
        action: str | None = None,
        action_prefix: str | None = None,
        resource: str | None = None,
        resource_id: str | None = None,
        ip: IpArg = None,
        since: When = None,
        until: When = None,
        text: str | None = None,
        oldest_first: bool = False,
    ) -> Filters:
        """The filters checked and normalised (the workspace resolved to its id).

        ``since``/``until``: a datetime, or a timedelta meaning that long before now. A
        relative time resolves once: the cursors of the query carry the moment, so its later
        pages keep it, and they are refused with any other time.

        Raises ValueError (LookupError for a workspace that matches none or several)."""
        now = self._clock()
        since_at, since_span = _moment("since", since, now)
        until_at, until_span = _moment("until", until, now)
        check_window(since_at, until_at)
        return Filters(
            workspace=None if workspace is None else self.resolve_workspace(workspace),
            user_id=user_id,
            action=None if action is None else str(action),
            action_prefix=action_prefix,
            resource=resource,
            resource_id=resource_id,
            ip=None if ip is None else parse_ip(ip),
            since=since_at,
            until=until_at,
            text=text or None,
            oldest_first=oldest_first,
            since_span=since_span,
            until_span=until_span,
        )

    def events(
        self,
        *,
        workspace: WorkspaceArg = None,
        user_id: str | None = None,
        action: str | None = None,
        action_prefix: str | None = None,
        resource: str | None = None,
        resource_id: str | None = None,
        ip: IpArg = None,
        since: When = None,
        until: When = None,
        text: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        oldest_first: bool = False,
    ) -> Page:
        """One page of matching events, newest first unless ``oldest_first``."""
        check_limit(limit)
        filters = self.filters(
            workspace=workspace, user_id=user_id, action=action, action_prefix=action_prefix,
            resource=resource, resource_id=resource_id, ip=ip, since=since, until=until,
            text=text, oldest_first=oldest_first,
        )  # fmt: skip
        return self.page(filters, limit=limit, cursor=cursor)

    def page(self, filters: Filters, *, limit: int = 50, cursor: str | None = None) -> Page:
        """``events()`` for filters already built by ``filters()``."""
        check_limit(limit)
        key = self._cursor_key()
        if cursor is not None and filters.relative:
            # "2h ago" is another moment on every call: page on with the first page's.
            filters = filters.pinned(*cursors.issued_times(key, cursor))
        fingerprint = filters.fingerprint()
        after = Position() if cursor is None else cursors.decode(key, fingerprint, cursor)
        if not query.fits(filters, after):
            raise InvalidCursor("the cursor does not fit this query: start without it")
        items, more = self._fetch(filters, after, limit)
        since, until = filters.since, filters.until
        times = (None if since is None else micros(since), None if until is None else micros(until))
        next_cursor: str | None = None
        if filters.oldest_first or more:
            end = query.position_of(filters, items[-1]) if items else after
            next_cursor = cursors.encode(key, fingerprint, end, times)
        if self.actor is not None:
            self._record_view(filters, len(items), cursor is not None)
        return Page(items, next_cursor)

    def _fetch(
        self, filters: Filters, after: Position, limit: int
    ) -> tuple[list[AuditEvent], bool]:
        try:
            with self._engine.connect() as conn:
                return pages.fetch(conn, filters, after, limit)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        # The pool's connections went stale (the server restarted): it has discarded them;
        # one more try runs on a fresh connection instead of failing this page.
        with self._engine.connect() as conn:
            return pages.fetch(conn, filters, after, limit)

    def iter_events(self, **filters: Any) -> Iterator[AuditEvent]:
        """Every matching event, in chunks: memory stays flat however many there are.

        Takes the filters of ``events()`` (not ``limit`` or ``cursor``)."""
        for name in ("limit", "cursor"):
            if name in filters:
                raise TypeError(f"iter_events() takes no {name!r}: it returns every match")
        yield from self.stream(self.filters(**filters))

    def stream(self, filters: Filters, *, chunk: int = 2000) -> Iterator[AuditEvent]:
        """Every match of ``filters``, in page order; one query on PostgreSQL (a server-side
        cursor: one snapshot, flat memory), chunks of ``chunk`` on SQLite."""
        with self._engine.connect() as conn:
            yield from pages.stream(conn, filters, chunk)

    def resolve_workspace(self, value: uuid.UUID | str) -> uuid.UUID:
        """A workspace id from its UUID, a unique prefix of it, or its Slack team id."""
        if isinstance(value, uuid.UUID):
            return value
        text = str(value)
        try:
            return uuid.UUID(text)
        except ValueError:
            pass
        found = self._teams.get(text)
        if found is not None:
            return found
        store = AuditStore(engine=self._engine)
        found = store.workspace_of_team(text)
        if found is None:
            # Not cached: a workspace added later can make a unique prefix ambiguous.
            return store.workspace_by_prefix(text)
        if len(self._teams) >= _TEAM_CACHE:
            self._teams.clear()
        self._teams[text] = found
        return found

    def subject_events(
        self,
        user_id: str,
        workspace: WorkspaceArg = None,
        *,
        subject_key: bytes | None = None,
    ) -> list[AuditEvent]:
        """Every event about ``user_id`` (GDPR Art. 15: its actor, its subject, or named as a
        whole token in a JSON string; the rule is ``SubjectMatcher``'s), oldest first, across
        workspaces unless one is named. Recorded as a ``gdpr.subject_export`` event naming
        the person only by a keyed hash (``subject_key``, default: the file
        AUDITLEDGER_SUBJECT_KEY names). ``InvalidSubjectId`` for an empty, blank, padded or
        too short id."""
        return self._subject(user_id, workspace, subject_key, quarantine=False)[0]

    def subject_export(
        self,
        user_id: str,
        workspace: WorkspaceArg = None,
        *,
        subject_key: bytes | None = None,
    ) -> dict[str, Any]:
        """The subject-access document: a summary, the person's events and (across every
        workspace) their quarantined calls; exactly what ``erase_subject`` would change.
        Recorded like ``subject_events``."""
        from .._read.subject import document

        events, calls, target = self._subject(user_id, workspace, subject_key, quarantine=True)
        return document(user_id, target, events, calls)

    def _subject(
        self,
        user_id: str,
        workspace: WorkspaceArg,
        subject_key: bytes | None,
        *,
        quarantine: bool,
    ) -> tuple[list[AuditEvent], list[QuarantinedCall], uuid.UUID | None]:
        from .._gdpr.subject import load_subject_key, subject_hash
        from .._read.subject import SubjectMatcher, matching_events, matching_quarantine

        matcher = SubjectMatcher(user_id)
        key = subject_key if subject_key is not None else load_subject_key(None)
        target = None if workspace is None else self.resolve_workspace(workspace)
        with self._engine.connect() as conn:
            events = [event for event, _, _ in matching_events(conn, matcher, target)]
            calls = matching_quarantine(conn, matcher) if quarantine and target is None else []
        details: dict[str, Any] = {"subject": subject_hash(key, user_id), "events": len(events)}
        if quarantine:
            details["quarantined"] = len(calls)
        self.record(SUBJECT_EXPORTED, target, details)
        return events, calls, target

    # ---- recording reads ------------------------------------------------------------------

    def record(self, action: str, workspace: uuid.UUID | None, details: dict[str, Any]) -> bool:
        """Append a read record to the workspace's chain; True once it is stored."""
        self._log(action, workspace, details)
        recorder = self._recorder
        return recorder is not None and recorder.flush()

    def _log(self, action: str, workspace: uuid.UUID | None, details: dict[str, Any]) -> None:
        recorder = self._recorder
        if recorder is None:
            recorder = self._recorder = self._new_recorder()
        recorder.log_audit_event(
            LibraryAction(action),
            user_id=self.actor,
            workspace_id=workspace,
            resource="audit_log",
            resource_id=None if workspace is None else str(workspace),
            details=details,
        )

    def _new_recorder(self) -> AuditLogger:
        from .logger import AuditLogger

        return AuditLogger(self._url)

    def _record_view(self, filters: Filters, count: int, continued: bool) -> None:
        # Queued, not waited for: the logger's thread stores it; flush() and close() wait.
        details = {"filters": filters.described(), "events": count, "continued": continued}
        self._log(VIEWED, filters.workspace, details)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every read record so far is stored; False if the timeout ran out."""
        return self._recorder is None or self._recorder.flush(timeout)

    # ---- lifecycle -------------------------------------------------------------------------

    def _cursor_key(self) -> bytes:
        if self._key is None:
            with self._engine.connect() as conn:
                self._key = cursor_key(conn, self._given_key)
        return self._key

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Store the pending read records (closing the recorder if it is ours), then let go
        of the connections."""
        if self._recorder is not None:
            if self._owns_recorder:
                self._recorder.close()
            else:
                self._recorder.flush()
        if self._owns_engine:
            self._base_engine.dispose()

    def __enter__(self) -> AuditReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
