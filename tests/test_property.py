"""Arbitrary Python values at every parameter: nothing raises; everything is stored or
quarantined; mutating the values after the call changes nothing stored."""

from __future__ import annotations

import copy
import math
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditledger import AuditAction, AuditLogger, AuditStore


class RaisingRepr:
    def __repr__(self) -> str:
        raise ValueError("boom")

    __str__ = __repr__


class Opaque:
    """An arbitrary object: no JSON form, a plain repr."""


text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
    st.binary(max_size=40),
    st.decimals(allow_nan=True),
    st.datetimes(),
    st.uuids(),
    st.builds(RaisingRepr),
    st.builds(Opaque),
    st.sampled_from([math.nan, math.inf, "\x00", "\ud800", "a\udfffb"]),
)
keys = st.one_of(text, st.integers(), st.none(), st.tuples(st.integers()), st.just(Decimal("1.5")))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=4),
        st.frozensets(st.one_of(st.integers(), text), max_size=3),
        st.tuples(inner, inner),
    ),
    max_leaves=12,
)
actions = st.one_of(
    st.sampled_from(list(AuditAction)), st.sampled_from(["app.custom_thing", "ok_action"]), text,
    st.none(), st.integers(), st.builds(RaisingRepr),
)  # fmt: skip


@st.composite
def cyclic(draw: st.DrawFn) -> Any:
    base = draw(st.dictionaries(text, scalars, max_size=3))
    base["me"] = base
    return [base, base]


anything = st.one_of(values, cyclic())


def mutate(value: Any) -> None:
    if isinstance(value, dict):
        for k in list(value)[:2]:
            value[k] = "MUTATED"
        value["mutated-after-call"] = True
    elif isinstance(value, list):
        value.append("MUTATED")
        for item in value[:1]:
            mutate(item)


def test_arbitrary_values_never_raise_and_are_all_accounted_for(
    db_url: str, spool_dir: Path
) -> None:
    audit = AuditLogger(db_url, spool_dir=spool_dir)
    calls: list[str] = []
    snapshots: dict[str, str] = {}

    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        action=actions, user_id=anything, workspace_id=anything, ip_address=anything,
        user_agent=anything, resource=anything, details=anything, previous_value=anything,
        new_value=anything,
    )  # fmt: skip
    def call(action: Any, **fields: Any) -> None:
        marker = uuid.uuid4().hex
        before = repr_of(fields["details"])
        audit.log_audit_event(action, resource_id=marker, **fields)
        calls.append(marker)
        snapshots[marker] = before
        for value in fields.values():
            mutate(value)

    call()
    assert audit.flush(60)
    stats = audit.stats()
    audit.close()
    assert stats.enqueued == len(calls)
    assert stats.written + stats.quarantined == len(calls)
    assert stats.dropped == {}
    with AuditStore(db_url) as store:
        events = store.events(limit=10_000)
        quarantined = store.quarantined(limit=10_000)
    # The strategies must have reached both bad-input paths, or this proves little.
    assert stats.quarantined > 0
    assert any(e.sanitised for e in events)
    found = {e.resource_id for e in events} | {q.payload.get("resource_id") for q in quarantined}
    assert found == set(calls)
    for event in events:
        assert "MUTATED" not in str(event.details)
        assert "mutated-after-call" not in str(event.details)


def repr_of(value: Any) -> str:
    try:
        return repr(copy.copy(value))
    except Exception:
        return "<unrepresentable>"
