"""The viewer's API tokens: hashed, per workspace, revocable.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_api_tokens",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name="fk_audit_api_tokens_workspace_id_workspaces"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_audit_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_audit_api_tokens_token_hash"),
    )


def downgrade() -> None:
    op.drop_table("audit_api_tokens")
