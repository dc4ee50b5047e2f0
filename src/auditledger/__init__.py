"""auditledger: a security audit log for multi-tenant apps.

Cheap to write (a call costs microseconds and never raises), impossible to lose quietly (outages
and overload spill to a local spool that is replayed), and hard to falsify.

    import auditledger

    auditledger.configure(database_url="postgresql://app@db/app")
    auditledger.audit_login("U123", workspace_id, ip_address="203.0.113.7")

Every public name is imported the first time it is used (module ``__getattr__``, PEP 562):
``import auditledger`` alone, or the CLI starting a command, does not pay for SQLAlchemy and
the writer (a quarter of a second) before it needs them.
"""

from __future__ import annotations

import importlib as _importlib
import logging as _logging
import typing as _typing

if _typing.TYPE_CHECKING:
    from ._actions import AuditAction
    from ._api.default import close, configure, default_logger, flush, get_logger
    from ._api.helpers import AuditHelpers, BoundAuditLogger
    from ._api.logger import AuditLogger, install_sigterm_handler
    from ._api.reader import AuditReader, Page
    from ._errors import (
        AuditLedgerError,
        ConfigurationError,
        InvalidCursor,
        MissingExtraError,
        SchemaError,
        VerifyError,
    )
    from ._events import AuditEvent, QuarantinedEvent, WorkspaceRef
    from ._gdpr.erase import ErasureError, ErasureResult, erase_subject
    from ._gdpr.retention import RetentionError, RetentionResult, apply_retention
    from ._gdpr.retention import set_policy as set_retention
    from ._read.store import AuditStore
    from ._read.verify.report import VerifyProblem, VerifyReport
    from ._read.verify.run import verify_log
    from ._write.redact import DEFAULT_REDACT_KEYS
    from ._write.stats import AuditStats

    log_audit_event = default_logger.log_audit_event
    audit_login = default_logger.audit_login
    audit_logout = default_logger.audit_logout
    audit_data_export = default_logger.audit_data_export
    audit_data_deletion = default_logger.audit_data_deletion
    audit_settings_change = default_logger.audit_settings_change
    audit_oauth_connected = default_logger.audit_oauth_connected
    audit_oauth_disconnected = default_logger.audit_oauth_disconnected
    audit_subscription_created = default_logger.audit_subscription_created
    audit_subscription_cancelled = default_logger.audit_subscription_cancelled
    audit_admin_action = default_logger.audit_admin_action
    __version__: str

__all__ = [
    "DEFAULT_REDACT_KEYS",
    "AuditAction",
    "AuditEvent",
    "AuditHelpers",
    "AuditLedgerError",
    "AuditLogger",
    "AuditReader",
    "AuditStats",
    "AuditStore",
    "BoundAuditLogger",
    "ConfigurationError",
    "ErasureError",
    "ErasureResult",
    "InvalidCursor",
    "MissingExtraError",
    "Page",
    "QuarantinedEvent",
    "RetentionError",
    "RetentionResult",
    "SchemaError",
    "VerifyError",
    "VerifyProblem",
    "VerifyReport",
    "WorkspaceRef",
    "apply_retention",
    "audit_admin_action",
    "audit_data_deletion",
    "audit_data_export",
    "audit_login",
    "audit_logout",
    "audit_oauth_connected",
    "audit_oauth_disconnected",
    "audit_settings_change",
    "audit_subscription_cancelled",
    "audit_subscription_created",
    "close",
    "configure",
    "erase_subject",
    "flush",
    "get_logger",
    "install_sigterm_handler",
    "log_audit_event",
    "set_retention",
    "verify_log",
]

# Where each public name lives: (module, attribute).
_WHERE: dict[str, tuple[str, str]] = {
    "AuditAction": ("._actions", "AuditAction"),
    "close": ("._api.default", "close"),
    "configure": ("._api.default", "configure"),
    "default_logger": ("._api.default", "default_logger"),
    "flush": ("._api.default", "flush"),
    "get_logger": ("._api.default", "get_logger"),
    "AuditHelpers": ("._api.helpers", "AuditHelpers"),
    "BoundAuditLogger": ("._api.helpers", "BoundAuditLogger"),
    "AuditLogger": ("._api.logger", "AuditLogger"),
    "install_sigterm_handler": ("._api.logger", "install_sigterm_handler"),
    "AuditReader": ("._api.reader", "AuditReader"),
    "Page": ("._api.reader", "Page"),
    "AuditLedgerError": ("._errors", "AuditLedgerError"),
    "ConfigurationError": ("._errors", "ConfigurationError"),
    "InvalidCursor": ("._errors", "InvalidCursor"),
    "MissingExtraError": ("._errors", "MissingExtraError"),
    "SchemaError": ("._errors", "SchemaError"),
    "VerifyError": ("._errors", "VerifyError"),
    "AuditEvent": ("._events", "AuditEvent"),
    "QuarantinedEvent": ("._events", "QuarantinedEvent"),
    "WorkspaceRef": ("._events", "WorkspaceRef"),
    "ErasureError": ("._gdpr.erase", "ErasureError"),
    "ErasureResult": ("._gdpr.erase", "ErasureResult"),
    "erase_subject": ("._gdpr.erase", "erase_subject"),
    "RetentionError": ("._gdpr.retention", "RetentionError"),
    "RetentionResult": ("._gdpr.retention", "RetentionResult"),
    "apply_retention": ("._gdpr.retention", "apply_retention"),
    "set_retention": ("._gdpr.retention", "set_policy"),
    "AuditStore": ("._read.store", "AuditStore"),
    "VerifyProblem": ("._read.verify.report", "VerifyProblem"),
    "VerifyReport": ("._read.verify.report", "VerifyReport"),
    "verify_log": ("._read.verify.run", "verify_log"),
    "DEFAULT_REDACT_KEYS": ("._write.redact", "DEFAULT_REDACT_KEYS"),
    "AuditStats": ("._write.stats", "AuditStats"),
}
# The module-level helpers: methods of the default logger.
_HELPERS = frozenset(
    name for name in __all__ if name == "log_audit_event" or name.startswith("audit_")
)


def __getattr__(name: str) -> _typing.Any:
    if name in _HELPERS:
        value = getattr(__getattr__("default_logger"), name)
    elif name in _WHERE:
        module, attribute = _WHERE[name]
        value = getattr(_importlib.import_module(module, __name__), attribute)
    elif name == "__version__":
        # One version, written in pyproject.toml: read back from the installed package's metadata.
        from importlib.metadata import version

        value = version("auditledger")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # looked up once: later reads find it without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, "default_logger", "__version__"})


_logging.getLogger("auditledger").addHandler(_logging.NullHandler())
