"""Publisher keys: stream messages signed by publishers, checked by ingesters.

JetStream takes a message from anyone allowed to publish on the stream's subjects. An
ingester without a key stores whatever is well-formed, so a hand-made event would be chained
like a real one. With a key shared by publishers and ingesters (``AUDITLEDGER_NATS_KEY``),
every message carries an HMAC-SHA256 of what identifies it (subject, ``Nats-Msg-Id``, content
encoding, body as sent), and an ingester holding keys stores only messages signed with one of
them; any other message is quarantined as refused (a digest, never its content).

A signed message was made by this library's publisher, which writes every JSON value in the
one spelling the canonical form commits to, so an ingester does not parse and print those
values again to check it (measured: about half of decoding an event).

An ingester may hold several keys (rotation: publishers move to a new key while ingesters
accept both); each signature names its key by a short id derived from the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from .._errors import ConfigurationError

ENV_NATS_KEY = "AUDITLEDGER_NATS_KEY"
MAC_HEADER = "Auditledger-Mac"
MIN_KEY_LENGTH = 32
_DOMAIN = b"auditledger/nats-message/v1\n"


@dataclass(frozen=True)
class NatsKey:
    key_id: str
    secret: bytes = field(repr=False)


def new_key() -> str:
    """A fresh key: 256 random bits, URL-safe (for environment variables and secret stores)."""
    return secrets.token_urlsafe(32)


def parse_keys(text: str) -> list[NatsKey]:
    """Keys separated by whitespace; raises ConfigurationError (never echoing a key)."""
    keys: list[NatsKey] = []
    for word in text.split():
        if len(word) < MIN_KEY_LENGTH:
            raise ConfigurationError(
                f"a NATS key must be at least {MIN_KEY_LENGTH} characters"
                " (`auditledger nats new-key` makes one)"
            )
        secret = word.encode()
        key_id = hashlib.sha256(b"auditledger/nats-key-id\n" + secret).hexdigest()[:8]
        keys.append(NatsKey(key_id, secret))
    return keys


def publisher_key(argument: str | None) -> NatsKey | None:
    """The key a publisher signs with: the argument, else ``AUDITLEDGER_NATS_KEY`` (its first
    key, so that publishers and ingesters can share one value while keys rotate)."""
    text = argument if argument is not None else os.environ.get(ENV_NATS_KEY, "")
    keys = parse_keys(text)
    if argument is not None and len(keys) != 1:
        raise ConfigurationError("nats_key must be one key (the variable may hold several)")
    return keys[0] if keys else None


def key_ring(keys: list[NatsKey]) -> dict[str, bytes]:
    return {k.key_id: k.secret for k in keys}


def _mac(
    secret: bytes, subject: str, msg_id: str | None, encoding: str | None, body: bytes
) -> bytes:
    # The parts as a JSON array: no two different (subject, id, encoding) can read the same
    # (a separator could appear inside a part), and an absent header is not an empty one.
    head = orjson.dumps([subject, msg_id, encoding])
    return hmac.digest(secret, _DOMAIN + head + b"\n" + body, "sha256").hex().encode()


def sign(key: NatsKey, subject: str, msg_id: str, encoding: str, body: bytes) -> str:
    """The ``Auditledger-Mac`` header's value for a message."""
    return f"{key.key_id}:{_mac(key.secret, subject, msg_id, encoding, body).decode()}"


def refusal(
    ring: Mapping[str, bytes],
    value: str | None,
    subject: str,
    msg_id: str | None,
    encoding: str | None,
    body: bytes,
) -> str | None:
    """Why a message is not signed by a key of ``ring``; None when it is."""
    if not value:
        return "not signed with a publisher key"
    key_id, _, mac = value.partition(":")
    secret = ring.get(key_id)
    if secret is None:
        return "signed with a key this ingester does not hold"
    # As bytes: compare_digest refuses str with characters beyond ASCII (a hand-made header
    # may hold any), and an exception here would stall the partition.
    given = mac.encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, _mac(secret, subject, msg_id, encoding, body)):
        return "a signature that does not match"
    return None
