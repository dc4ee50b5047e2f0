"""The ``auditledger`` command line: one module per command group, all on one Typer app.

Each module registers its commands on ``app`` when imported, which ``_app.LazyGroup`` does
only for the command being run (start-up stays a tenth of a second whatever a command needs).
"""

from __future__ import annotations

from ._app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
