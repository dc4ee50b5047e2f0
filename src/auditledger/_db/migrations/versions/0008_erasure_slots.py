"""An UPDATE of a version 2 event may only erase: each value goes together with its own salt.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

Revision 0004 let each personal value become NULL and each 16-byte salt slot become zeros,
independently, and the whole salt become NULL. For an event in canonical form 2 that let the
owner drop every salt at once, null a value and keep the salt that opens its commitment, or
zero a salt and keep its value: verify reports each, but the database should refuse them. For
such an event (canonical bytes starting ``[2,``) the trigger now reads which fields hold a
commitment from the canonical bytes, and so where each field's salt lies in ``pii_salt`` (one
slot per commitment, in field order), and lets through exactly: every committed value either
unchanged with its slot unchanged, or NULL with its slot zeroed; every value without a
commitment NULL; ``pii_salt`` as long as before (and NULL only if it was), the bytes past the
last slot unchanged; the fixed columns unchanged; something changed. A canonical form that
starts ``[2,`` but is not JSON is refused (erasure leaves such a row alone). Rows in other
forms keep the rule of 0004: version 1 committed its values with one salt, which erasure sets
to NULL. ``audit_quarantine``'s trigger is unchanged. tests/test_erasure_trigger.py checks it.
"""

from __future__ import annotations

from collections.abc import Callable

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Each erasable column and its position in the version 2 canonical array (_chain/v2.py).
ERASABLE = (
    ("user_id", 6),
    ("ip_address", 7),
    ("user_agent", 8),
    ("resource_id", 9),
    ("details", 10),
    ("previous_value", 11),
    ("new_value", 12),
    ("sanitised", 13),
)
PERSONAL = tuple(name for name, _ in ERASABLE)
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
SALT = 16
MAX_SALTS = 8
_REFUSED = "the audit log is append-only; an UPDATE may only erase personal values"


# ---- 0004's rule, kept for rows that are not version 2 (and restored by the downgrade) ----


def _salt_erased(same: str, zeros: str, substr: str) -> str:
    """SQL: the new salt is the old one with some 16-byte slots zeroed (or NULL)."""
    new, old = "NEW.pii_salt", "OLD.pii_salt"
    slots = " AND ".join(
        f"({substr}({new}, {16 * i + 1}, 16) = {substr}({old}, {16 * i + 1}, 16)"
        f" OR {substr}({new}, {16 * i + 1}, 16) = {zeros})"
        for i in range(MAX_SALTS)
    )
    return (
        f"({new} {same} {old} OR {new} IS NULL"
        f" OR (length({new}) = length({old}) AND length({old}) <= {16 * MAX_SALTS}"
        f" AND {slots}))"
    )


def _fixed_and_changed(same: str) -> tuple[str, str]:
    fixed = " AND ".join(f"NEW.{c} {same} OLD.{c}" for c in FIXED)
    changed = " OR ".join(f"NOT (NEW.{c} {same} OLD.{c})" for c in (*PERSONAL, "pii_salt"))
    return fixed, f"({changed})"


def _v1_allowed(same: str, zeros: str, substr: str = "substr") -> str:
    fixed, changed = _fixed_and_changed(same)
    personal = " AND ".join(f"(NEW.{c} IS NULL OR NEW.{c} {same} OLD.{c})" for c in PERSONAL)
    return f"{fixed} AND {personal} AND {_salt_erased(same, zeros, substr)} AND {changed}"


# ---- the version 2 rule -------------------------------------------------------------------


