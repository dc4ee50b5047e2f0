"""GDPR and retention: erasure-only UPDATEs, prefix-only DELETEs, retention policies, cuts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Revision 0002 refused every UPDATE. Erasure (``auditledger gdpr erase``) must set personal
values to NULL and zero their salts, so the UPDATE trigger of ``audit_logs`` now lets a row
change in exactly that way and no other: every other column, the canonical bytes and the chain
columns stay as they are; a personal value may only become NULL; each 16-byte salt may only
become zeros (or, for a version 1 row, the whole salt NULL). In ``audit_quarantine`` only the
payload may change, to one marked ``_erased``. The application's insert-only role has no
UPDATE privilege at all: the trigger is what holds the owner to erasure.

Retention (``auditledger retention apply``) records a signed cut in ``audit_cuts`` before it
deletes a chain's expired prefix: a DELETE on ``audit_logs`` is refused unless every row it
removes lies below its chain's newest cut, and on ``audit_quarantine`` unless every row is
older than the quarantine's newest horizon. TRUNCATE stays refused; ``audit_cuts`` is
append-only. Autogenerate cannot see triggers; tests/test_gdpr_erasure.py and
tests/test_retention.py check them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PERSONAL = (
    "user_id",
    "ip_address",
    "user_agent",
    "resource_id",
    "details",
    "previous_value",
    "new_value",
    "sanitised",
)
FIXED = (
    "id",
    "workspace_id",
    "action",
    "resource",
    "created_at",
    "chain_id",
    "chain_seq",
    "chain_hash",
    "canonical",
)
MAX_SALTS = 8
_REFUSED = "the audit log is append-only; an UPDATE may only erase personal values"


def _salt_erased(new: str, old: str, zeros: str, substr: str, length: str) -> str:
    """SQL: the new salt is the old one with some 16-byte slots zeroed (or NULL)."""
    slots = " AND ".join(
        f"({substr}({new}, {16 * i + 1}, 16) = {substr}({old}, {16 * i + 1}, 16)"
        f" OR {substr}({new}, {16 * i + 1}, 16) = {zeros})"
        for i in range(MAX_SALTS)
    )
    return (
        f"({new} IS NOT DISTINCT FROM {old} OR {new} IS NULL"
        f" OR ({length}({new}) = {length}({old}) AND {length}({old}) <= {16 * MAX_SALTS}"
        f" AND {slots}))"
    )


def _erasure_only(distinct: str, salt: str) -> str:
    fixed = " AND ".join(f"NEW.{c} {distinct} OLD.{c}" for c in FIXED)
    personal = " AND ".join(f"(NEW.{c} IS NULL OR NEW.{c} {distinct} OLD.{c})" for c in PERSONAL)
    changed = " OR ".join(f"NOT (NEW.{c} {distinct} OLD.{c})" for c in (*PERSONAL, "pii_salt"))
    return f"{fixed} AND {personal} AND {salt} AND ({changed})"


_PG_ZEROS = "'\\x" + "00" * 16 + "'::bytea"
_PG_ALLOWED = _erasure_only(
    "IS NOT DISTINCT FROM",
    _salt_erased("NEW.pii_salt", "OLD.pii_salt", _PG_ZEROS, "substring", "length"),
)
_PG_LOGS = f"""
CREATE FUNCTION auditledger_erasure_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF {_PG_ALLOWED} THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'auditledger: UPDATE on % is refused: {_REFUSED}', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""

_PG_QUARANTINE = f"""
CREATE FUNCTION auditledger_quarantine_erasure_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id = OLD.id AND NEW.reason = OLD.reason AND NEW.created_at = OLD.created_at
       AND NEW.quarantined_at = OLD.quarantined_at AND NEW.payload ? '_erased'
       AND NEW.payload IS DISTINCT FROM OLD.payload THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'auditledger: UPDATE on % is refused: {_REFUSED}', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""

_SQLITE_SALT = _salt_erased("NEW.pii_salt", "OLD.pii_salt", "zeroblob(16)", "substr", "length")
_SQLITE_LOGS = (
    # coalesce: a comparison with NULL is NULL, and a NULL WHEN would let the UPDATE through.
    "CREATE TRIGGER audit_logs_erase_only BEFORE UPDATE ON audit_logs WHEN NOT coalesce(("
    + _erasure_only("IS", _SQLITE_SALT.replace("IS NOT DISTINCT FROM", "IS"))
    + "), 0) BEGIN SELECT RAISE(ABORT, 'auditledger: UPDATE on audit_logs is refused:"
    f" {_REFUSED}'); END"
)

_SQLITE_QUARANTINE = (
    "CREATE TRIGGER audit_quarantine_erase_only BEFORE UPDATE ON audit_quarantine"
    " WHEN NOT coalesce(("
    "NEW.id IS OLD.id AND NEW.reason IS OLD.reason AND NEW.created_at IS OLD.created_at"
    " AND NEW.quarantined_at IS OLD.quarantined_at"
    " AND json_extract(NEW.payload, '$._erased') IS NOT NULL AND NEW.payload IS NOT OLD.payload"
    f"), 0) BEGIN SELECT RAISE(ABORT, 'auditledger: UPDATE on audit_quarantine is refused:"
    f" {_REFUSED}'); END"
)


_DELETE_REFUSED = (
    "the audit log is append-only; only retention may delete, and only below a recorded cut"
)
# Statement-level with the deleted rows as a table: one set-based check per batch of
# retention's DELETE, not a query per row.
_PG_PREFIX_ONLY = f"""
CREATE FUNCTION auditledger_prefix_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM gone g
        LEFT JOIN (SELECT chain_id, max(first_seq) AS first_kept FROM audit_cuts
                   WHERE chain_id IS NOT NULL GROUP BY chain_id) c ON c.chain_id = g.chain_id
        WHERE g.chain_seq IS NULL OR c.first_kept IS NULL OR g.chain_seq >= c.first_kept
    ) THEN
        RAISE EXCEPTION 'auditledger: DELETE on audit_logs is refused: {_DELETE_REFUSED}'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$$
