"""``auditledger gdpr ...``: subject access and erasure for one person."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from .._errors import AuditLedgerError, describe_database_error
from ._app import ENV_DATABASE_URL, app

gdpr_app = typer.Typer(
    help="Subject access and erasure for one person (GDPR Art. 15 and 17).", no_args_is_help=True
)
app.add_typer(gdpr_app, name="gdpr")
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


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


@gdpr_app.command("erase")
def erase(
    user: Annotated[str, typer.Option("--user", help="The user id whose values to erase")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the log)")],
    actor: Annotated[str, typer.Option("--actor", help="Who carries it out (recorded)")],
    workspace: Annotated[
        str | None,
        typer.Option(
            "--workspace",
            help="Only this workspace's events (quarantined calls are left): its id, a unique"
            " prefix of it, or a Slack team id.",
            show_default=False,
        ),
    ] = None,
    subject_key: Annotated[
        Path | None,
        typer.Option(
            "--subject-key",
            envvar="AUDITLEDGER_SUBJECT_KEY",
            help="Secret file (>= 32 bytes, outside the database) keying the subject's hash",
            show_envvar=True,
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Erase USER's personal values; every chain keeps verifying.

    Exit 0 when done (or nothing names USER), 1 when declined at the prompt.
    Exit 2 on an error, or when not confirmed: without a terminal, only --yes confirms."""
    from .._db.urls import missing_sqlite_file
    from .._gdpr.erase import (
        ErasureError,
        UnknownWorkspace,
        apply_erasure,
        plan_erasure,
        resolve_workspace,
    )
    from .._gdpr.store import RowStore
    from .._gdpr.subject import load_subject_key
    from .._read.subject_match import SubjectMatcher

    try:
        matcher = SubjectMatcher(user)
        key = load_subject_key(subject_key)
        if not reason.strip() or not actor.strip():
            raise ErasureError("--reason and --actor must not be empty")
        if matcher.names_text(actor):
            raise ErasureError("--actor may not name the subject: it is stored in clear")
        missing = missing_sqlite_file(database_url)
        if missing is not None:
            raise ErasureError(missing)
    except AuditLedgerError as exc:
        raise _fail(str(exc)) from exc
    try:
        store = RowStore(database_url)
    except AuditLedgerError as exc:
        raise _fail(str(exc)) from exc
    except Exception as exc:
        raise _fail(describe_database_error(exc)) from exc
    try:
        plan = plan_erasure(store, user, resolve_workspace(store, workspace))
        summary = ", ".join(f"{n} {name}" for name, n in plan.values.items()) or "nothing"
        err_console.print(
            f"{len(plan.targets)} event(s) in {len(plan.chains)} chain(s) name the subject:"
            f" {summary}; {len(plan.quarantine)} quarantined call(s)"
        )
        if plan.unerasable:
            err_console.print(
                f"[yellow]note:[/yellow] {len(plan.unerasable)} event(s) stored before canonical"
                " form 2 name the subject in values hashed in clear: they are left unchanged"
            )
        if not plan.targets and not plan.quarantine:
            _print({"events": 0, "values": {}, "erasure_events": []}, as_json)
            return
        if not yes:
            if not sys.stdin.isatty():
                raise _fail("not confirmed: pass --yes to erase without a prompt")
            if not typer.confirm("Erase these values? This cannot be undone"):
                raise typer.Exit(1)
        result = apply_erasure(store, plan, reason=reason, actor=actor, subject_key=key)
    except UnknownWorkspace as exc:  # worded as every other command's --workspace error
        raise _fail(f"--workspace: {exc.args[0]}") from exc
    except AuditLedgerError as exc:
        raise _fail(str(exc)) from exc
    except typer.Exit:
        raise
    except Exception as exc:
        raise _fail(describe_database_error(exc)) from exc
    finally:
        store.close()
    _print(result.to_dict(), as_json)


SubjectKey = Annotated[
    Path | None,
    typer.Option(
        "--subject-key",
        envvar="AUDITLEDGER_SUBJECT_KEY",
        help="Secret file (>= 32 bytes, outside the database) keying the subject's hash",
        show_envvar=True,
    ),
]


@gdpr_app.command("export")
def export(
    user: Annotated[str, typer.Option("--user", help="The user id to export")],
    out: Annotated[Path, typer.Option("--out", help="The JSON file to write")],
    workspace: Annotated[
        str | None, typer.Option("--workspace", help="Only this workspace (id or team id)")
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option("--actor", help="Who asked (recorded; default: your login name)"),
    ] = None,
    subject_key: SubjectKey = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write every event about USER to a JSON file, and record a gdpr.subject_export event."""
    from .._api.reader import AuditReader
    from .._db.urls import missing_sqlite_file
    from .._gdpr.subject import load_subject_key
    from .._read.export import atomic_file, check_writable
    from .._read.subject_match import check_subject_id

    try:
        check_subject_id(user)
        key = load_subject_key(subject_key)
        check_writable(out)
        missing = missing_sqlite_file(database_url)
        if missing is not None:
            raise _fail(missing)
        # Who asked is what the record is for: the login name when not given, as `export`.
        with AuditReader(database_url, actor=actor or getpass.getuser()) as reader:
            target = None if workspace is None else reader.resolve_workspace(workspace)
            data = reader.subject_export(user, target, subject_key=key)
    except typer.Exit:
        raise
    except AuditLedgerError as exc:
        raise _fail(str(exc)) from exc
    except LookupError as exc:
        raise _fail(f"--workspace: {exc.args[0]}") from exc
    except OSError as exc:
        raise _fail(f"--out: {exc}") from exc
    except Exception as exc:
        raise _fail(describe_database_error(exc)) from exc
    try:
        # Personal data: a temporary file of mode 0600 (mkstemp's), renamed when complete, so
        # neither other users nor a reader of a half-written file ever see it.
        with atomic_file(out) as file:
            file.write((json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())
    except OSError as exc:
        raise _fail(f"cannot write {out} ({exc.strerror})") from exc
    summary = data["summary"]
    actions = ", ".join(f"{n} {a}" for a, n in summary["by_action"].items()) or "none"
    console.print(
        f"{summary['events']} event(s) and {summary['quarantined']} quarantined call(s)"
        f" written to {out}: {actions}"
    )


@gdpr_app.command("index")
def index(
    drop: Annotated[bool, typer.Option("--drop", help="Remove the index instead")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Build (or --drop) the opt-in subject index on PostgreSQL: subject access and erasure
    in milliseconds instead of a scan of every row, at a cost to every write."""
    from .._gdpr.index import create_subject_index, drop_subject_index

    try:
        states = drop_subject_index(database_url) if drop else create_subject_index(database_url)
    except AuditLedgerError as exc:
        raise _fail(str(exc)) from exc
    except Exception as exc:
        raise _fail(describe_database_error(exc)) from exc
    for state in states:
        shown = (
            f"{state.size_bytes / 2**20:,.1f} MiB" if state.valid else "invalid" if state.exists
            else "absent"
        )  # fmt: skip
        console.print(f"{state.name}: {shown}")


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    values = ", ".join(f"{n} {name}" for name, n in result["values"].items()) or "no values"
    console.print(
        f"erased {values} in {result['events']} event(s);"
        f" {len(result['erasure_events'])} gdpr.erasure event(s) recorded"
    )
