"""GDPR erasure (Art. 17): remove a person's values from the log and keep every chain whole.

Which events and values are the subject's is ``SubjectMatcher``'s rule (the one subject access
uses): their own user id, IP address and user agent where they are the actor, a
``resource_id`` equal to their id, and each JSON value (``details``, ``previous_value``,
``new_value``, ``sanitised``) holding a string that is or contains their id as a whole token.
Those are set to NULL and their salts zeroed; in quarantined calls, the same fields go from
the payload. Events in canonical form 2 commit each of those values separately, so the chain
still verifies. The ``gdpr.erasure`` event of each affected chain is appended *before* the
values go, so a verifier never sees an erasure that no event covers, even if this stops
half-way (running it again finishes the job under a second event).
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from .._chain.v2 import erased_salt as zeroed_salt
from .._chain.v2 import is_v2, parse
from .._db.schema import audit_logs
from .._errors import AuditLedgerError
from .._read.store import AuditStore
from .._read.subject import SubjectMatcher, matching_events, matching_quarantine
from .._read.subject_match import check_subject_id
from .append import append, record_rows
from .store import COLUMNS, RowStore
from .subject import subject_hash

c = audit_logs.c

ACTION = "gdpr.erasure"
BATCH = 1_000
_ACTOR_VALUES = frozenset({"user_id", "ip_address", "user_agent"})
# What the writer puts in a quarantined call's payload: any other key is listed by a
# placeholder, since it may be the subject's id itself.
_PAYLOAD_KEYS = frozenset({"action", "workspace_id", "resource", "event", *COLUMNS})


class ErasureError(AuditLedgerError):
    """The erasure request cannot be carried out as given."""


class UnknownWorkspace(ErasureError, LookupError):
    """The workspace names none, or several: a LookupError too, as ``AuditReader`` raises
    for the same text, with the same message."""


@dataclass
class _Target:
    event_id: uuid.UUID
    chain: uuid.UUID
    erase: frozenset[str]
    salt: bytes | None


@dataclass
class ErasurePlan:
    """What an erasure would change (``auditledger gdpr erase`` shows it before asking)."""

    user_id: str
    targets: list[_Target] = field(default_factory=list)
    quarantine: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    # Events stored in canonical form 1 that name the subject in values it hashed in clear:
    # erasing those would break the chain, so they are left and counted.
    unerasable: list[uuid.UUID] = field(default_factory=list)

    @property
    def values(self) -> dict[str, int]:
        counts = Counter(name for t in self.targets for name in t.erase)
        return {name: counts[name] for name in COLUMNS if counts[name]}

    @property
    def chains(self) -> list[uuid.UUID]:
        return sorted({t.chain for t in self.targets}, key=str)


@dataclass
class ErasureResult:
    """What an erasure changed and recorded."""

    events: int
    values: dict[str, int]
    erasure_events: list[uuid.UUID]
    quarantined: int
    unerasable: int
    subject: str  # the keyed hash stored in place of the user id

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "values": self.values,
            "erasure_events": [str(e) for e in self.erasure_events],
            "quarantined": self.quarantined,
            "unerasable": self.unerasable,
            "subject": self.subject,
        }


def plan_erasure(store: RowStore, user_id: str, workspace: uuid.UUID | None = None) -> ErasurePlan:
    """What erasing ``user_id`` would change: the events and quarantined calls subject
    access returns for them (one rule, ``SubjectMatcher``), and in each the values that are
    theirs. InvalidSubjectId for an id that cannot name one person."""
    matcher = SubjectMatcher(user_id)
    plan = ErasurePlan(user_id)
    extra = (c.chain_id, c.canonical, c.pii_salt)
    with store.engine.connect() as conn:
        found = list(matching_events(conn, matcher, workspace, extra))
        calls = matching_quarantine(conn, matcher) if workspace is None else []
    for event, erase, row in found:
        chain, canonical, salt = row.chain_id, _bytes(row.canonical), _bytes(row.pii_salt)
        if chain is None or canonical is None:
            plan.unerasable.append(event.id)  # not chained (a forged row): left for verify
            continue
        if is_v2(canonical):
            hashed = parse(canonical)
            if hashed is None or salt is None:
                plan.unerasable.append(event.id)
                continue
            plan.targets.append(_Target(event.id, chain, erase, zeroed_salt(hashed, salt, erase)))
            continue
        # Version 1 committed only the actor's values, all with one salt.
        if erase - _ACTOR_VALUES:
            plan.unerasable.append(event.id)
        actor = erase & _ACTOR_VALUES
        if actor:
            plan.targets.append(_Target(event.id, chain, actor, None))
    for call in calls:
        plan.quarantine.append((call.id, _scrubbed_payload(call.payload, call.fields)))
    return plan


def _bytes(value: object) -> bytes | None:
    return None if value is None else bytes(value)  # type: ignore[call-overload]


def _scrubbed_payload(payload: Any, fields: frozenset[str]) -> str:
    """A quarantined call's payload without the fields that are the subject's (as the
    matcher found them: with the caller's user id, their IP address and user agent too)."""
    if not isinstance(payload, dict) or "$" in fields:
        return orjson.dumps({"_erased": ["$"]}).decode()
    kept = {k: v for k, v in payload.items() if k not in fields}
    # A key that names the person is itself erased, so the list says only that one was there.
    kept["_erased"] = sorted(
        k if k in _PAYLOAD_KEYS else "(a key naming the subject)" for k in fields
    )
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS).decode()


