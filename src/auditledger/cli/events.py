"""Investigation commands ``events`` and ``tail``, and what the read commands share."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from .._errors import AuditLedgerError, describe_database_error
from .._events import AuditEvent
from ._app import (
    DatabaseUrl,
    app,
    console,
    err_console,
    fail,
    require_database_file,
)
from ._text import literal

Workspace = Annotated[
    str | None,
    typer.Option(help="Only this workspace: its id, a unique prefix of it, or a Slack team id."),
]
User = Annotated[str | None, typer.Option("--user", "--user-id", help="Only this user id.")]
Action = Annotated[str | None, typer.Option(help="Only this action.")]
ActionPrefix = Annotated[
    str | None, typer.Option(help="Only actions starting with this (e.g. oauth_).")
]
Resource = Annotated[str | None, typer.Option(help="Only this resource type.")]
ResourceId = Annotated[str | None, typer.Option(help="Only this resource id.")]
Ip = Annotated[str | None, typer.Option(help="Only this address, or a CIDR network.")]
Since = Annotated[
    str | None,
    typer.Option(
        help="From this time on: 2026-11-01, 2026-11-01T09:30Z (naive is UTC), or a span"
        " back from now: 2h, 7d or 7d ago (units s, m or min, h, d, w)."
    ),
]
Until = Annotated[str | None, typer.Option(help="Before this time (same forms as --since).")]
Text = Annotated[
    str | None,
    typer.Option(help="Case-insensitive text in resource_id, details or the values."),
]
AsJson = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]
Actor = Annotated[
    str | None,
    typer.Option(help="Who exports, for the audit record (default: your login name)."),
]


def option_time(option: str, value: str | None) -> datetime | None:
    from .._read.filters import parse_time

    if value is None:
        return None
    try:
        return parse_time(value)
    except (ValueError, OverflowError) as exc:
        raise fail(f"{option}: {_time_error(value, exc)}") from exc


def option_when(option: str, value: str | None) -> datetime | timedelta | None:
    """A time, or a span back from now (``2h``) that the reader resolves once and binds to
    the query's cursors: a cursor then only works with that same ``--since 2h``."""
    from .._read.filters import parse_when

    if value is None:
        return None
    try:
        when = parse_when(value)
        if isinstance(when, timedelta):
            _ = datetime.now(UTC) - when  # a span reaching before year 1 is refused here
        return when
    except (ValueError, OverflowError) as exc:
        raise fail(f"{option}: {_time_error(value, exc)}") from exc


def _time_error(value: str, exc: Exception) -> str:
    return str(exc) if isinstance(exc, ValueError) else f"{value!r} is too far back"


@contextmanager
def reading(database_url: str | None, actor: str | None = None) -> Iterator[Any]:
    """An AuditReader whose errors become one line and exit 2 (never a traceback)."""
    from .._api.reader import AuditReader

    require_database_file(database_url)
    try:
        reader = AuditReader(database_url, actor=actor)
    except AuditLedgerError as exc:
        raise fail(str(exc)) from exc
    try:
        yield reader
    except typer.Exit:
        raise
    except LookupError as exc:
        raise fail(f"--workspace: {exc.args[0]}") from exc
    except (AuditLedgerError, ValueError, OSError) as exc:
        raise fail(str(exc)) from exc
    except Exception as exc:
        raise fail(describe_database_error(exc)) from exc
    finally:
        reader.close()


def checked_filters(reader: Any, **given: Any) -> Any:
    for name in ("since", "until"):
        value = given.get(name)
        given[name] = value if not isinstance(value, str) else option_when(f"--{name}", value)
    try:
        return reader.filters(**given)
    except LookupError as exc:
        raise fail(f"--workspace: {exc.args[0]}") from exc
    except ValueError as exc:
        raise fail(str(exc)) from exc


def _json_line(event: AuditEvent) -> str:
    from .._read.rows import event_record

    return json.dumps(event_record(event), ensure_ascii=False)


