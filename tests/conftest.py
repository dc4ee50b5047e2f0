"""Fixtures: a real PostgreSQL database per test run, and SQLite files in a temp folder.

The PostgreSQL server comes from AUDITLEDGER_TEST_POSTGRES_URL. Each run creates its own
databases (a migrated template, then one clone per test that needs a clean log) and drops
them at the end, so runs never see each other's rows. With CI set, an unreachable server
fails the run instead of skipping the PostgreSQL tests.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from auditledger._db.migrate import upgrade
from tests.tcp_proxy import TcpProxy

ENV_PG = "AUDITLEDGER_TEST_POSTGRES_URL"
RUN_ID = uuid.uuid4().hex[:8]


def _server_url() -> str | None:
    return os.environ.get(ENV_PG)


def _admin_conninfo(server_url: str) -> str:
    return make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)


def _database_url(server_url: str, name: str) -> str:
    url = make_url(server_url).set(drivername="postgresql", database=name)
    return url.render_as_string(hide_password=False)


def pytest_report_header(config: pytest.Config) -> list[str]:
    url = _server_url()
    if not url:
        return [f"postgresql: {ENV_PG} not set"]
    try:
        with psycopg.connect(_admin_conninfo(url), connect_timeout=3) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        return [f"postgresql: server {version[0] if version else '?'} (run {RUN_ID})"]
    except psycopg.Error as exc:
        return [f"postgresql: unreachable ({type(exc).__name__})"]


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The server URL, after proving it answers; fails under CI, skips elsewhere."""
    url = _server_url()
    reason = f"{ENV_PG} is not set" if not url else ""
    if url:
        try:
            with psycopg.connect(_admin_conninfo(url), connect_timeout=5):
                pass
        except psycopg.Error as exc:
            reason = f"PostgreSQL at {ENV_PG} is unreachable ({type(exc).__name__})"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the PostgreSQL tests")
        pytest.skip(reason)
    assert url is not None
    return url


class PgDatabases:
    """Creates and drops this run's databases on one server."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.created: list[str] = []
        self.template = f"auditledger_test_{RUN_ID}_template"
        self._count = 0

    def _admin(self, sql: str) -> None:
        with psycopg.connect(_admin_conninfo(self.server_url), autocommit=True) as conn:
            conn.execute(sql)

    def create(self, *, template: str | None = None, suffix: str | None = None) -> str:
        self._count += 1
        name = f"auditledger_test_{RUN_ID}_{suffix or self._count}"
        clause = f" TEMPLATE {template}" if template else ""
        self._admin(f'CREATE DATABASE "{name}"{clause}')
        self.created.append(name)
        return _database_url(self.server_url, name)

    def drop_all(self) -> None:
        for name in reversed(self.created):
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_databases(pg_server: str) -> Iterator[PgDatabases]:
    dbs = PgDatabases(pg_server)
    url = dbs.create(suffix="template")
    upgrade(url)
    try:
        yield dbs
    finally:
        dbs.drop_all()


@pytest.fixture
def pg_url(pg_databases: PgDatabases) -> str:
    """A migrated PostgreSQL database of this test's own (a clone of the run's template)."""
    return pg_databases.create(template=pg_databases.template)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated SQLite file of this test's own."""
    path = tmp_path / "audit.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def proxy(pg_url: str) -> Iterator[TcpProxy]:
    """A TCP proxy in front of this test's PostgreSQL, to hang or refuse its connections."""
    url = make_url(pg_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as p:
        yield p


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


class _InternalErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "writer error" in record.getMessage() or "could not be captured" in record.getMessage():
            self.records.append(record)


@pytest.fixture(autouse=True)
def internal_errors() -> Iterator[_InternalErrors]:
    """Fail any test in which the library swallowed one of its own bugs."""
    handler = _InternalErrors()
    logger = logging.getLogger("auditledger")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
    assert not handler.records, [r.getMessage() for r in handler.records]
