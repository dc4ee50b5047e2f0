"""What a credential looks like: the value patterns, and key names folded to plain letters.

To add a value pattern: append it to ``VALUE_PATTERNS`` (with a comment naming the format), and
add a substring of it (a marker) to ``_LOWER_MARKERS`` or ``_CASED_MARKERS`` in ``redact.py``,
or the cheap scan will skip the text before the pattern ever runs; ``tests/test_redaction.py``
checks both.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata

REDACTED = "[REDACTED]"

# Credential-shaped text, whatever key it sits under.
VALUE_PATTERNS = (
    r"xox[a-z]-[A-Za-z0-9-]{6,}",  # Slack tokens of every kind (bot, user, app, client, ...)
    r"xwfp-[A-Za-z0-9-]{6,}",  # Slack workflow (function) tokens
    r"xoxe\.xox[a-z]-[A-Za-z0-9-]{6,}",  # Slack rotating tokens
    r"xapp-[A-Za-z0-9-]{6,}",  # Slack app-level tokens
    r"(?i:https?://hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9/_-]+",  # webhooks
    r"(?i:bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*",
    r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",  # JWT
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",  # AWS access key id
    r"gh[pousr]_[A-Za-z0-9]{30,}",  # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{20,}",  # GitHub fine-grained personal access tokens
    r"sk_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe secret keys
    r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)",  # user:password inside a URL
    # PEM private keys (RSA, EC, OpenSSH, PKCS#8, encrypted...), or what is left of one cut
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----"
    r"|[\s\S]*)",
)
VALUE_RE = re.compile("|".join(VALUE_PATTERNS))

# HTTP Basic credentials: "Basic " and base64 of "user:password" (checked by decoding it, so
# that "Basic plan" or "basic information" stay).
BASIC_RE = re.compile(r"(?i:basic)\s+([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])")

# An AWS secret access key: 40 characters of base64 standing alone, mixing upper and lower
# case and digits (a hex digest, all one case, is not one).
AWS_SECRET_RE = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")

# ``key=value``, ``key: value``, ``"key": "value"`` inside free text (an object's repr, a URL
# query, a config line, a header): the value is redacted when the key is a credential key.
ASSIGN_RE = re.compile(
    r"(?P<key>[^\W\d][\w.\-]{0,63})"
    r"(?P<sep>[\"']?[ \t]*[:=][ \t]*)"
    r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'"
    r"|(?:(?i:basic|bearer|digest|token)[ \t]+)?[^\s\"'&,;)}\]<>/?=][^\s\"'&,;)}\]<>]*)"
)

# Words of a key name: "SMTP-Pass" is smtp + pass, "userPwd" user + pwd, "otp_code" otp + code.
KEY_WORD_RE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")


def basic_credentials(encoded: str) -> bool:
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


def aws_secret_shaped(text: str) -> bool:
    return (
        any(c.isupper() for c in text)
        and any(c.islower() for c in text)
        and any(c.isdigit() for c in text)
    )


# ---- letters that look alike ----------------------------------------------------------------
# Key names are compared folded: full-width, mathematical, accented and circled letters become
# their ASCII base (NFKD), and Cyrillic and Greek letters drawn like Latin ones become those, so
# "password" typed in full-width letters, or with a Cyrillic "a" and "p", is "password". One
# character for one character, so positions in folded text are positions in the original.
_CONFUSABLE = dict(
    zip(
        # Cyrillic, then Greek, lowercase and capitals, then a few Latin and Cherokee
        # letters (Unicode's confusables for Latin letters), escaped to keep this file ASCII
        "\u0430\u0501\u0435\u04bb\u0456\u0458\u04cf\u0578\u043e\u0440\u051b\u0455"
        "\u057d\u051d\u0445\u0443\u0410\u0412\u0415\u041d\u0406\u0408\u041a\u041c"
        "\u041e\u0420\u0405\u0422\u0425\u0423\u051c\u03b1\u03b2\u03b5\u03b7\u03b9"
        "\u03ba\u03bd\u03bf\u03c1\u03c4\u03c5\u03c7\u0391\u0392\u0395\u0397\u0399"
        "\u039a\u039c\u039d\u039f\u03a1\u03a4\u03a5\u03a7\u0396\u0475\u04bd\u0261"
        "\u0269\u0251\uab83",
        "adehijlnopqsuwxyABEHIJKMOPSTXYWabenikvoptuxABEHIKMNOPTYXZvegiaw",
        strict=True,
    )
)


def _fold_table() -> dict[int, str]:
    table: dict[int, str] = {}
    ranges = (
        (0x00C0, 0x0250),  # Latin-1 and Latin Extended letters with accents
        (0x1E00, 0x1F00),  # Latin Extended Additional
        (0x2100, 0x2150),  # letterlike symbols (the Kelvin sign is a K)
        (0x2460, 0x2500),  # circled letters and digits
        (0xFF00, 0xFFF0),  # full-width forms
        (0x1D400, 0x1D800),  # mathematical alphanumerics
    )
    for start, end in ranges:
        for code in range(start, end):
            decomposed = unicodedata.normalize("NFKD", chr(code))
            if decomposed and decomposed[0].isascii() and decomposed[0].isalnum():
                table[code] = decomposed[0]
    for char, latin in _CONFUSABLE.items():
        table[ord(char)] = latin
    return table


_FOLD = _fold_table()


def fold(text: str) -> str:
    """Look-alike letters replaced by their ASCII letter, one character for one."""
    return text if text.isascii() else text.translate(_FOLD)
