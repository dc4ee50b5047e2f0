"""The key that authenticates page cursors: given, from the environment, or the database's."""

from __future__ import annotations

import hashlib
import os

from sqlalchemy import Connection, select

from .._db.schema import audit_secrets
from .._errors import SchemaError

ENV_CURSOR_KEY = "AUDITLEDGER_CURSOR_KEY"
CURSOR_SECRET = "cursor_key"  # noqa: S105 - the name of the row, not a secret


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
        raise SchemaError(
            "the database has no cursor key (schema older than revision 0003): run"
            " `auditledger db upgrade`"
        ) from exc
    if stored is None:
        raise SchemaError("the database has no cursor key: run `auditledger db upgrade`")
    return bytes(stored)
