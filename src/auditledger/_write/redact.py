"""Keeping credentials out of the log.

Three rules, applied to every stored text and at any depth of the JSON values:

- values under keys that look like credentials are replaced whole (``redact_keys``: a fragment
  of four letters or fewer, like ``pwd`` or ``otp``, must be a whole word of the key, so that
  ``passenger`` or ``oauth_provider`` stay; longer ones may be anywhere in it). Keys are
  compared folded: case, separators, accents and look-alike letters do not matter;
- credential-shaped text (Slack tokens, ``Bearer`` values, JWTs, PEM private keys, ...: see
  ``redact_patterns``) is replaced wherever it appears;
- in free text, ``key=value`` and ``key: value`` with a credential key (an object's repr, a URL
  query, a header line) lose the value.

A cheap scan of the text decides whether the full walk is needed, so clean events cost one pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import ahocorasick_rs
import orjson

from .redact_patterns import (
    ASSIGN_RE,
    AWS_SECRET_RE,
    BASIC_RE,
    KEY_WORD_RE,
    REDACTED,
    VALUE_RE,
    aws_secret_shaped,
    basic_credentials,
    fold,
)
from .sanitise import Note

__all__ = ["DEFAULT_REDACT_KEYS", "REDACTED", "Redactor"]

DEFAULT_REDACT_KEYS: tuple[str, ...] = (
    "token",
    "secret",
    "password",
    "passwd",
    "passphrase",
    "passcode",
    "pwd",
    "pass",
    "authorization",
    "auth",
    "cookie",
    "api_key",
    "apikey",
    "client_secret",
    "private_key",
    "access_key",
    "credential",
    "creds",
    "session_id",
    "signature",
    "otp",
)

# may_hold_secret looks for a substring of each pattern, with the pattern's case rules
# (lowercasing all of them made "Asia/Tokyo" look like an AWS key id).
# Every byte but a-z and 0-9: what _normalise_key drops (UTF-8 bytes of non-ASCII included).
_NOT_KEY = bytes(b for b in range(256) if not (0x61 <= b <= 0x7A or 0x30 <= b <= 0x39))
# Base64 letters to "a", everything else to " ": a run of 40 "a" may be an AWS secret key.
_B64_RUNS = bytes(
    0x61 if (chr(b).isascii() and chr(b).isalnum()) or chr(b) in "+/" else 0x20 for b in range(256)
)
_A40 = b"a" * 40
_RUN_40 = b" " + _A40 + b" "  # exactly 40: a longer run is not a key
# Markers of credential-shaped values (see redact_patterns.VALUE_PATTERNS), in the lowered
# text: Slack tokens (rotating ones too), Bearer and HTTP Basic credentials, PEM private keys
# (even cut short)...
_LOWER_MARKERS = ("xox", "xapp-", "xwfp-", "bearer", "basic", "private key")
# ... and with their case: a JWT, AWS key ids, GitHub tokens. (Stripe's "sk_" and URLs' "://"
# are searched for on their own: stripped, they would be no marker at all.)
_CASED_MARKERS = ("eyJ", "AKIA", "ASIA", "github_pat_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_")
_FRAGMENT, _WORD, _LOWERED, _CASED = range(4)
_DFA = ahocorasick_rs.Implementation.DFA
_SHORT = 4  # fragments this long or shorter must be a whole word of the key


def _normalise_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", fold(key).lower())


class Redactor:
    """Redacts one configured denylist of key fragments plus credential-shaped values."""

    def __init__(self, keys: Iterable[str] = DEFAULT_REDACT_KEYS) -> None:
        fragments = {_normalise_key(k) for k in keys if _normalise_key(k)}
        self.fragments = tuple(sorted(f for f in fragments if len(f) > _SHORT))
        self.words = frozenset(f for f in fragments if len(f) <= _SHORT)
        self._keys: dict[str, bool] = {}  # key_is_secret's answers: keys repeat a lot
        # The scan deciding whether the walk is needed must be a superset of what the walk
        # redacts, and cheap: it runs on every event. Plain substring searches on the text
        # lowered (and, for key fragments, stripped as _normalise_key strips keys) cost ~2 µs
        # per event; a regex allowing a separator between letters cost 18 µs.
        # A fragment containing another is found by the shorter one ("clientsecret").
        self._scan_fragments = tuple(
            f for f in self.fragments if not any(o != f and o in f for o in self.fragments)
        )
        # Short words are searched as substrings first ("auth" is in every "oauth"), then as
        # words the way KEY_WORD_RE splits keys: not after a letter unless capitalised, not
        # before a lowercase letter.
        self._scan_words = tuple(sorted(self.words))
        # One automaton, one pass over the text lowered and stripped of everything but a-z
        # and 0-9 (as keys are compared), whatever the number of keys and markers: a
        # substring search for each cost ~0.25 µs on a typical event (~13 µs in all). What
        # it finds there is a candidate, confirmed in the text itself by the check below
        # (a short word must be a word; a marker must be there with its separators, and
        # its case where it has one).
        checks: dict[bytes, list[tuple[int, str]]] = {}
        for kind, needles in (
            (_FRAGMENT, self._scan_fragments),
            (_WORD, self._scan_words),
            (_LOWERED, _LOWER_MARKERS),
            (_CASED, _CASED_MARKERS),
        ):
            for needle in needles:
                key = needle.lower().encode().translate(None, _NOT_KEY)
                checks.setdefault(key, []).append((kind, needle))
        self._candidates = list(checks.items())
        self._scan = ahocorasick_rs.BytesAhoCorasick(
            [key for key, _ in self._candidates], implementation=_DFA
        )
        self._word_re = (
            re.compile(
                "|".join(
                    f"(?:(?<![A-Za-z])(?i:{re.escape(w)})|[{w[0].upper()}](?i:{re.escape(w[1:])}))"
                    "(?![a-z])"
                    for w in sorted(self.words)
                )
            )
            if self.words
            else None
        )

    def key_is_secret(self, key: str) -> bool:
        known = self._keys.get(key)
        if known is not None:
            return known
        norm = _normalise_key(key)
        secret = any(fragment in norm for fragment in self.fragments)
        if not secret and self.words:
            words = {w.lower() for w in KEY_WORD_RE.findall(fold(key))}
            secret = not self.words.isdisjoint(words)
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[key] = secret
        return secret

    def redact_json(self, data: str, field: str) -> tuple[str, list[Note]]:
        """The JSON with credentials replaced, and a note for each replacement."""
        if not self.may_hold_secret(data):
            return data, []
        return self.redact_json_walk(data, field)

    def redact_json_walk(self, data: str, field: str) -> tuple[str, list[Note]]:
        """``redact_json`` without the scan (the caller's scan said it may hold one)."""
        notes: list[Note] = []
        cleaned = self._walk(orjson.loads(data), "$", field, notes)
        if not notes:
            return data, []
        return orjson.dumps(cleaned, option=orjson.OPT_SORT_KEYS).decode(), notes

    def may_hold_secret(self, data: str) -> bool:
        """A cheap superset test: False means no rule would change anything in ``data``."""
        if "\\" in data:
            # A JSON escape in a key hides it from this scan of the text ("api\tkey" reads
            # "apitkey", "to\u006ben" "tou006ben") but not from the walk, which decodes it.
            return True
        # Folded as keys are: full-width and Cyrillic look-alikes of "password" read so.
        lowered = data.lower() if data.isascii() else fold(data).lower()
        # (surrogatepass: a lone surrogate is made storable later, not refused here)
        low_bytes = lowered.encode("utf-8", "surrogatepass")
        stripped = low_bytes.translate(None, _NOT_KEY)
        # Overlapping: a candidate that turns out not to be one ("auth" in "oauth") must not
        # hide another that overlaps it.
        for index, _, _ in self._scan.find_matches_as_indexes(stripped, overlapping=True):
            for kind, needle in self._candidates[index][1]:
                if (
                    kind == _FRAGMENT
                    or (kind == _WORD and self._has_word(data, lowered, needle))
                    or (kind == _LOWERED and needle in lowered)
                    or (kind == _CASED and needle in data)
                ):
                    return True
        # Markers that are no candidates in the stripped text: "sk" is in every "task".
        if "sk_" in data:  # Stripe
            return True
        if "://" in data and ("@" in data or "hooks.slack.com" in lowered):
            return True
        runs = low_bytes.translate(_B64_RUNS)  # an AWS secret access key: 40, not 41
        return _A40 in runs and _RUN_40 in b" %s " % runs

    def _has_word(self, data: str, lowered: str, word: str) -> bool:
        """Whether ``word`` occurs as a word the way KEY_WORD_RE splits keys: not after a
        letter unless capitalised, not before a lowercase letter ("auth" in every "oauth"
        is not one). Checked by hand: a regex of lookbehinds costs ~0.5 ms per event."""
        if not data.isascii():
            return self._word_re is not None and self._word_re.search(fold(data)) is not None
        end = len(data)
        at = lowered.find(word)
        while at >= 0:
            after = at + len(word)
            before_ok = at == 0 or not data[at - 1].isalpha() or data[at].isupper()
            if before_ok and (after == end or not data[after].islower()):
                return True
            at = lowered.find(word, at + 1)
        return False

    def redact_text(self, text: str) -> tuple[str, bool]:
        """Free text with every credential in it replaced."""
        replaced = VALUE_RE.sub(REDACTED, text)
        if "asic" in replaced or "ASIC" in replaced:
            replaced = BASIC_RE.sub(_basic, replaced)
        if len(replaced) >= 40:
            replaced = AWS_SECRET_RE.sub(_aws, replaced)
        if ("=" in replaced or ":" in replaced) and self._assignment_possible(replaced):
            replaced = self._redact_assignments(replaced)
        return replaced, replaced != text

    def _assignment_possible(self, text: str) -> bool:
        stripped = _normalise_key(text)
        if any(f in stripped for f in self._scan_fragments):
            return True
        return self._word_re is not None and self._word_re.search(fold(text)) is not None

    def _redact_assignments(self, text: str) -> str:
        # Matched on folded text (one character for one) so that look-alike letters in the
        # key do not hide it; replaced in the original.
        folded = fold(text)
        out: list[str] = []
        last = 0
        for match in ASSIGN_RE.finditer(folded):
            value = match.group("value").strip("\"'")
            if not value or value.startswith(REDACTED[:-1]):
                continue
            if not self.key_is_secret(match.group("key")):
                continue
            out.append(text[last : match.start("value")])
            out.append(REDACTED)
            last = match.end("value")
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)

    def _walk(self, value: Any, path: str, field: str, notes: list[Note]) -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for k, v in value.items():
                name, changed = self.redact_text(k)
                if changed:
                    # A credential used as a key: the key itself is replaced.
                    k = _unique(name, out)
                    note = {"field": field, "path": f"{path}.{k}", "change": "redacted (key name)"}
                    notes.append(note)
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


def _basic(match: re.Match[str]) -> str:
    return REDACTED if basic_credentials(match.group(1)) else match.group(0)


def _aws(match: re.Match[str]) -> str:
    return REDACTED if aws_secret_shaped(match.group(0)) else match.group(0)


def _unique(name: str, taken: dict[str, Any]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name} ({n})"
    return candidate
