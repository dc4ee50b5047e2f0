"""The opt-in subject index: the subject query uses it, and finds the same events with it."""

from __future__ import annotations

from pathlib import Path

import psycopg

from auditledger import AuditLogger, AuditReader
from auditledger._db.engine import make_engine
from auditledger._gdpr.index import INDEXES, index_state
from auditledger._read.subject import SubjectMatcher, subject_query
from tests.helpers import cli
from tests.test_gdpr_matching import BOB, KEY, _write


def _plan(url: str) -> str:
    """The plan of the query subject access runs, rendered as the application's driver
    receives it (the pattern is inline; ``%%`` is the driver's escape for ``%``)."""
    engine = make_engine(url)
    try:
        query = subject_query(SubjectMatcher(BOB), "postgresql")
        sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    finally:
        engine.dispose()
    with psycopg.connect(url) as conn:
        # A test's table is tiny: without these the planner reads it whole, or in time order.
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_indexscan = off")
        return "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, {}))


def test_the_subject_query_uses_the_index_and_finds_the_same(pg_url: str, spool_dir: Path) -> None:
    _write(pg_url, spool_dir)
    with AuditReader(pg_url) as reader:
        without = reader.subject_export(BOB, subject_key=KEY)
    assert "audit_logs_subject_text_idx" not in _plan(pg_url)

    built = cli("gdpr", "index", "--database-url", pg_url)
    assert built.returncode == 0, built.stderr
    assert all(f"{name}: " in built.stdout for name in INDEXES)
    assert all(s.valid for s in index_state(pg_url))
    plan = _plan(pg_url)
    assert "audit_logs_subject_text_idx" in plan
    assert "audit_logs_resource_id_idx" in plan
    assert "Seq Scan" not in plan
    with AuditLogger(pg_url, spool_dir=spool_dir) as audit:  # writes keep working
        audit.log_audit_event("message.sent", user_id="U0X", details={"to": f"<@{BOB}>"})
        assert audit.flush(10)
    with AuditReader(pg_url) as reader:
        with_index = reader.subject_export(BOB, subject_key=KEY)
    assert len(with_index["events"]) == len(without["events"]) + 1
    assert with_index["events"][:-1] == without["events"]
    assert with_index["quarantined"] == without["quarantined"]

    again = cli("gdpr", "index", "--database-url", pg_url)  # nothing to do
    assert again.returncode == 0, again.stderr
    dropped = cli("gdpr", "index", "--drop", "--database-url", pg_url)
    assert dropped.returncode == 0, dropped.stderr
    assert not any(s.exists for s in index_state(pg_url))
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = ANY(%s)",
                            (list(INDEXES),)).fetchone() == (0,)  # fmt: skip


def test_sqlite_has_no_subject_index(sqlite_url: str) -> None:
    done = cli("gdpr", "index", "--database-url", sqlite_url)
    assert done.returncode == 2
    assert "PostgreSQL" in done.stderr
    assert "Traceback" not in done.stderr
