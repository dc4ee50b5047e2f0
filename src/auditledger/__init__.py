"""auditledger: a security audit log for multi-tenant apps.

Cheap to write (a call costs microseconds and never raises), impossible to lose quietly (outages
and overload spill to a local spool that is replayed), and hard to falsify.

    import auditledger

    auditledger.configure(database_url="postgresql://app@db/app")
    auditledger.audit_login("U123", workspace_id, ip_address="203.0.113.7")
"""

from __future__ import annotations

import logging as _logging
from importlib.metadata import version as _version

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

# One version, written in pyproject.toml: read back from the installed package's metadata.
__version__ = _version("auditledger")

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

_logging.getLogger("auditledger").addHandler(_logging.NullHandler())
