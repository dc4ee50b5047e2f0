"""``export`` (files and bundles) and ``verify-bundle``."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ._app import DatabaseUrl, app, console, err_console, fail
from ._text import literal, visible
from .events import (
    Action,
    ActionPrefix,
    Actor,
    AsJson,
    Ip,
    Resource,
    ResourceId,
    Since,
    Text,
    Until,
    User,
    checked_filters,
    option_time,
    reading,
)


def export(
    workspace: Annotated[str, typer.Option(help="The workspace: id, unique prefix, team id.")],
    out: Annotated[Path | None, typer.Option(help="The file to write (jsonl or csv).")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="With --out: jsonl (lossless, default) or csv.")
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option(help="Write a self-verifying ZIP bundle instead.")
    ] = None,
    signing_key: Annotated[
        Path | None, typer.Option(help="Bundle: sign a fresh checkpoint of its last event.")
    ] = None,
    public_key: Annotated[
        list[Path] | None, typer.Option(help="Bundle: also include this public key.")
    ] = None,
    user: User = None,
    action: Action = None,
    action_prefix: ActionPrefix = None,
    resource: Resource = None,
    resource_id: ResourceId = None,
    ip: Ip = None,
    since: Since = None,
    until: Until = None,
    text: Text = None,
    actor: Actor = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Export a workspace's events to JSONL or CSV, or as a bundle; the export is audited."""
    from .._api.exports import export_bundle, export_file

    if (out is None) == (bundle is None):
        raise fail("give either --out FILE (with --format) or --bundle FILE.zip")
    if bundle is not None and any(
        v is not None for v in (user, action, action_prefix, resource, resource_id, ip, text)
    ):
        raise fail("a bundle holds a whole range of the chain: only --since and --until apply")
    if bundle is not None and fmt is not None:
        raise fail("--format applies to --out: a bundle's events are always JSONL")
    if bundle is None and (signing_key is not None or public_key):
        raise fail("--signing-key and --public-key apply to --bundle only")
    fmt = fmt or "jsonl"
    if fmt not in ("jsonl", "csv"):
        raise fail(f"--format: {fmt!r} is not jsonl or csv")
    who = actor or getpass.getuser()
    with reading(database_url, actor=who) as reader, _progress() as progress:
        if bundle is not None:
            start, end = option_time("--since", since), option_time("--until", until)
            if start is not None and end is not None and start > end:
                raise fail("--since is after --until: the range holds no event")
            made = export_bundle(
                reader, bundle, workspace=workspace, since=start,
                until=end, signing_key=signing_key,
                public_keys=list(public_key or []), progress=progress,
            )  # fmt: skip
            signed = ", last event signed" if made.signed else ""
            console.print(
                f"{made.events} events (positions {made.first_seq}-{made.last_seq}{signed})"
                f" -> {made.path}  sha256 {made.sha256}",
                soft_wrap=True,
            )
            return
        if out is None:  # excluded above; this tells the type checker
            raise fail("give --out FILE")
        # Every filter is checked before any file is opened.
        checked_filters(
            reader, workspace=workspace, user_id=user, action=action,
            action_prefix=action_prefix, resource=resource, resource_id=resource_id, ip=ip,
            since=since, until=until, text=text,
        )  # fmt: skip
        result = export_file(
            reader, out, workspace=workspace, fmt=fmt, progress=progress, user_id=user,
            action=action, action_prefix=action_prefix, resource=resource,
            resource_id=resource_id, ip=ip, since=option_time("--since", since),
            until=option_time("--until", until), text=text,
        )  # fmt: skip
        console.print(
            f"{result.events} events -> {result.path}  sha256 {result.sha256}", soft_wrap=True
        )


@contextmanager
def _progress() -> Iterator[Callable[[int], None] | None]:
    """A live count on a terminal (stderr); nothing when piped."""
    if not err_console.is_terminal:
        yield None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(
        SpinnerColumn(), TextColumn("exported {task.completed} events"), TimeElapsedColumn(),
        console=err_console, transient=True,
    )  # fmt: skip
    task = bar.add_task("export", total=None)
    with bar:
        yield lambda done: bar.update(task, completed=done)


def verify_bundle(
    path: Annotated[Path, typer.Argument(help="The bundle ZIP file.")],
    public_key: Annotated[
        list[Path] | None,
        typer.Option(help="Trust only these public keys (default: the bundle's own)."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Check a bundle offline: exit 0 intact, 1 tampered, 2 could not check."""
    from .._read.bundle_verify import BundleError, verify_bundle

    try:
        report = verify_bundle(path, list(public_key or []))
    except BundleError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        for note in report.notes:
            err_console.print(f"[yellow]note:[/yellow] {escape(visible(note))}", soft_wrap=True)
        signed = (
            f"signed up to position {report.covered_to}"
            if report.covered_to
            else "no position signed by a trusted checkpoint"
        )
        summary = (
            f"{report.events} events (positions {report.first_seq}-{report.last_seq}) of"
            f" workspace {report.workspace_id or '(none)'}, {report.checkpoints} checkpoint(s),"
            f" {signed}, {report.erased} with erased values"
        )
        if report.ok:
            console.print(f"[green]intact[/green]: {summary}", soft_wrap=True)
        else:
            table = Table(title=f"{len(report.problems)} problem(s): {summary}")
            for column in ("kind", "event or checkpoint", "seq", "detail"):
                table.add_column(column, overflow="fold")
            for p in report.problems:
                what = p.event_id or (f"checkpoint {p.checkpoint_id}" if p.checkpoint_id else "")
                seq = "" if p.seq is None else str(p.seq)
                table.add_row(literal(p.kind), literal(what), seq, literal(p.detail))
            console.print(table)
            err_console.print("[red]tampered[/red]")
    if not report.ok:
        raise typer.Exit(1)


app.command("export")(export)
app.command("verify-bundle")(verify_bundle)
