"""The Typer app, its consoles and what every command shares.

A command's module is imported only when that command runs (or shows its own help): the
list of commands below names each one's module and one-line help, so ``auditledger --help``
imports no command at all, and ``auditledger verify`` never loads the writer, SQLAlchemy or
asyncio. The environment variables are written out here for the same reason (a test checks
them against the modules that read them).
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

ENV_DATABASE_URL = "AUDITLEDGER_DATABASE_URL"  # _db.urls
ENV_SIGNING_KEY = "AUDITLEDGER_SIGNING_KEY"  # _chain.checkpoints
ENV_NATS_URL = "AUDITLEDGER_NATS_URL"  # _nats.settings
ENV_NATS_KEY = "AUDITLEDGER_NATS_KEY"  # _nats.auth

# Every command: the cli module that registers it, and its one-line help (the first line of
# its docstring; a test checks they agree). In the order `auditledger --help` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "events": ("events", "Search the events; prints the cursor of the next page."),
    "tail": (
        "events",
        "The newest events; with --follow, every new one exactly once as it is stored.",
    ),
    "export": (
        "export",
        "Export a workspace's events to JSONL or CSV, or as a bundle; the export is audited.",
    ),
    "verify-bundle": (
        "export",
        "Check a bundle offline: exit 0 intact, 1 tampered, 2 could not check.",
    ),
    "checkpoint": (
        "keys",
        "Sign every chain head now, store the checkpoint and append it to --out.",
    ),
    "ingest": ("nats", "Store the stream's events in PostgreSQL; run as many as wanted, anywhere."),
    "status": (
        "status",
        "Show the spool and the database: what is stored, waiting or quarantined.",
    ),
    "verify": (
        "verify",
        "Recompute every chain and check every checkpoint: exit 0 intact, 1 tampered, 2 error.",
    ),
    "serve": (
        "viewer",
        "Serve the viewer over every workspace, for an operator, behind a fresh token.",
    ),
    "db": ("db", "Create, upgrade and check the database schema."),
    "keys": ("keys", "Ed25519 keys that sign checkpoints."),
    "nats": ("nats", "The NATS JetStream stream that apps publish to."),
    "tokens": ("viewer", "API tokens of the viewer's pull API (/api/events)."),
    "gdpr": ("gdpr", "Subject access and erasure for one person (GDPR Art. 15 and 17)."),
    "retention": (
        "retention",
        "Retention periods, and deleting expired events under signed cuts.",
    ),
}


class LazyGroup(TyperGroup):
    """The top-level group: lists every command from ``COMMANDS`` and imports a command's
    module only when that command is resolved to run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *(n for n in super().list_commands(ctx) if n not in COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        if found is not None or cmd_name not in COMMANDS:
            return found
        # For the list of commands in --help only: resolve_command loads the real one.
        return click.Command(cmd_name, help=COMMANDS[cmd_name][1])

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else None
        if name in COMMANDS and name not in self.commands:
            self.load(name)
        return super().resolve_command(ctx, args)

    def load(self, name: str) -> None:
        importlib.import_module(f"{__package__}.{COMMANDS[name][0]}")
        built: Any = typer.main.get_command(app)
        for other, command in built.commands.items():
            self.commands.setdefault(other, command)


app = typer.Typer(
    cls=LazyGroup,
    help="auditledger: a security audit log that is cheap to write and hard to falsify.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    # Makes ``app`` a group before any command module has registered a command.
    pass


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


def fail(message: str, code: int = 2) -> typer.Exit:
    # Escaped: messages hold text like "auditledger[postgres]" that Rich would eat as markup.
    # Soft-wrapped: an error is one line however narrow the terminal (scripts grep for it).
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def require_database_file(database_url: str | None) -> None:
    from .._db.urls import missing_sqlite_file
    from .._errors import AuditLedgerError

    try:
        missing = missing_sqlite_file(database_url)
    except AuditLedgerError as exc:
        raise fail(str(exc)) from exc
    if missing is not None:
        raise fail(missing)
