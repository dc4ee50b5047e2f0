"""Tamper evidence: chain columns, stored checkpoints, append-only triggers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

The triggers refuse UPDATE, DELETE and TRUNCATE on audit_logs, audit_checkpoints and
audit_quarantine for every role, the owner included. They do not stop a superuser (who can
disable them or set ``session_replication_role``): the hash chains and signed checkpoints are
what detect that. Autogenerate cannot see triggers; tests/test_tamper.py checks them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

APPEND_ONLY = ("audit_logs", "audit_checkpoints", "audit_quarantine")

_PG_FUNCTION = """
CREATE FUNCTION auditledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'auditledger: % on % is refused: the audit log is append-only',
        TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def upgrade() -> None:
    with op.batch_alter_table("audit_logs") as batch:
        batch.add_column(sa.Column("chain_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("chain_seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("chain_hash", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("canonical", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("pii_salt", sa.LargeBinary(), nullable=True))
    op.create_index("audit_logs_chain_idx", "audit_logs", ["chain_id", "chain_seq"], unique=True)
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_checkpoints"),
    )
    op.create_index("audit_checkpoints_created_at_idx", "audit_checkpoints", ["created_at"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        for table in APPEND_ONLY:
            # Statement-level, so even a DELETE matching nothing is refused; TRUNCATE needs
            # its own trigger because it never fires DELETE triggers.
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
                " FOR EACH STATEMENT EXECUTE FUNCTION auditledger_refuse_change()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
                " FOR EACH STATEMENT EXECUTE FUNCTION auditledger_refuse_change()"
            )
    else:
        # SQLite has no TRUNCATE; its "DELETE without WHERE" shortcut is disabled by triggers.
        for table in APPEND_ONLY:
            for operation in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table}"
                    f" BEGIN SELECT RAISE(ABORT, 'auditledger: {operation} on {table} is"
                    " refused: the audit log is append-only'); END"
                )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS auditledger_refuse_change()")
    else:
        for table in APPEND_ONLY:
            for operation in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation}")
    op.drop_index("audit_checkpoints_created_at_idx", table_name="audit_checkpoints")
    op.drop_table("audit_checkpoints")
    op.drop_index("audit_logs_chain_idx", table_name="audit_logs")
    with op.batch_alter_table("audit_logs") as batch:
        for column in ("pii_salt", "canonical", "chain_hash", "chain_seq", "chain_id"):
            batch.drop_column(column)
