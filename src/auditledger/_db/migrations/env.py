"""Alembic environment: runs on the engine auditledger passes in (see _db/migrate.py)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from auditledger._db.schema import metadata

engine = context.config.attributes["engine"]
assert isinstance(engine, Engine)

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    context.run_migrations()
