"""The Typer app, its consoles and what every command shares."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from .._db.urls import ENV_DATABASE_URL
from .._errors import AuditLedgerError

app = typer.Typer(
    help="auditledger: a security audit log that is cheap to write and hard to falsify.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Create, upgrade and check the database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
keys_app = typer.Typer(help="Ed25519 keys that sign checkpoints.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

console = Console()
if not console.is_terminal:
    # Piped or under make, Rich assumes 80 columns: too narrow for an event table.
    console = Console(width=150)
err_console = Console(stderr=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar=ENV_DATABASE_URL,
        help="postgresql://... or sqlite:///path (default: sqlite:///auditledger.db)",
        show_envvar=True,
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    # Escaped: messages hold text like "auditledger[postgres]" that Rich would eat as markup.
    # Soft-wrapped: an error is one line however narrow the terminal (scripts grep for it).
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def require_database_file(database_url: str | None) -> None:
    from .._db.urls import missing_sqlite_file

    try:
        missing = missing_sqlite_file(database_url)
    except AuditLedgerError as exc:
        raise fail(str(exc)) from exc
    if missing is not None:
        raise fail(missing)
