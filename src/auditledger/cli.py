"""The ``auditledger`` command line."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import _cli_export, _cli_investigate
from ._cli_gdpr import gdpr_app
from ._cli_retention import retention_app
from ._errors import AuditLedgerError, describe_database_error
from ._urls import ENV_DATABASE_URL

app = typer.Typer(
    help="auditledger: a security audit log that is cheap to write and hard to falsify.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Create, upgrade and check the database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
keys_app = typer.Typer(help="Ed25519 keys that sign checkpoints.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(gdpr_app, name="gdpr")
app.add_typer(retention_app, name="retention")

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
    # Escaped: messages hold text like "auditledger[postgres]" that Rich would eat as markup.
    err_console.print(f"[red]error:[/red] {escape(message)}")
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
    from ._urls import missing_sqlite_file

    try:
        missing = missing_sqlite_file(database_url)
    except AuditLedgerError as exc:
        raise _fail(str(exc)) from exc
    if missing is not None:  # nothing there yet: as behind as it gets (and no file made)
        err_console.print(f"schema is behind: {missing}")
        raise typer.Exit(1)
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
    if report.get("database") != "reachable" or report.get("schema") != "current":
        raise typer.Exit(1)


# ---- tamper evidence ----------------------------------------------------------------------


@keys_app.command("generate")
def keys_generate(
    directory: Annotated[Path, typer.Argument(help="Folder for signing.key and signing.pub.")],
    force: Annotated[bool, typer.Option(help="Replace an existing key pair.")] = False,
) -> None:
    """Write DIR/signing.key (private, mode 0600) and DIR/signing.pub (for verifiers)."""
    from ._checkpoint import generate_keys

    try:
        key_id = generate_keys(directory, overwrite=force)
    except AuditLedgerError as exc:
        raise _fail(str(exc)) from exc
    except OSError as exc:
        raise _fail(f"cannot write the keys ({type(exc).__name__})") from exc
    console.print(f"key id [bold]{key_id}[/bold]: {directory / 'signing.key'} (keep it secret),")
    console.print(f"{directory / 'signing.pub'} (give it to whoever verifies)")


SigningKey = Annotated[
    Path,
    typer.Option("--signing-key", envvar="AUDITLEDGER_SIGNING_KEY", help="Ed25519 private key."),
]


@app.command("checkpoint")
def checkpoint(
    signing_key: SigningKey,
    out: Annotated[
        Path | None,
        typer.Option(help="Also append it to this file, kept outside the database."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Sign every chain head now, store the checkpoint and append it to --out."""
    from ._checkpoint import Signer, append_checkpoint_file
    from ._sink import SinkError

    _require_database_file(database_url)
    try:
        signer = Signer.from_file(signing_key)
        sink = _open_sink(database_url)
    except AuditLedgerError as exc:
        raise _fail(str(exc)) from exc
    try:
        made = sink.write_checkpoint(signer)
    except SinkError as exc:
        missing = "no such table" in str(exc.__cause__)  # SQLite says it in words
        if exc.code == "42P01" or missing:
            raise _fail("the audit tables are missing: run `auditledger db upgrade`") from exc
        raise _fail(f"could not store the checkpoint ({exc.code})") from exc
    finally:
        sink.close()
    if out is not None:
        # After the database has it: a line in the file the database lacks would read as
        # a deleted checkpoint.
        try:
            append_checkpoint_file(out, made)
        except OSError as exc:
            raise _fail(f"stored, but could not append to {out} ({type(exc).__name__})") from exc
    chains = len(made.heads)
    console.print(
        f"checkpoint {made.id} signed with key {made.key_id}: {chains} chain head(s)"
        + (f", appended to {out}" if out is not None else "")
    )


def _open_sink(database_url: str | None) -> Any:
    from ._urls import is_postgres, libpq_conninfo, normalise_url, resolve_url, sqlite_path

    url = normalise_url(resolve_url(database_url))
    if is_postgres(url):
        from ._sink_postgres import PostgresSink

        return PostgresSink(libpq_conninfo(url), connect_timeout=10)
    from ._sink_sqlite import SqliteSink

    return SqliteSink(sqlite_path(url), timeout=10)


