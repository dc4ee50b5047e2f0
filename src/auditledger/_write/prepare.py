"""The writer thread's work on each event before a sink stores it.

Validation, sanitising and redaction run here, once per event, off the caller's thread. The
result is a row in ``AUDIT_LOG_COLUMNS`` order, or a quarantine row when the event has no
usable action.
"""

from __future__ import annotations

import functools
import ipaddress
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from .._actions import LibraryAction, action_problem, reserved_problem
from .._db.rows import (
    ROW_ACTION,
    ROW_CREATED,
    ROW_DETAILS,
    ROW_ID,
    ROW_IP,
    ROW_NEW,
    ROW_PREVIOUS,
    ROW_RESOURCE,
    ROW_RESOURCE_ID,
    ROW_SANITISED,
    ROW_UA,
    ROW_USER,
    ROW_WORKSPACE,
    QuarantineRow,
    Row,
)
from .._events import WorkspaceRef
from .capture import (
    ACTION,
    DETAILS,
    IP,
    JSON_FIELDS,
    NEW,
    NOTES,
    PREVIOUS,
    RESOURCE,
    RESOURCE_ID,
    T_NS,
    TEXT_FIELDS,
    UA,
    USER_ID,
    WORKSPACE_ID,
    BadAction,
    Captured,
    SanitisedJson,
)
from .redact import Redactor
from .sanitise import Note, clean_text, safe_repr
from .scrub import Scrubber, nul_free

