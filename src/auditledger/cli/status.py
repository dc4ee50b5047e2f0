"""``auditledger status``: the spool and the database at a glance."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ._app import (
    ENV_NATS_URL,
    DatabaseUrl,
    app,
    console,
)
from ._text import literal

NatsUrl = Annotated[
    str | None,
    typer.Option("--nats-url", envvar=ENV_NATS_URL, help="Also show the stream and ingesters."),
]


@app.command("status")
def status(
    database_url: DatabaseUrl = None,
    spool_dir: Annotated[
        Path | None, typer.Option(help="The spool folder (default: this database's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    nats_url: NatsUrl = None,
) -> None:
    """Show the spool and the database: what is stored, waiting or quarantined."""
    from .._api.status import collect_status

    report = collect_status(database_url, spool_dir)
    if nats_url:  # the stream's backlog and the ingesters' partitions
        from .._nats.status import collect_nats_status

        report.update(collect_nats_status(nats_url, database_url, structured=as_json))
    if as_json:
        sys.stdout.write(json.dumps(report, default=str, indent=2) + "\n")
    else:
        table = Table(title="auditledger status", show_header=False)
        table.add_column("what")
        table.add_column("value", overflow="fold")
        for key, value in report.items():
            table.add_row(key, literal(value))
        console.print(table)
    if report.get("database") != "reachable" or report.get("schema") != "current":
        raise typer.Exit(1)
