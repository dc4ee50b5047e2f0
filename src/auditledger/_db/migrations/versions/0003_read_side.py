"""Read side: indexes for keyset pages, and the key that authenticates page cursors.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

A workspace's pages are in chain order; the existing chain index serves its newest events,
these serve one user, one action and a time range of a workspace, even in PostgreSQL's generic
plans of prepared statements. bench/read.py prints the plans that rely on them.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_NEW = {
    "audit_logs_chain_user_idx": ["chain_id", "user_id", "chain_seq"],
    "audit_logs_chain_action_idx": ["chain_id", "action", "chain_seq"],
    "audit_logs_chain_created_at_idx": ["chain_id", "created_at"],
}


def upgrade() -> None:
    for name, columns in _NEW.items():
        op.create_index(name, "audit_logs", columns)
    secrets = op.create_table(
        "audit_secrets",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_audit_secrets"),
    )
    op.bulk_insert(secrets, [{"name": "cursor_key", "value": os.urandom(32)}])


def downgrade() -> None:
    op.drop_table("audit_secrets")
    for name in _NEW:
        op.drop_index(name, table_name="audit_logs")
