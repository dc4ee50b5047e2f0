"""API tokens for the pull API: shown once, stored as SHA-256, one workspace each.

A token is 32 random bytes, so a plain SHA-256 is enough to make the stored column useless to
whoever reads it (no password-style stretching needed), and lookup is one indexed equality.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update

from .._db.schema import audit_api_tokens

PREFIX = "alt_"  # says what a leaked string is (secret scanners key on prefixes)
_MAX_NAME = 100


@dataclass(frozen=True)
class ApiToken:
    id: uuid.UUID
    workspace_id: uuid.UUID
    name: str
    created_at: datetime
    revoked_at: datetime | None = None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def create_token(engine: Engine, workspace_id: uuid.UUID, name: str) -> tuple[str, ApiToken]:
    """A new token for ``workspace_id``: the secret (returned once, never stored) and its row."""
    name = name.strip()
    if not name or len(name) > _MAX_NAME or any(ord(ch) < 32 for ch in name):
        raise ValueError(f"the token's name must be 1-{_MAX_NAME} printable characters")
    secret = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(uuid.uuid4(), workspace_id, name, datetime.now(UTC))
    with engine.begin() as conn:
        conn.execute(
            audit_api_tokens.insert().values(
                id=row.id,
                workspace_id=workspace_id,
                name=name,
                token_hash=_digest(secret),
                created_at=row.created_at,
            )
        )
    return secret, row


def list_tokens(engine: Engine) -> list[ApiToken]:
    query = select(audit_api_tokens).order_by(audit_api_tokens.c.created_at)
    with engine.connect() as conn:
        return [
            ApiToken(r.id, r.workspace_id, r.name, r.created_at, r.revoked_at)
            for r in conn.execute(query)
        ]


def revoke_token(engine: Engine, token_id: str) -> ApiToken:
    """Revoke the token whose id is ``token_id`` or starts with it (at least 8 characters)."""
    wanted = token_id.strip().lower().replace("-", "")
    if len(wanted) < 8 or any(ch not in "0123456789abcdef" for ch in wanted):
        raise LookupError("give the token's id (at least its first 8 characters)")
    matches = [t for t in list_tokens(engine) if t.id.hex.startswith(wanted)]
    if not matches:
        raise LookupError(f"no token has an id starting with {token_id!r}")
    if len(matches) > 1:
        raise LookupError(f"{len(matches)} tokens have ids starting with {token_id!r}")
    token = matches[0]
    if token.revoked_at is not None:
        return token
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            update(audit_api_tokens).where(audit_api_tokens.c.id == token.id).values(revoked_at=now)
        )
    return ApiToken(token.id, token.workspace_id, token.name, token.created_at, now)


def check_token(engine: Engine, secret: str) -> ApiToken | None:
    """The live token ``secret`` is, or None (unknown, revoked, or not one of ours)."""
    if not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    query = select(audit_api_tokens).where(audit_api_tokens.c.token_hash == _digest(secret))
    with engine.connect() as conn:
        r = conn.execute(query).first()
    if r is None or r.revoked_at is not None:
        return None
    return ApiToken(r.id, r.workspace_id, r.name, r.created_at, r.revoked_at)
