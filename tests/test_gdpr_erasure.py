"""GDPR erasure on real databases: nothing names the subject afterwards, nothing else is lost,
every chain verifies, and the triggers let the owner erase and nothing more."""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import insert

from auditledger import AuditLogger, AuditReader, AuditStore, WorkspaceRef
from auditledger._chain.canonical import canonical as canonical_v1
from auditledger._chain.canonical import chain_of
from auditledger._chain.checkpoints import generate_keys
from auditledger._chain.v2 import ERASABLE, commit
from auditledger._db.engine import make_engine
from auditledger._db.schema import workspaces
from auditledger._gdpr.erase import ErasureError, UnknownWorkspace, erase_subject
from auditledger._gdpr.subject import subject_hash
from auditledger._read.verify.run import verify_log
from auditledger._sinks import postgres as sink_postgres
from auditledger._sinks import sqlite as sink_sqlite
from auditledger._write import storing
from tests.children import child
from tests.conftest import RUN_ID
from tests.helpers import cli, erase_by_hand, stored

SUBJECT = "U0SUBJ3CT9"
OTHER = "U0OTHER771"
SUBJECT_IP = "203.0.113.77"
SUBJECT_UA = "Mozilla/5.0 (subject's phone)"
PERSONAL = (SUBJECT, SUBJECT_IP, SUBJECT_UA)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "subject.key"
    path.write_bytes(b"k" * 40)
    return path


def _write(url: str, spool: Path) -> None:
    with AuditLogger(url, spool_dir=spool) as audit:
        one, two = WorkspaceRef("T0NE"), WorkspaceRef("T0TWO")
        audit.audit_login(SUBJECT, one, SUBJECT_IP, SUBJECT_UA)
        audit.log_audit_event(
            "admin_action", user_id=OTHER, workspace_id=one, ip_address="198.51.100.2",
            user_agent="curl/8", resource="user", resource_id=SUBJECT,
            details={"target": SUBJECT, "note": "kept"},
        )  # fmt: skip
        audit.audit_settings_change(
            OTHER, one, "admins", previous_value=[OTHER, SUBJECT], new_value=[OTHER]
        )
        audit.log_audit_event(
            "message.sent", user_id=OTHER, workspace_id=two, details={"text": f"hi <@{SUBJECT}>"}
        )
        audit.log_audit_event("message.sent", user_id=OTHER, details={"n": 1.5e16, "z": -0.0})
        audit.audit_login(SUBJECT, None, SUBJECT_IP, SUBJECT_UA)
        audit.log_audit_event("Not Valid!", user_id=SUBJECT, details={"who": SUBJECT})
        audit.audit_login(OTHER, two, "198.51.100.9", "curl/8")
        assert audit.flush(20)