"""
_PG_QUARANTINE_EXPIRED_ONLY = f"""
CREATE FUNCTION auditledger_quarantine_expired_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM gone g WHERE NOT coalesce(g.created_at < (
            SELECT max(expired_before) FROM audit_cuts WHERE chain_id IS NULL), false)
    ) THEN
        RAISE EXCEPTION 'auditledger: DELETE on audit_quarantine is refused: {_DELETE_REFUSED}'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$$
"""
_SQLITE_PREFIX_ONLY = (
    "CREATE TRIGGER audit_logs_prefix_only BEFORE DELETE ON audit_logs WHEN NOT coalesce("
    "OLD.chain_seq < (SELECT max(first_seq) FROM audit_cuts WHERE chain_id = OLD.chain_id), 0)"
    f" BEGIN SELECT RAISE(ABORT, 'auditledger: DELETE on audit_logs is refused:"
    f" {_DELETE_REFUSED}'); END"
)
_SQLITE_QUARANTINE_EXPIRED_ONLY = (
    "CREATE TRIGGER audit_quarantine_expired_only BEFORE DELETE ON audit_quarantine"
    " WHEN NOT coalesce(OLD.created_at < (SELECT max(expired_before) FROM audit_cuts"
    " WHERE chain_id IS NULL), 0)"
    f" BEGIN SELECT RAISE(ABORT, 'auditledger: DELETE on audit_quarantine is refused:"
    f" {_DELETE_REFUSED}'); END"
)


def _create_tables() -> None:
    op.create_table(
        "audit_retention",
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("days", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", name="pk_audit_retention"),
    )
    op.create_table(
        "audit_cuts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("chain_id", sa.Uuid(), nullable=True),
        sa.Column("first_seq", sa.BigInteger(), nullable=True),
        sa.Column("previous_hash", sa.LargeBinary(), nullable=True),
        sa.Column("expired_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_cuts"),
    )
    op.create_index("audit_cuts_chain_idx", "audit_cuts", ["chain_id", "first_seq"])


def upgrade() -> None:
    _create_tables()
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_LOGS)
        op.execute(_PG_QUARANTINE)
        op.execute(_PG_PREFIX_ONLY)
        op.execute(_PG_QUARANTINE_EXPIRED_ONLY)
        for table, function, delete in (
            ("audit_logs", "auditledger_erasure_only", "auditledger_prefix_only"),
            (
                "audit_quarantine",
                "auditledger_quarantine_erasure_only",
                "auditledger_quarantine_expired_only",
            ),
        ):
            op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
            op.execute(
                f"CREATE TRIGGER {table}_delete_below_cut AFTER DELETE ON {table}"
                f" REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION {delete}()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_erase_only BEFORE UPDATE ON {table}"
                f" FOR EACH ROW EXECUTE FUNCTION {function}()"
            )
        op.execute(
            "CREATE TRIGGER audit_cuts_append_only BEFORE UPDATE OR DELETE ON audit_cuts"
            " FOR EACH STATEMENT EXECUTE FUNCTION auditledger_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER audit_cuts_no_truncate BEFORE TRUNCATE ON audit_cuts"
            " FOR EACH STATEMENT EXECUTE FUNCTION auditledger_refuse_change()"
        )
    else:
        for table in ("audit_logs", "audit_quarantine"):
            op.execute(f"DROP TRIGGER {table}_no_update")
            op.execute(f"DROP TRIGGER {table}_no_delete")
        op.execute(_SQLITE_LOGS)
        op.execute(_SQLITE_QUARANTINE)
        op.execute(_SQLITE_PREFIX_ONLY)
        op.execute(_SQLITE_QUARANTINE_EXPIRED_ONLY)
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_cuts_no_{operation.lower()} BEFORE {operation} ON"
                f" audit_cuts BEGIN SELECT RAISE(ABORT, 'auditledger: {operation} on audit_cuts"
                " is refused: the audit log is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("audit_logs", "audit_quarantine"):
            op.execute(f"DROP TRIGGER {table}_erase_only ON {table}")
            op.execute(f"DROP TRIGGER {table}_delete_below_cut ON {table}")
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
                " FOR EACH STATEMENT EXECUTE FUNCTION auditledger_refuse_change()"
            )
        for function in (
            "auditledger_erasure_only",
            "auditledger_quarantine_erasure_only",
            "auditledger_prefix_only",
            "auditledger_quarantine_expired_only",
        ):
            op.execute(f"DROP FUNCTION {function}()")
    else:
        for table in ("audit_logs", "audit_quarantine"):
            op.execute(f"DROP TRIGGER {table}_erase_only")
        op.execute("DROP TRIGGER audit_logs_prefix_only")
        op.execute("DROP TRIGGER audit_quarantine_expired_only")
        for table in ("audit_logs", "audit_quarantine"):
            for operation in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON"
                    f" {table} BEGIN SELECT RAISE(ABORT, 'auditledger: {operation} on {table}"
                    " is refused: the audit log is append-only'); END"
                )
    op.drop_index("audit_cuts_chain_idx", table_name="audit_cuts")
    op.drop_table("audit_cuts")
    op.drop_table("audit_retention")
