"""``auditledger serve`` and ``auditledger tokens``: the viewer's commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ._app import DatabaseUrl, app, console, err_console
from ._app import fail as _fail
from ._text import literal, visible

tokens_app = typer.Typer(
    help="API tokens of the viewer's pull API (/api/events).", no_args_is_help=True
)
app.add_typer(tokens_app, name="tokens")


def _engine(database_url: str | None) -> Any:
    from .._db.engine import make_engine
    from .._db.urls import missing_sqlite_file
    from .._errors import AuditLedgerError

    try:
        missing = missing_sqlite_file(database_url)
        if missing is not None:
            raise _fail(missing)
        return make_engine(database_url)
    except AuditLedgerError as exc:
        raise _fail(str(exc)) from exc


def _db_error(exc: BaseException) -> typer.Exit:
    from .._errors import describe_database_error

    text = str(exc).lower()
    if "audit_api_tokens" in text and ("does not exist" in text or "no such table" in text):
        return _fail("the tokens table is missing: run `auditledger db upgrade`")
    return _fail(describe_database_error(exc))


@app.command("serve")
def serve(
    database_url: DatabaseUrl = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    public_key: Annotated[
        list[Path] | None,
        typer.Option(help="Ed25519 public key(s) the chain badge checks signatures with."),
    ] = None,
) -> None:
    """Serve the viewer over every workspace, for an operator, behind a fresh token."""
    try:
        import uvicorn

        from .._viewer.serve import make_operator_app
    except ImportError as exc:
        raise _fail("the viewer needs the web extra: pip install 'auditledger[web]'") from exc
    from .._db.urls import missing_sqlite_file
    from .._errors import AuditLedgerError

    try:
        missing = missing_sqlite_file(database_url)
        if missing is not None:
            raise _fail(missing)
        app, token = make_operator_app(database_url, port, [str(k) for k in public_key or []])
    except AuditLedgerError as exc:
        raise _fail(str(exc)) from exc
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):  # noqa: S104 - only compared, to print a usable URL
        shown = "127.0.0.1"
    # Printed, never logged: the token is the key to the whole log.
    sys.stdout.write(
        f"auditledger viewer: open http://{shown}:{port}/?token={token}\n"
        "(the token changes at each start; Ctrl-C stops the server)\n"
    )
    sys.stdout.flush()
    # No access log: the first request's URL carries the token.
    uvicorn.run(
        app, host=host, port=port, access_log=False, proxy_headers=False, log_level="warning"
    )


@tokens_app.command("create")
def tokens_create(
    workspace: Annotated[
        str, typer.Option(help="The workspace: its id, a unique prefix of it, or a Slack team id.")
    ],
    name: Annotated[
        str, typer.Option(help="Who uses it (recorded as the actor of each pull).")
    ] = "api",
    database_url: DatabaseUrl = None,
) -> None:
    """Make a token for one workspace's events; it is printed once and stored hashed."""
    from .._read.store import AuditStore
    from .._viewer.tokens import create_token

    engine = _engine(database_url)
    try:
        store = AuditStore(engine=engine)
        try:
            workspace_id = store.resolve_workspace(workspace)
        except LookupError as exc:
            raise _fail(f"--workspace: {exc.args[0]}") from exc
        if not store.has_workspace(workspace_id):
            raise _fail(f"--workspace: no workspace has the id {workspace_id}")
        try:
            secret, token = create_token(engine, workspace_id, name)
        except ValueError as exc:
            raise _fail(f"--name: {exc}") from exc
        except Exception as exc:
            raise _db_error(exc) from exc
    finally:
        engine.dispose()
    sys.stdout.write(f"{secret}\n")
    err_console.print(
        f"token {token.id} ({escape(token.name)}) for workspace {workspace_id}: shown once, "
        "send it as `Authorization: Bearer TOKEN` to /api/events"
    )


@tokens_app.command("list")
def tokens_list(
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show every token (never the secrets, which are not stored)."""
    from .._viewer.tokens import list_tokens

    engine = _engine(database_url)
    try:
        found = list_tokens(engine)
    except Exception as exc:
        raise _db_error(exc) from exc
    finally:
        engine.dispose()
    if as_json:
        for t in found:
            row = {
                "id": str(t.id),
                "workspace_id": str(t.workspace_id),
                "name": t.name,
                "created_at": t.created_at.isoformat(),
                "revoked_at": None if t.revoked_at is None else t.revoked_at.isoformat(),
            }
            sys.stdout.write(json.dumps(row) + "\n")
        return
    table = Table(title=f"{len(found)} API token{'' if len(found) == 1 else 's'}")
    for column in ("id", "name", "workspace", "created (UTC)", "state"):
        table.add_column(column, overflow="fold")
    for t in found:
        state = "live" if t.revoked_at is None else f"revoked {t.revoked_at:%Y-%m-%d %H:%M}"
        table.add_row(
            str(t.id), literal(t.name), str(t.workspace_id), f"{t.created_at:%Y-%m-%d %H:%M}", state
        )
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id, or its first 8+ characters.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a token: from now on it gets 401."""
    from .._viewer.tokens import revoke_token

    engine = _engine(database_url)
    try:
        token = revoke_token(engine, token_id)
    except LookupError as exc:
        raise _fail(str(exc.args[0])) from exc
    except Exception as exc:
        raise _db_error(exc) from exc
    finally:
        engine.dispose()
    console.print(f"revoked token {token.id} ({escape(visible(token.name))})")
