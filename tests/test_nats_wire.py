"""The stream's message format: an event survives the trip exactly; anything else is refused
with a reason (the ingester quarantines it), never guessed at."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import orjson
import pytest
import zstandard

from auditledger import WorkspaceRef
from auditledger._nats.decode import decode, decode_message, decode_stream_message, poison_row
from auditledger._nats.partitions import partition_of, workspace_key
from auditledger._nats.publisher import MAX_BYTES, MAX_EVENTS, message_id, messages
from auditledger._nats.wire import (
    ENCODING_HEADER,
    ZSTD,
    WireError,
    compress,
    encode_batch,
    encode_item,
    encode_quarantine,
    encode_row,
)


def _row(workspace: object) -> tuple[object, ...]:
    return (
        uuid.uuid4(), "U1", workspace, "203.0.113.7", "agent", "auth.login", "user", "U1",
        '{"a":1}', None, '"x"', datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        '[{"field":"details"}]',
    )  # fmt: skip


@pytest.mark.parametrize(
    "workspace", [None, uuid.uuid4(), WorkspaceRef("T1"), WorkspaceRef(None, "E1", "Acme", False)]
)
def test_an_event_survives_the_trip_exactly(workspace: object) -> None:
    row = _row(workspace)
    assert decode(encode_row(row)) == row


def test_an_event_is_written_in_the_documented_layout() -> None:
    """Ids as their canonical text, the time as whole microseconds since 1970, a reference
    as its four fields: what ingesters of every version read."""

    class OtherUUID(uuid.UUID):  # a driver's own UUID type (asyncpg has one)
        def __str__(self) -> str:
            return "not the canonical text"

    event_id, workspace = uuid.uuid4(), uuid.uuid4()
    for ws, wire_ws in (
        (workspace, str(workspace)),
        (OtherUUID(int=workspace.int), str(workspace)),
        (None, None),
        (WorkspaceRef("T1", "E1", "Acme", True), {"ref": ["T1", "E1", "Acme", True]}),
    ):
        row = (event_id, *_row(ws)[1:])
        assert orjson.loads(encode_item(row)) == [
            str(event_id), "U1", wire_ws, "203.0.113.7", "agent", "auth.login", "user", "U1",
            '{"a":1}', None, '"x"', 1_767_323_045_678_901, '[{"field":"details"}]',
        ]  # fmt: skip


def test_a_quarantine_row_survives_the_trip() -> None:
    q = (uuid.uuid4(), "no action", b'{"action": null}', datetime(2026, 1, 1, tzinfo=UTC))
    assert decode(encode_quarantine(q)) == q


@pytest.mark.parametrize(
    "body",
    [
        b"\xff not json",
        b"[]",
        b'{"v": 2, "row": []}',
        b'{"v": 1}',
        b'{"v": 1, "row": [1, 2]}',
        orjson.dumps({"v": 1, "row": ["not-a-uuid", *[None] * 4, "a", *[None] * 5, 0, None]}),
        orjson.dumps({"v": 1, "row": [str(uuid.uuid4()), *[None] * 4, None, *[None] * 7]}),
        orjson.dumps({"v": 1, "quarantine": [str(uuid.uuid4()), "r", "{not json", 0]}),
    ],
)
def test_anything_else_is_refused_with_a_reason(body: bytes) -> None:
    with pytest.raises(WireError):
        decode(body)


def test_a_poison_message_keeps_a_stable_id_and_no_body() -> None:
    first = poison_row(b"password=hunter2", "not-a-uuid", "not JSON")
    again = poison_row(b"password=hunter2", "not-a-uuid", "not JSON")
    assert first[0] == again[0]  # a redelivery is de-duplicated like any event
    assert b"hunter2" not in first[2]  # never redacted, so never stored
    event_id = uuid.uuid4()
    assert poison_row(b"x", str(event_id), "r")[0] == event_id


def test_a_workspace_always_maps_to_the_same_partition() -> None:
    ws = uuid.UUID("8f14e45f-ceea-467a-9575-1f8a1c2d3e4b")
    assert workspace_key(WorkspaceRef("T1")) == "ref:T1"
    # CRC-32, pinned: a change of hash would move every workspace to another partition (and
    # mix the order of events published before and after an upgrade).
    assert [partition_of(w, 32) for w in (None, ws, WorkspaceRef("T1"))] == [0, 25, 7]


def _rows(count: int, workspace: object = None) -> list[tuple[object, ...]]:
    return [(uuid.uuid4(), *_row(workspace)[1:]) for _ in range(count)]


def test_a_batch_message_carries_many_events_exactly() -> None:
    rows = [*_rows(3, uuid.uuid4()), *_rows(2, WorkspaceRef("T1")), *_rows(1)]
    q = (uuid.uuid4(), "no action", b'{"action": null}', datetime(2026, 1, 1, tzinfo=UTC))
    body = encode_batch([encode_item(r) for r in rows], [encode_item(q)])
    assert decode_message(body, "some-id") == (rows, [q], 0)


def test_json_in_another_spelling_is_read_in_the_publishers_spelling() -> None:
    """The canonical form commits to the JSON text publishers send (sorted keys, compact,
    escapes only where needed), the text `verify` rebuilds from jsonb: a hand-made message
    spelling the same value otherwise is read in that spelling."""
    row = _row(uuid.uuid4())
    spelt = (*row[:8], '{ "b" : 1, "a" : "\\u00e9" }', "[1.0,  true]", *row[10:12], "[ ]")
    rows, kept, bad = decode_message(encode_batch([encode_item(spelt)], []), "m1")
    assert (kept, bad) == ([], 0)
    assert rows[0][8:13] == ('{"a":"é","b":1}', "[1.0,true]", '"x"', row[11], "[]")


def test_a_compressed_message_is_read_and_an_uncompressed_one_still_is() -> None:
    rows = _rows(50, uuid.uuid4())
    body = encode_batch([encode_item(r) for r in rows], [])
    packed = compress(body)
    assert len(packed) < len(body) // 3  # events of a partition repeat most of their bytes
    headers = {"Nats-Msg-Id": "m1", ENCODING_HEADER: ZSTD}
    assert decode_stream_message(packed, headers) == (rows, [], 0)
    assert decode_stream_message(body, {"Nats-Msg-Id": "m1"}) == (rows, [], 0)  # older publishers


def _bodies() -> dict[str, tuple[bytes, str, str]]:
    """(data, content encoding, reason) of bodies an ingester must refuse."""
    big = bytes(8 * 1024 * 1024)
    return {
        # A frame declaring 8 MiB: refused before anything is allocated.
        "declared too big": (zstandard.compress(big, 1), ZSTD, "beyond 1 MiB"),
        # The same without the size in its header: decompression stops at the bound.
        "undeclared too big": (
            zstandard.ZstdCompressor(level=1, write_content_size=False).compress(big),
            ZSTD,
            "cannot be decompressed",
        ),
        "not zstd": (b'{"v": 2}', ZSTD, "cannot be decompressed"),
        "a broken frame": (b"\x28\xb5\x2f\xfd garbage", ZSTD, "cannot be decompressed"),
        "another encoding": (
            zstandard.compress(b'{"v": 2}', 1),
            "gzip",
            "unknown content encoding",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["declared too big", "undeclared too big", "not zstd", "a broken frame", "another encoding"],
)
def test_a_body_that_cannot_be_decompressed_is_one_quarantine_row(case: str) -> None:
    data, encoding, reason = _bodies()[case]
    rows, kept, bad = decode_stream_message(data, {"Nats-Msg-Id": "m9", ENCODING_HEADER: encoding})
    assert (rows, len(kept), bad) == ([], 1, 1)
    assert kept[0][1].startswith("unreadable stream message")
    assert reason in kept[0][1]
    assert b"m9" in kept[0][2]  # its digest, never its body


def test_version_one_messages_are_still_read() -> None:
    """Publishers not yet upgraded send version 1: the ingesters keep reading it."""
    row = _row(WorkspaceRef("T1"))
    q = (uuid.uuid4(), "no action", b'{"action": null}', datetime(2026, 1, 1, tzinfo=UTC))
    assert decode_message(encode_row(row), str(row[0])) == ([row], [], 0)
    assert decode_message(encode_quarantine(q), str(q[0])) == ([], [q], 0)


def test_a_bad_event_in_a_batch_costs_that_event_only() -> None:
    good = _rows(4, uuid.uuid4())
    own_id = uuid.uuid4()
    bad_with_id = orjson.dumps([str(own_id), *[None] * 4, None, *[None] * 7])  # no action
    bad_without = orjson.dumps(["not-a-uuid", "secret=hunter2"])
    items = [encode_item(good[0]), bad_with_id, encode_item(good[1]), bad_without]
    items += [encode_item(r) for r in good[2:]]
    body = encode_batch(items, [])
    rows, kept, bad = decode_message(body, "batch-id")
    assert rows == good
    assert bad == 2
    assert len(kept) == 2
    assert kept[0][0] == own_id  # its own id: a redelivery is de-duplicated with it
    assert all(k[1].startswith("unreadable stream message") for k in kept)
    assert all(b"hunter2" not in k[2] for k in kept)
    # The other has no id of its own: one derived from the message's id and its place.
    assert decode_message(body, "batch-id")[1][1][0] == kept[1][0]
    assert decode_message(body, "another-id")[1][1][0] != kept[1][0]


_AN_ID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


@pytest.mark.parametrize(
    "text",
    [
        _AN_ID,
        _AN_ID.upper(),
        _AN_ID.replace("-", ""),
        "{" + _AN_ID + "}",
        "urn:uuid:" + _AN_ID,
        "0f1e-2d3c4b5a6978-8796a5b4c3d2e1f0",  # dashes anywhere, as uuid.UUID allows
        "0x" + _AN_ID.replace("-", "")[2:],
        " " + _AN_ID.replace("-", "")[1:],
        "0f1e2d3c_4b5a6978_8796a5b4c3d2e1f",
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1fg",
        "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1",
        "+" + _AN_ID.replace("-", "")[1:],
        "",
    ],
)
def test_an_id_is_read_exactly_as_uuid_would_read_it(text: str) -> None:
    """Ingesters parse ids on a short road of their own; it accepts and refuses what
    ``uuid.UUID`` does, and the id it makes is the same (and prints canonically)."""
    row = list(orjson.loads(encode_item(_row(uuid.uuid4()))))
    row[0] = text
    rows, kept, bad = decode_message(encode_batch([orjson.dumps(row)], []), "m1")
    try:
        expected = uuid.UUID(text)
    except ValueError:
        assert (rows, bad) == ([], 1)
        assert kept[0][1] == "unreadable stream message (an id that is not a UUID)"
        return
    assert (kept, bad) == ([], 0)
    assert rows[0][0] == expected
    assert str(rows[0][0]) == str(expected)
    assert hash(rows[0][0]) == hash(expected)
    assert rows[0][0].bytes == expected.bytes


def test_json_in_other_spellings_among_many_events_costs_nothing_but_a_respelling() -> None:
    """The JSON values of a message are checked together; when one is spelt otherwise (or is
    not JSON), each event is checked on its own: the respelt ones stored, the bad one
    quarantined alone."""
    rows = _rows(6, uuid.uuid4())
    items = [encode_item(r) for r in rows]
    spaced = list(orjson.loads(items[2]))
    spaced[8] = '{"b": 2, "a": 1}'
    broken = list(orjson.loads(items[4]))
    broken[9] = '{"b": '
    items[2], items[4] = orjson.dumps(spaced), orjson.dumps(broken)
    decoded, kept, bad = decode_message(encode_batch(items, []), "m1")
    assert bad == 1
    assert [k[0] for k in kept] == [rows[4][0]]
    assert kept[0][1] == "unreadable stream message (a JSON field that is not JSON)"
    assert [r[0] for r in decoded] == [r[0] for i, r in enumerate(rows) if i != 4]
    assert decoded[2][8] == '{"a":1,"b":2}'
    assert [r for i, r in enumerate(decoded) if i != 2] == [rows[i] for i in (0, 1, 3, 5)]


def _with_details(rows: list[tuple[object, ...]], texts: list[str]) -> list[bytes]:
    """Events whose only JSON value is ``details``, one text each."""
    return [
        encode_item((*r[:8], t, None, None, r[11], None)) for r, t in zip(rows, texts, strict=True)
    ]


@pytest.mark.parametrize(
    "texts",
    [
        ['"x', "[2, 1]", 'y"', "1,2,3"],  # a string wrapped around a text spelt otherwise
        ['"x', '{"b": 1, "a": 2}', 'y"', "1,2,3"],
        ['"', " ", '"', "1,2,3"],
        [' ",[],"', "[ ]"],
    ],
)
def test_a_text_spelt_otherwise_cannot_hide_between_its_neighbours(texts: list[str]) -> None:
    """The JSON values of a message are checked together; a hand-made message must not make a
    text spelt otherwise pass as the publishers' spelling by wrapping it in a string that
    begins in the text before and ends in the text after. Each text is then judged alone:
    stored in the publishers' spelling, or quarantined."""
    rows = _rows(len(texts), uuid.uuid4())
    decoded, kept, bad = decode_message(encode_batch(_with_details(rows, texts), []), "m1")
    for row in decoded:
        text = row[8]
        assert isinstance(text, str)
        assert orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS).decode() == text
    judged = {r[0]: "stored" for r in decoded} | {k[0]: "kept" for k in kept}
    for row, text in zip(rows, texts, strict=True):
        try:
            orjson.loads(text)
            assert judged[row[0]] == "stored"
        except orjson.JSONDecodeError:
            assert judged[row[0]] == "kept"
    assert bad == len(kept)
    assert [k[0] for k in kept] == [r[0] for r in rows if judged[r[0]] == "kept"]  # in order


