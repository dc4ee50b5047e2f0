"""``auditledger db``: create, upgrade and check the schema."""

from __future__ import annotations

import typer

from .._errors import AuditLedgerError
from ._app import DatabaseUrl, app, console, err_console, fail

db_app = typer.Typer(help="Create, upgrade and check the database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None) -> None:
    """Create the schema, or upgrade it to this version's newest revision (idempotent)."""
    from .._db.migrate import upgrade

    try:
        status = upgrade(database_url)
    except AuditLedgerError as exc:
        raise fail(str(exc)) from exc
    except Exception as exc:
        raise fail(f"could not upgrade the database ({type(exc).__name__})") from exc
    console.print(f"schema at revision [bold]{status.current}[/bold] (newest: {status.head})")


@db_app.command("check")
def db_check(database_url: DatabaseUrl = None) -> None:
    """Exit 0 when the schema is current, 1 when it is behind, 2 when it cannot tell."""
    from .._db.migrate import check
    from .._db.urls import missing_sqlite_file

    try:
        missing = missing_sqlite_file(database_url)
    except AuditLedgerError as exc:
        raise fail(str(exc)) from exc
    if missing is not None:  # nothing there yet: as behind as it gets (and no file made)
        err_console.print(f"schema is behind: {missing}")
        raise typer.Exit(1)
    try:
        status = check(database_url)
    except AuditLedgerError as exc:
        raise fail(str(exc)) from exc
    except Exception as exc:
        raise fail(f"could not read the database ({type(exc).__name__})") from exc
    if status.up_to_date:
        console.print(f"schema is current (revision {status.current})")
        return
    err_console.print(
        f"schema is behind: at {status.current or 'nothing'}, newest is {status.head}; "
        "run `auditledger db upgrade`"
    )
    raise typer.Exit(1)