@app.command("verify")
def verify(
    public_key: Annotated[
        list[Path],
        typer.Option(help="Ed25519 public key(s) checkpoints are signed with (repeatable)."),
    ],
    checkpoints: Annotated[
        Path | None, typer.Option(help="The checkpoint file kept outside the database.")
    ] = None,
    workspace: Annotated[
        str | None,
        typer.Option(
            help="Only this workspace's chain: its id, a unique prefix of it, or a Slack team id"
            " (00000000-0000-0000-0000-000000000000: the chain of events without one)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes sharing the chains of a PostgreSQL log (default: CPUs, at most 4).",
            show_default=False,
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Recompute every chain and check every checkpoint: exit 0 intact, 1 tampered, 2 error."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeRemainingColumn

    from ._verify import VerifyError, verify_log

    _require_database_file(database_url)
    workspace_id = None if workspace is None else _verify_workspace(workspace, database_url)
    bar = Progress(
        "verifying",
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=as_json or not err_console.is_terminal,
        # Refreshed by progress() below, without a thread of its own: verify can then start
        # its worker processes with fork (see _verify_parallel).
        auto_refresh=False,
    )
    task = bar.add_task("events", total=None)

    def progress(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total, refresh=True)

    try:
        with bar:
            report = verify_log(
                database_url,
                public_keys=list(public_key),
                checkpoints_file=checkpoints,
                workspace_id=workspace_id,
                progress=progress,
                workers=workers if workers is not None else min(os.cpu_count() or 1, 4),
            )
    except VerifyError as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _require_database_file(database_url: str | None) -> None:
    from ._urls import missing_sqlite_file

    try:
        missing = missing_sqlite_file(database_url)
    except AuditLedgerError as exc:
        raise _fail(str(exc)) from exc
    if missing is not None:
        raise _fail(missing)


def _verify_workspace(text: str, database_url: str | None) -> uuid.UUID:
    """The chain ``--workspace`` names. Through the workspaces table, which is not chained:
    the report names the id it checked. An id that is neither a workspace nor the chain of
    events without one is an error, not an intact chain of 0 events (a typo would pass)."""
    from ._chain import NO_WORKSPACE
    from ._store import AuditStore

    try:
        with AuditStore(database_url) as store:
            found = store.resolve_workspace(text)
            if (
                found != NO_WORKSPACE
                and not store.has_workspace(found)
                and not store.events(workspace_id=found, limit=1)
            ):
                raise LookupError(f"no workspace has the id {found}, and no event names it")
    except LookupError as exc:
        raise _fail(f"--workspace: {exc.args[0]}") from exc
    except Exception as exc:
        raise _fail(describe_database_error(exc)) from exc
    return found


def _print_report(report: Any) -> None:
    summary = (
        f"{report.events} events in {report.chains} chain(s), {report.checkpoints} stored and"
        f" {report.external_checkpoints} external checkpoint(s)"
    )
    if report.erased:
        summary += f", {report.erased} with personal values erased"
    if report.cuts:
        summary += f", {report.cuts} retention cut(s)"
    for note in report.notes:
        err_console.print(f"[yellow]note:[/yellow] {note}")
    if report.ok:
        console.print(f"[green]intact[/green]: {summary}")
        return
    table = Table(title=f"{len(report.problems)} problem(s): {summary}")
    for column in ("kind", "event or checkpoint", "workspace", "seq", "detail"):
        table.add_column(column, overflow="fold")
    for p in report.problems:
        # A checkpoint's problem names the checkpoint: two bad signatures read alike otherwise.
        what = p.event_id or (f"checkpoint {p.checkpoint_id}" if p.checkpoint_id else "")
        table.add_row(
            p.kind,
            str(what),
            str(p.workspace_id or "(none)"),
            "" if p.seq is None else str(p.seq),
            p.detail,
        )
    console.print(table)
    err_console.print("[red]tampered[/red]")


_cli_investigate.register(app)
_cli_export.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