def test_the_texts_of_an_event_refused_for_another_reason_take_no_part() -> None:
    """An event quarantined for its id cannot lend its JSON to the check of its neighbours'."""
    rows = _rows(4, uuid.uuid4())
    items = _with_details(rows, ['"x', "[2, 1]", 'y"', "1,2,3"])
    for index in (0, 2, 3):
        fields = orjson.loads(items[index])
        fields[0] = "not-an-id"
        items[index] = orjson.dumps(fields)
    decoded, kept, bad = decode_message(encode_batch(items, []), "m1")
    assert [r[8] for r in decoded] == ["[2,1]"]
    assert bad == 3
    assert all(k[1] == "unreadable stream message (an id that is not a UUID)" for k in kept)


@pytest.mark.parametrize(
    ("micros", "reason"),
    [
        (b"1000000000000000000", "created_at out of range"),
        (b"-1000000000000000000", "created_at out of range"),
        (b"1180591620717411303424", "created_at is not a whole number"),  # read as a float
    ],
)
def test_a_time_out_of_range_is_quarantined_not_raised(micros: bytes, reason: str) -> None:
    rows = _rows(3, uuid.uuid4())
    items = [encode_item(r) for r in rows]
    fields = orjson.loads(items[1])
    fields[11] = 424242  # replaced below: orjson writes no integer beyond 64 bits
    items[1] = orjson.dumps(fields).replace(b"424242", micros)
    q = orjson.dumps([str(uuid.uuid4()), "why", "{}", 424242]).replace(b"424242", micros)
    decoded, kept, bad = decode_message(encode_batch(items, [q]), "m1")
    assert decoded == [rows[0], rows[2]]
    assert bad == 2
    assert kept[0][0] == rows[1][0]
    assert all(k[1] == f"unreadable stream message ({reason})" for k in kept)


