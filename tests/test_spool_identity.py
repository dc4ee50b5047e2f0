"""One spool folder shared by loggers of several databases: each event replays into its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from auditledger import AuditLogger
from auditledger._api.status import collect_status
from auditledger._db.migrate import upgrade
from tests.conftest import PgDatabases
from tests.helpers import fingerprint, stored


@pytest.fixture(params=["sqlite", "postgres"])
def not_yet_migrated(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database whose schema is missing: every write fails until `db upgrade` runs."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'a.db'}"
    dbs: PgDatabases = request.getfixturevalue("pg_databases")
    url = make_url(dbs.create()).set(password="pw-never-on-disk")
    return url.render_as_string(hide_password=False)


def test_segments_replay_only_into_their_own_database(
    not_yet_migrated: str, db_url: str, spool_dir: Path
) -> None:
    a_url, b_url = not_yet_migrated, db_url
    a = AuditLogger(a_url, spool_dir=spool_dir, write_timeout=2.0)
    for i in range(100):
        a.audit_login(f"for-a-{i}", None)
    assert a.flush(1.0) is False
    a.close(timeout=2.0)
    assert a.stats().spooled == 100

    with AuditLogger(b_url, spool_dir=spool_dir) as b:
        for i in range(5):
            b.audit_login(f"for-b-{i}", None)
        # A's segments are not B's to replay, nor does B wait for them.
        assert b.flush(30)
        assert b.stats().spool_segments == 0
    assert sorted(e.user_id or "" for e in stored(b_url)) == [f"for-b-{i}" for i in range(5)]
    segments = list(spool_dir.glob("*.seg"))
    assert segments
    assert all(f"-{fingerprint(a_url)}-" in s.name for s in segments)
    status = collect_status(b_url, spool_dir)
    assert status["spool_segments"] == 0
    assert status["spool_segments_other_databases"] == len(segments)
    for segment in segments:  # the identity is a fingerprint: no credential, no address
        data = segment.read_bytes()
        assert b"pw-never-on-disk" not in data
        assert (make_url(a_url).database or "").encode() not in data

    upgrade(a_url)
    with AuditLogger(a_url, spool_dir=spool_dir) as a_again:
        assert a_again.flush(30)
        assert a_again.stats().replayed == 100
    assert len(stored(a_url)) == 100
    assert len(stored(b_url)) == 5
    assert list(spool_dir.glob("*.seg")) == []


def test_the_identity_leaves_out_the_role_and_the_password(pg_url: str) -> None:
    url = make_url(pg_url)
    other_role = url.set(username="reader", password="secret").render_as_string(False)
    other_db = url.set(database="elsewhere").render_as_string(False)
    other_port = url.set(port=(url.port or 5432) + 1).render_as_string(False)
    assert fingerprint(pg_url) == fingerprint(other_role)
    assert fingerprint(pg_url) != fingerprint(other_db)
    assert fingerprint(pg_url) != fingerprint(other_port)
