"""The tables auditledger stores to, on PostgreSQL and SQLite (SQLAlchemy Core).

The migrations in ``migrations/`` build exactly these tables; a test checks that Alembic's
autogenerate finds no difference between the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    Table,
    Text,
    Uuid,
    func,
    true,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator, TypeEngine

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """timestamptz on PostgreSQL; on SQLite, naive UTC text that reads back as aware UTC.

    SQLite has no time zones: storing every value converted to UTC keeps ordering and
    comparisons right, and reading attaches UTC again so callers never see naive datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("auditledger stores aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SQLiteJSONText(TypeDecorator[Any]):
    """JSON kept as TEXT on SQLite.

    A column declared JSON gets SQLite's numeric affinity: a value that is a bare number is
    converted on the way in ("5" becomes the integer 5, and 12345678901234567890 a rounded
    float), which loses data and breaks the stored text that tamper evidence compares against.
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else orjson.dumps(value).decode()

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else orjson.loads(value)


def json_type() -> TypeEngine[Any]:
    return (
        JSON()
        .with_variant(postgresql.JSONB(), "postgresql")
        .with_variant(SQLiteJSONText(), "sqlite")
    )


workspaces = Table(
    "workspaces",
    metadata,
    Column("id", Uuid(as_uuid=True), primary_key=True),
    Column("team_id", Text, nullable=False, unique=True),
    Column("enterprise_id", Text),
    Column("name", Text),
    Column("is_active", Boolean, nullable=False, server_default=true()),
    Column("created_at", UTCDateTime, nullable=False, server_default=func.current_timestamp()),
    Column("updated_at", UTCDateTime, nullable=False, server_default=func.current_timestamp()),
)

audit_logs = Table(
    "audit_logs",
    metadata,
    # Event id: a UUIDv7 made by the client, so replays are recognised (never a DB default).
    Column("id", Uuid(as_uuid=True), primary_key=True),
    # Who
    Column("user_id", Text),
    Column("workspace_id", Uuid(as_uuid=True), ForeignKey("workspaces.id")),
    Column("ip_address", Text),
    Column("user_agent", Text),
    # What
    Column("action", Text, nullable=False),
    Column("resource", Text),
    Column("resource_id", Text),
    # Details
    Column("details", json_type()),
    Column("previous_value", json_type()),
    Column("new_value", json_type()),
    # When: the moment of the call, not of the flush.
    Column("created_at", UTCDateTime, nullable=False),
    # What auditledger had to change to store the event (bad input made storable, secrets
    # redacted); null when the event was stored exactly as given.
    Column("sanitised", json_type()),
    # Tamper evidence (see _chain/canonical.py): the chain (workspace, or the nil UUID for
    # events without one), the position in it, the link hash, the exact bytes hashed, and the
    # salt of the personal values' commitments. Null only on rows stored before revision 0002.
    Column("chain_id", Uuid(as_uuid=True)),
    Column("chain_seq", BigInteger),
    Column("chain_hash", LargeBinary),
    Column("canonical", LargeBinary),
    Column("pii_salt", LargeBinary),
    Index("audit_logs_workspace_idx", "workspace_id"),
    Index("audit_logs_user_idx", "user_id"),
    Index("audit_logs_action_idx", "action"),
    Index("audit_logs_created_at_idx", "created_at"),
    # Revision 0003: a workspace's pages are in chain order (see _read/query.py); these let
    # even PostgreSQL's generic plan of a prepared statement read only the rows of the page
    # for one user, one action, or a time range of the workspace.
    Index("audit_logs_chain_user_idx", "chain_id", "user_id", "chain_seq"),
    Index("audit_logs_chain_action_idx", "chain_id", "action", "chain_seq"),
    # Revision 0006 (replacing 0003's (chain_id, created_at)): a workspace's time window
    # pages in (created_at, chain_seq) order, read from this index in order.
    Index("audit_logs_chain_created_seq_idx", "chain_id", "created_at", "chain_seq"),
    # "Newest N of one workspace": without it PostgreSQL's generic plan for a prepared
    # statement walks created_at backwards through every other tenant's rows.
    Index("audit_logs_workspace_created_at_idx", "workspace_id", "created_at"),
    # Finds each chain's head, and refuses a forked chain even if locking ever failed.
    Index("audit_logs_chain_idx", "chain_id", "chain_seq", unique=True),
)

audit_quarantine = Table(
    "audit_quarantine",
    metadata,
    Column("id", Uuid(as_uuid=True), primary_key=True),
    Column("reason", Text, nullable=False),
    # A safe JSON representation of what the caller gave (sanitised, redacted, capped).
    Column("payload", json_type(), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("quarantined_at", UTCDateTime, nullable=False, server_default=func.current_timestamp()),
    Index("audit_quarantine_created_at_idx", "created_at"),
)

# Signed statements of every chain's head (see _chain/checkpoints.py); append-only like audit_logs.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", Uuid(as_uuid=True), primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("key_id", Text, nullable=False),
    # The exact bytes signed (JSON), and the Ed25519 signature over them.
    Column("body", LargeBinary, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Index("audit_checkpoints_created_at_idx", "created_at"),
)

# Retention periods (``auditledger retention set``): scope is a workspace id, or "default"
# for every workspace without its own (and for events of no workspace and the quarantine).
audit_retention = Table(
    "audit_retention",
    metadata,
    Column("scope", Text, primary_key=True),
    Column("days", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Signed cuts (see _cuts.py): where each chain now starts after retention deleted its expired
# prefix; chain_id NULL for the quarantine's horizon. Append-only; the DELETE triggers of
# audit_logs and audit_quarantine allow nothing below the newest cut.
audit_cuts = Table(
    "audit_cuts",
    metadata,
    Column("id", Uuid(as_uuid=True), primary_key=True),
    Column("chain_id", Uuid(as_uuid=True)),
    Column("first_seq", BigInteger),
    Column("previous_hash", LargeBinary),
    Column("expired_before", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Index("audit_cuts_chain_idx", "chain_id", "first_seq"),
)

# Secrets the database keeps for its readers (revision 0003): the key that authenticates page
# cursors, made at random when the schema is created, so every process reading this database
# accepts the cursors the others issue.
CURSOR_SECRET = "cursor_key"  # noqa: S105 - the name of the audit_secrets row, not a secret
audit_secrets = Table(
    "audit_secrets",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

# API tokens of the viewer's pull API (``auditledger tokens``): only a SHA-256 of each token is
# kept. Not append-only: revoking sets revoked_at.
audit_api_tokens = Table(
    "audit_api_tokens",
    metadata,
    Column("id", Uuid(as_uuid=True), primary_key=True),
    Column("workspace_id", Uuid(as_uuid=True), ForeignKey("workspaces.id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("token_hash", LargeBinary, nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

# Column order of audit_logs rows as the writer produces them.
AUDIT_LOG_COLUMNS: tuple[str, ...] = (
    "id",
    "user_id",
    "workspace_id",
    "ip_address",
    "user_agent",
    "action",
    "resource",
    "resource_id",
    "details",
    "previous_value",
    "new_value",
    "created_at",
    "sanitised",
)

__all__ = [
    "AUDIT_LOG_COLUMNS",
    "audit_api_tokens",
    "audit_checkpoints",
    "audit_cuts",
    "audit_logs",
    "audit_quarantine",
    "audit_retention",
    "audit_secrets",
    "metadata",
    "workspaces",
]
