"""Read side: time windows of a workspace page in (created_at, chain_seq) order.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

A workspace's newest events in a time range are ordered by ``(created_at, chain_seq)``; with
this index even PostgreSQL's generic plan of the prepared statement reads the page's rows in
order and stops, instead of reading the whole range and sorting it (a day of a busy workspace
is tens of thousands of rows). It replaces ``(chain_id, created_at)``, which it covers.
bench/read.py prints the plans that rely on it.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_OLD = "audit_logs_chain_created_at_idx"
_NEW = "audit_logs_chain_created_seq_idx"


def upgrade() -> None:
    op.create_index(_NEW, "audit_logs", ["chain_id", "created_at", "chain_seq"])
    op.drop_index(_OLD, table_name="audit_logs")


def downgrade() -> None:
    op.create_index(_OLD, "audit_logs", ["chain_id", "created_at"])
    op.drop_index(_NEW, table_name="audit_logs")
