"""The credential pre-scan: one automaton pass must find whatever the substring scan it
replaced found (kept below as the reference), so the walk still runs on every secret.

The pre-scan decides whether redaction looks at an event at all: a miss would store a secret.
The automaton (``ahocorasick_rs``) is new; this pins it against the former scan's verdicts on
text built from every key fragment and marker, with the separators, cases, look-alike letters
and escapes that once fooled a scan.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from auditledger._write.capture import capture_event
from auditledger._write.redact import _B64_RUNS, _NOT_KEY, _RUN_40, Redactor
from auditledger._write.redact_patterns import fold
from auditledger._write.scrub import Scrubber

_GITHUB_TOKEN = re.compile(r"gh[pousr]_")


def reference_scan(r: Redactor, data: str) -> bool:
    """``Redactor.may_hold_secret`` as it was before the automaton (one search per marker)."""
    if "\\" in data:
        return True
    lowered = data.lower() if data.isascii() else fold(data).lower()
    low_bytes = lowered.encode("utf-8", "surrogatepass")
    stripped = low_bytes.translate(None, _NOT_KEY).decode()
    for fragment in r._scan_fragments:
        if fragment in stripped:
            return True
    for word in r._scan_words:
        if word in lowered and r._has_word(data, lowered, word):
            return True
    return (
        "xox" in lowered
        or "xapp-" in lowered
        or "xwfp-" in lowered
        or "bearer" in lowered
        or "eyJ" in data
        or "AKIA" in data
        or "ASIA" in data
        or "sk_" in data
        or ("://" in data and ("@" in data or "hooks.slack.com" in lowered))
        or ("gh" in data and _GITHUB_TOKEN.search(data) is not None)
        or "github_pat_" in data
        or "basic" in lowered
        or "private key" in lowered
        or _RUN_40 in b" %s " % low_bytes.translate(_B64_RUNS)
    )


PIECES = [
    *("token", "secret", "password", "pass-word", "Pass", "pwd", "auth", "oauth", "OTP"),
    *("otpCode", "passenger", "author", "creds", "api_key", "Api-Key", "session_id"),
    *("xoxb-", "XOXB-", "xapp-", "xwfp-", "Bearer ", "bearer", "Basic ", "basic", "eyJ", "eyj"),
    *("AKIA", "akia", "ASIA", "Asia/Tokyo", "sk_", "SK_", "ghp_", "GHP_", "gho_", "gh", "p_"),
    *("github_pat_", "://", "@", "hooks.slack.com", "private key", "PRIVATE KEY", "x" * 40),
    *("aB3" * 13 + "x", "\u0440\u0430ssword", "\uff50\uff41\uff53\uff53", "\u212a", "é"),
    *(" ", "_", "-", ".", "=", ":", '"', "{", "}", "a", "Z", "9", "\x1f"),
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=12))
def test_the_automaton_scan_agrees_with_the_substring_scan(parts: list[str]) -> None:
    r = Redactor()
    text = "".join(parts)
    assert r.may_hold_secret(text) == reference_scan(r, text), text


def test_every_marker_alone_and_inside_clean_text_is_found() -> None:
    r = Redactor()
    filler = "Mozilla/5.0 (Macintosh) request_id=req_0a1b2c channel C0ABCDEF " * 8
    for piece in PIECES:
        for text in (piece, filler + piece + filler):
            assert r.may_hold_secret(text) == reference_scan(r, text), piece


def test_custom_keys_reach_the_automaton() -> None:
    r = Redactor(["ssn", "iban"])
    assert r.may_hold_secret('{"employee_SSN": "078-05-1120"}')
    assert r.may_hold_secret('{"IBAN_number": "DE89"}')
    assert not r.may_hold_secret('{"password_hint": "none"}')  # not a key of this redactor


def test_a_secret_in_one_value_leaves_the_clean_values_as_they_were() -> None:
    # Only the value whose own scan hits is parsed and rewritten: the others keep their bytes.
    scrubber = Scrubber(Redactor())
    details = {"z": 1, "a": [1.5, {"k": "v"}]}
    ev = capture_event(
        1, "admin_action", "U1", None, None, None, "admin", None,
        details, {"password": "hunter2"}, {"note": "fine"},
    )  # fmt: skip
    out = scrubber.scrub(ev)
    assert "hunter2" not in repr(out)
    assert out[8] == ev[8]
    assert out[10] == ev[10]
