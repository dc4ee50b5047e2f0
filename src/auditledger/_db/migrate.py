"""``auditledger db upgrade`` / ``db check``: the Alembic scripts shipped in the package."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from .engine import make_engine

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
