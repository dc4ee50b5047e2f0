"""Database URLs as users write them, turned into what SQLAlchemy and psycopg need.

SQLAlchemy is imported by the functions that parse with it, not with this module: a command
that only needs psycopg (``auditledger verify`` on PostgreSQL, through
``plain_postgres_conninfo``) starts a fifth of a second sooner.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

from .._errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

ENV_DATABASE_URL = "AUDITLEDGER_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///auditledger.db"


def resolve_url(database_url: str | None) -> str:
    """The URL given, else the environment's, else the embedded SQLite default."""
    return database_url or os.environ.get(ENV_DATABASE_URL) or DEFAULT_DATABASE_URL


def normalise_url(database_url: str) -> URL:
    """Parse a URL and pick the driver auditledger uses for its database.

    ``postgresql://`` and ``postgres://`` mean psycopg 3; ``sqlite:///path`` means the stdlib
    driver. Other databases are refused here, at start-up, rather than at the first write.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(database_url)
    except ArgumentError as exc:
        raise ConfigurationError("the database URL could not be parsed") from exc
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if url.drivername not in ("postgresql", "postgres", "postgresql+psycopg"):
            raise ConfigurationError(
                f"unsupported PostgreSQL driver {url.get_driver_name()!r}: use postgresql:// "
                "or postgresql+psycopg://"
            )
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if url.drivername not in ("sqlite", "sqlite+pysqlite"):
            raise ConfigurationError("unsupported SQLite driver: use sqlite:///path")
        return url.set(drivername="sqlite")
    raise ConfigurationError(
        f"unsupported database {backend!r}: auditledger stores to PostgreSQL or SQLite"
    )


def is_postgres(url: URL) -> bool:
    return url.get_backend_name() == "postgresql"


def libpq_conninfo(url: URL) -> str:
    """The URL in the form libpq understands (psycopg.connect takes it as is)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


# The schemes normalise_url takes for PostgreSQL, and the characters a URL's user, password,
# host and database may hold for libpq to read it exactly as SQLAlchemy would (anything else,
# such as an unescaped "@" in a password, goes through SQLAlchemy's parser).
_PG_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%:/@[]")


def plain_postgres_conninfo(database_url: str | None) -> str | None:
    """The libpq conninfo of a PostgreSQL URL, without importing SQLAlchemy when the URL is
    plain; None when the URL is not PostgreSQL's. Same result as
    ``libpq_conninfo(normalise_url(resolve_url(database_url)))``."""
    text = resolve_url(database_url)
    scheme = next((s for s in _PG_SCHEMES if text.startswith(s)), None)
    if scheme is not None:
        rest = text[len(scheme) :]
        address = rest.split("?", 1)[0]
        if address.count("@") <= 1 and set(address) <= _PLAIN:
            return "postgresql://" + rest
    elif text.startswith("sqlite"):
        return None
    url = normalise_url(text)  # refuses what it does not take, with the usual message
    return libpq_conninfo(url) if is_postgres(url) else None


def missing_sqlite_file(database_url: str | None) -> str | None:
    """For commands that only read: the message to give when the URL names a SQLite file
    that does not exist (connecting would create an empty one and leave it behind) or that
    is not a SQLite database (the driver would only say "file is not a database")."""
    if plain_postgres_conninfo(database_url) is not None:
        return None  # PostgreSQL (told without SQLAlchemy, for verify's start-up)
    url = normalise_url(resolve_url(database_url))
    if is_postgres(url) or not url.database or url.database == ":memory:":
        return None
    if not os.path.exists(url.database):
        return f"no database file at {url.database}: create it with `auditledger db upgrade`"
    try:
        with open(url.database, "rb") as file:
            header = file.read(16)
    except OSError as exc:
        return f"cannot read {url.database} ({exc.strerror})"
    # An empty file is a database SQLite has not written to yet; anything else must be one.
    if header and header != b"SQLite format 3\x00":
        return f"{url.database} is not a SQLite database file"
    return None


def sqlite_path(url: URL) -> str:
    """The file path of a SQLite URL (``:memory:`` is refused: a writer thread needs a file)."""
    path = url.database
    if not path or path == ":memory:":
        raise ConfigurationError("SQLite needs a file path, e.g. sqlite:///auditledger.db")
    return path


def spool_fingerprint(url: URL) -> str:
    """Who a spool segment belongs to, and the name of its default spool folder: a hash of
    the database's address, never a credential (the logger and ``auditledger status`` both
    derive it here).

    PostgreSQL: host, port and database name (the user is left out: two roles writing to one
    database share its spool); SQLite: the file's real path.
    """
    if is_postgres(url):
        host = (url.host or str(url.query.get("host") or "")).lower()
        port = url.port or 5432
        name = url.database or url.username or ""
        source = f"postgresql:{host}:{port}:{name}"
    else:
        source = f"sqlite:{os.path.realpath(sqlite_path(url))}"
    return hashlib.sha256(source.encode()).hexdigest()[:16]
