"""SQLite connections: one place for the settings both the writer and the readers need."""

from __future__ import annotations

import sqlite3


def connect_sqlite(path: str, *, timeout: float) -> sqlite3.Connection:
    """A connection with the settings every auditledger SQLite connection needs."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn
