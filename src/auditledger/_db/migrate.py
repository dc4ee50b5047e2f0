"""``auditledger db upgrade`` / ``db check``: the Alembic scripts shipped in the package."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, insert, select

from .engine import make_engine
from .schema import CURSOR_SECRET, audit_secrets

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # env.py uses this engine: the URL (and its password) never goes through ini escaping.
    config.attributes["engine"] = engine
    return config


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def upgrade(database_url: str | None) -> SchemaStatus:
    """Create or upgrade the schema to the newest revision (idempotent)."""
    engine = make_engine(database_url)
    try:
        command.upgrade(alembic_config(engine), "head")
        _restore_cursor_key(engine)
        return _status(engine)
    finally:
        engine.dispose()


def check(database_url: str | None) -> SchemaStatus:
    engine = make_engine(database_url)
    try:
        return _status(engine)
    finally:
        engine.dispose()


def _status(engine: Engine) -> SchemaStatus:
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert head is not None
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return SchemaStatus(current=current, head=head)


def _restore_cursor_key(engine: Engine) -> None:
    """Revision 0003 stores the key that signs page cursors; if that row was deleted since,
    the read side cannot page, so an upgrade puts a fresh one back (old cursors then stop
    working, which is what losing the key means)."""
    secret = audit_secrets.c
    with engine.begin() as conn:
        found = conn.execute(select(secret.name).where(secret.name == CURSOR_SECRET)).first()
        if found is None:
            conn.execute(insert(audit_secrets).values(name=CURSOR_SECRET, value=os.urandom(32)))
