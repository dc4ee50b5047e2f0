"""What a hostile QA pass found in the command line: values that restyle the terminal, errors
that named the wrong cause, ranges accepted and then crashing, options silently ignored."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, text
from sqlalchemy.exc import DBAPIError

from auditledger import AuditLogger, AuditReader, WorkspaceRef
from auditledger._chain.checkpoints import generate_keys
from auditledger._db.engine import make_engine
from auditledger._db.schema import audit_secrets
from auditledger._errors import describe_database_error
from auditledger._gdpr.retention import RetentionError, apply_retention, set_policy
from auditledger._viewer.serve import OperatorGate
from tests.bundle_tools import log_events
from tests.helpers import cli
from tests.viewer_helpers import Client, viewer_over

# Short enough that no table cell folds at the 150 columns used when output is piped.
MARKUP_USER = "[red]U0[/red]"
ESCAPE = "\x1b[2J"
HOSTILE_ID = "a\nb\u202ec"


def _log_hostile(url: str, spool_dir: Path) -> None:
    with AuditLogger(url, spool_dir=spool_dir) as audit:
        audit.log_audit_event(
            "settings_changed",
            user_id=MARKUP_USER + ESCAPE,
            workspace_id=WorkspaceRef("T0ACME"),
            resource="settings",
            resource_id=HOSTILE_ID,
            new_value={"v": "[link=x]y[/link]"},
        )
        assert audit.flush(10)


@pytest.mark.parametrize("command", ["events", "tail"])
def test_tables_show_stored_values_literally(db_url: str, spool_dir: Path, command: str) -> None:
    _log_hostile(db_url, spool_dir)
    shown = cli(command, "--database-url", db_url, "--workspace", "T0ACME")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "[red]U0[/red]" in out  # markup printed as typed, not interpreted
    assert "\x1b" not in out  # no escape sequence reaches the terminal
    assert "\\x1b[2J" in out  # ... it is shown as an escape instead
    assert "a\\nb\\u202ec" in out  # one row, no bidi override
    assert "\u202e" not in out
    assert '"[link=x]y[/link]"' in out


def test_a_deleted_cursor_key_names_both_remedies_and_upgrade_restores_it(
    db_url: str, spool_dir: Path
) -> None:
    log_events(db_url, spool_dir, 3)
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(delete(audit_secrets))
    engine.dispose()
    broken = cli("events", "--database-url", db_url)
    assert broken.returncode == 2
    assert "AUDITLEDGER_CURSOR_KEY" in broken.stderr
    assert "db upgrade" in broken.stderr
    assert "older than revision" not in broken.stderr
    with_env = cli("events", "--database-url", db_url, env=_env(AUDITLEDGER_CURSOR_KEY="k" * 32))
    assert with_env.returncode == 0, with_env.stderr
    assert cli("db", "upgrade", "--database-url", db_url).returncode == 0
    again = cli("events", "--database-url", db_url, "--json")
    assert again.returncode == 0, again.stderr
    assert len(again.stdout.splitlines()) == 3


def _env(**extra: str) -> dict[str, str]:
    import os

    return {**os.environ, **extra}


def test_errors_name_the_real_cause(tmp_path: Path) -> None:
    import sqlite3

    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE notes (a)").connection.close()
    no_schema = cli("events", "--database-url", f"sqlite:///{tmp_path / 'other.db'}")
    assert no_schema.returncode == 2
    assert "no auditledger schema" in no_schema.stderr
    (tmp_path / "notes.txt").write_text("not a database\n")
    not_sqlite = cli("events", "--database-url", f"sqlite:///{tmp_path / 'notes.txt'}")
    assert not_sqlite.returncode == 2
    assert "is not a SQLite database file" in not_sqlite.stderr
    assert (tmp_path / "notes.txt").read_text() == "not a database\n"


def test_permission_denied_is_named(pg_url: str, spool_dir: Path) -> None:
    import psycopg

    from tests.conftest import RUN_ID

    log_events(pg_url, spool_dir, 1)
    role = f"auditledger_noread_{RUN_ID}"
    with psycopg.connect(pg_url, autocommit=True) as pg:
        pg.execute(f"CREATE ROLE {role} LOGIN")
    try:
        role_url = pg_url.replace("postgres@", f"{role}@", 1)
        engine = make_engine(role_url)
        with pytest.raises(DBAPIError) as caught, engine.connect() as conn:
            conn.execute(text("SELECT count(*) FROM audit_logs"))
        engine.dispose()
        assert "permission denied" in describe_database_error(caught.value)
        shown = cli("events", "--database-url", role_url)
        assert shown.returncode == 2
        assert "permission denied" in shown.stderr
        assert "ProgrammingError" not in shown.stderr
    finally:
        with psycopg.connect(pg_url, autocommit=True) as pg:
            pg.execute(f"DROP OWNED BY {role}")
            pg.execute(f"DROP ROLE {role}")


def test_out_of_range_times_and_windows_are_refused(db_url: str, spool_dir: Path) -> None:
    log_events(db_url, spool_dir, 2)
    far = cli("events", "--database-url", db_url, "--since", "99999999d")
    assert far.returncode == 2
    assert "--since" in far.stderr
    assert "too far back" in far.stderr
    assert "OverflowError" not in far.stderr
    backwards = ["--since", "2026-12-01", "--until", "2026-11-01"]
    inverted = cli("events", "--database-url", db_url, *backwards)
    assert inverted.returncode == 2
    assert "is after until" in inverted.stderr
    with AuditReader(db_url) as reader, pytest.raises(ValueError, match="after until"):
        reader.events(since=datetime(2026, 12, 1, tzinfo=UTC), until=datetime(2026, 11, 1))
    bundle = cli(
        "export", "--database-url", db_url, "--workspace", "T0ACME", "--bundle",
        str(spool_dir.parent / "b.zip"), *backwards,
    )  # fmt: skip
    assert bundle.returncode == 2
    assert not (spool_dir.parent / "b.zip").exists()


def test_retention_ranges_and_workspace_names(db_url: str, spool_dir: Path, tmp_path: Path) -> None:
    log_events(db_url, spool_dir, 3)
    huge = cli("retention", "set", "--database-url", db_url, "--default", "--days", "99999999")
    assert huge.returncode == 2
    assert "36,500" in huge.stderr
    with pytest.raises(RetentionError):
        set_policy(db_url, 36_501)
    by_team = cli(
        "retention", "set", "--database-url", db_url, "--workspace", "T0ACME", "--days", "30"
    )
    assert by_team.returncode == 0, by_team.stderr
    unknown = cli(
        "retention", "set", "--database-url", db_url, "--workspace", "T0NOPE", "--days", "3"
    )
    assert unknown.returncode == 2
    assert "T0NOPE" in unknown.stderr
    shown = cli("retention", "show", "--database-url", db_url)
    assert "30" in shown.stdout
    future = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    refused = cli("retention", "apply", "--database-url", db_url, "--before", future, "--dry-run")
    assert refused.returncode == 2
    assert "in the future" in refused.stderr
    with pytest.raises(RetentionError, match="future"):
        apply_retention(db_url, signer=None, dry_run=True, before=datetime.now(UTC) + timedelta(1))
    # A naive time is UTC, as `events --until` reads it; a span back from now works too.
    naive = cli(
        "retention", "apply", "--database-url", db_url, "--dry-run",
        "--before", (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S"),
    )  # fmt: skip
    assert naive.returncode == 0, naive.stderr
    assert "quarantine: would delete 0 call(s)" in naive.stdout
    span = cli("retention", "apply", "--database-url", db_url, "--dry-run", "--before", "7d")
    assert span.returncode == 0, span.stderr
    generate_keys(tmp_path / "keys")
    scoped = cli(
        "retention", "apply", "--database-url", db_url, "--workspace", "T0ACME", "--json",
        "--before", "1s", "--signing-key", str(tmp_path / "keys" / "signing.key"),
    )  # fmt: skip
    assert scoped.returncode == 0, scoped.stderr
    assert json.loads(scoped.stdout)["chains"][0]["expired"] == 2  # never the newest event


def test_export_errors_and_ignored_options(db_url: str, spool_dir: Path, tmp_path: Path) -> None:
    log_events(db_url, spool_dir, 2)
    base = ["export", "--database-url", db_url, "--workspace", "T0ACME"]
    unwritable = cli(*base, "--out", "/proc/auditledger-export.jsonl")
    assert unwritable.returncode == 2
    assert "/proc/auditledger-export.jsonl" in unwritable.stderr
    assert ".part" not in unwritable.stderr
    both = cli(*base, "--bundle", str(tmp_path / "b.zip"), "--format", "csv")
    assert both.returncode == 2
    assert "--format" in both.stderr
    assert not (tmp_path / "b.zip").exists()
    key_without_bundle = cli(
        *base, "--out", str(tmp_path / "e.jsonl"), "--signing-key", str(tmp_path / "k")
    )
    assert key_without_bundle.returncode == 2
    assert not (tmp_path / "e.jsonl").exists()


def test_each_operator_login_is_its_own_session(sqlite_url: str, tmp_path: Path) -> None:
    with viewer_over(sqlite_url, tmp_path / "spool") as viewer:
        gate = OperatorGate(viewer, "the-token", port=8124, actor="operator:test")
        with Client(gate) as client:
            first = client.get("/?token=the-token", follow_redirects=False)
            second = client.get("/?token=the-token", follow_redirects=False)
            one = first.headers["set-cookie"].split(";")[0]
            two = second.headers["set-cookie"].split(";")[0]
            assert one != two
            assert "Max-Age=" in first.headers["set-cookie"]
            assert client.get("/", headers={"cookie": one}).status_code == 200
            out = client.get("/logout", headers={"cookie": one})
            assert out.status_code == 200
            assert "Max-Age=0" in out.headers["set-cookie"]
            assert client.get("/", headers={"cookie": one}).status_code == 401
            assert client.get("/", headers={"cookie": two}).status_code == 200


def test_text_search_folds_case_beyond_ascii(db_url: str, spool_dir: Path) -> None:
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.log_audit_event(
            "settings_changed",
            user_id="U1",
            workspace_id=WorkspaceRef("T0ACME"),
            details={"note": "Réunion de l'ÉCOLE à ZÜRICH"},
        )
        assert audit.flush(10)
    with AuditReader(db_url) as reader:
        for asked in ("école", "ÉCOLE", "zürich", "ZÜRICH"):
            assert len(reader.events(workspace="T0ACME", text=asked).items) == 1, asked
