"""``auditledger events``: the newest events."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from .._errors import describe_database_error
from ._app import (
    DatabaseUrl,
    app,
    console,
    fail,
    require_database_file,
)


@app.command("events")
def events(
    database_url: DatabaseUrl = None,
    workspace: Annotated[
        str | None,
        typer.Option(
            help="Only this workspace: its id, a unique prefix of it, or a Slack team id."
        ),
    ] = None,
    user: Annotated[str | None, typer.Option(help="Only this user id.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show the newest events."""
    from .._read.store import AuditStore

    require_database_file(database_url)
    try:
        with AuditStore(database_url) as store:
            workspace_id = None if workspace is None else store.resolve_workspace(workspace)
            found = store.events(
                workspace_id=workspace_id, user_id=user, action=action, limit=limit
            )
    except LookupError as exc:
        raise fail(f"--workspace: {exc.args[0]}") from exc
    except Exception as exc:
        raise fail(describe_database_error(exc)) from exc
    if as_json:
        for e in found:
            sys.stdout.write(json.dumps(_event_json(e), default=_json_default) + "\n")
        return
    table = Table(title=f"newest {len(found)} event{'' if len(found) == 1 else 's'}")
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


def _json_default(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _event_json(e: Any) -> dict[str, Any]:
    return {k: getattr(e, k) for k in e.__dataclass_fields__}


def _short(value: object, width: int = 48) -> str:
    if value is None:
        return ""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"
