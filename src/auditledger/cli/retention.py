"""``auditledger retention ...``: how long events are kept, and deleting what expired."""

from __future__ import annotations

import json
import sys
from datetime import UTC
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._errors import AuditLedgerError, describe_database_error
from ._app import ENV_DATABASE_URL, app

retention_app = typer.Typer(
    help="Retention periods, and deleting expired events under signed cuts.",
    no_args_is_help=True,
)
app.add_typer(retention_app, name="retention")
console = Console(width=150) if not Console().is_terminal else Console()
err_console = Console(stderr=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar=ENV_DATABASE_URL,
        help="The owner's URL: postgresql://... or sqlite:///path",
        show_envvar=True,
    ),
]
Workspace = Annotated[
    str | None,
    typer.Option(
        "--workspace",
        help="A workspace: its id, a unique prefix of it, or a Slack team id.",
        show_default=False,
    ),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def _workspace(text: str | None, database_url: str | None) -> object:
    """The workspace as ``events`` names it: id, unique id prefix or Slack team id."""
    if text is None:
        return None
    from .._read.store import AuditStore

    store = AuditStore(database_url)
    try:
        return store.resolve_workspace(text)
    except LookupError as exc:
        raise _fail(f"--workspace: {exc.args[0]}") from exc
    except Exception as exc:
        raise _fail(describe_database_error(exc)) from exc
    finally:
        store.close()


@retention_app.command("set")
def set_(
    days: Annotated[int, typer.Option("--days", help="Keep events this many days")],
    workspace: Workspace = None,
    default: Annotated[
        bool, typer.Option("--default", help="For every workspace without its own")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Set the retention period of one workspace (--workspace W) or the default (--default)."""
    from .._gdpr.retention import set_policy

    if (workspace is None) == (not default):
        raise _fail("give exactly one of --workspace W or --default")
    target = _workspace(workspace, database_url)
    try:
        set_policy(database_url, days, target)  # type: ignore[arg-type]
    except AuditLedgerError as exc:
        raise _fail(str(exc)) from exc
    except Exception as exc:
        raise _fail(describe_database_error(exc)) from exc
    console.print(f"{workspace or 'default'}: events kept {days} days")


@retention_app.command("show")
def show(database_url: DatabaseUrl = None) -> None:
    """List the retention periods."""
    from .._gdpr.retention import policies

    try:
        rows = policies(database_url)
    except Exception as exc:
        raise _fail(describe_database_error(exc)) from exc
    if not rows:
        console.print("no retention period set: every event is kept")
        return
    table = Table(title="retention periods")
    for column in ("scope", "days", "set at (UTC)"):
        table.add_column(column)
    for scope, days, updated in rows:
        table.add_row(scope, str(days), f"{updated:%Y-%m-%d %H:%M:%S}")
    console.print(table)


@retention_app.command("apply")
def apply(
    workspace: Workspace = None,
    before: Annotated[
        str | None,
        typer.Option(
            "--before",
            help=(
                "Delete events created before this time: ISO 8601 (2026-11-01,"
                " 2026-11-01T09:30Z; naive is UTC) or a span back from now: 90d or 90d ago"
                " (units s, m or min, h, d, w)."
            ),
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would go")] = False,
    signing_key: Annotated[
        Path | None,
        typer.Option(
            "--signing-key", envvar="AUDITLEDGER_SIGNING_KEY", help="Ed25519 key for the cuts"
        ),
    ] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Recorded as the actor")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Sign a cut for each chain, then delete its expired prefix in short batches."""
    from .._chain.checkpoints import Signer
    from .._gdpr.retention import apply_retention
    from .._read.filters import parse_time

    target = _workspace(workspace, database_url)
    when = None
    if before is not None:
        try:
            when = parse_time(before)  # the forms `events --until` takes; naive is UTC
        except ValueError as exc:
            raise _fail(f"--before: {exc}") from exc
    try:
        signer = None if signing_key is None else Signer.from_file(signing_key)
        result = apply_retention(
            database_url, signer=signer, workspace=target, before=when,  # type: ignore[arg-type]
            dry_run=dry_run, actor=actor,
        )  # fmt: skip
    except AuditLedgerError as exc:
        raise _fail(str(exc)) from exc
    except Exception as exc:
        raise _fail(describe_database_error(exc)) from exc
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    verb = "would delete" if dry_run else "deleted"
    for c in result.chains:
        count = c.count if dry_run else c.deleted
        console.print(
            f"chain {c.chain_id}: {verb} {count} event(s) before position {c.first_kept}"
            f" ({c.scope}{'' if c.days is None else f', {c.days} days'})"
        )
    if result.quarantine_before is not None:
        if dry_run:
            console.print(
                f"quarantine: would delete {result.quarantine_expired} call(s) stored before"
                f" {result.quarantine_before.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
            )
        else:
            console.print(f"quarantine: deleted {result.quarantine_deleted} call(s)")
    if not result.chains:
        console.print("nothing has expired")
