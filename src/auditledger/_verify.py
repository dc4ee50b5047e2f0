"""``auditledger verify``: recompute every chain, check every checkpoint, report each problem.

The verifier trusts nothing it reads: each event's link is recomputed from the stored canonical
bytes, each event's columns are compared with what was hashed, and each checkpoint's signature
is checked with public keys given by the caller. Checkpoints held outside the database (the file
written by ``auditledger checkpoint --out``) are what reveal deleted newest events.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
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
    chain_of,
    commitment,
    genesis,
    link,
    normalise_json,
)
from ._checkpoint import Checkpoint, load_public_keys, read_checkpoint_file
from ._db import make_engine
from ._errors import AuditLedgerError
from ._urls import is_postgres, libpq_conninfo, normalise_url, resolve_url, sqlite_path

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
#  canonical, pii_salt): ids as canonical UUID text, JSON as text.
_Row = tuple[Any, ...]
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
    problems: list[VerifyProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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
            "problems": [p.to_dict() for p in self.problems],
            "notes": self.notes,
        }


# ---- reading -------------------------------------------------------------------------------

_PG_SELECT = (
    "SELECT id::text, user_id, workspace_id::text, ip_address, user_agent, action, resource,"
    " resource_id, details::text, previous_value::text, new_value::text,"
    " (extract(epoch FROM created_at) * 1000000)::int8, sanitised::text, chain_id::text,"
    " chain_seq, chain_hash, canonical, pii_salt FROM audit_logs"
)
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

    def rows(self, workspace: uuid.UUID | None) -> Iterator[list[_Row]]:
        if self.postgres:
            yield from self._pg_rows(workspace)
        else:
            yield from self._sqlite_rows(workspace)

    def _pg_rows(self, workspace: uuid.UUID | None) -> Iterator[list[_Row]]:
        import psycopg

        where, params = "", ()
        if workspace is not None:
            where = " WHERE chain_id = %s OR workspace_id = %s"
            params = (workspace, workspace)  # type: ignore[assignment]
        query = f"{_PG_SELECT}{where} ORDER BY chain_id, chain_seq"
        conninfo = libpq_conninfo(self._url)
        with psycopg.connect(conninfo, application_name="auditledger-verify") as conn:
            conn.read_only = True
            with conn.transaction(), conn.cursor(name="auditledger_verify", binary=True) as cur:
                cur.itersize = 20_000
                cur.execute(query, params)
                while batch := cur.fetchmany(20_000):
                    yield batch

    def _sqlite_rows(self, workspace: uuid.UUID | None) -> Iterator[list[_Row]]:
        from datetime import UTC, datetime

        from ._chain import micros
        from ._sink_sqlite import connect_sqlite

        conn = connect_sqlite(sqlite_path(self._url), timeout=10)
        try:
            where, params = "", ()
            if workspace is not None:
                where = " WHERE chain_id = ? OR workspace_id = ?"
                params = (workspace.hex, workspace.hex)  # type: ignore[assignment]
            cur = conn.execute(f"{_SQLITE_SELECT}{where} ORDER BY chain_id, chain_seq", params)
            while batch := cur.fetchmany(20_000):
                out = []
                for r in batch:
                    row = list(r)
                    for i in (R_ID, R_WS, R_CHAIN):
                        if row[i] is not None:
                            row[i] = str(uuid.UUID(row[i]))
                    created = datetime.fromisoformat(row[R_CREATED]).replace(tzinfo=UTC)
                    row[R_CREATED] = micros(created)
                    out.append(tuple(row))
                yield out
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


def _expected_canonical(row: _Row) -> bytes | None:
    """The canonical bytes the columns would produce, or None when they cannot (erased)."""
    salt = row[R_SALT]
    personal: list[str | None] = []
    for _, name in PERSONAL:
        value = row[_PERSONAL_ROW[name]]
        if value is None:
            personal.append(None)
        elif salt is None:
            return None
        else:
            personal.append(commitment(salt, name, value))
    json_parts: list[Any] = []
    for _, name in JSON_PARTS:
        value = row[_JSON_ROW[name]]
        json_parts.append(None if value is None else _Fragment(normalise_json(value)))
    return _dumps(
        [
            CANONICAL_VERSION,
            row[R_ID],
            row[R_WS],
            row[R_ACTION],
            row[R_RESOURCE],
            row[R_RESOURCE_ID],
            row[R_CREATED],
            *personal,
            *json_parts,
        ]
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
        elif salt is None or commitment(salt, name, value) != committed:
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

    def __init__(self, chain_id: uuid.UUID, report: VerifyReport, wanted: set[int]) -> None:
        self.chain_id = chain_id
        self.workspace = None if chain_id == NO_WORKSPACE else chain_id
        self.report = report
        self.expected = 1
        self.previous = genesis(chain_id)
        self.before_previous = self.previous
        self.previous_id: uuid.UUID | None = None
        self.failed: list[_Failed] = []
        self.shift_reported = False
        self.wanted = wanted  # positions checkpoints name: their stored hashes are kept
        self.hashes: dict[int, tuple[bytes, uuid.UUID]] = {}
        self.head = 0

    def problem(self, kind: str, detail: str, event_id: uuid.UUID | None, seq: int | None) -> None:
        self.report.problems.append(VerifyProblem(kind, detail, event_id, self.workspace, seq))

    def add(self, row: _Row) -> None:
        event_id = uuid.UUID(row[R_ID])
        seq, stored, data = row[R_SEQ], row[R_HASH], row[R_CANONICAL]
        if seq is None or stored is None or data is None:
            self.problem(INSERTED, "the event is not part of any chain", event_id, None)
            return
        stored, data = bytes(stored), bytes(data)
        if seq in self.wanted:
            self.hashes[seq] = (stored, event_id)
        self.head = max(self.head, seq)
        if seq < self.expected:
            self.problem(INSERTED, f"a second event at position {seq}", event_id, seq)
            return
        if seq > self.expected:
            first, last = self.expected, seq - 1
            where = f"position {first}" if first == last else f"positions {first}-{last}"
            after = f" after event {self.previous_id}" if self.previous_id else ""
            self.problem(
                MISSING, f"the events at {where} are missing ({after.strip() or 'at the start'}"
                f", before this event)", event_id, seq,
            )  # fmt: skip
            # Its own link cannot be checked without its predecessor: take it as the new start.
            self._advance(seq, stored, event_id)
            return
        if link(self.previous, seq, data) != stored:
            self._explain(event_id, seq, stored, data)
        self._advance(seq, stored, event_id)

    def _advance(self, seq: int, stored: bytes, event_id: uuid.UUID) -> None:
        self.expected = seq + 1
        self.before_previous, self.previous = self.previous, stored
        self.previous_id = event_id

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
        if seq > 1 and link(self.before_previous, seq - 1, data) == stored:
            self.problem(
                INSERTED,
                f"the event at position {seq - 1} was not in the chain: this one links past it",
                self.previous_id,
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


# ---- the verifier --------------------------------------------------------------------------


def verify_log(
    database_url: str | None = None,
    *,
    public_keys: list[str | os.PathLike[str]] | None = None,
    checkpoints_file: str | os.PathLike[str] | None = None,
    workspace_id: uuid.UUID | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Check the whole log (or one workspace's chain) and return every problem found.

    ``public_keys``: PEM files of the keys checkpoints may be signed with (several when keys
    were rotated). ``checkpoints_file``: the copy written by ``auditledger checkpoint --out``.
    ``progress(done, total)`` is called after each block of events (``total`` is an estimate).
    Raises ``VerifyError`` when it cannot run at all.
    """
    report = VerifyReport()
    workspace = _workspace(workspace_id)
    try:
        keys = load_public_keys(public_keys or [])
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
        raise VerifyError(f"cannot read the database ({type(exc).__name__})") from exc

    good = _check_signatures(stored, external, keys, report, checkpoints_file)
    wanted: dict[uuid.UUID, set[int]] = {}
    for _, checkpoint in good:
        for chain_id, seq, _digest in checkpoint.heads:
            wanted.setdefault(chain_id, set()).add(seq)

    chains: dict[uuid.UUID, _ChainCheck] = {}
    done = 0
    try:
        current: _ChainCheck | None = None
        current_text: str | None = None
        for batch in source.rows(workspace):
            for row in batch:
                _check_columns(row, report)
                chain_text = row[R_CHAIN]
                if chain_text is None:
                    _unchained(row, report)
                    continue
                if current is None or chain_text != current_text:
                    if current is not None:
                        current.finish()
                    chain_id = uuid.UUID(chain_text)
                    current_text = chain_text
                    if workspace is not None and chain_id != workspace:
                        current = None  # a row of another chain naming this workspace
                        continue
                    current = _ChainCheck(chain_id, report, wanted.get(chain_id, set()))
                    chains[chain_id] = current
                current.add(row)
            done += len(batch)
            if progress is not None:
                progress(done, max(total, done))
        if current is not None:
            current.finish()
    except Exception as exc:
        raise VerifyError(f"cannot read the events ({type(exc).__name__})") from exc
    report.events = done
    report.chains = len(chains)
    _check_heads(good, chains, workspace, report)
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


def _workspace(value: uuid.UUID | str | None) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise VerifyError("the workspace id is not a UUID") from exc


def _check_columns(row: _Row, report: VerifyReport) -> None:
    data = row[R_CANONICAL]
    if data is None:
        return
    data = bytes(data)
    try:
        if _expected_canonical(row) == data:
            return
    except orjson.JSONDecodeError:
        pass
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
    except (ValueError, TypeError, IndexError):
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
    chains: dict[uuid.UUID, _ChainCheck],
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
            head = chain.head if chain is not None else 0
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
            found = chain.hashes.get(seq)
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
