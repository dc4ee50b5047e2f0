"""Which stored values name a data subject: the one rule that subject access and erasure share.

A person U is named by an event when

- U is its actor: ``user_id`` equal to U (then their ``ip_address`` and ``user_agent`` on that
  event are theirs too, and so are the writer's notes in ``sanitised`` when one is about
  those values: a note may quote the value as it was given);
- U is its subject: ``resource_id`` equal to U;
- a string inside ``details``, ``previous_value``, ``new_value`` or ``sanitised`` (a value or
  an object key, at any depth) is U, or holds U as a whole token: not preceded and not
  followed by a letter, a digit, ``_`` or ``-``. So ``"<@U0BOB>"`` and ``"hi U0BOB, ..."``
  name U0BOB, and ``"U0BOBBY"`` or ``"xU0BOB"`` do not. Numbers and other non-strings never
  name anyone.

Matching is exact (case-sensitive): ``u0bob`` is someone else. Nothing else of an event counts:
an IP address or user agent that happens to contain the id is not the person's.

An id that cannot name one person is refused before any matching: empty, blank, with leading
or trailing whitespace, with a control character, or shorter than ``MIN_LENGTH`` characters
(a two-character id is a token inside too many unrelated strings to erase by).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import orjson

from .._errors import InvalidSubjectId
from .._events import AuditEvent

MIN_LENGTH = 3
JSON_FIELDS = ("details", "previous_value", "new_value", "sanitised")
ACTOR_FIELDS = ("user_id", "ip_address", "user_agent")


def check_subject_id(user_id: object) -> str:
    """``user_id`` if it can name one person, else InvalidSubjectId saying why."""
    if not isinstance(user_id, str):
        raise InvalidSubjectId(f"the user id must be text, not {type(user_id).__name__}")
    if not user_id:
        raise InvalidSubjectId("the user id is empty")
    if not user_id.strip():
        raise InvalidSubjectId("the user id is blank")
    if user_id != user_id.strip():
        raise InvalidSubjectId("the user id starts or ends with whitespace")
    if any(unicodedata.category(ch) == "Cc" for ch in user_id):
        raise InvalidSubjectId("the user id contains a control character")
    if len(user_id) < MIN_LENGTH:
        raise InvalidSubjectId(f"the user id is shorter than {MIN_LENGTH} characters")
    return user_id


def json_form(user_id: str) -> str:
    """The id as it appears inside JSON text (quotes and backslashes escaped): a plain
    substring test on stored JSON text finds every event the exact rule can match."""
    return orjson.dumps(user_id).decode()[1:-1]


def about_actor_fields(notes: Any) -> bool:
    """Whether the writer's notes (``sanitised``) say something about the actor's own
    values (user id, IP address, user agent)."""
    if not isinstance(notes, list):
        return False
    return any(isinstance(note, dict) and note.get("field") in ACTOR_FIELDS for note in notes)


class SubjectMatcher:
    """The rule above for one person."""

    __slots__ = ("_needle_bytes", "_token", "needle", "user_id")

    def __init__(self, user_id: object) -> None:
        self.user_id = check_subject_id(user_id)
        self.needle = json_form(self.user_id)
        self._needle_bytes = self.needle.encode()
        self._token = re.compile(r"(?<![\w-])" + re.escape(self.user_id) + r"(?![\w-])")

    def names_text(self, text: str) -> bool:
        return self.user_id in text and self._token.search(text) is not None

    def names_json(self, value: Any) -> bool:
        """Whether any string in a parsed JSON value (keys included) names the person."""
        try:
            # Most values do not hold the id at all: one C call says so without the walk.
            if self._needle_bytes not in orjson.dumps(value):
                return False
        except TypeError:
            pass  # not JSON-serialisable as it is (orjson refuses it): walk it
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if self.names_text(item):
                    return True
            elif isinstance(item, dict):
                for key, inner in item.items():
                    if isinstance(key, str) and self.names_text(key):
                        return True
                    stack.append(inner)
            elif isinstance(item, list | tuple):
                stack.extend(item)
        return False

    def fields(self, event: AuditEvent) -> frozenset[str]:
        """The event's stored values that are the person's (empty: the event is not about
        them). Subject access returns the events where this is not empty; erasure removes
        exactly these values."""
        found: set[str] = set()
        if event.user_id == self.user_id:
            found.update(name for name in ACTOR_FIELDS if getattr(event, name) is not None)
            if about_actor_fields(event.sanitised):
                # The writer's notes on the actor's own values may quote them (an IP address
                # that was not one is kept there as given): theirs as well.
                found.add("sanitised")
        if event.resource_id == self.user_id:
            found.add("resource_id")
        for name in JSON_FIELDS:
            value = getattr(event, name)
            if value is not None and self.names_json(value):
                found.add(name)
        return frozenset(found)

    def quarantine_fields(self, payload: Any) -> frozenset[str]:
        """The top-level fields of a quarantined call's payload that are the person's: the
        same rule, with the payload's ``user_id`` as the actor (``"$"``: the whole payload,
        when it is not an object)."""
        if not isinstance(payload, dict):
            return frozenset({"$"}) if self.names_json(payload) else frozenset()
        actor = payload.get("user_id") == self.user_id
        return frozenset(
            key
            for key, value in payload.items()
            if (actor and key in ACTOR_FIELDS)
            or (actor and key == "sanitised" and about_actor_fields(value))
            or (isinstance(key, str) and self.names_text(key))
            or self.names_json(value)
        )
