"""``auditledger keys`` and ``auditledger checkpoint``: signing the chain heads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .._errors import AuditLedgerError
from ._app import ENV_SIGNING_KEY, DatabaseUrl, app, console, fail, require_database_file

if TYPE_CHECKING:
    from .._sinks.base import Sink

keys_app = typer.Typer(help="Ed25519 keys that sign checkpoints.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("generate")
def keys_generate(
    directory: Annotated[Path, typer.Argument(help="Folder for signing.key and signing.pub.")],
    force: Annotated[bool, typer.Option(help="Replace an existing key pair.")] = False,
) -> None:
    """Write DIR/signing.key (private, mode 0600) and DIR/signing.pub (for verifiers)."""
    from .._chain.checkpoints import generate_keys

    try:
        key_id = generate_keys(directory, overwrite=force)
    except AuditLedgerError as exc:
        raise fail(str(exc)) from exc
    except OSError as exc:
        raise fail(f"cannot write the keys ({type(exc).__name__})") from exc
    console.print(f"key id [bold]{key_id}[/bold]: {directory / 'signing.key'} (keep it secret),")
    console.print(f"{directory / 'signing.pub'} (give it to whoever verifies)")


SigningKey = Annotated[
    Path,
    typer.Option("--signing-key", envvar=ENV_SIGNING_KEY, help="Ed25519 private key."),
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
    from .._chain.checkpoints import Signer, append_checkpoint_file
    from .._sinks.base import SinkError

    require_database_file(database_url)
    try:
        signer = Signer.from_file(signing_key)
        sink = _open_sink(database_url)
    except AuditLedgerError as exc:
        raise fail(str(exc)) from exc
    try:
        made = sink.write_checkpoint(signer)
    except SinkError as exc:
        missing = "no such table" in str(exc.__cause__)  # SQLite says it in words
        if exc.code == "42P01" or missing:
            raise fail("the audit tables are missing: run `auditledger db upgrade`") from exc
        raise fail(f"could not store the checkpoint ({exc.code})") from exc
    finally:
        sink.close()
    if out is not None:
        # After the database has it: a line in the file the database lacks would read as
        # a deleted checkpoint.
        try:
            append_checkpoint_file(out, made)
        except OSError as exc:
            raise fail(f"stored, but could not append to {out} ({type(exc).__name__})") from exc
    chains = len(made.heads)
    console.print(
        f"checkpoint {made.id} signed with key {made.key_id}: {chains} chain head(s)"
        + (f", appended to {out}" if out is not None else "")
    )


def _open_sink(database_url: str | None) -> Sink:
    from .._db.urls import normalise_url, resolve_url
    from .._sinks.factory import sink_factory

    return sink_factory(normalise_url(resolve_url(database_url)), timeout=10)()
