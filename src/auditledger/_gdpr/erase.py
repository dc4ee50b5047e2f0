"""GDPR erasure (Art. 17): remove a person's values from the log and keep every chain whole.

For each event that names the subject: their own user id, IP address and user agent when they
are the actor, a ``resource_id`` containing their id, and each JSON value (``details``,
``previous_value``, ``new_value``, ``sanitised``) containing it, are set to NULL and their
salts zeroed. Events in canonical form 2 commit each of those values separately, so the chain
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
from .._errors import AuditLedgerError
from .append import append, record_rows
from .store import COLUMNS, Candidate, RowStore
from .subject import json_form, subject_hash

ACTION = "gdpr.erasure"
BATCH = 1_000
_ACTOR_VALUES = frozenset({"user_id", "ip_address", "user_agent"})
_JSON_COLUMNS = frozenset({"details", "previous_value", "new_value", "sanitised"})


class ErasureError(AuditLedgerError):
    """The erasure request cannot be carried out as given."""


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
    if not user_id:
        raise ErasureError("the user id to erase is empty")
    needle = json_form(user_id)
    plan = ErasurePlan(user_id)
    for row in store.candidates(user_id, needle, workspace):
        erase = _to_erase(row, user_id, needle)
        if not erase:
            continue
        event_id, chain, canonical, salt = row[0], row[1], row[10], row[11]
        if chain is None or canonical is None:
            plan.unerasable.append(event_id)  # not chained (a forged row): left for verify
            continue
        if is_v2(canonical):
            hashed = parse(canonical)
            if hashed is None or salt is None:
                plan.unerasable.append(event_id)
                continue
            plan.targets.append(_Target(event_id, chain, erase, zeroed_salt(hashed, salt, erase)))
            continue
        # Version 1 committed only the actor's values, all with one salt.
        if erase - _ACTOR_VALUES:
            plan.unerasable.append(event_id)
        actor = erase & _ACTOR_VALUES
        if actor:
            present = frozenset(n for n, v in zip(COLUMNS[:3], row[2:5], strict=True) if v)
            plan.targets.append(_Target(event_id, chain, actor | present, None))
    for qid, payload in store.quarantine_candidates(needle):
        plan.quarantine.append((qid, _scrubbed_payload(payload, needle)))
    return plan


def _to_erase(row: Candidate, user_id: str, needle: str) -> frozenset[str]:
    erase: set[str] = set()
    if row[2] == user_id:
        erase.update(n for n, v in zip(COLUMNS[:3], row[2:5], strict=True) if v is not None)
    for name, value in zip(COLUMNS[1:], row[3:10], strict=True):
        if value is None:
            continue
        wanted = needle if name in _JSON_COLUMNS else user_id
        if wanted in value:
            erase.add(name)
    return frozenset(erase)


def _scrubbed_payload(payload: str, needle: str) -> str:
    """A quarantined call's payload without the parts that name the subject."""
    data = orjson.loads(payload)
    if not isinstance(data, dict):
        return orjson.dumps({"_erased": ["$"]}).decode()
    erased = sorted(k for k, v in data.items() if needle in orjson.dumps(v).decode())
    kept = {k: v for k, v in data.items() if k not in erased and needle not in k}
    erased += sorted(k for k in data if needle in k and k not in erased)
    kept["_erased"] = ["(a key naming the subject)" if needle in k else k for k in erased]
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

    Runs with the database owner's URL: the application's insert-only role cannot UPDATE.
    """
    workspace = _workspace(workspace_id)
    if not reason.strip():
        raise ErasureError("a reason is required (it is recorded in the gdpr.erasure event)")
    if not actor.strip():
        raise ErasureError("an actor is required (who carried out the erasure)")
    if user_id and user_id in actor:
        raise ErasureError("the actor may not name the subject: it is stored in clear")
    store = RowStore(database_url)
    try:
        plan = plan_erasure(store, user_id, workspace)
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


def _workspace(value: uuid.UUID | str | None) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise ErasureError("the workspace id is not a UUID") from exc
