"""``auditledger verify``: check the whole log, print what is wrong."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .._errors import describe_database_error
from ._app import (
    DatabaseUrl,
    app,
    console,
    err_console,
    fail,
    require_database_file,
)
from ._text import literal, visible


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

    from .._errors import VerifyError
    from .._read.verify.run import verify_log

    require_database_file(database_url)
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
        # its worker processes with fork (see _read/verify/parallel.py).
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
        raise fail(str(exc)) from exc
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _verify_workspace(text: str, database_url: str | None) -> uuid.UUID:
    """The chain ``--workspace`` names. Through the workspaces table, which is not chained:
    the report names the id it checked. An id that is neither a workspace nor the chain of
    events without one is an error, not an intact chain of 0 events (a typo would pass)."""
    from .._chain.canonical import NO_WORKSPACE
    from .._read.store import AuditStore

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
        raise fail(f"--workspace: {exc.args[0]}") from exc
    except Exception as exc:
        raise fail(describe_database_error(exc)) from exc
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
        err_console.print(f"[yellow]note:[/yellow] {escape(visible(note))}")
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
            literal(what),
            literal(p.workspace_id or "(none)"),
            "" if p.seq is None else str(p.seq),
            literal(p.detail),
        )
    console.print(table)
    err_console.print("[red]tampered[/red]")
