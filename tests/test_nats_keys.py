"""Publisher keys: a message signed by a publisher is read as an unsigned one is; an ingester
holding keys refuses any message not signed with one of them, with a reason; keys are
checked when given and never shown."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from auditledger import AuditLogger, ConfigurationError, WorkspaceRef
from auditledger._nats.auth import (
    ENV_NATS_KEY,
    MAC_HEADER,
    key_ring,
    new_key,
    parse_keys,
    publisher_key,
    sign,
)
from auditledger._nats.decode import decode_stream_message
from auditledger._nats.publisher import _headers_for, messages
from auditledger._nats.wire import ENCODING_HEADER, ZSTD, compress
from tests.helpers import cli

KEY = "k" * 20 + "-publisher-key-one"
OTHER = "o" * 20 + "-publisher-key-two"
SUBJECT = "audit.v1.8.3"


def _rows(count: int) -> list[tuple[object, ...]]:
    ws = uuid.uuid4()
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    fields = ("203.0.113.7", "agent", "auth.login", "user", "U1", '{"a":1,"b":[true,null]}')
    return [
        (uuid.uuid4(), f"U{i}", ws, *fields, None, '"x"', at.replace(microsecond=i), None)
        for i in range(count)
    ]


def _signed(rows: list[tuple[object, ...]], key: str = KEY) -> tuple[bytes, dict[str, str]]:
    """One message as the publisher sends it with ``key``: compressed, with its headers."""
    [(_, mid, body, _)] = messages(rows, [], 1)
    data = compress(body)
    return data, _headers_for(parse_keys(key)[0], SUBJECT, mid, data)


def test_a_signed_message_is_read_exactly_as_an_unsigned_one() -> None:
    rows = _rows(40)
    data, headers = _signed(rows)
    assert headers[MAC_HEADER].startswith(parse_keys(KEY)[0].key_id + ":")
    ring = key_ring(parse_keys(f"{OTHER} {KEY}"))  # rotation: either key is accepted
    assert decode_stream_message(data, headers, SUBJECT, ring) == (rows, [], 0)
    # An ingester without keys ignores the signature and checks everything.
    assert decode_stream_message(data, headers, SUBJECT) == (rows, [], 0)


def _altered(case: str) -> tuple[bytes, dict[str, str], str]:
    data, headers = _signed(_rows(5))
    subject = SUBJECT
    if case == "no signature":
        del headers[MAC_HEADER]
    elif case == "another key":
        data, headers = _signed(_rows(5), OTHER)
    elif case == "body changed":
        plain = _rows(5)
        data = compress(messages(plain, [], 1)[0][2])
    elif case == "moved to another partition":
        subject = "audit.v1.8.4"
    elif case == "another message id":
        headers["Nats-Msg-Id"] = "f" * 64
    elif case == "signature spoilt":
        key_id, _, mac = headers[MAC_HEADER].partition(":")
        headers[MAC_HEADER] = f"{key_id}:{mac[::-1]}"
    elif case == "encoding header dropped":
        del headers[ENCODING_HEADER]
    return data, headers, subject


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no signature", "not signed with a publisher key"),
        ("another key", "signed with a key this ingester does not hold"),
        ("body changed", "a signature that does not match"),
        ("moved to another partition", "a signature that does not match"),
        ("another message id", "a signature that does not match"),
        ("signature spoilt", "a signature that does not match"),
        ("encoding header dropped", "a signature that does not match"),
    ],
)
def test_a_message_not_signed_with_a_held_key_is_refused(case: str, reason: str) -> None:
    data, headers, subject = _altered(case)
    rows, kept, bad = decode_stream_message(data, headers, subject, key_ring(parse_keys(KEY)))
    assert (rows, bad, len(kept)) == ([], 1, 1)
    assert kept[0][1] == f"refused stream message ({reason})"
    assert data not in kept[0][2]  # a digest of what was sent, never the events themselves


def test_keys_are_checked_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="at least 32 characters") as short:
        parse_keys("too-short-a-secret")
    assert "too-short-a-secret" not in str(short.value)
    key = parse_keys(KEY)[0]
    assert KEY not in repr(key)
    assert key.key_id in repr(key)
    assert parse_keys(OTHER)[0].key_id != key.key_id
    made = {new_key() for _ in range(3)}
    assert len(made) == 3
    assert all(len(k) >= 32 and k.isascii() and " " not in k for k in made)
    # The publisher signs with the first key of the variable: one value serves both sides
    # while keys rotate.
    monkeypatch.setenv(ENV_NATS_KEY, f"{OTHER} {KEY}")
    assert publisher_key(None) == parse_keys(OTHER)[0]
    assert publisher_key(KEY) == key  # an argument wins
    monkeypatch.delenv(ENV_NATS_KEY)
    assert publisher_key(None) is None
    for argument in (" ", f"{KEY} {OTHER}"):
        with pytest.raises(ConfigurationError, match="one key"):
            publisher_key(argument)


def test_the_logger_refuses_a_key_it_cannot_use(tmp_path: object) -> None:
    with pytest.raises(ConfigurationError, match="at least 32"):
        AuditLogger(nats_url="nats://127.0.0.1:4222", nats_key="short", spool_dir=str(tmp_path))
    with pytest.raises(ConfigurationError, match="only with nats_url"):
        AuditLogger(f"sqlite:///{tmp_path}/a.db", nats_key=KEY, spool_dir=str(tmp_path))


def test_the_signature_covers_the_compressed_body_as_sent() -> None:
    key = parse_keys(KEY)[0]
    data, headers = _signed(_rows(3))
    assert headers[ENCODING_HEADER] == ZSTD
    assert headers[MAC_HEADER] == sign(key, SUBJECT, headers["Nats-Msg-Id"], ZSTD, data)


def test_new_key_prints_a_usable_key_and_ingest_refuses_a_short_one() -> None:
    made = cli("nats", "new-key")
    assert made.returncode == 0, made.stderr
    assert len(parse_keys(made.stdout)) == 1
    refused = cli(
        "ingest", "--nats-url", "nats://127.0.0.1:1", "--database-url",
        "postgresql://u@127.0.0.1:1/x", "--nats-key", "secret-but-short",
    )  # fmt: skip
    assert refused.returncode != 0
    assert "at least 32 characters" in refused.stdout + refused.stderr
    assert "secret-but-short" not in refused.stdout + refused.stderr


def test_workspace_references_travel_signed_too() -> None:
    rows = [(*r[:2], WorkspaceRef("T9", None, "Acme", True), *r[3:]) for r in _rows(3)]
    data, headers = _signed(rows)
    assert decode_stream_message(data, headers, SUBJECT, key_ring(parse_keys(KEY))) == (
        rows,
        [],
        0,
    )


@pytest.mark.parametrize("forged", ["é", "\udcff", "ab\x00", ":", "x" * 200])
def test_any_forged_signature_is_refused_never_raised(forged: str) -> None:
    """A hand-made header naming a key the ingester holds (key ids are not secret) with any
    text after it: refused. An exception would give the partition back, and the next owner
    would meet the same message."""
    data, headers = _signed(_rows(2))
    headers[MAC_HEADER] = f"{parse_keys(KEY)[0].key_id}:{forged}"
    rows, kept, bad = decode_stream_message(data, headers, SUBJECT, key_ring(parse_keys(KEY)))
    assert (rows, bad) == ([], 1)
    assert kept[0][1] == "refused stream message (a signature that does not match)"


def test_the_signed_parts_cannot_be_shifted_into_each_other() -> None:
    key, body = parse_keys(KEY)[0], b"body"
    assert sign(key, "a", "b\nc", ZSTD, body) != sign(key, "a\nb", "c", ZSTD, body)
    data, headers = _signed(_rows(2))
    headers[ENCODING_HEADER] = ""  # an empty header is not an absent one
    ring = key_ring(parse_keys(KEY))
    del headers[ENCODING_HEADER]
    assert decode_stream_message(data, headers, SUBJECT, ring)[2] == 1


@dataclass
class _Change:
    user: str
    amount: int


def test_a_dataclass_in_details_travels_in_the_spelling_verify_rebuilds() -> None:
    """orjson writes a dataclass's fields in declaration order; the canonical form commits to
    sorted keys. A signed message is not respelt by the ingester, so the publisher must
    already send the sorted form (the direct writer stores the same text)."""
    from auditledger._write.capture import SanitisedJson, capture_json

    captured = capture_json({"change": _Change("U1", 5)}, "details")
    assert isinstance(captured, SanitisedJson)
    assert (captured.data, captured.notes) == ('{"change":{"amount":5,"user":"U1"}}', [])
