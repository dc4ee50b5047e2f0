"""The ``auditledger`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ._errors import AuditLedgerError
from ._urls import ENV_DATABASE_URL

app = typer.Typer(
    help="auditledger: a security audit log that is cheap to write and hard to falsify.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Create, upgrade and check the database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

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


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None) -> None:
    """Create the schema, or upgrade it to this version's newest revision (idempotent)."""
    from ._migrate import upgrade

    try:
        status = upgrade(database_url)
    except AuditLedgerError as exc:
        raise _fail(str(exc)) from exc
    except Exception as exc:
        raise _fail(f"could not upgrade the database ({type(exc).__name__})") from exc
    console.print(f"schema at revision [bold]{status.current}[/bold] (newest: {status.head})")


@db_app.command("check")
def db_check(database_url: DatabaseUrl = None) -> None:
    """Exit 0 when the schema is current, 1 when it is behind, 2 when it cannot tell."""
    from ._migrate import check

    try:
        status = check(database_url)
    except AuditLedgerError as exc:
        raise _fail(str(exc)) from exc
    except Exception as exc:
        raise _fail(f"could not read the database ({type(exc).__name__})") from exc
    if status.up_to_date:
        console.print(f"schema is current (revision {status.current})")
        return
    err_console.print(
        f"schema is behind: at {status.current or 'nothing'}, newest is {status.head}; "
        "run `auditledger db upgrade`"
    )
    raise typer.Exit(1)


@app.command("events")
def events(
    database_url: DatabaseUrl = None,
    workspace: Annotated[str | None, typer.Option(help="Only this workspace id.")] = None,
    user: Annotated[str | None, typer.Option(help="Only this user id.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show the newest events."""
    from ._store import AuditStore

    try:
        with AuditStore(database_url) as store:
            found = store.events(workspace_id=workspace, user_id=user, action=action, limit=limit)
    except ValueError as exc:
        raise _fail(f"invalid filter: {exc}") from exc
    except Exception as exc:
        raise _fail(f"could not read the database ({type(exc).__name__})") from exc
    if as_json:
        for e in found:
            sys.stdout.write(json.dumps(_event_json(e), default=str) + "\n")
        return
    table = Table(title=f"newest {len(found)} events")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("action", no_wrap=True)
    for column in ("user", "workspace", "ip", "resource", "details"):
        table.add_column(column, overflow="fold")
    for e in found:
        table.add_row(
            e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            e.action,
            e.user_id or "",
            str(e.workspace_id)[:8] if e.workspace_id else "",
            e.ip_address or "",
            f"{e.resource or ''}:{e.resource_id or ''}".strip(":"),
            _short(e.new_value if e.new_value is not None else e.details, 40),
        )
    console.print(table)


def _event_json(e: Any) -> dict[str, Any]:
    return {k: getattr(e, k) for k in e.__dataclass_fields__}


def _short(value: object, width: int = 48) -> str:
    if value is None:
        return ""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command("status")
def status(
    database_url: DatabaseUrl = None,
    spool_dir: Annotated[
        Path | None, typer.Option(help="The spool folder (default: this database's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show the spool and the database: what is stored, waiting or quarantined."""
    from ._status import collect_status

    report = collect_status(database_url, spool_dir)
    if as_json:
        sys.stdout.write(json.dumps(report, default=str, indent=2) + "\n")
    else:
        table = Table(title="auditledger status", show_header=False)
        table.add_column("what")
        table.add_column("value", overflow="fold")
        for key, value in report.items():
            table.add_row(key, str(value))
        console.print(table)
    if report.get("database") != "reachable":
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
