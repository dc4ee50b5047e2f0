"""Keeping credentials out of the log.

Two rules, applied at any depth of ``details``, ``previous_value`` and ``new_value``:
values under keys that look like credentials are replaced whole, and credential-shaped text
(Slack tokens, ``Bearer`` values, JWTs, ...) is replaced wherever it appears. A cheap scan of the
serialised text decides whether the full walk is needed, so clean events cost one regex search.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

from .sanitise import Note

REDACTED = "[REDACTED]"

DEFAULT_REDACT_KEYS: tuple[str, ...] = (
    "token",
    "secret",
    "password",
    "passwd",
    "passphrase",
    "authorization",
    "cookie",
    "api_key",
    "apikey",
    "client_secret",
    "private_key",
    "access_key",
    "credential",
    "session_id",
    "signature",
)

# Credential-shaped text, whatever key it sits under.
_VALUE_PATTERNS = (
    r"xox[a-z]-[A-Za-z0-9-]{6,}",  # Slack tokens of every kind (bot, user, app, client, ...)
    r"xwfp-[A-Za-z0-9-]{6,}",  # Slack workflow (function) tokens
    r"xoxe\.xox[a-z]-[A-Za-z0-9-]{6,}",  # Slack rotating tokens
    r"xapp-[A-Za-z0-9-]{6,}",  # Slack app-level tokens
    r"(?i:bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*",
    r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",  # JWT
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",  # AWS access key id
    r"gh[pousr]_[A-Za-z0-9]{30,}",  # GitHub tokens
    r"sk_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe secret keys
    r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)",  # user:password inside a URL
)
VALUE_RE = re.compile("|".join(_VALUE_PATTERNS))
# may_hold_secret looks for a substring of each pattern above, with the pattern's case rules
# (lowercasing all of them made "Asia/Tokyo" look like an AWS key id). These it finds in the
# lowered, stripped text: Slack tokens (rotating ones too) and "Bearer".
_LOWERCASE_VALUE_MARKERS = ("xox", "xapp", "xwfp", "bearer")
_GITHUB_TOKEN = re.compile(r"gh[pousr]_")
# Every byte but a-z and 0-9: what _normalise_key drops (UTF-8 bytes of non-ASCII included).
_NOT_KEY = bytes(b for b in range(256) if not (0x61 <= b <= 0x7A or 0x30 <= b <= 0x39))


def _normalise_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


class Redactor:
    """Redacts one configured denylist of key fragments plus credential-shaped values."""

    def __init__(self, keys: Iterable[str] = DEFAULT_REDACT_KEYS) -> None:
        self.fragments = tuple(sorted({_normalise_key(k) for k in keys if _normalise_key(k)}))
        # The scan deciding whether the walk is needed must be a superset of what the walk
        # redacts, and cheap: it runs on every JSON value. A regex allowing a separator between
        # every letter inside a quoted key backtracked through every string (18 µs per
        # 180-byte value, 60% of the writer's time) and missed keys such as "pass.word".
        # Plain substring searches on the text lowered (and, for keys, stripped as
        # _normalise_key strips keys) cost ~2 µs per value.
        # A fragment containing another is found by the shorter one ("clientsecret").
        # Lowercase value markers are searched there too (removing characters can only
        # create matches, not break one made of letters alone), which spares a lowered copy.
        scan = (*self.fragments, *_LOWERCASE_VALUE_MARKERS)
        self._scan_fragments = tuple(f for f in scan if not any(o != f and o in f for o in scan))

    def key_is_secret(self, key: str) -> bool:
        norm = _normalise_key(key)
        return any(fragment in norm for fragment in self.fragments)

    def redact_json(self, data: str, field: str) -> tuple[str, list[Note]]:
        """The JSON with credentials replaced, and a note for each replacement."""
        if not self.may_hold_secret(data):
            return data, []
        notes: list[Note] = []
        cleaned = self._walk(orjson.loads(data), "$", field, notes)
        if not notes:
            return data, []
        return orjson.dumps(cleaned, option=orjson.OPT_SORT_KEYS).decode(), notes

    def may_hold_secret(self, data: str) -> bool:
        """A cheap superset test: False means the redaction walk would change nothing."""
        if "\\" in data:
            # A JSON escape in a key hides it from this scan of the text ("api\tkey" reads
            # "apitkey", "to\u006ben" "tou006ben") but not from the walk, which decodes it.
            return True
        if data.isascii():
            stripped = data.encode().lower().translate(None, _NOT_KEY).decode()
        else:
            # Unicode lowercasing, as the walk does: a key spelled with the Kelvin sign
            # ("api_\u212aey") is "apikey" to it, and bytes.lower() leaves that sign alone.
            stripped = _normalise_key(data)
        # Explicit loops and or-chains: any() over a generator costs ~60 ns per item, and
        # each substring search ~200 ns on this machine for a typical event's values.
        for fragment in self._scan_fragments:
            if fragment in stripped:
                return True
        return (
            "eyJ" in data  # JWT
            or "AKIA" in data
            or "ASIA" in data
            or "sk_" in data  # Stripe
            or ("@" in data and "://" in data)  # user:password@ in a URL
            or ("gh" in data and _GITHUB_TOKEN.search(data) is not None)
        )

    def redact_text(self, text: str) -> tuple[str, bool]:
        replaced, count = VALUE_RE.subn(REDACTED, text)
        return replaced, count > 0

    def _walk(self, value: Any, path: str, field: str, notes: list[Note]) -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for k, v in value.items():
                sub = f"{path}.{k}"
                if self.key_is_secret(k) and v is not None and v != "":
                    notes.append({"field": field, "path": sub, "change": "redacted (key)"})
                    out[k] = REDACTED
                else:
                    out[k] = self._walk(v, sub, field, notes)
            return out
        if isinstance(value, list):
            return [self._walk(v, f"{path}[{i}]", field, notes) for i, v in enumerate(value)]
        if isinstance(value, str):
            text, changed = self.redact_text(value)
            if changed:
                notes.append({"field": field, "path": path, "change": "redacted (value)"})
            return text
        return value
