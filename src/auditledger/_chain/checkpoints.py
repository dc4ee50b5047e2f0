"""Signed checkpoints: Ed25519 statements of every chain's head.

A checkpoint body is JSON with sorted keys::

    {"created_at_us": ..., "format": "auditledger/checkpoint/v1", "heads": [[chain, seq, hash
     hex], ...], "id": "...", "key_id": "..."}

It is stored in ``audit_checkpoints`` and, by ``auditledger checkpoint --out FILE``, appended to
a file kept outside the database: one JSON line ``{"body": <body text>, "signature": <base64>}``.
Only the holder of the private key can make one; anyone with the public key can check one. The
key id (the first 16 hex digits of SHA-256 of the raw public key) lets keys be rotated.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from .._errors import ConfigurationError, MissingExtraError
from .._ids import uuid7_from_ns
from .canonical import micros

FORMAT = "auditledger/checkpoint/v1"
ENV_SIGNING_KEY = "AUDITLEDGER_SIGNING_KEY"
PRIVATE_NAME, PUBLIC_NAME = "signing.key", "signing.pub"

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )
except ImportError:  # pragma: no cover - exercised only without the extra
    _HAVE_CRYPTOGRAPHY = False
else:
    _HAVE_CRYPTOGRAPHY = True


def _require_cryptography() -> None:
    if not _HAVE_CRYPTOGRAPHY:
        raise MissingExtraError("signing", "cryptography")


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Signer:
    """A private key loaded once; signing is all it does (its bytes are never logged)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.key_id = key_id(private.public_key())

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Signer:
        _require_cryptography()
        try:
            data = Path(path).read_bytes()
            private = serialization.load_pem_private_key(data, password=None)
        except (OSError, ValueError, TypeError) as exc:
            # The path may be shown; the content never is.
            raise ConfigurationError(
                f"cannot load the signing key {os.fspath(path)!r} ({type(exc).__name__})"
            ) from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise ConfigurationError("the signing key must be an Ed25519 key")
        return cls(private)

    def sign(self, body: bytes) -> bytes:
        return self._private.sign(body)

    def public_pem(self) -> bytes:
        """The public half, as ``auditledger keys generate`` writes it to signing.pub."""
        return self._private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def load_public_keys(paths: Iterable[str | os.PathLike[str]]) -> dict[str, Ed25519PublicKey]:
    _require_cryptography()
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        try:
            public = serialization.load_pem_public_key(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot load the public key {os.fspath(path)!r} ({type(exc).__name__})"
            ) from exc
        if not isinstance(public, Ed25519PublicKey):
            raise ConfigurationError(f"{os.fspath(path)!r} is not an Ed25519 public key")
        keys[key_id(public)] = public
    return keys


def generate_keys(directory: str | os.PathLike[str], *, overwrite: bool = False) -> str:
    """Write ``signing.key`` (mode 0600) and ``signing.pub`` in ``directory``; return the key id."""
    _require_cryptography()
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    if not overwrite and (private_path.exists() or public_path.exists()):
        raise ConfigurationError(f"{folder} already holds a key pair; refusing to replace it")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created with 0600 from the start: a chmod afterwards leaves a window where it is readable.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(private_path, flags, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(private_path, 0o600)  # O_CREAT's mode does not apply to an existing file
    public = private.public_key()
    public_path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_id(public)


ChainHead = tuple[uuid.UUID, int, bytes]


@dataclass(frozen=True)
class Checkpoint:
    id: uuid.UUID
    created_at: datetime
    key_id: str
    body: bytes
    signature: bytes

    @property
    def heads(self) -> list[ChainHead]:
        """The chain heads the body states (call only after the signature checked out)."""
        data = orjson.loads(self.body)
        return [(uuid.UUID(c), int(s), bytes.fromhex(h)) for c, s, h in data["heads"]]

    def verify(self, keys: dict[str, Ed25519PublicKey]) -> str | None:
        """None when the signature is good, else what is wrong."""
        public = keys.get(self.key_id)
        if public is None:
            return f"no public key with id {self.key_id} was given"
        try:
            public.verify(self.signature, self.body)
        except InvalidSignature:
            return "the signature does not match the body"
        try:
            data = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return "the body is not JSON"
        if (
            data.get("format") != FORMAT
            or data.get("id") != str(self.id)
            or data.get("key_id") != self.key_id
            or data.get("created_at_us") != micros(self.created_at)
        ):
            return "the stored columns do not match the signed body"
        return None

    def to_line(self) -> bytes:
        record = {
            "body": self.body.decode(),
            "signature": base64.b64encode(self.signature).decode(),
        }
        return orjson.dumps(record) + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Checkpoint:
        """A checkpoint from the external file; its fields come from the signed body."""
        record = orjson.loads(line)
        body = record["body"].encode()
        data = orjson.loads(body)
        created = _EPOCH + _us(data["created_at_us"])
        return cls(
            id=uuid.UUID(data["id"]),
            created_at=created,
            key_id=str(data["key_id"]),
            body=body,
            signature=base64.b64decode(record["signature"]),
        )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(value: int) -> timedelta:
    return timedelta(microseconds=int(value))


def make_checkpoint(signer: Signer, heads: list[ChainHead], now_ns: int) -> Checkpoint:
    checkpoint_id = uuid7_from_ns(now_ns, os.urandom(10))
    created = _EPOCH + _us(now_ns // 1000)
    body = orjson.dumps(
        {
            "format": FORMAT,
            "id": str(checkpoint_id),
            "created_at_us": now_ns // 1000,
            "key_id": signer.key_id,
            "heads": [[str(c), s, h.hex()] for c, s, h in sorted(heads)],
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return Checkpoint(checkpoint_id, created, signer.key_id, body, signer.sign(body))


def read_checkpoint_file(path: str | os.PathLike[str]) -> list[Checkpoint]:
    """Every checkpoint in the file, oldest first; a damaged line raises ValueError."""
    out = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(Checkpoint.from_line(line))
            except Exception as exc:  # any malformed line, whatever it raises, is damage
                raise ValueError(f"line {number} of the checkpoint file is damaged") from exc
    return out


def append_checkpoint_file(path: str | os.PathLike[str], checkpoint: Checkpoint) -> None:
    with open(path, "ab") as f:
        f.write(checkpoint.to_line())
        f.flush()
        os.fsync(f.fileno())


@dataclass
class CheckpointSchedule:
    """When the writer signs the next checkpoint (``AuditLogger(signing_key=...)``)."""

    signer: Signer
    interval: float
    next_due: float = 0.0  # the first tick signs at once: a checkpoint per logger start

    def due(self, now: float) -> bool:
        if now < self.next_due:
            return False
        self.next_due = now + self.interval
        return True
