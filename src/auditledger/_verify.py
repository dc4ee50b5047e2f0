"""``auditledger verify``: recompute every chain, check every checkpoint, report each problem.

The verifier trusts nothing it reads: each event's link is recomputed from the stored canonical
bytes, each event's columns are compared with what was hashed, and each checkpoint's signature
is checked with public keys given by the caller. Checkpoints held outside the database (the file
written by ``auditledger checkpoint --out``) are what reveal deleted newest events.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from ._chain import (
    C_WORKSPACE,
    CANONICAL_VERSION,
    JSON_PARTS,
    NO_WORKSPACE,
    PERSONAL,
    PERSONAL_TAGS,
    chain_of,
    commitment,
    genesis,
    link,
    normalise_json,
)
from ._checkpoint import Checkpoint, load_public_keys, read_checkpoint_file
from ._cuts import Cut, read_cuts
from ._db import make_engine
from ._errors import AuditLedgerError, describe_database_error
from ._urls import is_postgres, libpq_conninfo, normalise_url, resolve_url, sqlite_path
from ._verify_v2 import Erased, differences, erasure_coverage, fast_match

# Kinds of problem.
MODIFIED = "modified"
MISSING = "missing"
INSERTED = "inserted"
REORDERED = "reordered"
TRUNCATED = "truncated"
REWRITTEN = "rewritten"
BAD_SIGNATURE = "bad_signature"

_MAX_CLASSIFIED = 64  # failing events per chain searched for their true position
_dumps = orjson.dumps
_Fragment = orjson.Fragment

# (id, user_id, workspace_id, ip_address, user_agent, action, resource, resource_id, details,
#  previous_value, new_value, created_at_us, sanitised, chain_id, chain_seq, chain_hash,
#  canonical, pii_salt): ids as canonical UUID text, JSON as text, and the three personal
#  values as their commitments (hex) computed with the row's salt.
_Row = tuple[Any, ...]
# A share of the log for one verifying process: chain ids (text), and whether it also takes
# the rows that belong to no chain.
Part = tuple[list[str], bool]
# What a share's walk leaves for the checkpoint comparison: each chain's head position and the
# stored hashes at the positions checkpoints name.
ChainEnds = dict[uuid.UUID, tuple[int, dict[int, tuple[bytes, uuid.UUID]]]]
# Where chains start after retention: the first kept position and the hash before it.
Starts = dict[uuid.UUID, tuple[int, bytes]]
R_ID, R_USER, R_WS, R_IP, R_UA, R_ACTION, R_RESOURCE, R_RESOURCE_ID = range(8)
R_DETAILS, R_PREVIOUS, R_NEW, R_CREATED, R_SANITISED = range(8, 13)
R_CHAIN, R_SEQ, R_HASH, R_CANONICAL, R_SALT = range(13, 18)
_PERSONAL_ROW = {"user_id": R_USER, "ip_address": R_IP, "user_agent": R_UA}
_JSON_ROW = {
    "details": R_DETAILS,
    "previous_value": R_PREVIOUS,
    "new_value": R_NEW,
    "sanitised": R_SANITISED,
}
_SCALARS = (
    (1, "id", R_ID),
    (3, "action", R_ACTION),
    (4, "resource", R_RESOURCE),
    (5, "resource_id", R_RESOURCE_ID),
    (6, "created_at", R_CREATED),
)


class VerifyError(AuditLedgerError):
    """Verification could not run (database unreachable, schema too old, unreadable key)."""


@dataclass(frozen=True)
class VerifyProblem:
    """One thing found wrong. ``workspace_id`` is None for the chain of events without one."""

    kind: str
    detail: str
    event_id: uuid.UUID | None = None
    workspace_id: uuid.UUID | None = None
    seq: int | None = None
    checkpoint_id: uuid.UUID | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("event_id", "workspace_id", "checkpoint_id"):
            if out[key] is not None:
                out[key] = str(out[key])
        return out


@dataclass
class VerifyReport:
    events: int = 0
    chains: int = 0
    checkpoints: int = 0
    external_checkpoints: int = 0
    erased: int = 0
    cuts: int = 0
    problems: list[VerifyProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Events with values removed: each must be covered by a gdpr.erasure event (checked once
    # every share of the log is walked).
    erased_events: list[Erased] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "chains": self.chains,
            "checkpoints": self.checkpoints,
            "external_checkpoints": self.external_checkpoints,
            "erased": self.erased,
            "cuts": self.cuts,
            "problems": [p.to_dict() for p in self.problems],
            "notes": self.notes,
        }


# ---- reading -------------------------------------------------------------------------------


_PG_SELECT = (
    "SELECT id::text, user_id, workspace_id::text, ip_address, user_agent, action, resource,"
    " resource_id, details::text, previous_value::text, new_value::text,"
    " created_at, sanitised::text, chain_id::text,"
    " chain_seq, chain_hash, canonical, pii_salt FROM audit_logs"
)
_PG_TYPES = ["text"] * 11 + ["timestamptz", "text", "text", "int8", "bytea", "bytea", "bytea"]
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 (PostgreSQL's epoch) in Unix microseconds
_CHUNK = 1_000
_SQLITE_SELECT = (
    "SELECT id, user_id, workspace_id, ip_address, user_agent, action, resource, resource_id,"
    " details, previous_value, new_value, created_at, sanitised, chain_id, chain_seq,"
    " chain_hash, canonical, pii_salt FROM audit_logs"
)


class _Source:
    """Rows ordered by chain then position, and the stored checkpoints, from one database."""

    def __init__(self, database_url: str | None) -> None:
        url = normalise_url(resolve_url(database_url))
        self.postgres = is_postgres(url)
        self._url = url

    def url_text(self) -> str:
        return self._url.render_as_string(hide_password=False)

    def chain_sizes(self) -> list[tuple[str | None, int]]:
        """Rows per chain (None: rows in no chain), from the chain index alone."""
        import psycopg

        with psycopg.connect(libpq_conninfo(self._url)) as conn:
            conn.read_only = True
            cur = conn.execute("SELECT chain_id::text, count(*) FROM audit_logs GROUP BY 1")
            return [(r[0], int(r[1])) for r in cur]

    def count(self) -> int:
        engine = make_engine(self._url.render_as_string(hide_password=False))
        try:
            with engine.connect() as conn:
                from sqlalchemy import text

                if self.postgres:
                    # An estimate is enough for a progress bar, and costs no scan.
                    query = "SELECT reltuples::int8 FROM pg_class WHERE relname = 'audit_logs'"
                else:
                    query = "SELECT count(*) FROM audit_logs"
                return max(0, int(conn.execute(text(query)).scalar() or 0))
        finally:
            engine.dispose()

    def rows(self, workspace: uuid.UUID | None, part: Part | None = None) -> Iterator[_Row]:
        if self.postgres:
            yield from self._pg_rows(workspace, part=part)
        else:
            yield from self._sqlite_rows(workspace)

    def _pg_rows(
        self, workspace: uuid.UUID | None, chunked: bool | None = None, part: Part | None = None
    ) -> Iterator[_Row]:
        """Rows as PostgreSQL stores them: personal values in clear, ``created_at`` as
        microseconds since 2000-01-01 (see ``_check_pg_columns``, which compares them).
        ``chunked``: stream rows in chunks (libpq >= 17; the default where available) rather
        than with COPY. ``part``: only these chains (and, with its flag, unchained rows)."""
        import psycopg
        from psycopg import sql
        from psycopg.types.numeric import Int8BinaryLoader

        wheres: list[sql.Composable] = [sql.SQL("")]
        if workspace is not None:
            wheres = [
                sql.SQL(" WHERE chain_id = {0} OR workspace_id = {0}").format(
                    sql.Literal(str(workspace))
                )
            ]
        elif part is not None:
            chains, unchained = part
            # Two queries rather than one with OR: the OR would take the rows out of the
            # chain index's order, and PostgreSQL would sort them all.
            wheres = [sql.SQL(" WHERE chain_id = ANY({0}::uuid[])").format(sql.Literal(chains))]
            if unchained:
                wheres.append(sql.SQL(" WHERE chain_id IS NULL"))
        # The qualified ORDER BY uses the chain index (the output column chain_id is text and
        # would sort instead).
        queries = [
            sql.SQL("{}{} ORDER BY audit_logs.chain_id, audit_logs.chain_seq").format(
                sql.SQL(_PG_SELECT), where
            )
            for where in wheres
        ]
        conninfo = libpq_conninfo(self._url)
        with psycopg.connect(conninfo, application_name="auditledger-verify") as conn:
            conn.read_only = True
            if workspace is None:
                # The log (or a share of its chains) in the chain index's order, read as it
                # comes. Left to itself, the planner picks a (parallel) scan and a sort of
                # everything first whenever its statistics are stale or the query names a
                # share: measured, 40% slower on 200,000 events just written. Not for one
                # workspace, which is best found through a bitmap and sorted.
                conn.execute("SET enable_sort = off; SET max_parallel_workers_per_gather = 0")
            # A timestamptz in binary is its int8 of microseconds since 2000-01-01 UTC: exact,
            # and free for the server to send (extract(epoch ...) computes in numeric).
            conn.adapters.register_loader("timestamptz", Int8BinaryLoader)
            if chunked is None:
                chunked = psycopg.capabilities.has_stream_chunked()
            for query in queries:
                if chunked:
                    # Rows in chunks, each parsed in one call: no per-row round trip through
                    # Python as COPY has, and the server keeps sending while we work.
                    yield from conn.cursor().stream(query, binary=True, size=_CHUNK)
                else:  # libpq < 17
                    copy_query = sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(query)
                    with conn.cursor().copy(copy_query) as copy:
                        copy.set_types(_PG_TYPES)
                        yield from copy.rows()

    def _sqlite_rows(self, workspace: uuid.UUID | None) -> Iterator[_Row]:
        from datetime import UTC, datetime

        from ._chain import micros
        from ._sink_sqlite import connect_sqlite

        conn = connect_sqlite(sqlite_path(self._url), timeout=10)
        try:
            where, params = "", ()
            if workspace is not None:
                where = " WHERE chain_id = ? OR workspace_id = ?"
                params = (workspace.hex, workspace.hex)  # type: ignore[assignment]
            cur = conn.execute(f"{_SQLITE_SELECT}{where}", params)
            for r in cur:
                row = list(r)
                for i in (R_ID, R_WS, R_CHAIN):
                    if row[i] is not None:
                        row[i] = _sqlite_uuid_text(row[i])
                row[R_CREATED] = _sqlite_micros(row[R_CREATED], datetime, UTC, micros)
                salt = row[R_SALT] or b""
                if row[R_CANONICAL] is not None and row[R_CANONICAL][:3] == b"[2,":
                    yield tuple(row)  # version 2 commits each value with its own salt
                    continue
                for name, index in _PERSONAL_ROW.items():
                    if row[index] is not None:
                        row[index] = commitment(salt, name, row[index])
                yield tuple(row)
        finally:
            conn.close()

    def checkpoints(self) -> list[Checkpoint]:
        from sqlalchemy import select

        from ._schema import audit_checkpoints

        engine = make_engine(self._url.render_as_string(hide_password=False))
        try:
            with engine.connect() as conn:
                query = select(audit_checkpoints).order_by(audit_checkpoints.c.created_at)
                return [
                    Checkpoint(r.id, r.created_at, r.key_id, bytes(r.body), bytes(r.signature))
                    for r in conn.execute(query)
                ]
        finally:
            engine.dispose()


# ---- comparing an event's columns with what was hashed ---------------------------------------


def _expected_canonical(row: _Row, norm: Any = normalise_json, frag: Any = _Fragment) -> bytes:
    """The canonical bytes the columns would produce (personal values as commitments)."""
    details, previous, new, sanitised = row[R_DETAILS], row[R_PREVIOUS], row[R_NEW], row[12]
    return _dumps(
        (
            CANONICAL_VERSION,
            row[0],
            row[2],
            row[5],
            row[6],
            row[7],
            row[11],
            row[1],
            row[3],
            row[4],
            None if details is None else frag(norm(details)),
            None if previous is None else frag(norm(previous)),
            None if new is None else frag(norm(new)),
            None if sanitised is None else frag(norm(sanitised)),
        )
    )


def _strict(data: str | bytes) -> Any:
    """JSON parsed so that 1 and 1.0 are equal (jsonb may rewrite one as the other) but true
    and 1 are not."""
    return json.loads(data, parse_float=Decimal, parse_int=Decimal)


def _same_json(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _column_differences(row: _Row, hashed: list[Any]) -> tuple[list[str], bool]:
    """Columns that differ from the hashed form, and whether the personal values were erased."""
    wrong = [name for index, name, r in _SCALARS if hashed[index] != row[r]]
    if hashed[C_WORKSPACE] != row[R_WS]:
        wrong.append("workspace_id")
    erased = False
    salt = row[R_SALT]
    for index, name in PERSONAL:
        value, committed = row[_PERSONAL_ROW[name]], hashed[index]
        if committed is None:
            if value is not None:
                wrong.append(name)
        elif value is None:
            if salt is None:
                erased = True  # value and salt deleted together: what erasure does
            else:
                wrong.append(name)
        elif salt is None or value != committed:
            wrong.append(name)
    for index, name in JSON_PARTS:
        value, part = row[_JSON_ROW[name]], hashed[index]
        if value is None or part is None:
            if (value is None) != (part is None):
                wrong.append(name)
            continue
        if not _same_json(_strict(value), _strict(json.dumps(part))):
            wrong.append(name)
    return wrong, erased


# ---- the chains ----------------------------------------------------------------------------


@dataclass
class _Failed:
    event_id: uuid.UUID
    seq: int
    stored: bytes
    data: bytes
    previous: bytes
    before_previous: bytes


class _ChainCheck:
    """Walks one chain in order; keeps only the little it needs to explain a failure."""

    def __init__(
        self,
        chain_id: uuid.UUID,
        report: VerifyReport,
        wanted: set[int],
        start: tuple[int, bytes] | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.workspace = None if chain_id == NO_WORKSPACE else chain_id
        self.report = report
        # A signed cut moves the start: the events before it expired (retention).
        self.floor, self.previous = start if start is not None else (1, genesis(chain_id))
        self.expected = self.floor
        self.before_previous = self.previous
        self.previous_id: str | None = None
        self.pending: dict[int, _Row] = {}
        self.previous_ok = True
        self.failed: list[_Failed] = []
        self.shift_reported = False
        self.wanted = wanted  # positions checkpoints name: their stored hashes are kept
        self.hashes: dict[int, tuple[bytes, uuid.UUID]] = {}
        self.head = 0

    def problem(self, kind: str, detail: str, event_id: uuid.UUID | None, seq: int | None) -> None:
        self.report.problems.append(VerifyProblem(kind, detail, event_id, self.workspace, seq))

    def offer(self, row: _Row) -> None:
        """Take rows in any order: rows of one chain arrive nearly in order from a sequential
        scan (concurrent writers fill different pages), so a few wait here for their turn."""
        seq = row[R_SEQ]
        if seq is not None and seq < self.floor:
            return  # below the chain's signed cut: expired, and not yet deleted
        if seq == self.expected:
            self.add(row)
            pending = self.pending
            while pending and self.expected in pending:
                self.add(pending.pop(self.expected))
        elif seq is None or seq < self.expected or seq in self.pending:
            self.add(row)
        else:
            self.pending[seq] = row

    def drain(self) -> None:
        """At the end of the scan: what still waits comes after a gap."""
        for seq in sorted(self.pending):
            self.add(self.pending[seq])
        self.pending.clear()
        self.finish()

    def add(self, row: _Row) -> None:
        seq, stored, data = row[R_SEQ], row[R_HASH], row[R_CANONICAL]
        if seq is None or stored is None or data is None:
            event_id = uuid.UUID(row[R_ID])
            self.problem(INSERTED, "the event is not part of any chain", event_id, None)
            return
        if seq in self.wanted:
            self.hashes[seq] = (stored, uuid.UUID(row[R_ID]))
        if seq > self.head:
            self.head = seq
        if seq == self.expected:
            ok = link(self.previous, seq, data) == stored
            if not ok:
                self._explain(uuid.UUID(row[R_ID]), seq, stored, data)
            # "The previous row was inserted" only explains a break after a row that itself
            # linked: a forger gives an inserted row a valid link, a swap leaves none.
            self.previous_ok = ok
            self.expected = seq + 1
            self.before_previous, self.previous = self.previous, stored
            self.previous_id = row[R_ID]
            return
        event_id = uuid.UUID(row[R_ID])
        if seq < self.expected:
            self.problem(INSERTED, f"a second event at position {seq}", event_id, seq)
            return
        first, last = self.expected, seq - 1
        where = f"position {first}" if first == last else f"positions {first}-{last}"
        after = f"after event {self.previous_id}" if self.previous_id else "at the start"
        self.problem(
            MISSING, f"the events at {where} are missing ({after}, before this event)",
            event_id, seq,
        )  # fmt: skip
        # Its own link cannot be checked without its predecessor: take it as the new start.
        self.previous_ok = False
        self.expected = seq + 1
        self.before_previous, self.previous = self.previous, stored
        self.previous_id = row[R_ID]

    def _explain(self, event_id: uuid.UUID, seq: int, stored: bytes, data: bytes) -> None:
        for shift in (1, -1):
            if link(self.previous, seq - shift, data) == stored:
                # Intact, but renumbered: events were inserted (or deleted) before it.
                if not self.shift_reported:
                    self.shift_reported = True
                    kind, what = (INSERTED, "inserted") if shift > 0 else (MISSING, "deleted")
                    self.problem(
                        kind, f"events from position {seq} on were renumbered by {shift:+d}:"
                        f" an event was {what} before this one", event_id, seq,
                    )  # fmt: skip
                return
        if self.previous_ok and seq > 1 and link(self.before_previous, seq - 1, data) == stored:
            self.problem(
                INSERTED,
                f"the event at position {seq - 1} was not in the chain: this one links past it",
                None if self.previous_id is None else uuid.UUID(self.previous_id),
                seq - 1,
            )
            return
        self.failed.append(
            _Failed(event_id, seq, stored, data, self.previous, self.before_previous)
        )

    def finish(self) -> None:
        failed = self.failed
        if not failed:
            return
        if len(failed) > _MAX_CLASSIFIED:
            for f in failed:
                detail = "the event's hash does not match its content"
                self.problem(MODIFIED, detail, f.event_id, f.seq)
            return
        candidates = {h for f in failed for h in (f.previous, f.before_previous, f.stored)}
        positions = {p for f in failed for p in (f.seq - 1, f.seq, f.seq + 1) if p > 0}
        reported: set[int] = set()
        verdicts: list[tuple[_Failed, int | None]] = []
        for f in failed:
            home = next(
                (p for p in positions for h in candidates if link(h, p, f.data) == f.stored),
                None,
            )
            verdicts.append((f, home))
        for f, home in verdicts:
            if home is not None and home != f.seq:
                reported.add(f.seq)
                detail = f"the event belongs at position {home}, not {f.seq}"
                self.problem(REORDERED, detail, f.event_id, f.seq)
        for f, home in verdicts:
            if home == f.seq:
                if f.seq - 1 in reported:
                    continue  # only its predecessor moved
                detail = "the previous event's hash was changed: this event no longer links to it"
            elif home is None:
                detail = "the event's stored content no longer matches its hash"
            else:
                continue
            reported.add(f.seq)
            self.problem(MODIFIED, detail, f.event_id, f.seq)


_UNSEEN: Any = object()


# ---- the verifier --------------------------------------------------------------------------


def verify_log(
    database_url: str | None = None,
    *,
    public_keys: Sequence[str | os.PathLike[str]] = (),
    checkpoints_file: str | os.PathLike[str] | None = None,
    workspace_id: uuid.UUID | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> VerifyReport:
    """Check the whole log (or one workspace's chain) and return every problem found.

    ``public_keys``: PEM files of the keys checkpoints may be signed with (several when keys
    were rotated). ``checkpoints_file``: the copy written by ``auditledger checkpoint --out``.
    ``progress(done, total)`` is called after each block of events (``total`` is an estimate).
    ``workers``: processes sharing the chains of a PostgreSQL log (the checks are CPU-bound
    Python; one chain is never split, and SQLite or one workspace always takes one).
    Raises ``VerifyError`` when it cannot run at all.
    """
    from ._verify_parallel import walk_log

    report = VerifyReport()
    workspace = _workspace(workspace_id)
    try:
        keys = load_public_keys(public_keys)
        external: list[Checkpoint] = []
        if checkpoints_file is not None:
            external = read_checkpoint_file(checkpoints_file)
    except (AuditLedgerError, OSError, ValueError) as exc:
        raise VerifyError(str(exc)) from exc
    try:
        source = _Source(database_url)
        stored = source.checkpoints()
        total = source.count() if progress else 0
    except AuditLedgerError as exc:
        raise VerifyError(str(exc)) from exc
    except Exception as exc:
        raise VerifyError(describe_database_error(exc)) from exc

    good = _check_signatures(stored, external, keys, report, checkpoints_file)
    try:
        starts = chain_starts(read_cuts(source.url_text()), keys, report)
    except Exception as exc:
        raise VerifyError(describe_database_error(exc)) from exc
    wanted: dict[uuid.UUID, set[int]] = {}
    for _, checkpoint in good:
        for chain_id, seq, _digest in checkpoint.heads:
            wanted.setdefault(chain_id, set()).add(seq)

    try:
        ends = walk_log(
            source, wanted, workspace, report, progress, total, workers=workers, starts=starts
        )
    except VerifyError:
        raise
    except Exception as exc:
        raise VerifyError(f"cannot read the events ({type(exc).__name__})") from exc
    report.chains = len(ends)
    _check_heads(good, ends, workspace, report)
    if report.erased_events:
        try:
            covered = erasure_coverage(source.url_text(), source.postgres)
        except Exception as exc:
            raise VerifyError(describe_database_error(exc)) from exc
        uncovered_erasures(report, covered)
    if not stored and not external:
        report.notes.append(
            "no checkpoints: deleting the newest events, or rewriting a whole chain, would not"
            " be detected"
        )
    elif not external:
        report.notes.append(
            "no external checkpoint file: newest events deleted together with the stored"
            " checkpoints would not be detected"
        )
    return report


def chain_starts(cuts: list[Cut], keys: dict[str, Any], report: VerifyReport) -> Starts:
    """Each chain's newest cut whose signature holds; a bad one is a problem (and ignored,
    so the events it claims expired are reported missing)."""
    starts: dict[uuid.UUID, tuple[int, bytes, Cut]] = {}
    for cut in cuts:
        error = cut.verify(keys)
        if error:
            report.problems.append(
                VerifyProblem(BAD_SIGNATURE, f"retention cut: {error}", checkpoint_id=cut.id)
            )
            continue
        report.cuts += 1
        if cut.chain_id is None or cut.first_seq is None or cut.previous_hash is None:
            continue  # the quarantine's horizon
        known = starts.get(cut.chain_id)
        if known is None or known[0] < cut.first_seq:
            starts[cut.chain_id] = (cut.first_seq, cut.previous_hash, cut)
    for chain_id, (first, _, cut) in sorted(starts.items(), key=lambda item: str(item[0])):
        report.notes.append(
            f"chain {chain_id} starts at position {first}: retention cut {cut.id} signed"
            f" {cut.created_at:%Y-%m-%d %H:%M:%S} UTC (events before"
            f" {cut.expired_before:%Y-%m-%d %H:%M:%S} UTC expired)"
        )
    return {chain_id: (first, previous) for chain_id, (first, previous, _) in starts.items()}


def uncovered_erasures(report: VerifyReport, covered: set[str]) -> None:
    """Values removed from events that no gdpr.erasure event names: tampering."""
    for event_id, workspace, seq, names in report.erased_events:
        if str(event_id) in covered:
            continue
        report.erased -= 1
        report.problems.append(
            VerifyProblem(
                MODIFIED,
                f"values removed without a gdpr.erasure event covering them: {', '.join(names)}",
                event_id,
                workspace,
                seq,
            )
        )


def walk_part(
    rows: Iterator[_Row],
    postgres: bool,
    report: VerifyReport,
    wanted: dict[uuid.UUID, set[int]],
    workspace: uuid.UUID | None,
    tick: Callable[[int], None] | None = None,
    starts: Starts | None = None,
) -> ChainEnds:
    """Check every row's columns and walk every chain in ``rows``; problems go to ``report``
    (and ``report.events`` grows by the rows seen). ``tick(n)`` is called every 20,000 rows."""
    chains: dict[uuid.UUID, _ChainCheck] = {}
    done = 0
    by_text: dict[str, _ChainCheck | None] = {}
    check_columns = _check_pg_columns if postgres else _check_columns
    # Millions of short-lived tuples would trigger the cycle collector over and over.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for row in rows:
            check_columns(row, report)
            done += 1
            if tick is not None and done % 20_000 == 0:
                tick(20_000)
            chain_text = row[R_CHAIN]
            if chain_text is None:
                _unchained(row, report)
                continue
            chain = by_text.get(chain_text, _UNSEEN)
            if chain is _UNSEEN:
                chain_id = uuid.UUID(chain_text)
                if workspace is not None and chain_id != workspace:
                    chain = None  # a row of another chain naming this workspace
                else:
                    chain = _ChainCheck(
                        chain_id, report, wanted.get(chain_id, set()), (starts or {}).get(chain_id)
                    )
                    chains[chain_id] = chain
                by_text[chain_text] = chain
            if chain is not None:
                chain.offer(row)
    finally:
        if gc_was_enabled:
            gc.enable()
    for chain in chains.values():
        chain.drain()
    if tick is not None:
        tick(done % 20_000)
    report.events += done
    return {chain_id: (chain.head, chain.hashes) for chain_id, chain in chains.items()}


def _workspace(value: uuid.UUID | str | None) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise VerifyError("the workspace id is not a UUID") from exc


def _check_v2(row: _Row, created_us: int, rebuild_json: bool, report: VerifyReport) -> None:
    if fast_match(row, created_us, rebuild_json):
        return
    event_id = uuid.UUID(row[R_ID])
    chain = None if row[R_CHAIN] is None else uuid.UUID(row[R_CHAIN])
    workspace = None if chain in (None, NO_WORKSPACE) else chain
    found = differences(row, created_us, rebuild_json)
    if found is None:
        report.problems.append(
            VerifyProblem(MODIFIED, "the stored canonical form is unreadable", event_id, workspace)
        )
        return
    wrong, erased = found
    if chain is not None and "workspace_id" not in wrong:
        hashed_ws = None if row[R_WS] is None else uuid.UUID(row[R_WS])
        if chain_of(hashed_ws) != chain:
            wrong.append("chain_id")
    if wrong:
        report.problems.append(
            VerifyProblem(
                MODIFIED,
                f"columns changed after the event was hashed: {', '.join(sorted(wrong))}",
                event_id,
                workspace,
                row[R_SEQ],
            )
        )
    elif erased:
        report.erased += 1
        report.erased_events.append((event_id, workspace, row[R_SEQ], tuple(erased)))


def _check_columns(row: _Row, report: VerifyReport) -> None:
    data = row[R_CANONICAL]
    if data is None:
        return
    if data[:3] == b"[2,":
        _check_v2(row, row[R_CREATED], False, report)
        return
    try:
        if _expected_canonical(row) == data:
            return
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        pass  # e.g. created_at = 'infinity', beyond 64 bits in microseconds: explained below
    event_id = uuid.UUID(row[R_ID])
    chain = None if row[R_CHAIN] is None else uuid.UUID(row[R_CHAIN])
    workspace = None if chain in (None, NO_WORKSPACE) else chain
    try:
        hashed = orjson.loads(data)
        if not isinstance(hashed, list) or hashed[0] != CANONICAL_VERSION or len(hashed) != 14:
            raise ValueError("unknown canonical form")
        wrong, erased = _column_differences(row, hashed)
        ws_hashed = None if hashed[C_WORKSPACE] is None else uuid.UUID(hashed[C_WORKSPACE])
        if chain is not None and chain_of(ws_hashed) != chain:
            wrong.append("chain_id")
    except Exception:  # noqa: BLE001 - whatever a forged row holds, it is reported, not fatal
        report.problems.append(
            VerifyProblem(MODIFIED, "the stored canonical form is unreadable", event_id, workspace)
        )
        return
    if wrong:
        report.problems.append(
            VerifyProblem(
                MODIFIED,
                f"columns changed after the event was hashed: {', '.join(sorted(wrong))}",
                event_id,
                workspace,
                row[R_SEQ],
            )
        )
    elif erased:
        report.erased += 1
        names = ("user_id", "ip_address", "user_agent")
        report.erased_events.append((event_id, workspace, row[R_SEQ], names))


_USER_TAG, _IP_TAG, _UA_TAG = (PERSONAL_TAGS[n] for n in ("user_id", "ip_address", "user_agent"))


def _pg_normalised(row: _Row, sha256: Any = hashlib.sha256) -> _Row:
    """A row as read from PostgreSQL, in the form ``_check_columns`` compares: personal values
    as their commitments (with the row's salt) and ``created_at`` in Unix microseconds."""
    user, ip, ua, salt = row[R_USER], row[R_IP], row[R_UA], row[R_SALT] or b""
    return (
        row[R_ID],
        None if user is None else sha256(salt + _USER_TAG + user.encode()).hexdigest(),
        row[R_WS],
        None if ip is None else sha256(salt + _IP_TAG + ip.encode()).hexdigest(),
        None if ua is None else sha256(salt + _UA_TAG + ua.encode()).hexdigest(),
        *row[R_ACTION:R_CREATED],
        row[R_CREATED] + _PG_EPOCH_US,
        *row[R_SANITISED:],
    )


def _check_pg_columns(
    row: _Row,
    report: VerifyReport,
    sha256: Any = hashlib.sha256,
    dumps: Any = _dumps,
    loads: Any = orjson.loads,
    sort: int = orjson.OPT_SORT_KEYS,
    decode_error: Any = orjson.JSONDecodeError,
    encode_error: Any = orjson.JSONEncodeError,
) -> None:
    """``_check_columns`` for a row as PostgreSQL stores it, with the common case (every column
    matches) done in one pass: the same bytes ``_expected_canonical`` builds, since embedding
    ``loads(text)`` in a dump with sorted keys writes exactly ``normalise_json(text)``. Any
    difference goes through ``_check_columns`` to be explained."""
    data = row[R_CANONICAL]
    if data is None:
        return
    if data[:3] == b"[2,":
        _check_v2(row, row[R_CREATED] + _PG_EPOCH_US, True, report)
        return
    user, ip, ua, salt = row[R_USER], row[R_IP], row[R_UA], row[R_SALT] or b""
    details, previous, new, sanitised = row[R_DETAILS], row[R_PREVIOUS], row[R_NEW], row[12]
    try:
        expected = dumps(
            (
                CANONICAL_VERSION,
                row[0],
                row[2],
                row[5],
                row[6],
                row[7],
                row[11] + _PG_EPOCH_US,
                None if user is None else sha256(salt + _USER_TAG + user.encode()).hexdigest(),
                None if ip is None else sha256(salt + _IP_TAG + ip.encode()).hexdigest(),
                None if ua is None else sha256(salt + _UA_TAG + ua.encode()).hexdigest(),
                None if details is None else loads(details),
                None if previous is None else loads(previous),
                None if new is None else loads(new),
                None if sanitised is None else loads(sanitised),
            ),
            option=sort,
        )
        if expected == data:
            return
    except (decode_error, encode_error):
        pass
    _check_columns(_pg_normalised(row), report)


def _unchained(row: _Row, report: VerifyReport) -> None:
    ws = None if row[R_WS] is None else uuid.UUID(row[R_WS])
    report.problems.append(
        VerifyProblem(INSERTED, "the event is not part of any chain", uuid.UUID(row[R_ID]), ws)
    )


def _check_signatures(
    stored: list[Checkpoint],
    external: list[Checkpoint],
    keys: dict[str, Any],
    report: VerifyReport,
    checkpoints_file: str | os.PathLike[str] | None,
) -> list[tuple[str, Checkpoint]]:
    """Checkpoints whose signature holds, each with a label saying where it came from."""
    good: list[tuple[str, Checkpoint]] = []
    by_id = {c.id: c for c in stored}
    for c in stored:
        error = c.verify(keys)
        report.checkpoints += 1
        if error:
            report.problems.append(
                VerifyProblem(BAD_SIGNATURE, f"stored checkpoint: {error}", checkpoint_id=c.id)
            )
        else:
            good.append((f"stored checkpoint {c.id} ({c.created_at:%Y-%m-%d %H:%M:%S} UTC)", c))
    name = Path(checkpoints_file).name if checkpoints_file is not None else ""
    for number, c in enumerate(external, 1):
        report.external_checkpoints += 1
        error = c.verify(keys)
        if error:
            report.problems.append(
                VerifyProblem(
                    BAD_SIGNATURE, f"checkpoint {number} of {name}: {error}", checkpoint_id=c.id
                )
            )
            continue
        good.append((f"checkpoint {number} of {name} ({c.created_at:%Y-%m-%d %H:%M:%S} UTC)", c))
        twin = by_id.get(c.id)
        if twin is None:
            report.problems.append(
                VerifyProblem(
                    MISSING,
                    f"checkpoint {number} of {name} is no longer stored in the database",
                    checkpoint_id=c.id,
                )
            )
        elif (twin.body, twin.signature) != (c.body, c.signature):
            report.problems.append(
                VerifyProblem(
                    MODIFIED,
                    f"checkpoint {number} of {name} differs from the stored copy",
                    checkpoint_id=c.id,
                )
            )
    return good


def _check_heads(
    good: list[tuple[str, Checkpoint]],
    chains: ChainEnds,
    workspace: uuid.UUID | None,
    report: VerifyReport,
) -> None:
    seen: set[tuple[uuid.UUID, int]] = set()
    for label, checkpoint in good:
        for chain_id, seq, digest in checkpoint.heads:
            if workspace is not None and chain_id != workspace:
                continue
            ws = None if chain_id == NO_WORKSPACE else chain_id
            chain = chains.get(chain_id)
            head = chain[0] if chain is not None else 0
            if head < seq:
                if (chain_id, -seq) in seen:
                    continue
                seen.add((chain_id, -seq))
                report.problems.append(
                    VerifyProblem(
                        TRUNCATED,
                        f"truncated after {label}: it signed position {seq}, the chain now"
                        f" ends at {head}",
                        workspace_id=ws,
                        seq=seq,
                        checkpoint_id=checkpoint.id,
                    )
                )
                continue
            assert chain is not None
            found = chain[1].get(seq)
            if found is None or found[0] == digest or (chain_id, seq) in seen:
                continue  # a missing position is reported by the chain walk
            seen.add((chain_id, seq))
            report.problems.append(
                VerifyProblem(
                    REWRITTEN,
                    f"the chain up to position {seq} differs from what {label} signed: events"
                    " at or before this one were changed and the chain recomputed",
                    event_id=found[1],
                    workspace_id=ws,
                    seq=seq,
                    checkpoint_id=checkpoint.id,
                )
            )


# The writer stores ids on SQLite as 32 lowercase hex digits and times in one fixed format.
# Anything else was written by someone else; read leniently (uuid.UUID accepts upper case,
# braces, "urn:uuid:"; fromisoformat accepts an offset) it would still "match" what was hashed
# while the application sees another value.
_SQLITE_SPELLING = uuid.UUID("5b2f6c1e-8d1a-4c7e-9a53-0f7d2b6e4c11")


def _sqlite_uuid_text(value: object) -> str:
    text = str(value)
    if len(text) == 32 and all(c in "0123456789abcdef" for c in text):
        return str(uuid.UUID(hex=text))
    return str(uuid.uuid5(_SQLITE_SPELLING, text))  # parseable, and never what was hashed


def _sqlite_micros(value: object, datetime: Any, utc: Any, micros: Any) -> int:
    try:
        parsed = datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S.%f")
    except ValueError:
        return -1  # not what the writer stores: reported as a changed created_at
    return int(micros(parsed.replace(tzinfo=utc)))
