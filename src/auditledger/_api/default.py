"""The default logger behind the module-level functions (``auditledger.audit_login(...)``)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from .._actions import AuditAction
from .helpers import AuditHelpers, WorkspaceId
from .logger import AuditLogger

log = logging.getLogger("auditledger")

_lock = threading.Lock()
_default: AuditLogger | None = None


def configure(database_url: str | None = None, **options: Any) -> AuditLogger:
    """Set the logger the module-level functions use; closes the previous one.

    Without ``database_url``, ``AUDITLEDGER_DATABASE_URL`` is used, else ``auditledger.db``.
    Invalid options raise ``ConfigurationError`` here, at start-up.
    """
    global _default
    logger = AuditLogger(database_url, **options)
    with _lock:
        previous, _default = _default, logger
    if previous is not None:
        previous.close()
    return logger


def get_logger() -> AuditLogger:
    """The default logger, created from the environment on first use."""
    global _default
    logger = _default
    if logger is not None:
        return logger
    with _lock:
        if _default is None:
            _default = AuditLogger()
        return _default


def set_logger(logger: AuditLogger | None) -> AuditLogger | None:
    """Replace the default logger without closing either; returns the previous one."""
    global _default
    with _lock:
        previous, _default = _default, logger
    return previous


class _DefaultLogger(AuditHelpers):
    def log_audit_event(
        self,
        action: AuditAction | str,
        *,
        user_id: str | None = None,
        workspace_id: WorkspaceId = None,
        ip_address: str | None = None,
        user_agent: str | None = None,
        resource: str | None = None,
        resource_id: str | None = None,
        details: Any = None,
        previous_value: Any = None,
        new_value: Any = None,
    ) -> None:
        try:
            logger = _default or get_logger()
        except Exception as exc:  # noqa: BLE001 - e.g. a bad AUDITLEDGER_DATABASE_URL
            log.error("auditledger: no default logger could be created (%s)", type(exc).__name__)
            return
        logger.log_audit_event(
            action,
            user_id=user_id,
            workspace_id=workspace_id,
            ip_address=ip_address,
            user_agent=user_agent,
            resource=resource,
            resource_id=resource_id,
            details=details,
            previous_value=previous_value,
            new_value=new_value,
        )


default_logger = _DefaultLogger()


def flush(timeout: float = 10.0) -> bool:
    """Flush the default logger (True when there is none)."""
    logger = _default
    return True if logger is None else logger.flush(timeout)


def close(timeout: float | None = None) -> bool:
    logger = set_logger(None)
    return True if logger is None else logger.close(timeout)