@pytest.mark.parametrize(
    "body", [b"\xff not json", b'{"v": 2}', b'{"v": 2, "rows": [], "quarantine": []}', b"[]"]
)
def test_an_unreadable_message_is_one_quarantine_row(body: bytes) -> None:
    rows, kept, bad = decode_message(body, "m1")
    assert (rows, bad, len(kept)) == ([], 1, 1)
    assert kept[0][1].startswith("unreadable stream message")


def test_a_batch_is_cut_per_partition_by_events_and_bytes() -> None:
    # Not in T1's partition (a random id would share it once in 32 runs).
    ws = next(
        w
        for w in iter(uuid.uuid4, None)
        if partition_of(w, 32) != partition_of(WorkspaceRef("T1"), 32)
    )
    rows = _rows(1200, ws) + _rows(1, WorkspaceRef("T1"))
    out = messages(rows, [], 32)
    sizes = [n for _, _, _, n in out]
    assert sum(sizes) == 1201
    assert max(sizes) <= MAX_EVENTS
    assert sizes.count(1) == 1  # the lone event of T1: a message of its own
    single = next(m for m in out if m[3] == 1)
    assert single[1] == str(rows[-1][0])  # one event: its own id is the message's id
    # Several: a digest of the ids, in order; the same batch always makes the same messages.
    assert out == messages(rows, [], 32)
    firsts = [r[0] for r in rows[:MAX_EVENTS]]
    assert all(isinstance(i, uuid.UUID) for i in firsts)
    assert (
        out[0][1]
        == message_id(firsts)
        == hashlib.sha256(b"".join(i.bytes for i in firsts if isinstance(i, uuid.UUID))).hexdigest()
    )
    # Large events: the byte cap cuts first.
    big = [(*r[:8], orjson.dumps({"pad": "x" * 20_000}).decode(), *r[9:]) for r in _rows(40, ws)]
    cut = messages(big, [], 32)
    assert all(len(body) <= MAX_BYTES + 1024 for _, _, body, _ in cut)
    assert sum(n for *_, n in cut) == 40
    assert [r for _, _, body, _ in cut for r in decode_message(body, None)[0]] == big
