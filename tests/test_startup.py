"""Start-up of the command line: ``auditledger --help`` imports no command, and a command
imports only what it needs (no SQLAlchemy, asyncio or writer for ``verify --help``); the
names the lazy command list writes out agree with the modules they stand for.

Checked through ``sys.modules`` in a fresh interpreter rather than timed: a timed test fails on
a loaded machine, an import that should not happen fails here everywhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    # typer imports a click name click 8.2+ deprecates; nothing to do with what is tested.
    warnings.simplefilter("ignore", DeprecationWarning)
    import click
    import typer

    from auditledger.cli import _app

# What no command's help, and not the list of commands, should cost.
HEAVY = ("sqlalchemy", "psycopg", "asyncio", "alembic", "cryptography", "orjson", "starlette")
HEAVY_OURS = ("auditledger._api", "auditledger._write", "auditledger._sinks", "auditledger._db")

_PROBE = """
import json, sys
sys.argv = ["auditledger", *ARGS]
from auditledger.cli import main
try:
    main()
except SystemExit:
    pass
print("\\n" + json.dumps(sorted(sys.modules)))
"""


def loaded_by(*args: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.replace("ARGS", repr(list(args)))],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return set(json.loads(out.strip().splitlines()[-1]))


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY_OURS))


def test_the_list_of_commands_imports_no_command() -> None:
    modules = loaded_by("--help")
    assert heavy(modules) == []
    commands = {m for m in modules if m.startswith("auditledger.cli.") and m != _app.__name__}
    assert commands == set()


@pytest.mark.parametrize("command", sorted(_app.COMMANDS))
def test_a_commands_help_imports_only_its_module(command: str) -> None:
    modules = loaded_by(command, "--help")
    assert f"auditledger.cli.{_app.COMMANDS[command][0]}" in modules
    assert heavy(modules) == []
    others = {f"auditledger.cli.{module}" for module, _ in _app.COMMANDS.values()}
    # export reuses the read commands' shared options (cli/events.py)
    allowed = {f"auditledger.cli.{_app.COMMANDS[command][0]}", "auditledger.cli.events"}
    assert (others & modules) - allowed == set()


def _real(name: str) -> click.Command:
    group: Any = typer.main.get_command(_app.app)
    with click.Context(group) as ctx:
        _, command, _ = group.resolve_command(ctx, [name])
    assert isinstance(command, click.Command)
    return command


@pytest.mark.parametrize("name", list(_app.COMMANDS))
def test_the_listed_help_is_the_commands_own(name: str) -> None:
    first_paragraph = (_real(name).help or "").split("\n\n")[0]
    assert " ".join(first_paragraph.split()) == _app.COMMANDS[name][1]


def test_every_registered_command_is_listed() -> None:
    for name in list(_app.COMMANDS):
        _real(name)  # registers its module's commands on the app
    group = typer.main.get_command(_app.app)
    assert isinstance(group, click.Group)
    assert set(group.commands) == set(_app.COMMANDS)


def test_verify_on_postgres_reads_without_sqlalchemy(pg_url: str, tmp_path: Path) -> None:
    """verify talks to PostgreSQL through psycopg alone: SQLAlchemy (a fifth of a second)
    is not imported before the report."""
    from auditledger._chain.checkpoints import generate_keys

    generate_keys(tmp_path / "keys")
    public = str(tmp_path / "keys" / "signing.pub")
    modules = loaded_by(
        "verify", "--public-key", public, "--workers", "1", "--database-url", pg_url
    )
    assert "auditledger._read.verify.run" in modules  # it did run
    assert [m for m in modules if m.split(".")[0] in ("sqlalchemy", "alembic")] == []
    assert [m for m in modules if m.startswith(("auditledger._api", "auditledger._write"))] == []


def test_the_environment_variables_match_their_modules() -> None:
    from auditledger._chain.checkpoints import ENV_SIGNING_KEY
    from auditledger._db.urls import ENV_DATABASE_URL
    from auditledger._nats.settings import ENV_NATS_URL

    assert _app.ENV_DATABASE_URL == ENV_DATABASE_URL
    assert _app.ENV_SIGNING_KEY == ENV_SIGNING_KEY
    assert _app.ENV_NATS_URL == ENV_NATS_URL
