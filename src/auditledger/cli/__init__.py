"""The ``auditledger`` command line: one module per command group, all on one Typer app."""

from __future__ import annotations

from . import db, export, gdpr, investigate, keys, retention, status, verify
from ._app import app

__all__ = ["app", "main"]

# Imported for their commands, which register themselves on ``app``.
_COMMAND_GROUPS = (db, keys, status, verify)
investigate.register(app)  # events, tail
export.register(app)  # export, verify-bundle
app.add_typer(gdpr.gdpr_app, name="gdpr")
app.add_typer(retention.retention_app, name="retention")


def main() -> None:
    app()
