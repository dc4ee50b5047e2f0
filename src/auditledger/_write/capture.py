"""What a log call does on the caller's thread: snapshot the values, nothing more.

A captured event is a plain tuple (the cheapest thing to build and queue). JSON values are
serialised here, once, so that a caller mutating its ``details`` afterwards cannot change the
event; everything else (ids, validation, redaction, canonical form) happens on the writer thread.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import orjson

from .._actions import LibraryAction
from .._events import WorkspaceRef
from .sanitise import Note, has_nonfinite, safe_repr, sanitise_json, type_name

# (time_ns, action, user_id, workspace_id, ip_address, user_agent, resource, resource_id,
#  details, previous_value, new_value, notes)
Captured = tuple[Any, ...]

T_NS, ACTION, USER_ID, WORKSPACE_ID, IP, UA, RESOURCE, RESOURCE_ID = range(8)
DETAILS, PREVIOUS, NEW, NOTES = 8, 9, 10, 11
JSON_FIELDS = {DETAILS: "details", PREVIOUS: "previous_value", NEW: "new_value"}
TEXT_FIELDS = {
    USER_ID: "user_id",
    IP: "ip_address",
    UA: "user_agent",
    RESOURCE: "resource",
    RESOURCE_ID: "resource_id",
}

_dumps = orjson.dumps
# Sorted keys cost ~10 ns here and make the bytes the writer hashes match the form a verifier
# rebuilds from jsonb (see _chain.py), so verifying needs no second parse in the common case.
# orjson sorts the keys of dicts but writes a dataclass's fields in declaration order: the
# canonical form commits to sorted keys (verify rebuilds them from jsonb), so dataclasses go
# through the sanitising walk, which sorts them.
_CAPTURE_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS


class SanitisedJson:
    """JSON text that needed the slow path, with the notes saying what changed."""

    __slots__ = ("data", "notes")

    def __init__(self, data: str, notes: list[Note]) -> None:
        self.data = data
        self.notes = notes


def capture_json(value: object, field: str) -> str | SanitisedJson:
    """Snapshot a JSON value as text; orjson when it is clean, the sanitising walk when not.

    Text, not orjson's bytes: each bytes result keeps a 4 KiB allocation behind it, so a full
    queue of small events would cost ~4 KiB per value (measured: 117 MiB for 30k values);
    decoding right-sizes it for ~35 ns.
    """
    try:
        data = _dumps(value, option=_CAPTURE_OPTIONS)
    except Exception:  # noqa: BLE001 - orjson refuses: unknown type, cycle, depth, surrogate...
        return SanitisedJson(*sanitise_json(value, field))
    text = data.decode()
    # orjson writes NaN and infinities as null, a silent change that only the value itself
    # shows. (It escapes NUL too, which PostgreSQL rejects: the text shows that, so the writer
    # deals with it, off this thread.) Searched in the text: `in` on bytes costs twice as much.
    if "null" in text:
        try:
            nonfinite = has_nonfinite(value)
        except Exception:  # noqa: BLE001 - a hostile container: the walk copes with it
            nonfinite = True
        if nonfinite:
            return SanitisedJson(*sanitise_json(value, field))
    return text


_SCALAR_OK = (str, uuid.UUID, WorkspaceRef)


def coerce_scalar(value: object, field: str, notes: list[Note] | None) -> tuple[Any, list[Note]]:
    """A non-string id or text value, turned into text now (it may be mutable)."""
    notes = [] if notes is None else notes
    if isinstance(value, str):
        # A str subclass: its characters, not what its (overridable) __str__ says.
        notes.append({"field": field, "change": f"{type_name(value)} stored as text"})
        return str.__str__(value), notes
    if isinstance(value, bytes | bytearray):
        # An id read as bytes (from Redis, a socket...): its text, so that it still names
        # the person (subject access and erasure match ids exactly), not b'...'.
        try:
            text = bytes(value).decode()
        except UnicodeDecodeError:
            pass
        else:
            notes.append({"field": field, "change": f"{type_name(value)} decoded as UTF-8"})
            return text, notes
    text = safe_repr(value)
    if isinstance(value, int | float | uuid.UUID):
        # A subclass may override __str__ with anything; the repr already stands in.
        with contextlib.suppress(Exception):
            text = str(value)
    notes.append({"field": field, "change": f"{type_name(value)} stored as text"})
    return text, notes


def capture_event(
    time_ns: int,
    action: object,
    user_id: object,
    workspace_id: object,
    ip_address: object,
    user_agent: object,
    resource: object,
    resource_id: object,
    details: object,
    previous_value: object,
    new_value: object,
) -> Captured:
    notes: list[Note] | None = None
    if user_id is not None and type(user_id) is not str:
        user_id, notes = coerce_scalar(user_id, "user_id", notes)
    if workspace_id is not None and not isinstance(workspace_id, _SCALAR_OK):
        workspace_id, notes = coerce_scalar(workspace_id, "workspace_id", notes)
    if ip_address is not None and type(ip_address) is not str:
        ip_address, notes = coerce_scalar(ip_address, "ip_address", notes)
    if user_agent is not None and type(user_agent) is not str:
        user_agent, notes = coerce_scalar(user_agent, "user_agent", notes)
    if resource is not None and type(resource) is not str:
        resource, notes = coerce_scalar(resource, "resource", notes)
    if resource_id is not None and type(resource_id) is not str:
        resource_id, notes = coerce_scalar(resource_id, "resource_id", notes)
    if type(action) is not str:
        action = _capture_action(action)
    return (
        time_ns,
        action,
        user_id,
        workspace_id,
        ip_address,
        user_agent,
        resource,
        resource_id,
        None if details is None else capture_json(details, "details"),
        None if previous_value is None else capture_json(previous_value, "previous_value"),
        None if new_value is None else capture_json(new_value, "new_value"),
        notes,
    )


class BadAction:
    """An action that is not a string, kept as a safe representation for the quarantine."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def spooled_action(action: object) -> object:
    """A captured action that is not plain text, as the spool's JSON keeps it."""
    if isinstance(action, BadAction):
        return {"bad_action": action.text}
    if type(action) is LibraryAction:
        return {"library_action": str.__str__(action)}
    return action


