"""A retention cut the owner forges (with the real key, even) cannot take a chain's newest event
with it: the trigger counts only cuts the chain has reached, and verify uses only cuts that
agree with the chain, reporting the rest and the events they would hide."""

from __future__ import annotations

import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from auditledger import AuditLogger, WorkspaceRef
from auditledger._chain.checkpoints import Signer, generate_keys
from auditledger._chain.cuts import make_cut
from auditledger._db.engine import make_engine
from auditledger._gdpr.retention import _store_cuts
from auditledger._read.verify.report import VerifyReport
from auditledger._read.verify.run import verify_log


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_keys(tmp_path / "keys")
    return tmp_path / "keys"


def _log(url: str, spool: Path, count: int) -> None:
    with AuditLogger(url, spool_dir=spool) as audit:
        for i in range(count):
            audit.log_audit_event(
                "admin_action", user_id=f"U{i}", workspace_id=WorkspaceRef("T0NE")
            )
        assert audit.flush(20)


def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    with psycopg.connect(url, autocommit=True) as pg:
        cur = pg.execute(sql)
        return cur.fetchall() if cur.description else []


def _chain(url: str) -> tuple[uuid.UUID, int]:
    ((chain, head),) = _query(
        url, "SELECT chain_id, max(chain_seq) FROM audit_logs GROUP BY chain_id"
    )
    return uuid.UUID(str(chain)), int(head)


def _hash_at(url: str, seq: int) -> bytes:
    return bytes(_query(url, f"SELECT chain_hash FROM audit_logs WHERE chain_seq = {seq}")[0][0])


def _cut(url: str, keys: Path, chain: uuid.UUID, first: int, previous: bytes) -> None:
    signer = Signer.from_file(keys / "signing.key")
    cut = make_cut(signer, chain, first, previous, datetime.now(UTC), time.time_ns())
    engine = make_engine(url)
    try:
        _store_cuts(engine, [cut])
    finally:
        engine.dispose()


def _verify(url: str, keys: Path) -> VerifyReport:
    return verify_log(url, public_keys=[keys / "signing.pub"])


def _delete_bypassing_triggers(url: str, sql: str) -> None:
    """What a superuser can still do: verify must then say what is gone."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("DROP TRIGGER audit_logs_prefix_only")
        conn.execute(sql)
        conn.close()
        return
    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute("SET session_replication_role = replica")
        pg.execute(sql)


def test_a_cut_past_the_head_lets_nothing_be_deleted(
    db_url: str, spool_dir: Path, keys: Path
) -> None:
    _log(db_url, spool_dir, 6)
    chain, head = _chain(db_url)
    _cut(db_url, keys, chain, head + 1, _hash_at(db_url, head))
    for sql in ("DELETE FROM audit_logs", f"DELETE FROM audit_logs WHERE chain_seq = {head}"):
        with pytest.raises(Exception, match="append-only") as caught:
            _query(db_url, sql)
        assert isinstance(caught.value, sqlite3.IntegrityError | psycopg.errors.DatabaseError)
    assert _chain(db_url) == (chain, head)


def test_a_cut_at_the_head_keeps_the_head(db_url: str, spool_dir: Path, keys: Path) -> None:
    _log(db_url, spool_dir, 6)
    chain, head = _chain(db_url)
    _cut(db_url, keys, chain, head, _hash_at(db_url, head - 1))
    with pytest.raises(Exception, match="append-only"):
        _query(db_url, "DELETE FROM audit_logs")
    _query(db_url, f"DELETE FROM audit_logs WHERE chain_seq < {head}")
    assert _chain(db_url) == (chain, head)
    report = _verify(db_url, keys)
    assert report.ok, report.problems
    assert report.cuts == 1


def test_verify_reports_what_a_cut_past_the_head_hides(
    db_url: str, spool_dir: Path, keys: Path
) -> None:
    _log(db_url, spool_dir, 6)
    chain, head = _chain(db_url)
    cut_first = head + 1
    _cut(db_url, keys, chain, cut_first, _hash_at(db_url, head))
    _delete_bypassing_triggers(db_url, "DELETE FROM audit_logs")
    report = _verify(db_url, keys)
    assert not report.ok
    assert [p.kind for p in report.problems] == ["missing"]
    problem = report.problems[0]
    assert problem.seq == cut_first
    assert "has no events left" in problem.detail
    assert report.cuts == 0


def test_a_cut_that_names_the_wrong_hash_moves_no_start(
    db_url: str, spool_dir: Path, keys: Path
) -> None:
    _log(db_url, spool_dir, 6)
    chain, _ = _chain(db_url)
    _cut(db_url, keys, chain, 4, b"\x01" * 32)
    _delete_bypassing_triggers(db_url, "DELETE FROM audit_logs WHERE chain_seq = 1")
    report = _verify(db_url, keys)
    kinds = sorted(p.kind for p in report.problems)
    assert kinds == ["missing", "rewritten"]
    rewritten = next(p for p in report.problems if p.kind == "rewritten")
    assert "has another hash than the cut names" in rewritten.detail
    missing = next(p for p in report.problems if p.kind == "missing")
    assert "position 1" in missing.detail  # the walk started at the chain's genesis