def erase_subject(
    database_url: str | None,
    user_id: str,
    *,
    reason: str,
    actor: str,
    subject_key: bytes,
    workspace_id: uuid.UUID | str | None = None,
) -> ErasureResult:
    """Erase everything naming ``user_id`` (in one workspace, or all), record a
    ``gdpr.erasure`` event in each affected chain, and return what was done.

    ``workspace_id``: its UUID, a unique prefix of it, or its Slack team id (as every other
    command takes it); UnknownWorkspace when that names no workspace or several.
    Runs with the database owner's URL: the application's insert-only role cannot UPDATE.
    """
    check_subject_id(user_id)
    if not reason.strip():
        raise ErasureError("a reason is required (it is recorded in the gdpr.erasure event)")
    if not actor.strip():
        raise ErasureError("an actor is required (who carried out the erasure)")
    if SubjectMatcher(user_id).names_text(actor):
        raise ErasureError("the actor may not name the subject: it is stored in clear")
    store = RowStore(database_url)
    try:
        plan = plan_erasure(store, user_id, resolve_workspace(store, workspace_id))
        return apply_erasure(store, plan, reason=reason, actor=actor, subject_key=subject_key)
    finally:
        store.close()


def apply_erasure(
    store: RowStore, plan: ErasurePlan, *, reason: str, actor: str, subject_key: bytes
) -> ErasureResult:
    if not store.may_update():
        # Checked first: a gdpr.erasure event with nothing erased would be a false record.
        raise ErasureError("this database role may not erase: run it with the owner's URL")
    subject = subject_hash(subject_key, plan.user_id)
    # The reason is the operator's text and may well name the person: stored without it.
    reason = reason.replace(plan.user_id, "[subject]")
    recorded = _record(store, plan, reason=reason, actor=actor, subject=subject)
    for start in range(0, len(plan.targets), BATCH):
        batch = plan.targets[start : start + BATCH]
        store.erase_rows([(t.event_id, t.erase, t.salt) for t in batch])
    store.erase_quarantine(plan.quarantine)
    return ErasureResult(
        events=len(plan.targets),
        values=plan.values,
        erasure_events=recorded,
        quarantined=len(plan.quarantine),
        unerasable=len(plan.unerasable),
        subject=subject,
    )


def _record(
    store: RowStore, plan: ErasurePlan, *, reason: str, actor: str, subject: str
) -> list[uuid.UUID]:
    """Append one gdpr.erasure event per affected chain (before anything is erased)."""
    per_chain: dict[uuid.UUID, dict[str, Any]] = {}
    for t in plan.targets:
        details = per_chain.setdefault(
            t.chain,
            {"events": [], "erased": {}, "reason": reason, "subject": subject, "values": {}},
        )
        details["events"].append(str(t.event_id))
        # Which columns of which event: verify holds each erased value to this list.
        details["erased"][str(t.event_id)] = sorted(t.erase)
        for name in t.erase:
            details["values"][name] = details["values"].get(name, 0) + 1
    return append(store.url, record_rows(ACTION, actor, per_chain))


def resolve_workspace(store: RowStore, value: uuid.UUID | str | None) -> uuid.UUID | None:
    """The workspace ``value`` names: its UUID, a unique prefix of it, or its Slack team id,
    resolved as ``events``, ``gdpr export``, ``retention`` and ``verify`` resolve it."""
    if value is None or isinstance(value, uuid.UUID):
        return value
    try:
        return AuditStore(engine=store.engine).resolve_workspace(str(value))
    except LookupError as exc:
        raise UnknownWorkspace(exc.args[0]) from exc
