"""Making any Python value storable, and saying what had to change.

The call path serialises values with orjson (fast, and a snapshot: later mutation by the caller
cannot change the event). Whatever orjson refuses, or would store wrongly (NaN becomes null,
NUL characters are rejected by PostgreSQL), takes the slow path here: a walk that converts,
caps and records each change as a note kept with the event.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import reprlib
import uuid
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any

import orjson

Note = dict[str, Any]

MAX_DEPTH = 64
MAX_REPR = 1000
_REPLACEMENT = "\ufffd"

_repr = reprlib.Repr()
_repr.maxstring = MAX_REPR
_repr.maxother = MAX_REPR
_repr.maxlevel = 4


def safe_repr(value: object) -> str:
    """``repr`` that never raises, never runs away on size or depth, and is storable text
    (a user's ``__repr__`` may return NUL characters or lone surrogates)."""
    try:
        text = _repr.repr(value)
    except Exception:  # noqa: BLE001 - any user __repr__ may raise anything
        text = f"<unrepresentable {type_name(value)}>"
    if not isinstance(text, str):
        text = f"<unrepresentable {type_name(value)}>"
    return clean_text(text[:MAX_REPR])[0]


def type_name(value: object) -> str:
    try:
        return type(value).__qualname__
    except Exception:  # noqa: BLE001 - a hostile metaclass can make even this raise
        return "object"


def clean_text(text: str) -> tuple[str, str | None]:
    """Text PostgreSQL accepts: no NUL, no lone surrogates. Returns (text, change or None)."""
    changes = []
    if "\x00" in text:
        text = text.replace("\x00", _REPLACEMENT)
        changes.append("NUL characters replaced")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _clean_surrogates(text)
            changes.append("invalid characters (lone surrogates) replaced")
    return text, ("; ".join(changes) or None)


def _clean_surrogates(text: str) -> str:
    return "".join(_REPLACEMENT if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


class _Walker:
    def __init__(self, field: str) -> None:
        self.field = field
        self.notes: list[Note] = []
        self._active: set[int] = set()

    def note(self, path: str, change: str) -> None:
        self.notes.append({"field": self.field, "path": path, "change": change})

    def text(self, value: str, path: str) -> str:
        if "\x00" in value:
            value = value.replace("\x00", _REPLACEMENT)
            self.note(path, "NUL characters replaced")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                value = _clean_surrogates(value)
                self.note(path, "lone surrogates replaced")
        return value

    def walk(self, value: Any, path: str, depth: int) -> Any:
        if value is None or value is True or value is False:
            return value
        if isinstance(value, str):
            return self.text(str(value), path)
        if isinstance(value, int):
            if -(2**63) <= value < 2**64:
                return int(value)
            self.note(path, "integer too large for JSON, stored as a string")
            return str(value)
        if isinstance(value, float):
            if math.isfinite(value):
                return float(value)
            self.note(path, f"non-finite number {value!r} stored as a string")
            return repr(float(value))
        if depth >= MAX_DEPTH:
            self.note(path, f"nested deeper than {MAX_DEPTH} levels, cut")
            return f"[nested deeper than {MAX_DEPTH} levels]"
        if isinstance(value, Mapping | list | tuple | set | frozenset):
            return self._container(value, path, depth)
        if isinstance(value, Enum):
            return self.walk(value.value, path, depth + 1)
        if isinstance(value, datetime | date | time):
            return value.isoformat()
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, Decimal):
            self.note(path, "decimal stored as a string")
            return str(value)
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.note(path, "bytes stored as base64")
                return base64.b64encode(raw).decode("ascii")
            self.note(path, "bytes stored as UTF-8 text")
            return self.text(text, path)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
            return self._container(fields, path, depth)
        self.note(path, f"{type_name(value)} object stored as its repr")
        return self.text(safe_repr(value), path)

    def _container(self, value: Any, path: str, depth: int) -> Any:
        key = id(value)
        if key in self._active:
            self.note(path, "reference cycle cut")
            return "[cycle]"
        self._active.add(key)
        try:
            if isinstance(value, Mapping):
                return self._mapping(value, path, depth)
            if isinstance(value, set | frozenset):
                self.note(path, "set stored as a list")
                items = sorted(value, key=safe_repr)
            else:
                items = list(value)
            return [self.walk(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(items)]
        finally:
            self._active.discard(key)

    def _mapping(self, value: Mapping[Any, Any], path: str, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in list(value.items()):
            if isinstance(k, str):
                name = self.text(str(k), path)
            else:
                name = self.text(k if isinstance(k, str) else safe_repr(k), path)
                self.note(f"{path}.{name}", "non-string key stored as its repr")
            out[name] = self.walk(v, f"{path}.{name}", depth + 1)
        return out


def sanitise_json(value: object, field: str) -> tuple[str, list[Note]]:
    """Serialise anything as JSON, returning the text and the changes that were needed."""
    walker = _Walker(field)
    try:
        cleaned = walker.walk(value, "$", 0)
        return orjson.dumps(cleaned, option=orjson.OPT_SORT_KEYS).decode(), walker.notes
    except Exception as exc:  # noqa: BLE001 - last resort: a value that defeats the walk
        note = {"field": field, "path": "$", "change": f"unserialisable ({type_name(exc)})"}
        return orjson.dumps(safe_repr(value)).decode(), [*walker.notes, note]


# Exact types that never hold a float: most leaves of a JSON value, decided by one set lookup.
_NO_FLOAT = frozenset({str, int, bool, type(None)})


def has_nonfinite(value: object, depth: int = 0) -> bool:
    """Whether a value orjson accepted holds NaN or an infinity (which orjson writes as null).

    Runs on the caller's thread for every JSON value whose text contains ``null``, so plain
    dicts and lists take a fast path (ABC and dataclass checks on each leaf cost ~6 µs for a
    small value); anything else takes the general one.
    """
    kind = type(value)
    if kind in _NO_FLOAT:
        return False
    if kind is float:
        return not math.isfinite(value)  # type: ignore[arg-type]
    if depth > MAX_DEPTH:
        return False
    if kind is dict or kind is list or kind is tuple:
        items: Iterable[object] = value.values() if kind is dict else value  # type: ignore[attr-defined, assignment]
        for item in items:  # noqa: SIM110 - any() over a generator costs ~60 ns an item
            if type(item) not in _NO_FLOAT and has_nonfinite(item, depth + 1):
                return True
        return False
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, Mapping):
        return any(has_nonfinite(v, depth + 1) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_nonfinite(v, depth + 1) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(
            has_nonfinite(getattr(value, f.name, None), depth + 1)
            for f in dataclasses.fields(value)
        )
    return False
