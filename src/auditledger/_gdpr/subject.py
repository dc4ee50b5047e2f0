"""Naming a data subject without storing their id: a keyed hash, and matching their values."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from .._errors import ConfigurationError
from .._read.subject_match import json_form

__all__ = ["json_form", "load_subject_key", "subject_hash"]

ENV_SUBJECT_KEY = "AUDITLEDGER_SUBJECT_KEY"
MIN_KEY_BYTES = 32


def load_subject_key(path: str | os.PathLike[str] | None) -> bytes:
    """The secret that keys subject hashes: the file given, else the one named by
    ``$AUDITLEDGER_SUBJECT_KEY``. Kept outside the database: with it, anyone could test every
    user id against the hashes (a keyed hash is pseudonymous, not anonymous)."""
    where = path if path is not None else os.environ.get(ENV_SUBJECT_KEY)
    if not where:
        raise ConfigurationError(
            f"a subject key is needed: --subject-key FILE or {ENV_SUBJECT_KEY}=FILE (any secret"
            f" file of at least {MIN_KEY_BYTES} bytes kept outside the database, such as the"
            " checkpoint signing key)"
        )
    try:
        key = Path(where).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the subject key ({exc.strerror})") from exc
    if len(key) < MIN_KEY_BYTES:
        raise ConfigurationError(f"the subject key must hold at least {MIN_KEY_BYTES} bytes")
    if b"PUBLIC KEY-----" in key or key.lstrip().startswith((b"ssh-", b"ecdsa-sha2-")):
        # A public key is no secret: anyone holding it could test user ids against hashes.
        raise ConfigurationError(
            "the subject key is a public key: give a secret file (such as signing.key, not"
            " signing.pub)"
        )
    return key


def subject_hash(key: bytes, user_id: str) -> str:
    """What events store instead of the subject's id: the same id always gives the same hash,
    so a second request for the same person can be matched."""
    mac = hmac.new(hashlib.sha256(b"auditledger/subject/v1\x00" + key).digest(), digestmod="sha256")
    mac.update(user_id.encode())
    return "hmac-sha256:" + mac.hexdigest()