def _short(value: object, width: int = 40) -> str:
    if value is None:
        return ""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(title: str, found: list[AuditEvent]) -> Table:
    table = Table(title=title)
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("action", no_wrap=True)
    for column in ("user", "workspace", "seq", "ip", "resource", "value"):
        table.add_column(column, overflow="fold")
    for e in found:
        # Every value came from the application: shown literally, never as markup.
        table.add_row(
            e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            literal(e.action),
            literal(e.user_id),
            str(e.workspace_id)[:8] if e.workspace_id else "",
            "" if e.seq is None else str(e.seq),
            literal(e.ip_address),
            literal(f"{e.resource or ''}:{e.resource_id or ''}".strip(":")),
            literal(_short(e.new_value if e.new_value is not None else e.details)),
        )
    return table


def events(
    database_url: DatabaseUrl = None,
    workspace: Workspace = None,
    user: User = None,
    action: Action = None,
    action_prefix: ActionPrefix = None,
    resource: Resource = None,
    resource_id: ResourceId = None,
    ip: Ip = None,
    since: Since = None,
    until: Until = None,
    text: Text = None,
    cursor: Annotated[str | None, typer.Option(help="Continue from a printed cursor.")] = None,
    oldest_first: Annotated[bool, typer.Option(help="Oldest first (default: newest).")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    as_json: AsJson = False,
) -> None:
    """Search the events; prints the cursor of the next page."""
    with reading(database_url) as reader:
        # "--since 2h" again with --cursor pages on from the first page's moment (the cursor
        # carries it); a cursor made with any other --since or --until is refused.
        chosen = checked_filters(
            reader, workspace=workspace, user_id=user, action=action,
            action_prefix=action_prefix, resource=resource, resource_id=resource_id, ip=ip,
            since=since, until=until, text=text, oldest_first=oldest_first,
        )  # fmt: skip
        page = reader.page(chosen, limit=limit, cursor=cursor)
    if as_json:
        for e in page.items:
            sys.stdout.write(_json_line(e) + "\n")
    else:
        n = len(page.items)
        order = "oldest" if oldest_first else "newest"
        console.print(_table(f"{order} {n} event{'' if n == 1 else 's'}", page.items))
    if page.next_cursor is not None:
        err_console.print(f"next page: --cursor {page.next_cursor}", soft_wrap=True)


def tail(
    database_url: DatabaseUrl = None,
    workspace: Workspace = None,
    user: User = None,
    action: Action = None,
    action_prefix: ActionPrefix = None,
    resource: Resource = None,
    resource_id: ResourceId = None,
    ip: Ip = None,
    since: Since = None,
    until: Until = None,
    text: Text = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, max=1000)] = 10,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Then print each new event once stored.")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between polls.")] = 1.0,
    max_events: Annotated[
        int | None, typer.Option(min=1, help="With --follow: stop after this many new events.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """The newest events; with --follow, every new one exactly once as it is stored."""
    from .._read.follow import Follower

    def show(found: list[AuditEvent]) -> None:
        if as_json:
            for e in found:
                sys.stdout.write(_json_line(e) + "\n")
            sys.stdout.flush()
        elif found:
            console.print(_table("", found), end="")

    with reading(database_url) as reader:
        chosen = checked_filters(
            reader, workspace=workspace, user_id=user, action=action,
            action_prefix=action_prefix, resource=resource, resource_id=resource_id, ip=ip,
            since=since, until=until, text=text,
        )  # fmt: skip
        follower = Follower(chosen)
        with reader.engine.connect() as conn:
            follower.start(conn)
        newest = reader.page(chosen, limit=lines).items if lines else []
        show([e for e in reversed(newest) if follower.shown_at_start(e)])
        if not follow:
            return
        shown = 0
        try:
            while max_events is None or shown < max_events:
                with reader.engine.connect() as conn:
                    found = follower.poll(conn)
                if max_events is not None:
                    found = found[: max_events - shown]
                show(found)
                shown += len(found)
                if not found:
                    time.sleep(interval)
        except KeyboardInterrupt:
            return


app.command("events")(events)
app.command("tail")(tail)