def _every_value(url: str) -> Iterator[tuple[str, str, Any]]:
    """Every column of every row of every table, as the database gives it."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cur = conn.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cur.description]
            for row in cur:
                for name, value in zip(names, row, strict=True):
                    yield table, name, value
        conn.close()
        return
    with psycopg.connect(url) as pg:
        tables = [
            r[0]
            for r in pg.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        ]
        for table in tables:
            # Every column as text (jsonb as PostgreSQL prints it) and bytea as raw bytes.
            pg_cur = pg.execute(f'SELECT * FROM "{table}"')
            names = [d.name for d in pg_cur.description or []]
            for row in pg_cur:
                for name, value in zip(names, row, strict=True):
                    yield table, name, value
            text = pg.execute(f'SELECT t::text FROM "{table}" t').fetchall()
            for (whole,) in text:
                yield table, "(row as text)", whole


def _naming(url: str, needles: tuple[str, ...]) -> list[tuple[str, str]]:
    found = []
    for table, column, value in _every_value(url):
        if value is None:
            continue
        if isinstance(value, bytes | memoryview):
            data = bytes(value)
            hits = [n for n in needles if n.encode() in data or n.encode().hex() in data.hex()]
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            hits = [n for n in needles if n in text]
        found += [(table, column)] * len(hits)
    return found


def _erase(url: str, key: Path, **kw: Any) -> Any:
    return erase_subject(
        url, SUBJECT, reason=f"Art. 17 request from {SUBJECT}", actor="dpo@example.com",
        subject_key=key.read_bytes(), **kw,
    )  # fmt: skip


def test_erasure_leaves_no_trace_and_every_chain_verifies(
    db_url: str, spool_dir: Path, key: Path
) -> None:
    _write(db_url, spool_dir)
    before = {e.id: e for e in stored(db_url)}
    assert _naming(db_url, PERSONAL)
    assert verify_log(db_url).ok

    result = _erase(db_url, key)

    assert _naming(db_url, PERSONAL) == []
    assert result.events == 5
    assert result.quarantined == 1
    assert result.values == {
        "user_id": 2, "ip_address": 2, "user_agent": 2, "resource_id": 3, "details": 2,
        "previous_value": 1,
    }  # fmt: skip
    report = verify_log(db_url)
    assert report.ok, report.problems
    assert report.erased == 5

    after = {e.id: e for e in stored(db_url)}
    erasures = [e for e in after.values() if e.action == "gdpr.erasure"]
    assert len(erasures) == 3  # workspaces one and two, and the chain of events without one
    erased_ids = {i for e in erasures for i in e.details["events"]}
    assert len(erased_ids) == 5
    for e in erasures:
        assert e.user_id == "dpo@example.com"
        assert e.details["subject"] == subject_hash(key.read_bytes(), SUBJECT)
        assert e.details["reason"] == "Art. 17 request from [subject]"
    # Everything that did not name the subject is still there.
    for event_id, old in before.items():
        new = after[event_id]
        assert (new.action, new.created_at, new.workspace_id, new.resource) == (
            old.action, old.created_at, old.workspace_id, old.resource,
        )  # fmt: skip
        if str(event_id) not in erased_ids:
            assert new == old
    admin = next(e for e in after.values() if e.action == "admin_action")
    assert (admin.user_id, admin.ip_address, admin.user_agent) == (OTHER, "198.51.100.2", "curl/8")
    assert (admin.resource_id, admin.details) == (None, None)
    settings = next(e for e in after.values() if e.action == "settings_changed")
    assert (settings.previous_value, settings.new_value) == (None, [OTHER])
    assert settings.resource_id == "admins"

    # A second request finds nothing left, and records nothing.
    again = _erase(db_url, key)
    assert (again.events, again.erasure_events) == (0, [])
    assert verify_log(db_url).ok


def test_the_notes_on_an_actors_own_values_are_theirs(
    db_url: str, spool_dir: Path, key: Path
) -> None:
    # The writer keeps a value that is not an IP address as given, in its note in
    # `sanitised`: the subject's, so exported with their events and erased with them.
    odd_ip = "198.51.100.23:8443"
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.audit_login(SUBJECT, WorkspaceRef("T0NE"), odd_ip, SUBJECT_UA)
        audit.audit_login(OTHER, WorkspaceRef("T0NE"), "not an address", "curl/8")
        assert audit.flush(10)
    with AuditReader(db_url, actor="dpo@example.com") as reader:
        document = reader.subject_export(SUBJECT, subject_key=key.read_bytes())
    assert [e["sanitised"] for e in document["events"]] == [
        [{"field": "ip_address", "change": "not an IP address", "original": odd_ip}]
    ]
    assert _naming(db_url, (odd_ip,))

    result = _erase(db_url, key)

    assert result.values["sanitised"] == 1
    assert _naming(db_url, (odd_ip, SUBJECT, SUBJECT_UA)) == []
    other = next(e for e in stored(db_url) if e.user_id == OTHER)
    assert other.sanitised == [
        {"field": "ip_address", "change": "not an IP address", "original": "not an address"}
    ]
    report = verify_log(db_url)
    assert report.ok, report.problems


def test_what_remains_cannot_be_tested_against_guesses(
    db_url: str, spool_dir: Path, key: Path
) -> None:
    """The commitments stay, but no salt that stays opens one for the right guess."""
    _write(db_url, spool_dir)
    _erase(db_url, key)
    rows = _chained_rows(db_url)
    tried = 0
    for canonical, salt in rows:
        hashed = json.loads(canonical)
        salts = [(salt or b"")[i : i + 16] for i in range(0, len(salt or b""), 16)]
        for name, position, _ in ERASABLE:
            if hashed[position] is None:
                continue
            for guess in (*PERSONAL, f'"{SUBJECT}"'):
                for piece in salts:
                    tried += 1
                    assert commit(piece, name, guess) != hashed[position]
    assert tried > 50


def _chained_rows(url: str) -> list[tuple[bytes, bytes | None]]:
    query = "SELECT canonical, pii_salt FROM audit_logs WHERE canonical IS NOT NULL"
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        rows = conn.execute(query).fetchall()
        conn.close()
        return [(bytes(c), None if s is None else bytes(s)) for c, s in rows]
    with psycopg.connect(url) as pg:
        return [(bytes(c), None if s is None else bytes(s)) for c, s in pg.execute(query)]


def test_one_workspace_only(db_url: str, spool_dir: Path, key: Path) -> None:
    _write(db_url, spool_dir)
    two = next(
        e.workspace_id for e in stored(db_url) if e.action == "message.sent" and e.workspace_id
    )
    result = _erase(db_url, key, workspace_id=two)
    assert result.events == 1
    assert verify_log(db_url).ok
    assert any(e.user_id == SUBJECT for e in stored(db_url))


def _execute(url: str, sql: str) -> None:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute(sql)
        finally:
            conn.close()
        return
    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute(sql)


def _refused(url: str) -> type[Exception]:
    return (
        sqlite3.IntegrityError if url.startswith("sqlite") else psycopg.errors.InsufficientPrivilege
    )


@pytest.mark.parametrize(
    "change",
    [
        "action = 'logout'",
        "resource = 'other'",
        "user_id = 'someone-else'",
        "canonical = NULL",
        "chain_hash = NULL",
        "created_at = created_at",
        "pii_salt = NULL, action = 'logout'",
    ],
)
def test_the_owner_may_only_erase(db_url: str, spool_dir: Path, change: str) -> None:
    _write(db_url, spool_dir)
    with pytest.raises(_refused(db_url), match="append-only"):
        _execute(db_url, f"UPDATE audit_logs SET {change} WHERE action = 'login'")
    with pytest.raises(_refused(db_url), match="append-only"):
        _execute(db_url, "DELETE FROM audit_logs WHERE action = 'login'")
    assert verify_log(db_url).ok


def test_an_erasure_no_event_covers_is_tampering(db_url: str, spool_dir: Path) -> None:
    """The triggers let the owner remove a value, but only gdpr.erasure makes it legitimate."""
    _write(db_url, spool_dir)
    for event in stored(db_url, action="message.sent"):
        erase_by_hand(db_url, event.id, "details")
    report = verify_log(db_url)
    assert not report.ok
    assert {p.kind for p in report.problems} == {"modified"}
    assert all("without a gdpr.erasure event" in p.detail for p in report.problems)
    assert len(report.problems) == 2
    assert report.erased == 0


def test_the_writer_role_cannot_erase(pg_url: str, spool_dir: Path) -> None:
    _write(pg_url, spool_dir)
    role = f"auditledger_app_{RUN_ID}"
    with psycopg.connect(pg_url, autocommit=True) as pg:
        pg.execute(f"CREATE ROLE {role} LOGIN")
        pg.execute(f"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO {role}")
    try:
        role_url = pg_url.replace("postgres@", f"{role}@", 1)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _execute(role_url, "UPDATE audit_logs SET user_id = NULL")
        with pytest.raises(ErasureError, match="owner"):
            erase_subject(role_url, SUBJECT, reason="r", actor="a", subject_key=b"k" * 32)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as pg:
            pg.execute(f"DROP OWNED BY {role}")
            pg.execute(f"DROP ROLE {role}")


def test_cli_erase(db_url: str, spool_dir: Path, key: Path) -> None:
    _write(db_url, spool_dir)
    base = ["--user", SUBJECT, "--reason", "request", "--actor", "dpo", "--database-url", db_url]
    unconfirmed = cli("gdpr", "erase", *base, "--subject-key", str(key))
    assert unconfirmed.returncode == 2
    assert "--yes" in unconfirmed.stderr
    no_key = cli("gdpr", "erase", *base, "--yes")
    assert no_key.returncode == 2
    assert "subject key" in no_key.stderr
    assert "Traceback" not in no_key.stderr
    done = cli("gdpr", "erase", *base, "--yes", "--json", "--subject-key", str(key))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["events"] == 5
    assert "5 event(s) in 3 chain(s)" in done.stderr
    generate_keys(key.parent / "keys")
    public = str(key.parent / "keys" / "signing.pub")
    verified = cli("verify", "--public-key", public, "--database-url", db_url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "5 with personal values erased" in verified.stdout


def _workspace_of(url: str, team_id: str) -> uuid.UUID:
    with AuditStore(url) as store:
        found = store.workspace_of_team(team_id)
    assert found is not None
    return found


def test_cli_erase_names_the_workspace_as_every_command_does(
    db_url: str, spool_dir: Path, key: Path, tmp_path: Path
) -> None:
    """--workspace takes a UUID, a unique prefix of it or a Slack team id, as `gdpr export`,
    `retention` and `verify` do, and refuses what names none or several in their words."""
    _write(db_url, spool_dir)
    engine = make_engine(db_url)
    with engine.begin() as conn:  # two ids sharing the prefix "abcdef01": it names neither
        for n in (1, 2):
            ws = uuid.UUID(f"abcdef01-0000-4000-8000-00000000000{n}")
            conn.execute(insert(workspaces).values(id=ws, team_id=f"T0AMB{n}", name="x"))
    engine.dispose()
    two = _workspace_of(db_url, "T0TWO")
    base = ["--user", SUBJECT, "--reason", "r", "--actor", "dpo", "--database-url", db_url]
    base += ["--subject-key", str(key)]
    for named in ("T0TWO", str(two), two.hex[:8], str(two).upper()):
        # Without a terminal and without --yes it stops after showing what it would do.
        shown = cli("gdpr", "erase", *base, "--workspace", named)
        assert shown.returncode == 2, shown.stderr
        assert "1 event(s) in 1 chain(s) name the subject" in shown.stderr
        assert "not confirmed" in shown.stderr
    export = ["gdpr", "export", "--user", SUBJECT, "--out", str(tmp_path / "s.json")]
    export += ["--subject-key", str(key), "--database-url", db_url]
    for named, message in (
        ("T0NOPE", "no workspace has the team id 'T0NOPE'"),
        ("abcdef01", "2 workspace ids start with 'abcdef01': give more of it"),
        ("0000dead", "no workspace id starts with '0000dead'"),
    ):
        refused = cli("gdpr", "erase", *base, "--workspace", named, "--yes")
        assert refused.returncode == 2
        assert refused.stderr == f"error: --workspace: {message}\n"
        elsewhere = cli(*export, "--workspace", named)
        assert elsewhere.returncode == 2
        assert elsewhere.stderr == refused.stderr
    done = cli("gdpr", "erase", *base, "--workspace", "T0TWO", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["events"] == 1
    assert verify_log(db_url).ok
    assert any(e.user_id == SUBJECT for e in stored(db_url))  # the other workspaces keep theirs


def test_erase_subject_takes_a_team_id_or_an_id_prefix(
    db_url: str, spool_dir: Path, key: Path
) -> None:
    _write(db_url, spool_dir)
    one = _workspace_of(db_url, "T0NE")
    with pytest.raises(UnknownWorkspace, match="no workspace has the team id 'T0NOPE'"):
        _erase(db_url, key, workspace_id="T0NOPE")
    with pytest.raises(LookupError):  # as AuditReader.resolve_workspace raises it
        _erase(db_url, key, workspace_id="T0NOPE")
    with pytest.raises(ErasureError):  # and as every refused erasure is
        _erase(db_url, key, workspace_id="not a workspace")
    assert _erase(db_url, key, workspace_id="T0TWO").events == 1
    assert _erase(db_url, key, workspace_id=one.hex[:6]).events == 3
    assert verify_log(db_url).ok
    assert {e.workspace_id for e in stored(db_url) if e.user_id == SUBJECT} == {None}


def test_cli_erase_help_gives_every_exit_code() -> None:
    shown = cli("gdpr", "erase", "--help", env={**os.environ, "COLUMNS": "300"})
    assert shown.returncode == 0
    help_text = shown.stdout
    assert "Exit 0 when done (or nothing names USER), 1 when declined at the prompt." in help_text
    assert "Exit 2 on an error, or when not confirmed: without a terminal, only --yes" in help_text
    assert "its id, a unique prefix of it, or a Slack team id" in help_text


_WRITER = """
import sys
from auditledger import AuditLogger, AuditStore, WorkspaceRef

