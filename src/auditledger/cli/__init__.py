"""The ``auditledger`` command line: one module per command group, all on one Typer app."""

from __future__ import annotations

from . import db, events, export, gdpr, keys, nats, retention, status, verify, viewer
from ._app import app

__all__ = ["app", "main"]

# Imported for their commands, which register themselves on ``app``.
_COMMAND_GROUPS = (db, events, export, keys, nats, status, verify, viewer)
app.add_typer(gdpr.gdpr_app, name="gdpr")
app.add_typer(retention.retention_app, name="retention")


def main() -> None:
    app()
