"""Untrusted text on a terminal: never Rich markup, never a raw control character.

Audit rows hold whatever the application (or an attacker acting through it) passed in. Printed
as markup, ``[red]`` or ``[link=...]`` would restyle the output; printed raw, an escape sequence
could rewrite the terminal, a newline could forge a row and a bidi override could reverse what
an investigator reads. Such characters are shown as Python-style escapes instead.
"""

from __future__ import annotations

import unicodedata

from rich.text import Text

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char


def visible(value: object) -> str:
    """``value`` as text whose every character prints as itself (markup not yet escaped)."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text  # the common case, cheaply
    return "".join(_visible(c) for c in text)


def literal(value: object) -> Text:
    """A table cell or line part that Rich shows exactly as its visible text."""
    return Text(visible(value))