url, spool, index, count, subject = sys.argv[1:6]
with AuditLogger(url, spool_dir=spool, batch_size=25, flush_interval=0.01) as audit:
    for i in range(int(count)):
        names = i % 3 == 0
        audit.log_audit_event(
            "admin_action",
            user_id=subject if names else f"U{index}x{i}",
            workspace_id=WorkspaceRef(f"TW{i % 3}") if i % 4 else None,
            ip_address=f"192.0.2.{i % 200}",
            user_agent="writer/1.0",
            resource="user",
            resource_id=subject if i % 5 == 0 else None,
            details={"mention": subject} if i % 7 == 0 else {"i": i},
        )
        if i % 25 == 24 and not audit.flush(30):
            sys.exit("flush timed out")
    if not audit.flush(30):
        sys.exit("flush timed out")
"""


def test_erasure_while_several_processes_write(db_url: str, tmp_path: Path, key: Path) -> None:
    """Writers keep appending to the same chains while the subject is erased: the
    gdpr.erasure events take their place in the chains like any event, and verify passes
    after each erasure."""
    writers = [
        child(_WRITER, db_url, str(tmp_path / f"spool{i}"), str(i), "300", SUBJECT)
        for i in range(3)
    ]
    first = _erase(db_url, key)  # whatever the writers have stored so far
    report = verify_log(db_url)
    assert report.ok, report.problems
    assert report.erased == first.events
    for proc in writers:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    second = _erase(db_url, key)
    assert first.events + second.events == 3 * len([i for i in range(300) if _names(i)])
    report = verify_log(db_url)
    assert report.ok, report.problems
    assert report.erased == first.events + second.events
    shared = verify_log(db_url, workers=2)  # chains shared between processes on PostgreSQL
    assert (shared.ok, shared.erased, shared.events) == (True, report.erased, report.events)
    assert report.events == 900 + len(first.erasure_events) + len(second.erasure_events)
    assert _naming(db_url, (SUBJECT,)) == []


def _names(i: int) -> bool:
    return i % 3 == 0 or i % 5 == 0 or i % 7 == 0


def _seal_v1(rows: list[tuple[Any, ...]]) -> list[Any]:
    """How the previous version sealed events (canonical form 1, one salt per event)."""
    out = []
    for row in rows:
        salt = os.urandom(16) if any(row[i] is not None for i in (1, 3, 4)) else None
        out.append((chain_of(row[2]), canonical_v1(row, salt), salt))
    return out


def test_events_of_canonical_form_1_keep_verifying_and_lose_what_they_can(
    db_url: str, spool_dir: Path, key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:
        for module in (storing, sink_postgres, sink_sqlite):
            m.setattr(module, "seal", _seal_v1)
        with AuditLogger(db_url, spool_dir=spool_dir) as audit:
            audit.audit_login(SUBJECT, WorkspaceRef("T0NE"), SUBJECT_IP, SUBJECT_UA)
            audit.log_audit_event(
                "admin_action", user_id=OTHER, workspace_id=WorkspaceRef("T0NE"),
                resource="user", resource_id=SUBJECT,
            )  # fmt: skip
            assert audit.flush(20)
    assert all(c.startswith(b"[1,") for c, _ in _chained_rows(db_url))
    _write(db_url, spool_dir)  # then events of this version, in the same chains
    assert verify_log(db_url).ok

    result = _erase(db_url, key)
    # The v1 login loses its actor values; but both v1 events hashed the subject's id as their
    # resource_id in clear: erasing it would break the chain, so it stays and is counted.
    assert result.unerasable == 2
    assert result.events == 6
    report = verify_log(db_url)
    assert report.ok, report.problems
    assert report.erased == 6
    assert _naming(db_url, (SUBJECT_IP, SUBJECT_UA)) == []
    left = [e for e in stored(db_url) if SUBJECT in (e.user_id, e.resource_id)]
    assert sorted((e.action, e.user_id, e.resource_id) for e in left) == [
        ("admin_action", OTHER, SUBJECT),
        ("login", None, SUBJECT),
    ]