def _v2_allowed(same: str, zeros: str, committed: Callable[[int], str]) -> str:
    """SQL: the UPDATE only erases values of a version 2 row, each with its own salt slot.

    ``committed(position)`` is SQL that is true when the canonical array holds a commitment at
    that position; a field's slot starts after one slot per commitment before it."""
    fixed, changed = _fixed_and_changed(same)
    new, old = "NEW.pii_salt", "OLD.pii_salt"
    counts = [f"CASE WHEN {committed(p)} THEN 1 ELSE 0 END" for _, p in ERASABLE]
    fields = []
    for i, (name, position) in enumerate(ERASABLE):
        start = f"(1 + {SALT} * ({' + '.join(counts[:i])}))" if i else "1"
        new_slot, old_slot = f"substr({new}, {start}, {SALT})", f"substr({old}, {start}, {SALT})"
        fields.append(
            f"CASE WHEN {committed(position)} THEN"
            f" ((NEW.{name} {same} OLD.{name} AND {new_slot} {same} {old_slot})"
            f" OR (NEW.{name} IS NULL AND {new_slot} = {zeros}))"
            f" ELSE NEW.{name} IS NULL END"
        )
    tail = f"(1 + {SALT} * ({' + '.join(counts)}))"
    salt = (
        f"({new} {same} {old} OR ({new} IS NOT NULL AND length({new}) = length({old})))"
        f" AND substr({new}, {tail}) {same} substr({old}, {tail})"
    )
    return " AND ".join((fixed, salt, *fields, changed))


_PG_ZEROS = "'\\x" + "00" * SALT + "'::bytea"
_PG_SAME = "IS NOT DISTINCT FROM"


def _pg_function(body: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION auditledger_erasure_only() RETURNS trigger LANGUAGE plpgsql AS $$
{body}
    RAISE EXCEPTION 'auditledger: UPDATE on % is refused: {_REFUSED}', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


# The canonical bytes are parsed once per row; one that does not parse is refused below.
_PG_LOGS = _pg_function(f"""DECLARE
    hashed jsonb;
BEGIN
    IF substr(OLD.canonical, 1, 3) = '\\x5b322c'::bytea THEN
        BEGIN
            hashed := convert_from(OLD.canonical, 'UTF8')::jsonb;
        EXCEPTION WHEN data_exception THEN
            hashed := NULL;
        END;
        -- In parentheses: PL/pgSQL would end the condition at the first CASE's THEN.
        IF jsonb_typeof(hashed) = 'array'
           AND ({_v2_allowed(_PG_SAME, _PG_ZEROS, lambda p: f"hashed->>{p} IS NOT NULL")}) THEN
            RETURN NEW;
        END IF;
    ELSIF {_v1_allowed(_PG_SAME, _PG_ZEROS, "substring")} THEN
        RETURN NEW;
    END IF;""")
_PG_OLD = _pg_function(f"""BEGIN
    IF {_v1_allowed(_PG_SAME, _PG_ZEROS, "substring")} THEN
        RETURN NEW;
    END IF;""")

# SQLite: the array's eight commitments are read once, in a subquery over OLD; json_valid
# first, since json_extract raises on text that is not JSON.
_SQLITE_TEXT = "CAST(OLD.canonical AS TEXT)"
_SQLITE_COMMITTED = ", ".join(f"json_extract(t, '$[{p}]') AS c{p}" for _, p in ERASABLE)
_SQLITE_V2 = (
    f"(SELECT {_v2_allowed('IS', 'zeroblob(16)', lambda p: f'c{p} IS NOT NULL')}"
    f" FROM (SELECT {_SQLITE_COMMITTED} FROM (SELECT {_SQLITE_TEXT} AS t)))"
)
_SQLITE_ALLOWED = (
    "CASE WHEN substr(CAST(OLD.canonical AS BLOB), 1, 3) = X'5B322C' THEN"
    f" CASE WHEN json_valid({_SQLITE_TEXT}) THEN {_SQLITE_V2} ELSE 0 END"
    f" ELSE {_v1_allowed('IS', 'zeroblob(16)')} END"
)


def _sqlite_trigger(allowed: str) -> str:
    # coalesce: a comparison with NULL is NULL, and a NULL WHEN would let the UPDATE through.
    return (
        "CREATE TRIGGER audit_logs_erase_only BEFORE UPDATE ON audit_logs WHEN NOT coalesce(("
        + allowed
        + "), 0) BEGIN SELECT RAISE(ABORT, 'auditledger: UPDATE on audit_logs is refused:"
        f" {_REFUSED}'); END"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_LOGS)
    else:
        op.execute("DROP TRIGGER audit_logs_erase_only")
        op.execute(_sqlite_trigger(_SQLITE_ALLOWED))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_OLD)
    else:
        op.execute("DROP TRIGGER audit_logs_erase_only")
        op.execute(_sqlite_trigger(_v1_allowed("IS", "zeroblob(16)")))
