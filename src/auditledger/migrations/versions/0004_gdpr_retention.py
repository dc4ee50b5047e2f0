"""GDPR erasure: the triggers let an UPDATE do nothing but erase personal values.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-03

Revision 0002 refused every UPDATE. Erasure (``auditledger gdpr erase``) must set personal
values to NULL and zero their salts, so the UPDATE trigger of ``audit_logs`` now lets a row
change in exactly that way and no other: every other column, the canonical bytes and the chain
columns stay as they are; a personal value may only become NULL; each 16-byte salt may only
become zeros (or, for a version 1 row, the whole salt NULL). In ``audit_quarantine`` only the
payload may change, to one marked ``_erased``. DELETE and TRUNCATE stay refused. The
application's insert-only role has no UPDATE privilege at all: the trigger is what holds the
owner to erasure. Autogenerate cannot see triggers; tests/test_gdpr_erasure.py checks them.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0002"
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


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_LOGS)
        op.execute(_PG_QUARANTINE)
        for table, function in (
            ("audit_logs", "auditledger_erasure_only"),
            ("audit_quarantine", "auditledger_quarantine_erasure_only"),
        ):
            op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
            op.execute(
                f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}"
                " FOR EACH STATEMENT EXECUTE FUNCTION auditledger_refuse_change()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_erase_only BEFORE UPDATE ON {table}"
                f" FOR EACH ROW EXECUTE FUNCTION {function}()"
            )
    else:
        op.execute("DROP TRIGGER audit_logs_no_update")
        op.execute("DROP TRIGGER audit_quarantine_no_update")
        op.execute(_SQLITE_LOGS)
        op.execute(_SQLITE_QUARANTINE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("audit_logs", "audit_quarantine"):
            op.execute(f"DROP TRIGGER {table}_erase_only ON {table}")
            op.execute(f"DROP TRIGGER {table}_no_delete ON {table}")
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
                " FOR EACH STATEMENT EXECUTE FUNCTION auditledger_refuse_change()"
            )
        op.execute("DROP FUNCTION auditledger_erasure_only()")
        op.execute("DROP FUNCTION auditledger_quarantine_erasure_only()")
    else:
        for table in ("audit_logs", "audit_quarantine"):
            op.execute(f"DROP TRIGGER {table}_erase_only")
            op.execute(
                f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}"
                f" BEGIN SELECT RAISE(ABORT, 'auditledger: UPDATE on {table} is"
                " refused: the audit log is append-only'); END"
            )
