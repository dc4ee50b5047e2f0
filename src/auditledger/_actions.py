"""The typed actions of the seed (the in-app audit module this library replaces, whose
actions it keeps), and the rule for applications' own action names."""

from __future__ import annotations

import re
from enum import StrEnum


class AuditAction(StrEnum):
    """The twelve security-relevant actions every service logs."""

    LOGIN = "login"
    LOGOUT = "logout"
    DATA_EXPORT_REQUESTED = "data_export_requested"
    DATA_EXPORT_COMPLETED = "data_export_completed"
    DATA_DELETE_REQUESTED = "data_delete_requested"
    DATA_DELETE_COMPLETED = "data_delete_completed"
    SUBSCRIPTION_CREATED = "subscription_created"
    SUBSCRIPTION_CANCELLED = "subscription_cancelled"
    SETTINGS_CHANGED = "settings_changed"
    OAUTH_CONNECTED = "oauth_connected"
    OAUTH_DISCONNECTED = "oauth_disconnected"
    ADMIN_ACTION = "admin_action"


# Applications may log their own actions: lowercase snake_case words, optionally namespaced
# with dots ("billing.invoice_paid"), at most 64 characters. Anything else is quarantined.
ACTION_PATTERN = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
MAX_ACTION_LENGTH = 64


def action_problem(action: object) -> str | None:
    """Why ``action`` cannot be stored as an action name, or None when it can."""
    if not isinstance(action, str):
        return f"action must be a string, got {type(action).__name__}"
    if len(action) > MAX_ACTION_LENGTH:
        return f"action is longer than {MAX_ACTION_LENGTH} characters"
    if ACTION_PATTERN.fullmatch(action) is None:
        return "action must be lowercase snake_case (optionally dotted), e.g. 'invoice_paid'"
    return None


# The library's own records: erasures and retention cuts (which verify relies on to accept
# removed values and deleted prefixes), subject exports, views and exports of the log. An
# application logging one of these through ``log_audit_event`` could forge them (an
# insert-only role could "cover" tampering with a gdpr.erasure event), so such calls are
# quarantined instead; only the library's own code writes them.
RESERVED_NAMESPACES = ("gdpr", "retention", "audit_log")


class LibraryAction(str):
    """An action the library itself records (``audit_log.viewed``...): built only by
    auditledger's own code, which passes it to ``log_audit_event`` as the action."""

    __slots__ = ()


def reserved_problem(action: str) -> str | None:
    """Why an application may not log ``action`` (a valid name in a reserved namespace)."""
    head = action.split(".", 1)[0]
    if head in RESERVED_NAMESPACES:
        return f"action namespace '{head}.' is reserved for auditledger's own records"
    return None
