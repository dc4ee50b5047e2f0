"""The key that authenticates page cursors: given, from the environment, or the database's."""

from __future__ import annotations

import hashlib
import os

from sqlalchemy import Connection, inspect, select

from .._db.schema import CURSOR_SECRET, audit_secrets
from .._errors import SchemaError, describe_database_error

ENV_CURSOR_KEY = "AUDITLEDGER_CURSOR_KEY"


def cursor_key(conn: Connection, given: bytes | str | None) -> bytes:
    """``given`` or AUDITLEDGER_CURSOR_KEY when set (every viewer process shares it), else
    the random key revision 0003 stored in the database, so the cursor one command prints
    works in the next one against the same database."""
    chosen = given if given is not None else os.environ.get(ENV_CURSOR_KEY)
    if chosen:
        raw = chosen.encode() if isinstance(chosen, str) else chosen
        return hashlib.sha256(b"auditledger/cursor/v1\x00" + raw).digest()
    try:
        stored = conn.execute(
            select(audit_secrets.c.value).where(audit_secrets.c.name == CURSOR_SECRET)
        ).scalar()
    except Exception as exc:
        raise SchemaError(_why_unreadable(conn, exc)) from exc
    if stored is None:
        raise SchemaError(
            "the database's cursor key is missing (its audit_secrets row was deleted): run"
            " `auditledger db upgrade` with the owner's URL to store a new one, or set"
            f" {ENV_CURSOR_KEY}"
        )
    return bytes(stored)


def _why_unreadable(conn: Connection, exc: Exception) -> str:
    if "permission denied" in str(exc).lower():
        return describe_database_error(exc)
    conn.rollback()  # PostgreSQL refuses every statement after a failed one in a transaction
    if not inspect(conn).has_table("audit_logs"):
        return "the database has no auditledger schema: run `auditledger db upgrade`"
    return (
        "the database has no cursor key (schema older than revision 0003): run"
        " `auditledger db upgrade`"
    )
