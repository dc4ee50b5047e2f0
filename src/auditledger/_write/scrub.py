"""Redaction of a whole captured event, before any of it is written anywhere.

Every path to disk (the write-ahead copy, the spool when the queue is full or the database is
down, rows, quarantine rows, ``sanitised`` notes) takes events through ``Scrubber.scrub`` first,
on the writer's thread (or, when the queue is full, the caller's, which then appends to the
spool anyway). A scrubbed event carries a marker, so the work is done once per event.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import Any

import orjson

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
    TEXT_FIELDS,
    UA,
    USER_ID,
    WORKSPACE_ID,
    BadAction,
    Captured,
    SanitisedJson,
)
from .redact import REDACTED, Redactor
from .sanitise import Note, safe_repr, sanitise_json

log = logging.getLogger("auditledger")

SCRUBBED = NOTES + 1  # a scrubbed event has one more element: True
_REDACTED_JSON = orjson.dumps(REDACTED).decode()
_TEXTS = (*TEXT_FIELDS.items(), (ACTION, "action"))


def nul_free(value: str | SanitisedJson | None, field: str) -> str | SanitisedJson | None:
    """JSON text holding an escaped NUL (PostgreSQL refuses it), sanitised."""
    if type(value) is not str or "\\u0000" not in value:
        return value
    return SanitisedJson(*sanitise_json(orjson.loads(value), field))


class Scrubber:
    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def scrub(self, ev: Captured) -> Captured:
        """The event with every credential replaced, and notes saying where. Never raises."""
        if len(ev) > SCRUBBED:
            return ev
        try:
            return self._scrub(ev)
        except Exception as exc:  # noqa: BLE001 - a hostile value: redact it as text instead
            log.error("auditledger writer error (%s) while redacting an event", type(exc).__name__)
            return self._scrub_as_text(ev)

    def scrub_all(self, events: list[Captured]) -> None:
        """Scrub a batch in place (so that later spooling of it does not do it again)."""
        for i, ev in enumerate(events):
            if len(ev) <= SCRUBBED:
                events[i] = self.scrub(ev)

    def _scrub(self, ev: Captured) -> Captured:
        # The common case inline (this runs for every event, on the writer's thread): plain
        # JSON text, plain text fields, no notes, nothing the scan finds.
        details, previous, new, ws = ev[DETAILS], ev[PREVIOUS], ev[NEW], ev[WORKSPACE_ID]
        if type(ws) is WorkspaceRef:  # every Slack event carries one
            team, enterprise, name = ws.team_id, ws.enterprise_id, ws.name
            plain = all(v is None or type(v) is str for v in (team, enterprise, name))
            ws_text = f"{team or ''}\x1f{enterprise or ''}\x1f{name or ''}" if plain else None
        else:
            ws_text = ws if type(ws) is str else ""
        if (
            ws_text is not None
            and type(details) is not SanitisedJson
            and type(previous) is not SanitisedJson
            and type(new) is not SanitisedJson
            and type(ev[ACTION]) is str
            and not ev[NOTES]
            and (
                ev[RESOURCE] != "settings"
                or not ev[RESOURCE_ID]
                or not self.redactor.key_is_secret(ev[RESOURCE_ID])
            )
        ):
            joined = (
                f"{details or ''}\x1f{previous or ''}\x1f{new or ''}\x1f{ev[USER_ID] or ''}"
                f"\x1f{ev[IP] or ''}\x1f{ev[UA] or ''}\x1f{ev[RESOURCE] or ''}"
                f"\x1f{ev[RESOURCE_ID] or ''}\x1f{ev[ACTION]}\x1f{ws_text}"
            )
            if "\\u0000" not in joined and not self.redactor.may_hold_secret(joined):
                return (*ev, True)
        return self._scrub_slowly(ev)

    def _scrub_slowly(self, ev: Captured) -> Captured:
        out = list(ev)
        notes: list[Note] = list(ev[NOTES]) if ev[NOTES] else []
        pieces: list[str] = []
        for index, name in JSON_FIELDS.items():
            value = nul_free(out[index], name)
            if isinstance(value, SanitisedJson):
                notes.extend(value.notes)
                value = value.data
            out[index] = value
            if value is not None:
                pieces.append(value)
        for index, _ in _TEXTS:
            if type(out[index]) is str:
                pieces.append(out[index])
        action, ws = out[ACTION], out[WORKSPACE_ID]
        if isinstance(action, BadAction):
            pieces.append(action.text)
        if type(ws) is str:
            pieces.append(ws)
        elif isinstance(ws, WorkspaceRef):
            ws = out[WORKSPACE_ID] = _ref_as_text(ws, notes)
            pieces.extend(v for v in (ws.team_id, ws.enterprise_id, ws.name) if type(v) is str)
        if notes:
            pieces.append(repr(notes))
        redactor = self.redactor
        if redactor.may_hold_secret("\x1f".join(pieces)):
            self._redact(out, notes)
        resource_id = out[RESOURCE_ID]
        if out[RESOURCE] == "settings" and resource_id and redactor.key_is_secret(resource_id):
            # The setting's name is the key its values sit under: "smtp_password" changed
            # from one secret to another must not store either.
            for index, name in ((PREVIOUS, "previous_value"), (NEW, "new_value")):
                if out[index] is not None and out[index] != _REDACTED_JSON:
                    out[index] = _REDACTED_JSON
                    notes.append({"field": name, "path": "$", "change": "redacted (setting)"})
        out[NOTES] = notes or None
        out.append(True)
        return tuple(out)

    def _redact(self, out: list[Any], notes: list[Note]) -> None:
        redact = self.redactor.redact_text
        for index, name in _TEXTS:
            value = out[index]
            if type(value) is str:
                text, changed = redact(value)
                if changed:
                    out[index] = text
                    notes.append({"field": name, "change": "redacted (value)"})
        action = out[ACTION]
        if isinstance(action, BadAction):
            out[ACTION] = BadAction(redact(action.text)[0])
        ws = out[WORKSPACE_ID]
        if type(ws) is str:
            text, changed = redact(ws)
            if changed:
                out[WORKSPACE_ID] = text
                notes.append({"field": "workspace_id", "change": "redacted (value)"})
        elif isinstance(ws, WorkspaceRef):
            fields: dict[str, Any] = {}
            for name in ("team_id", "enterprise_id", "name"):
                value = getattr(ws, name)
                if type(value) is str:
                    text, changed = redact(value)
                    if changed:
                        fields[name] = text
                        notes.append({"field": f"workspace.{name}", "change": "redacted (value)"})
            if fields:
                out[WORKSPACE_ID] = replace(ws, **fields)
        for i, note in enumerate(notes):
            notes[i] = {k: redact(v)[0] if isinstance(v, str) else v for k, v in note.items()}
        for index, name in JSON_FIELDS.items():
            if out[index] is not None:
                # Each value scanned on its own first: a secret in one value (or in a text
                # field) no longer costs a parse and walk of every value of the event.
                out[index], found = self.redactor.redact_json(out[index], name)
                notes.extend(found)

    def _scrub_as_text(self, ev: Captured) -> Captured:
        """For an event the scrub itself failed on: every part as redacted text."""

        def text(value: object) -> str:
            return self.redactor.redact_text(value if type(value) is str else safe_repr(value))[0]

        out: list[Any] = list(ev[:NOTES]) + [None] * max(0, NOTES - len(ev))
        for index, _ in TEXT_FIELDS.items():
            if out[index] is not None:
                out[index] = text(out[index])
        action = out[ACTION]
        out[ACTION] = text(action) if type(action) is str else BadAction(text(action))
        if not isinstance(out[WORKSPACE_ID], uuid.UUID | type(None)):
            out[WORKSPACE_ID] = None
        for index in JSON_FIELDS:
            value = out[index]
            if value is not None:
                data = value.data if isinstance(value, SanitisedJson) else value
                out[index] = orjson.dumps(text(data)).decode()
        change = "could not be checked for secrets field by field: stored as redacted text"
        out.append([{"field": "event", "change": change}])
        out.append(True)
        return tuple(out)


def _ref_as_text(ref: WorkspaceRef, notes: list[Note]) -> WorkspaceRef:
    """A ref whose ids or name are not text (an object, an Enum...): their text, as the
    writer would store it, so that redaction sees what will be stored."""
    fields: dict[str, Any] = {}
    for name in ("team_id", "enterprise_id", "name"):
        value = getattr(ref, name)
        if value is not None and type(value) is not str:
            fields[name] = str.__str__(value) if isinstance(value, str) else safe_repr(value)
            notes.append({"field": f"workspace.{name}", "change": "stored as text"})
    return replace(ref, **fields) if fields else ref
