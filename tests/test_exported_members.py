"""The public surface: ``auditledger.__all__`` is pinned, sorted, and every name imports; the
public modules export only what they define or mean to re-export (as httpx's
tests/test_exported_members.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from types import ModuleType

import pytest

import auditledger

PUBLIC = [
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


def test_all_is_pinned_and_sorted() -> None:
    assert auditledger.__all__ == PUBLIC
    assert sorted(PUBLIC, key=lambda n: (not n.isupper(), n)) == PUBLIC


def test_every_public_name_imports() -> None:
    for name in auditledger.__all__:
        assert getattr(auditledger, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from auditledger import *", namespace)  # noqa: S102 - the statement users write
    assert set(PUBLIC) <= set(namespace)


# Reachable but not advertised: the __future__ import, and the object the module-level
# helpers (audit_login, ...) are bound to.
UNLISTED = {"annotations", "default_logger"}


def _public(names: object) -> set[str]:
    return {
        name
        for name in names  # type: ignore[attr-defined]
        if not name.startswith("_") and not isinstance(getattr(auditledger, name), ModuleType)
    }


def test_nothing_public_is_left_out_of_all() -> None:
    # Names load on first use (the package's __getattr__): dir() lists them before that, and
    # once every one is loaded, the module holds nothing public that __all__ leaves out.
    assert _public(dir(auditledger)) - UNLISTED == set(PUBLIC)
    for name in PUBLIC:
        getattr(auditledger, name)
    assert _public(vars(auditledger)) - UNLISTED == set(PUBLIC)


def test_importing_the_package_loads_nothing_heavy() -> None:
    code = "import sys, auditledger; print(sorted(m for m in sys.modules if m in {HEAVY!r}))"
    out = subprocess.run(
        [sys.executable, "-c", code.replace("{HEAVY!r}", repr(HEAVY))],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out.strip() == "[]"


HEAVY = {"sqlalchemy", "psycopg", "asyncio", "auditledger._api.logger", "importlib.metadata"}


def test_the_version_is_the_package_metadata() -> None:
    from importlib.metadata import version

    assert auditledger.__version__ == version("auditledger")


@pytest.mark.parametrize(
    "module",
    [
        "auditledger.testing",
        "auditledger.slack",
        "auditledger.web",
        "auditledger.metrics",
        "auditledger._api.helpers",
        "auditledger._db.schema",
    ],
)
def test_each_module_exports_what_it_has(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert missing == []
