"""Retention may delete only below a cut the chain has reached, and never a chain's newest event.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

Revision 0004 let a DELETE through when every row it removed lay below its chain's newest cut.
A cut is a row the owner can insert: one naming a position past the chain's head let the owner
delete a whole chain, its newest event included, and nothing was left to show the loss. A
DELETE now counts only cuts whose first kept position the chain holds (at or below its head),
so the newest event always stays and a verifier always has a head to compare with the cut.
Whether the cut is genuinely signed is for the verifier, which holds the public keys.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_DELETE_REFUSED = (
    "the audit log is append-only; only retention may delete, and only below a recorded cut"
    " that the chain has reached"
)
# Statement-level, as in 0004: one set-based check per batch, the head of each chain read
# after the DELETE (what remains), through the (chain_id, chain_seq) index.
_PG_PREFIX_ONLY = f"""
CREATE OR REPLACE FUNCTION auditledger_prefix_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        WITH chains AS (
            SELECT chain_id, max(chain_seq) AS top, bool_or(chain_seq IS NULL) AS loose
            FROM gone GROUP BY chain_id
        )
        SELECT 1 FROM chains ch
        LEFT JOIN LATERAL (
            SELECT max(k.first_seq) AS first_kept FROM audit_cuts k
            WHERE k.chain_id = ch.chain_id AND k.first_seq <= (
                SELECT max(l.chain_seq) FROM audit_logs l WHERE l.chain_id = ch.chain_id)
        ) c ON true
        WHERE ch.chain_id IS NULL OR ch.loose OR c.first_kept IS NULL OR ch.top >= c.first_kept
    ) THEN
        RAISE EXCEPTION 'auditledger: DELETE on audit_logs is refused: {_DELETE_REFUSED}'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$$
"""
# Row-level, before each row goes: the row itself still counts towards its chain's head, and
# since it must lie below a cut at or under that head, it is never the head.
_SQLITE_PREFIX_ONLY = (
    "CREATE TRIGGER audit_logs_prefix_only BEFORE DELETE ON audit_logs WHEN NOT coalesce("
    "OLD.chain_seq < (SELECT max(first_seq) FROM audit_cuts WHERE chain_id = OLD.chain_id"
    " AND first_seq <= (SELECT max(chain_seq) FROM audit_logs WHERE chain_id = OLD.chain_id)),"
    f" 0) BEGIN SELECT RAISE(ABORT, 'auditledger: DELETE on audit_logs is refused:"
    f" {_DELETE_REFUSED}'); END"
)

# What 0004 installed, for the downgrade.
_OLD_REFUSED = (
    "the audit log is append-only; only retention may delete, and only below a recorded cut"
)
_PG_OLD = f"""
CREATE OR REPLACE FUNCTION auditledger_prefix_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM gone g
        LEFT JOIN (SELECT chain_id, max(first_seq) AS first_kept FROM audit_cuts
                   WHERE chain_id IS NOT NULL GROUP BY chain_id) c ON c.chain_id = g.chain_id
        WHERE g.chain_seq IS NULL OR c.first_kept IS NULL OR g.chain_seq >= c.first_kept
    ) THEN
        RAISE EXCEPTION 'auditledger: DELETE on audit_logs is refused: {_OLD_REFUSED}'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$$
"""
_SQLITE_OLD = (
    "CREATE TRIGGER audit_logs_prefix_only BEFORE DELETE ON audit_logs WHEN NOT coalesce("
    "OLD.chain_seq < (SELECT max(first_seq) FROM audit_cuts WHERE chain_id = OLD.chain_id), 0)"
    f" BEGIN SELECT RAISE(ABORT, 'auditledger: DELETE on audit_logs is refused:"
    f" {_OLD_REFUSED}'); END"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_PREFIX_ONLY)
    else:
        op.execute("DROP TRIGGER audit_logs_prefix_only")
        op.execute(_SQLITE_PREFIX_ONLY)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_OLD)
    else:
        op.execute("DROP TRIGGER audit_logs_prefix_only")
        op.execute(_SQLITE_OLD)
