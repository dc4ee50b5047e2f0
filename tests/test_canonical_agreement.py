"""The writer's canonical form and the verifier's rebuild from the stored columns agree, for
every kind of value the bad-input tests throw at a log call (the strategies of
test_property.py): the canonical forms are defined once (form 1: ``_chain.canonical``, form 2:
``_chain.v2``) and both sides must reach the same bytes from their own inputs."""

from __future__ import annotations

import os
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditledger import AuditAction
from auditledger._chain.canonical import canonical, chain_of, commitment, micros, seal
from auditledger._chain.links import genesis, link
from auditledger._db import rows as r
from auditledger._read.verify.columns import _expected_canonical, check_columns, check_pg_columns
from auditledger._read.verify.report import VerifyReport
from auditledger._read.verify.source import PG_EPOCH_US
from auditledger._write.capture import capture_event
from auditledger._write.prepare import Limits, Preparer
from tests.test_property import text, values

# Up to the year 2100, in nanoseconds since the Unix epoch.
times = st.integers(min_value=0, max_value=4_102_444_800 * 10**9)
optional_text = st.one_of(st.none(), text, values)
actions = st.one_of(st.sampled_from(list(AuditAction)), st.sampled_from(["app.custom_thing"]))


def _prepared(event: tuple[Any, ...]) -> tuple[Any, ...]:
    rows, quarantined = Preparer(Limits()).prepare([uuid.uuid4()], [capture_event(*event)])
    assert not quarantined, quarantined
    return rows[0]


def _as_stored(row: tuple[Any, ...], data: bytes, salt: bytes | None) -> list[Any]:
    """The verifier's row: the columns as stored, then the chain columns."""
    chain = chain_of(row[r.ROW_WORKSPACE])
    ws = row[r.ROW_WORKSPACE]
    return [
        str(row[r.ROW_ID]),
        row[r.ROW_USER],
        None if ws is None else str(ws),
        row[r.ROW_IP],
        row[r.ROW_UA],
        *row[r.ROW_ACTION : r.ROW_CREATED],
        micros(row[r.ROW_CREATED]),
        row[r.ROW_SANITISED],
        str(chain),
        1,
        link(genesis(chain), 1, data),
        data,
        salt,
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    time_ns=times,
    action=actions,
    user_id=optional_text,
    workspace_id=st.one_of(st.none(), st.uuids()),
    ip_address=optional_text,
    user_agent=optional_text,
    resource=optional_text,
    resource_id=optional_text,
    details=values,
    previous=values,
    new=values,
)
def test_writer_and_verifier_build_the_same_canonical_form(
    time_ns: int,
    action: Any,
    user_id: Any,
    workspace_id: uuid.UUID | None,
    ip_address: Any,
    user_agent: Any,
    resource: Any,
    resource_id: Any,
    details: Any,
    previous: Any,
    new: Any,
) -> None:
    row = _prepared(
        (time_ns, action, user_id, workspace_id, ip_address, user_agent, resource, resource_id,
         details, previous, new)
    )  # fmt: skip
    [(_, data, salt)] = seal([row])
    assert data.startswith(b"[2,")  # new events: canonical form 2

    # Form 2 as SQLite and PostgreSQL give it: values in clear, each checked with its salt.
    report = VerifyReport()
    check_columns(tuple(_as_stored(row, data, salt)), report)
    assert report.problems == []
    pg = _as_stored(row, data, salt)
    pg[r.ROW_CREATED] -= PG_EPOCH_US
    report = VerifyReport()
    check_pg_columns(tuple(pg), report)
    assert report.problems == []

    # Form 1, how events stored before form 2 were hashed, keeps agreeing too.
    personal = ((r.ROW_USER, "user_id"), (r.ROW_IP, "ip_address"), (r.ROW_UA, "user_agent"))
    salt1 = os.urandom(16) if any(row[i] is not None for i, _ in personal) else None
    data1 = canonical(row, salt1)
    stored = _as_stored(row, data1, salt1)
    for index, name in personal:  # as SQLite gives it: personal values as their commitments
        if stored[index] is not None:
            assert salt1 is not None
            stored[index] = commitment(salt1, name, stored[index])
    assert _expected_canonical(tuple(stored)) == data1
    report = VerifyReport()
    check_columns(tuple(stored), report)
    assert report.problems == []
    pg = _as_stored(row, data1, salt1)
    pg[r.ROW_CREATED] -= PG_EPOCH_US
    report = VerifyReport()
    check_pg_columns(tuple(pg), report)
    assert report.problems == []
