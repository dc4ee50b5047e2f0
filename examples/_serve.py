"""What both reference apps do before serving: settle the database URL and the schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

DEFAULT_URL = "sqlite:///demo-data/audit.db"


def database_url() -> str:
    """``AUDITLEDGER_DATABASE_URL``, else a SQLite file under ``demo-data/``."""
    return os.environ.get("AUDITLEDGER_DATABASE_URL") or DEFAULT_URL


def prepare_database(url: str) -> None:
    """Create the SQLite folder and bring the schema up to date (``auditledger db upgrade``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "auditledger.cli", "db", "upgrade", "--database-url", url],
        check=True,
        stdout=subprocess.DEVNULL,
    )