Prepared = tuple[list[Row], list[QuarantineRow]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ROW_TEXT_INDEX = {
    ROW_USER: "user_id",
    ROW_IP: "ip_address",
    ROW_UA: "user_agent",
    ROW_RESOURCE: "resource",
    ROW_RESOURCE_ID: "resource_id",
}


def datetime_from_ns(time_ns: int) -> datetime:
    """Exact to the microsecond (float seconds would round)."""
    return _EPOCH + timedelta(0, 0, time_ns // 1000)  # positional: a third cheaper


@functools.lru_cache(maxsize=4096)
def truncated_ip(value: str) -> str:
    """The address with its host part zeroed, as analytics tools do: the last octet of
    IPv4 (/24), the last 80 bits of IPv6 (/48). An IPv4-mapped IPv6 address is truncated as
    the IPv4 address it carries; a zone id (``%eth0``) is dropped."""
    address = ipaddress.ip_address(value.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Address(int(address) & ~0xFF))
    return str(ipaddress.IPv6Address(int(address) & ~((1 << 80) - 1)))


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


@dataclass
class Limits:
    """Caps and rules applied to every event; ``AuditLogger`` options set them."""

    max_text_length: int = 1024
    max_json_bytes: int = 65536
    redactor: Redactor = field(default_factory=Redactor)
    # Less personal data in the first place (AuditLogger's ip_address= and user_agent=).
    truncate_ip: bool = False
    keep_user_agent: bool = True


class Preparer:
    """Turns captured events into rows; keeps small caches of values already validated."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.scrubber = Scrubber(limits.redactor)
        self._valid_actions: set[str] = set()
        self._valid_ips: set[str] = set()
        self._uuids: dict[str, uuid.UUID] = {}

    def prepare(self, ids: list[uuid.UUID], events: list[Captured]) -> Prepared:
        """Rows for a batch. Scrubs the events in place first (redaction happens before
        anything is stored or spooled, and once per event)."""
        self.scrubber.scrub_all(events)
        rows: list[Row] = []
        quarantined: list[QuarantineRow] = []
        for event_id, ev in zip(ids, events, strict=True):
            action = ev[ACTION]
            # The library's own records never enter the cache: a plain string equal to one
            # must still meet the reserved-namespace check below.
            if action not in self._valid_actions and type(action) is not LibraryAction:
                problem = (
                    f"invalid action ({action.text})"
                    if isinstance(action, BadAction)
                    else action_problem(action) or reserved_problem(action)
                )
                if problem is not None:
                    quarantined.append(self.quarantine_row(event_id, ev, problem))
                    continue
                self._valid_actions.add(action)
            rows.append(self.row(event_id, ev))
        return rows, quarantined

    def row(self, event_id: uuid.UUID, ev: Captured) -> Row:
        notes: list[Note] = list(ev[NOTES]) if ev[NOTES] else []
        row: list[Any] = [
            event_id,
            ev[USER_ID],
            self._workspace(ev[WORKSPACE_ID], notes),
            ev[IP],
            ev[UA],
            str.__str__(ev[ACTION]),  # a LibraryAction is stored as the plain text
            ev[RESOURCE],
            ev[RESOURCE_ID],
            None,
            None,
            None,
            datetime_from_ns(ev[T_NS]),
            None,
        ]
        if not self.limits.keep_user_agent:
            row[ROW_UA] = None
        cap = self.limits.max_text_length
        for index, name in _ROW_TEXT_INDEX.items():
            value = row[index]
            # The common case inline: a call per field was a fifth of this function's time.
            if value is not None and (len(value) > cap or not value.isascii() or "\x00" in value):
                row[index] = self._text(value, name, notes)
        ip = row[ROW_IP]
        if ip is not None:
            if ip not in self._valid_ips:
                row[ROW_IP] = ip = self._ip(ip, notes)
            if ip is not None and self.limits.truncate_ip:
                row[ROW_IP] = truncated_ip(ip)
        # Scrubbed (see prepare): JSON values are text, sanitised and redacted already. Short
        # text is within the cap whatever its UTF-8 size: kept without a call (see _json).
        small = self.limits.max_json_bytes // 4
        for offset, (value, name) in enumerate(
            ((ev[DETAILS], "details"), (ev[PREVIOUS], "previous_value"), (ev[NEW], "new_value"))
        ):
            if value is not None:
                fits = type(value) is str and len(value) <= small
                row[ROW_DETAILS + offset] = value if fits else self._json(value, name, notes)
        if notes:
            row[ROW_SANITISED] = orjson.dumps(notes, option=orjson.OPT_SORT_KEYS).decode()
        return tuple(row)

    def _text(self, value: str, name: str, notes: list[Note]) -> str:
        cap = self.limits.max_text_length
        if len(value) <= cap and value.isascii() and "\x00" not in value:
            return value
        value, change = clean_text(value)
        if change:
            notes.append({"field": name, "change": change})
        if len(value) > cap:
            notes.append({"field": name, "change": f"truncated from {len(value)} characters"})
            value = f"{value[:cap]}…[truncated {len(value) - cap} characters]"
        return value

    def _ip(self, value: str, notes: list[Note]) -> str | None:
        if value in self._valid_ips:
            return value
        try:
            ipaddress.ip_address(value)
        except ValueError:
            stripped = value.strip()
            if stripped != value and _is_ip(stripped):
                # One part of an X-Forwarded-For list split on commas keeps its spaces.
                notes.append({"field": "ip_address", "change": "surrounding whitespace removed"})
                return stripped
            note: Note = {"field": "ip_address", "change": "not an IP address"}
            if not self.limits.truncate_ip:
                note["original"] = value[:100]
            else:
                # Kept whole, it would defeat ip_address="truncated".
                note["change"] = "not an IP address (not kept: ip_address='truncated')"
            notes.append(note)
            return None
        if len(self._valid_ips) > 10_000:
            self._valid_ips.clear()
        self._valid_ips.add(value)
        return value

    def _workspace(self, value: object, notes: list[Note]) -> uuid.UUID | WorkspaceRef | None:
        if value is None or isinstance(value, uuid.UUID):
            return value
        if isinstance(value, WorkspaceRef):
            value = self._clean_ref(value, notes)
            if value.key is None:
                notes.append({"field": "workspace_id", "change": "workspace ref without ids"})
                return None
            return value
        text = str(value)
        cached = self._uuids.get(text)
        if cached is not None:
            return cached
        try:
            parsed = uuid.UUID(text)
        except ValueError:
            original, _ = clean_text(text[:100])
            notes.append({"field": "workspace_id", "change": "not a UUID", "original": original})
            return None
        if len(self._uuids) > 10_000:
            self._uuids.clear()
        self._uuids[text] = parsed
        return parsed

    def _clean_ref(self, ref: WorkspaceRef, notes: list[Note]) -> WorkspaceRef:
        """Its ids and name become stored text: the same rules as any text field."""
        fields: dict[str, Any] = {}
        for name in ("team_id", "enterprise_id", "name"):
            value = getattr(ref, name)
            if value is None or (
                type(value) is str
                and value.isascii()
                and "\x00" not in value
                and len(value) <= self.limits.max_text_length
            ):
                continue
            text = value if isinstance(value, str) else safe_repr(value)
            if not isinstance(value, str):
                notes.append({"field": f"workspace.{name}", "change": "stored as text"})
            fields[name] = self._text(text, f"workspace.{name}", notes)
        active = ref.is_active
        if active is not None and not isinstance(active, bool):
            notes.append({"field": "workspace.is_active", "change": "not a bool, ignored"})
            fields["is_active"] = None
        return replace(ref, **fields) if fields else ref

    def _json(self, value: str | SanitisedJson, name: str, notes: list[Note]) -> str:
        if isinstance(value, SanitisedJson):  # only for an event that was never scrubbed
            notes.extend(value.notes)
            value = value.data
        size = len(value)
        if size * 4 > self.limits.max_json_bytes:  # only then can its UTF-8 form exceed the cap
            size = len(value.encode())
        if size > self.limits.max_json_bytes:
            notes.append({"field": name, "change": f"truncated from {size} bytes"})
            preview = value[:1024]
            value = orjson.dumps(
                {"_truncated": True, "original_bytes": size, "preview": preview},
                option=orjson.OPT_SORT_KEYS,
            ).decode()
        return value

    def quarantine_from_row(self, row: Row, reason: str) -> QuarantineRow:
        """A prepared row the database still refused, kept whole in the quarantine."""
        payload: dict[str, Any] = {
            name: row[index] for index, name in _ROW_TEXT_INDEX.items() if row[index] is not None
        }
        payload["action"] = row[ROW_ACTION]
        if row[ROW_WORKSPACE] is not None:
            payload["workspace_id"] = str(row[ROW_WORKSPACE])
        for index, name in (
            (ROW_DETAILS, "details"),
            (ROW_PREVIOUS, "previous_value"),
            (ROW_NEW, "new_value"),
            (ROW_SANITISED, "sanitised"),
        ):
            if row[index] is not None:
                payload[name] = orjson.Fragment(row[index])
        return (row[ROW_ID], reason, orjson.dumps(payload), row[ROW_CREATED])

    def last_resort_row(self, event_id: uuid.UUID, ev: Captured, reason: str) -> QuarantineRow:
        """A quarantine row built from nothing but safe representations, for an event that
        made the writer fail: it must not fail again the same way."""
        redact = self.limits.redactor.redact_text
        payload = {"event": [redact(safe_repr(value))[0] for value in ev[:NOTES]]}
        created = datetime_from_ns(ev[T_NS]) if isinstance(ev[T_NS], int) else datetime.now(UTC)
        return (event_id, reason, orjson.dumps(payload), created)

    def quarantine_row(self, event_id: uuid.UUID, ev: Captured, reason: str) -> QuarantineRow:
        payload: dict[str, Any] = {}
        for index, name in TEXT_FIELDS.items():
            if ev[index] is not None:
                payload[name] = self._text(ev[index], name, [])
        action = ev[ACTION]
        payload["action"] = action.text if isinstance(action, BadAction) else safe_repr(action)
        ws = ev[WORKSPACE_ID]
        if ws is not None:
            text = safe_repr(ws) if isinstance(ws, WorkspaceRef) else str(ws)
            payload["workspace_id"] = self._text(text, "workspace_id", [])
        for index, name in JSON_FIELDS.items():
            value = nul_free(ev[index], name)
            if value is not None:
                data = self._json(value, name, [])
                payload[name] = orjson.Fragment(data)
        if ev[NOTES]:
            payload["sanitised"] = ev[NOTES]
        return (event_id, reason, orjson.dumps(payload), datetime_from_ns(ev[T_NS]))
