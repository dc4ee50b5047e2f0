"""Initial schema: workspaces, audit_logs (the columns and indexes of the seed, the in-app
audit table this library replaces), audit_quarantine.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    # TEXT on SQLite: a column declared JSON has numeric affinity there and converts bare
    # numbers ("5", a 20-digit integer) on the way in (see _db.schema.SQLiteJSONText).
    return (
        sa.JSON().with_variant(postgresql.JSONB(), "postgresql").with_variant(sa.Text(), "sqlite")
    )


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workspaces",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("team_id", sa.Text(), nullable=False),
        sa.Column("enterprise_id", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", _ts(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.Column("updated_at", _ts(), server_default=sa.func.current_timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workspaces"),
        sa.UniqueConstraint("team_id", name="uq_workspaces_team_id"),
    )
    op.create_table(
        "audit_logs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("workspace_id", sa.Uuid(), nullable=True),
        sa.Column("ip_address", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("resource", sa.Text(), nullable=True),
        sa.Column("resource_id", sa.Text(), nullable=True),
        sa.Column("details", _json(), nullable=True),
        sa.Column("previous_value", _json(), nullable=True),
        sa.Column("new_value", _json(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("sanitised", _json(), nullable=True),
        sa.ForeignKeyConstraint(
            ["workspace_id"], ["workspaces.id"], name="fk_audit_logs_workspace_id_workspaces"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_audit_logs"),
    )
    op.create_index("audit_logs_workspace_idx", "audit_logs", ["workspace_id"])
    op.create_index("audit_logs_user_idx", "audit_logs", ["user_id"])
    op.create_index("audit_logs_action_idx", "audit_logs", ["action"])
    op.create_index("audit_logs_created_at_idx", "audit_logs", ["created_at"])
    op.create_index(
        "audit_logs_workspace_created_at_idx", "audit_logs", ["workspace_id", "created_at"]
    )
    op.create_table(
        "audit_quarantine",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column(
            "quarantined_at", _ts(), server_default=sa.func.current_timestamp(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_audit_quarantine"),
    )
    op.create_index("audit_quarantine_created_at_idx", "audit_quarantine", ["created_at"])


def downgrade() -> None:
    op.drop_table("audit_quarantine")
    op.drop_table("audit_logs")
    op.drop_table("workspaces")
