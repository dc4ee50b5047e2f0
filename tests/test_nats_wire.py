"""The stream's message format: an event survives the trip exactly; anything else is refused
with a reason (the ingester quarantines it), never guessed at."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from auditledger import WorkspaceRef
from auditledger._nats.partitions import partition_of, workspace_key
from auditledger._nats.wire import WireError, decode, encode_quarantine, encode_row, poison_row


def _row(workspace: object) -> tuple[object, ...]:
    return (
        uuid.uuid4(), "U1", workspace, "203.0.113.7", "agent", "auth.login", "user", "U1",
        '{"a": 1}', None, '"x"', datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        '[{"field": "details"}]',
    )  # fmt: skip


@pytest.mark.parametrize(
    "workspace", [None, uuid.uuid4(), WorkspaceRef("T1"), WorkspaceRef(None, "E1", "Acme", False)]
)
def test_an_event_survives_the_trip_exactly(workspace: object) -> None:
    row = _row(workspace)
    assert decode(encode_row(row)) == row


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
