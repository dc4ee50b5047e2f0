from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from auditledger._db.engine import make_engine
from auditledger._db.schema import metadata
from tests.helpers import cli

SEED_INDEXES = {
    "audit_logs_workspace_idx": ["workspace_id"],
    "audit_logs_user_idx": ["user_id"],
    "audit_logs_action_idx": ["action"],
    "audit_logs_created_at_idx": ["created_at"],
    "audit_logs_workspace_created_at_idx": ["workspace_id", "created_at"],
}
SEED_COLUMNS = {
    "id", "user_id", "workspace_id", "ip_address", "user_agent", "action", "resource",
    "resource_id", "details", "previous_value", "new_value", "created_at",
}  # fmt: skip


def test_migrations_and_models_agree(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def test_audit_logs_has_the_seed_columns_and_indexes(db_url: str) -> None:
    engine = make_engine(db_url)
    inspector = inspect(engine)
    columns = {c["name"]: c for c in inspector.get_columns("audit_logs")}
    indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("audit_logs")}
    fks = inspector.get_foreign_keys("audit_logs")
    engine.dispose()
    assert set(columns) >= SEED_COLUMNS
    assert columns["action"]["nullable"] is False
    assert columns["created_at"]["nullable"] is False
    for name, cols in SEED_INDEXES.items():
        assert indexes[name] == cols
    assert [(f["referred_table"], f["constrained_columns"]) for f in fks] == [
        ("workspaces", ["workspace_id"])
    ]


def test_postgres_column_types(pg_url: str) -> None:
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        types: dict[str, str] = dict(
            conn.execute(
                text(
                    "SELECT column_name, data_type FROM information_schema.columns"
                    " WHERE table_name = 'audit_logs'"
                )
            ).all()
        )
    engine.dispose()
    assert types["id"] == "uuid"
    assert types["details"] == types["previous_value"] == types["new_value"] == "jsonb"
    assert types["created_at"] == "timestamp with time zone"


def test_sqlite_enforces_foreign_keys(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_logs (id, workspace_id, action, created_at)"
                " VALUES (:id, :ws, 'login', '2026-01-01 00:00:00.000000')"
            ),
            {"id": uuid.uuid4().hex, "ws": uuid.uuid4().hex},
        )
    engine.dispose()


def test_db_upgrade_is_idempotent_and_check_reports(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    behind = cli("db", "check", "--database-url", url)
    assert behind.returncode == 1, behind.stderr
    assert "behind" in behind.stderr
    for _ in range(2):
        done = cli("db", "upgrade", "--database-url", url)
        assert done.returncode == 0, done.stderr
    ok = cli("db", "check", "--database-url", url)
    assert ok.returncode == 0
    assert "current" in ok.stdout


def test_db_upgrade_defaults_to_auditledger_db_in_the_current_folder(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "AUDITLEDGER_DATABASE_URL"}
    done = cli("db", "upgrade", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "auditledger.db").exists()


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg", "postgres"])
def test_db_upgrade_accepts_postgres_urls_as_users_write_them(
    scheme: str, pg_databases: object
) -> None:
    from tests.conftest import PgDatabases

    assert isinstance(pg_databases, PgDatabases)
    url = pg_databases.create()
    url = scheme + url[len("postgresql") :]
    for _ in range(2):
        done = cli("db", "upgrade", "--database-url", url)
        assert done.returncode == 0, done.stderr
    assert cli("db", "check", "--database-url", url).returncode == 0


def test_db_check_exits_2_when_the_database_cannot_be_read(tmp_path: Path) -> None:
    done = cli("db", "check", "--database-url", "mysql://x@localhost/db")
    assert done.returncode == 2
    assert "unsupported database" in done.stderr


def test_the_row_layout_is_the_schemas_column_order() -> None:
    # Every layer names a row's columns by these positions; the sinks write rows in the
    # schema's column order and the verifier selects them in it.
    from auditledger._chain.canonical import CHAIN_COLUMNS
    from auditledger._db import rows
    from auditledger._db.schema import AUDIT_LOG_COLUMNS

    names = {
        "id": rows.ROW_ID, "user_id": rows.ROW_USER, "workspace_id": rows.ROW_WORKSPACE,
        "ip_address": rows.ROW_IP, "user_agent": rows.ROW_UA, "action": rows.ROW_ACTION,
        "resource": rows.ROW_RESOURCE, "resource_id": rows.ROW_RESOURCE_ID,
        "details": rows.ROW_DETAILS, "previous_value": rows.ROW_PREVIOUS,
        "new_value": rows.ROW_NEW, "created_at": rows.ROW_CREATED,
        "sanitised": rows.ROW_SANITISED, "chain_id": rows.ROW_CHAIN,
        "chain_seq": rows.ROW_SEQ, "chain_hash": rows.ROW_HASH,
        "canonical": rows.ROW_CANONICAL, "pii_salt": rows.ROW_SALT,
    }  # fmt: skip
    assert [names[c] for c in (*AUDIT_LOG_COLUMNS, *CHAIN_COLUMNS)] == list(range(len(names)))