def unspooled_action(value: dict[str, Any]) -> object:
    library = value.get("library_action")
    if isinstance(library, str):
        return LibraryAction(library)
    return BadAction(str(value.get("bad_action")))


def _capture_action(action: object) -> object:
    if type(action) is LibraryAction:
        return action  # one of the library's own records (kept apart from the app's)
    if isinstance(action, str):
        # AuditAction members and other str subclasses: their characters (str.__str__: a
        # subclass's own __str__ may say anything, or raise).
        return str.__str__(action)
    return BadAction(f"{type_name(action)}: {safe_repr(action)}")


def capture_event_guarded(
    time_ns: int,
    action: object,
    user_id: object,
    workspace_id: object,
    ip_address: object,
    user_agent: object,
    resource: object,
    resource_id: object,
    details: object,
    previous_value: object,
    new_value: object,
) -> Captured:
    """``capture_event`` for a call whose values made it raise: each value on its own, so
    that the event is kept with whatever could be read, and the notes say what could not."""
    notes: list[Note] = []
    out: list[Any] = [time_ns]
    try:
        out.append(action if type(action) is str else _capture_action(action))
    except Exception as exc:  # noqa: BLE001 - the event is quarantined as an unusable action
        out.append(BadAction(f"{type_name(action)}: unreadable ({type_name(exc)})"))
    for value, field in (
        (user_id, "user_id"),
        (workspace_id, "workspace_id"),
        (ip_address, "ip_address"),
        (user_agent, "user_agent"),
        (resource, "resource"),
        (resource_id, "resource_id"),
    ):
        out.append(_guarded_scalar(value, field, notes))
    for value, field in (
        (details, "details"),
        (previous_value, "previous_value"),
        (new_value, "new_value"),
    ):
        out.append(_guarded_json(value, field))
    out.append(notes or None)
    return tuple(out)


def _guarded_scalar(value: object, field: str, notes: list[Note]) -> Any:
    if value is None or type(value) is str:
        return value
    if field == "workspace_id" and type(value) in (uuid.UUID, WorkspaceRef):
        return value
    try:
        return coerce_scalar(value, field, notes)[0]
    except Exception as exc:  # noqa: BLE001 - unreadable: stored as a marker, and said so
        notes.append({"field": field, "change": f"unreadable ({type_name(exc)}), dropped"})
        return None


def _guarded_json(value: object, field: str) -> str | SanitisedJson | None:
    if value is None:
        return None
    try:
        return capture_json(value, field)
    except Exception as exc:  # noqa: BLE001 - a value that defeats even the sanitising walk
        note = {"field": field, "path": "$", "change": f"unserialisable ({type_name(exc)})"}
        return SanitisedJson(orjson.dumps(safe_repr(value)).decode(), [note])
