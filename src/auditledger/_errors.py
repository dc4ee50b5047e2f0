"""The exceptions auditledger raises.

    AuditLedgerError
     ├── ConfigurationError   an option or URL is wrong; raised at start-up, never by a log call
     ├── MissingExtraError    an optional dependency is not installed (names the extra)
     ├── SchemaError          the database schema is missing or behind the migrations
     ├── VerifyError          verification could not run at all (it found nothing either way)
     ├── InvalidCursor        a page cursor was edited, or used with other filters (ValueError)
     └── InvalidSubjectId     a GDPR request names no usable user id (ValueError)

A log call never raises any of these: a failing write is reported through the
``auditledger`` logger and accounted for in ``AuditLogger.stats()``.
"""

from __future__ import annotations


class AuditLedgerError(Exception):
    """Base class of every exception auditledger raises on purpose."""


class ConfigurationError(AuditLedgerError, ValueError):
    """An option given to auditledger is invalid."""


class MissingExtraError(AuditLedgerError, ImportError):
    """An optional dependency is missing; the message names the extra that installs it."""

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(
            f"{module} is not installed: install it with `pip install 'auditledger[{extra}]'`"
        )
        self.extra = extra


class SchemaError(AuditLedgerError):
    """The database does not have the schema this version of auditledger expects."""


class VerifyError(AuditLedgerError):
    """Verification could not run (database unreachable, schema too old, unreadable key)."""


class InvalidCursor(AuditLedgerError, ValueError):
    """A page cursor is not one this database issued for these filters and this workspace."""


class InvalidSubjectId(AuditLedgerError, ValueError):
    """A user id given to subject access or erasure is empty, blank, padded or too short to
    name one person: matching it would find (and erase) other people's values."""


def describe_database_error(exc: BaseException) -> str:
    """What went wrong reading the database, with what to do about it (never the URL)."""
    if isinstance(exc, AuditLedgerError):
        return str(exc)
    text = str(exc).lower()
    if ("does not exist" in text and "relation" in text) or "no such table" in text:
        return "the audit tables are missing: run `auditledger db upgrade`"
    if "permission denied" in text or "insufficientprivilege" in type(exc).__name__.lower():
        return (
            "this database role is not allowed to do that (permission denied): reading needs"
            " SELECT on the audit tables; gdpr and retention need the owner's URL"
        )
    if "readonly database" in text or "read-only" in text:
        return "the database is read-only for this process: check the file's permissions"
    if "connection" in text or "could not connect" in text or "unable to open" in text:
        return (
            f"cannot connect to the database ({type(exc).__name__}): check the host, port, "
            "user, password and database name in --database-url"
        )
    return f"could not read the database ({type(exc).__name__})"
