"""Tamper evidence on real databases: chains written concurrently, every attack of the threat
model applied with triggers bypassed as a superuser would, and the append-only triggers."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from auditledger import AuditLogger
from auditledger._chain.checkpoints import generate_keys, read_checkpoint_file
from auditledger._chain.links import link
from auditledger._chain.v2 import commit
from auditledger._db.rows import ROW_SEQ
from auditledger._read.verify.report import VerifyReport
from auditledger._read.verify.run import verify_log
from auditledger._read.verify.source import Source
from auditledger._sinks.sqlite import SqliteSink
from tests.conftest import RUN_ID, PgDatabases
from tests.helpers import cli
from tests.verify_split import assert_same_when_cut, summary, verify_cut

WRITERS = 4
PER_WRITER = 400
CUT_WIDTH = 37  # ranges of positions when Log.verify cuts the chains (about 11 per chain)


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1]


@dataclass
class Log:
    """A log written by concurrent processes, with its keys and external checkpoint file."""

    url: str
    pg: PgDatabases
    public_key: Path
    private_key: Path
    checkpoints: Path
    tmp: Path

    def copy(self) -> str:
        """A clone of the log for one attack (CREATE DATABASE ... TEMPLATE)."""
        return self.pg.create(template=_name(self.url))

    def verify(self, url: str, *, external: bool = True) -> VerifyReport:
        """The report, which two processes sharing the chains must find identical."""
        reports = [
            verify_log(
                url,
                public_keys=[self.public_key],
                checkpoints_file=self.checkpoints if external else None,
                workers=workers,
            )
            for workers in (1, 2)
        ]
        one, two = (
            (r.events, r.chains, r.erased, sorted(map(repr, r.problems)), r.notes) for r in reports
        )
        assert one == two
        # And four processes with every chain cut into ranges of positions.
        cut = verify_cut(
            url,
            CUT_WIDTH,
            public_keys=[self.public_key],
            checkpoints_file=self.checkpoints if external else None,
        )
        assert summary(cut) == summary(reports[0])
        return reports[0]


@pytest.fixture(scope="module")
def log(pg_databases: PgDatabases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    tmp = tmp_path_factory.mktemp("tamper")
    keys = tmp / "keys"
    generate_keys(keys)
    owner_url = pg_databases.create(template=pg_databases.template)
    role = f"auditledger_writer_{RUN_ID}"
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO {role}")
    writer_url = owner_url.replace("postgres@", f"{role}@", 1)
    ready = tmp / "ready"
    ready.mkdir()
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.tamper_writer",
                writer_url,
                str(keys / "signing.key"),
                str(tmp / f"spool{i}"),
                str(ready),
                str(i),
                str(PER_WRITER),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(WRITERS)
    ]
    for child in children:
        _, err = child.communicate(timeout=240)
        assert child.returncode == 0, err
    checkpoints = tmp / "checkpoints.jsonl"
    done = cli(
        "checkpoint", "--signing-key", str(keys / "signing.key"), "--out", str(checkpoints),
        "--database-url", owner_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    try:
        yield Log(
            owner_url, pg_databases, keys / "signing.pub", keys / "signing.key", checkpoints, tmp
        )
    finally:
        # Every clone carries the role's grants: drop them (not the run's template) first.
        for name in [n for n in pg_databases.created if n != pg_databases.template]:
            pg_databases._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with psycopg.connect(owner_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def _rows(conn: psycopg.Connection[Any], chain: uuid.UUID) -> list[dict[str, Any]]:
    cur = conn.execute(
        "SELECT id, chain_seq, chain_hash, canonical, pii_salt, user_id FROM audit_logs"
        " WHERE chain_id = %s ORDER BY chain_seq",
        (chain,),
    )
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in cur]


def _busiest_chain(conn: psycopg.Connection[Any]) -> uuid.UUID:
    found = conn.execute(
        "SELECT chain_id FROM audit_logs WHERE workspace_id IS NOT NULL"
        " GROUP BY chain_id ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()
    assert found is not None
    return uuid.UUID(str(found[0]))


def _attack(
    log: Log, attack: Callable[[psycopg.Connection[Any], uuid.UUID], Any]
) -> tuple[str, Any]:
    """Apply ``attack`` to a copy of the log as a superuser would: triggers bypassed."""
    url = log.copy()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        result = attack(conn, _busiest_chain(conn))
    return url, result


def _kinds(report: VerifyReport) -> set[str]:
    return {p.kind for p in report.problems}


# ---- the untouched log ---------------------------------------------------------------------


def test_concurrent_writers_build_unbroken_chains(log: Log) -> None:
    report = log.verify(log.url)
    assert report.ok, report.problems
    assert report.events == WRITERS * PER_WRITER
    assert report.chains == 4  # three workspaces and the chain of events without one
    assert report.checkpoints >= 2
    assert report.external_checkpoints == 1
    with psycopg.connect(log.url) as conn:
        chain = _busiest_chain(conn)
        writers = [
            r[0]
            for r in conn.execute(
                "SELECT details->>'writer' FROM audit_logs WHERE chain_id = %s ORDER BY chain_seq",
                (chain,),
            )
        ]
    # The processes really did append to one chain in turn, not one after the other.
    switches = sum(1 for a, b in itertools.pairwise(writers) if a != b)
    assert switches > WRITERS


def test_verify_shares_the_chains_between_processes_from_a_threaded_program(log: Log) -> None:
    # With another thread running, fork could copy a lock that thread holds: the workers are
    # spawned instead. Their reports must still add up to the single-process one.
    from auditledger._read.verify import parallel as _verify_parallel

    release = threading.Event()
    waiter = threading.Thread(target=release.wait, daemon=True)
    waiter.start()
    try:
        assert _verify_parallel._context().get_start_method() == "spawn"
        assert _verify_parallel._partition(Source(log.url), 2) is not None
        report = log.verify(log.url)
    finally:
        release.set()
        waiter.join()
    assert report.ok
    assert report.events == WRITERS * PER_WRITER


def test_writer_role_may_not_change_rows(log: Log) -> None:
    role_url = log.url.replace("postgres@", f"auditledger_writer_{RUN_ID}@", 1)
    with psycopg.connect(role_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE audit_logs SET action = 'x' WHERE false")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM audit_checkpoints WHERE false")


def test_cli_verify_exit_codes(log: Log, tmp_path: Path) -> None:
    intact = cli("verify", "--public-key", str(log.public_key), "--checkpoints",
                  str(log.checkpoints), "--database-url", log.url)  # fmt: skip
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "intact" in intact.stdout

    def edit(conn: psycopg.Connection[Any], chain: uuid.UUID) -> uuid.UUID:
        target = _rows(conn, chain)[10]["id"]
        conn.execute("UPDATE audit_logs SET resource = 'forged' WHERE id = %s", (target,))
        return uuid.UUID(str(target))

    url, target = _attack(log, edit)
    tampered = cli("verify", "--public-key", str(log.public_key), "--json", "--database-url", url)
    assert tampered.returncode == 1, tampered.stderr
    report = json.loads(tampered.stdout)
    assert report["ok"] is False
    assert [p["event_id"] for p in report["problems"]] == [str(target)]
    assert "resource" in report["problems"][0]["detail"]

    missing_key = cli("verify", "--public-key", str(tmp_path / "nope.pub"), "--database-url", url)
    assert missing_key.returncode == 2
    unreachable = cli("verify", "--public-key", str(log.public_key), "--database-url",
                       "postgresql://nobody@127.0.0.1:1/none")  # fmt: skip
    assert unreachable.returncode == 2


# ---- the attacks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "sql"),
    [
        ("action", "action = 'logout'"),
        ("user_id", "user_id = 'someone-else'"),
        ("ip_address", "ip_address = NULL"),
        ("details", "details = jsonb_set(details, '{flag}', '1')"),
        ("created_at", "created_at = created_at - interval '1 hour'"),
        ("created_at", "created_at = created_at + interval '1 microsecond'"),
        ("created_at", "created_at = 'infinity'"),
        ("created_at", "created_at = '-infinity'"),
        ("details", "details = jsonb_set(details, '{ratio}', '0.50001')"),
    ],
)
def test_an_edited_column_is_named(log: Log, column: str, sql: str) -> None:
    def edit(conn: psycopg.Connection[Any], chain: uuid.UUID) -> uuid.UUID:
        target = _rows(conn, chain)[25]["id"]
        conn.execute(f"UPDATE audit_logs SET {sql} WHERE id = %s", (target,))
        return uuid.UUID(str(target))

    url, target = _attack(log, edit)
    report = log.verify(url)
    assert [(p.kind, p.event_id) for p in report.problems] == [("modified", target)]
    assert column in report.problems[0].detail


def test_both_postgres_readers_return_the_same_rows(log: Log) -> None:
    """Rows streamed in chunks (libpq >= 17) and read with COPY (older libpq) are the same,
    edited ones included."""

    def edit(conn: psycopg.Connection[Any], chain: uuid.UUID) -> None:
        target = _rows(conn, chain)[10]["id"]
        conn.execute(
            "UPDATE audit_logs SET created_at = 'infinity', user_id = NULL WHERE id = %s",
            (target,),
        )

    url, _ = _attack(log, edit)
    source = Source(url)
    for workspace in (None, _busiest_chain_of(url)):
        streamed = list(source._pg_rows(workspace, chunked=True))
        copied = list(source._pg_rows(workspace, chunked=False))
        assert streamed == copied
        assert len(streamed) > 100


def _busiest_chain_of(url: str) -> uuid.UUID:
    with psycopg.connect(url) as conn:
        return _busiest_chain(conn)


def test_edited_canonical_bytes_are_detected(log: Log) -> None:
    def edit(conn: psycopg.Connection[Any], chain: uuid.UUID) -> uuid.UUID:
        row = _rows(conn, chain)[30]
        forged = bytes(row["canonical"]).replace(b'"login"', b'"logout"')
        forged = forged.replace(b'"settings_changed"', b'"settings_viewed"')
        conn.execute("UPDATE audit_logs SET canonical = %s WHERE id = %s", (forged, row["id"]))
        return uuid.UUID(str(row["id"]))

    url, target = _attack(log, edit)
    report = log.verify(url)
    assert report.problems
    assert {p.event_id for p in report.problems} == {target}
    assert _kinds(report) == {"modified"}


def test_a_deleted_middle_row_is_reported_between_its_neighbours(log: Log) -> None:
    def delete(conn: psycopg.Connection[Any], chain: uuid.UUID) -> tuple[int, Any, Any]:
        rows = _rows(conn, chain)
        conn.execute("DELETE FROM audit_logs WHERE id = %s", (rows[40]["id"],))
        return rows[40]["chain_seq"], rows[39]["id"], rows[41]["id"]

    url, (seq, before, after) = _attack(log, delete)
    report = log.verify(url)
    assert len(report.problems) == 1
    problem = report.problems[0]
    assert (problem.kind, problem.event_id, problem.seq) == ("missing", after, seq + 1)
    assert f"position {seq}" in problem.detail
    assert str(before) in problem.detail


def test_a_forged_row_without_chain_columns_is_reported(log: Log) -> None:
    forged = uuid.uuid4()

    def insert(conn: psycopg.Connection[Any], chain: uuid.UUID) -> None:
        conn.execute(
            "INSERT INTO audit_logs (id, action, workspace_id, created_at, user_id)"
            " VALUES (%s, 'admin_action', %s, now(), 'U0-1')",
            (forged, chain),
        )

    url, _ = _attack(log, insert)
    report = log.verify(url)
    assert [(p.kind, p.event_id) for p in report.problems] == [("inserted", forged)]


def test_a_forged_row_linked_into_the_middle_is_named(log: Log) -> None:
    """The forger renumbers the rows after it and gives it a valid link to its predecessor."""
    forged = uuid.uuid4()

    def insert(conn: psycopg.Connection[Any], chain: uuid.UUID) -> None:
        rows = _rows(conn, chain)
        model, previous = rows[50], rows[49]
        seq = model["chain_seq"]
        conn.execute(
            "UPDATE audit_logs SET chain_seq = -chain_seq - 1 WHERE chain_id = %s"
            " AND chain_seq >= %s",
            (chain, seq),
        )
        conn.execute(
            "UPDATE audit_logs SET chain_seq = -chain_seq WHERE chain_id = %s AND chain_seq < 0",
            (chain,),
        )
        hashed = orjson.loads(model["canonical"])
        hashed[1] = str(forged)
        canonical = orjson.dumps(hashed)
        digest = link(bytes(previous["chain_hash"]), seq, canonical)
        conn.execute(
            "INSERT INTO audit_logs (id, user_id, workspace_id, ip_address, user_agent, action,"
            " resource, resource_id, details, previous_value, new_value, created_at, sanitised,"
            " chain_id, chain_seq, chain_hash, canonical, pii_salt)"
            " SELECT %s, user_id, workspace_id, ip_address, user_agent, action, resource,"
            " resource_id, details, previous_value, new_value, created_at, sanitised, chain_id,"
            " %s, %s, %s, pii_salt FROM audit_logs WHERE id = %s",
            (forged, seq, digest, canonical, model["id"]),
        )

    url, _ = _attack(log, insert)
    report = log.verify(url)
    assert ("inserted", forged) in [(p.kind, p.event_id) for p in report.problems]
    # Renumbering also moved the positions the checkpoints signed.
    assert _kinds(report) == {"inserted", "rewritten"}


@pytest.mark.parametrize("distance", [1, 7])
def test_swapped_rows_are_reported_as_reordered(log: Log, distance: int) -> None:
    def swap(conn: psycopg.Connection[Any], chain: uuid.UUID) -> set[Any]:
        rows = _rows(conn, chain)
        a, b = rows[60], rows[60 + distance]
        conn.execute("UPDATE audit_logs SET chain_seq = -1 WHERE id = %s", (a["id"],))
        conn.execute(
            "UPDATE audit_logs SET chain_seq = %s WHERE id = %s", (a["chain_seq"], b["id"])
        )
        conn.execute(
            "UPDATE audit_logs SET chain_seq = %s WHERE id = %s", (b["chain_seq"], a["id"])
        )
        return {a["id"], b["id"]}

    url, swapped = _attack(log, swap)
    report = log.verify(url)
    reordered = {p.event_id for p in report.problems if p.kind == "reordered"}
    assert reordered == swapped
    assert _kinds(report) == {"reordered"}


def test_deleting_the_newest_rows_and_stored_checkpoints_needs_the_external_file(
    log: Log,
) -> None:
    def truncate(conn: psycopg.Connection[Any], chain: uuid.UUID) -> int:
        rows = _rows(conn, chain)
        conn.execute("DELETE FROM audit_logs WHERE id = ANY(%s)", ([r["id"] for r in rows[-3:]],))
        conn.execute("DELETE FROM audit_checkpoints")
        return int(rows[-1]["chain_seq"])

    url, head = _attack(log, truncate)
    # Without the copy kept outside, nothing in the database shows the deletion.
    assert log.verify(url, external=False).ok
    report = log.verify(url)
    truncated = [p for p in report.problems if p.kind == "truncated"]
    assert len(truncated) == 1
    assert truncated[0].seq == head
    assert f"ends at {head - 3}" in truncated[0].detail
    assert "checkpoint 1 of checkpoints.jsonl" in truncated[0].detail
    assert _kinds(report) == {"truncated", "missing"}  # and the checkpoint is gone


def test_truncate_as_superuser_is_detected(log: Log) -> None:
    url, _ = _attack(log, lambda conn, _: conn.execute("TRUNCATE audit_logs"))
    report = log.verify(url)
    assert report.events == 0
    assert len([p for p in report.problems if p.kind == "truncated"]) >= 4


def test_a_recomputed_chain_fails_against_the_signed_checkpoints(log: Log) -> None:
    """The attacker edits a user id, then rebuilds the canonical form and every later hash."""

    def rewrite(conn: psycopg.Connection[Any], chain: uuid.UUID) -> Any:
        rows = _rows(conn, chain)
        target = rows[20]
        hashed = orjson.loads(target["canonical"])
        # Version 2: the user id is the first committed value, with the first salt.
        hashed[6] = commit(bytes(target["pii_salt"])[:16], "user_id", "someone-else")
        rows[20]["canonical"] = orjson.dumps(hashed)
        conn.execute(
            "UPDATE audit_logs SET user_id = 'someone-else', canonical = %s WHERE id = %s",
            (rows[20]["canonical"], target["id"]),
        )
        previous = bytes(rows[19]["chain_hash"])
        for row in rows[20:]:
            previous = link(previous, row["chain_seq"], bytes(row["canonical"]))
            conn.execute(
                "UPDATE audit_logs SET chain_hash = %s WHERE id = %s", (previous, row["id"])
            )
        return chain

    url, chain = _attack(log, rewrite)
    for external in (False, True):
        report = log.verify(url, external=external)
        assert report.problems
        assert _kinds(report) == {"rewritten"}
        assert {p.workspace_id for p in report.problems} == {chain}
        assert all(p.event_id is not None for p in report.problems)


def test_forged_or_altered_checkpoints_have_bad_signatures(log: Log) -> None:
    def alter(conn: psycopg.Connection[Any], chain: uuid.UUID) -> None:
        # Every checkpoint gets a forged head, including those signed before any event
        # existed (the writer signs on schedule from its start, so their heads are empty).
        forged = '["00000000-0000-0000-0000-000000000001",1,"00"]'
        conn.execute(
            "UPDATE audit_checkpoints SET body = convert_to(replace(replace("
            "convert_from(body, 'UTF8'), %s, %s), %s, %s), 'UTF8')",
            ('"heads":[]', f'"heads":[{forged}]', '"heads":[[', f'"heads":[{forged},['),
        )

    url, _ = _attack(log, alter)
    report = log.verify(url)
    assert _kinds(report) >= {"bad_signature"}
    assert report.checkpoints == len([p for p in report.problems if p.kind == "bad_signature"])

    stranger = log.tmp / "stranger"
    generate_keys(stranger)
    foreign = cli("checkpoint", "--signing-key", str(stranger / "signing.key"),
                   "--database-url", url)  # fmt: skip
    assert foreign.returncode == 0, foreign.stderr
    problems = log.verify(url).problems
    assert any(p.kind == "bad_signature" and "no public key" in p.detail for p in problems)


def test_the_external_file_holds_what_the_database_holds(log: Log) -> None:
    (external,) = read_checkpoint_file(log.checkpoints)
    heads = {c: s for c, s, _ in external.heads}
    assert sum(heads.values()) == WRITERS * PER_WRITER


# ---- keys, scheduled checkpoints, SQLite ---------------------------------------------------


def test_keys_generate_writes_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    done = cli("keys", "generate", str(tmp_path / "k"))
    assert done.returncode == 0, done.stderr
    private = tmp_path / "k" / "signing.key"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes()
    assert b"PUBLIC KEY" in (tmp_path / "k" / "signing.pub").read_bytes()
    again = cli("keys", "generate", str(tmp_path / "k"))
    assert again.returncode == 2
    assert "refusing" in again.stderr


def test_scheduled_checkpoints_and_verify_on_sqlite(
    sqlite_url: str, spool_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate_keys(tmp_path / "k")
    monkeypatch.setenv("AUDITLEDGER_SIGNING_KEY", str(tmp_path / "k" / "signing.key"))
    with AuditLogger(sqlite_url, spool_dir=spool_dir, checkpoint_interval=0.001) as audit:
        for i in range(30):
            audit.audit_login(f"U{i}", None, ip_address="198.51.100.7", user_agent="ua")
        assert audit.flush(10)
        assert audit.flush(10)  # the tick after the first flush's cycle has run now
    keys = [tmp_path / "k" / "signing.pub"]
    report = verify_log(sqlite_url, public_keys=keys)
    assert report.ok, report.problems
    assert report.events == 30
    assert report.checkpoints >= 1

    path = sqlite_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER audit_logs_erase_only")  # what the file's owner can do
    conn.execute("UPDATE audit_logs SET user_id = 'U99' WHERE user_id = 'U7'")
    conn.commit()
    conn.close()
    problems = verify_log(sqlite_url, public_keys=keys).problems
    assert [(p.kind, "user_id" in p.detail) for p in problems] == [("modified", True)]


def test_workspace_filter_checks_one_chain(log: Log) -> None:
    with psycopg.connect(log.url) as conn:
        chain = _busiest_chain(conn)
        count = conn.execute(
            "SELECT count(*) FROM audit_logs WHERE chain_id = %s", (chain,)
        ).fetchone()
    report = verify_log(
        log.url, public_keys=[log.public_key], checkpoints_file=log.checkpoints,
        workspace_id=str(chain),
    )  # fmt: skip
    assert report.ok, report.problems
    assert count is not None
    assert report.events == count[0]
    assert report.chains == 1


def test_cli_verify_names_a_workspace_as_events_does(log: Log, tmp_path: Path) -> None:
    with psycopg.connect(log.url) as conn:
        chain = _busiest_chain(conn)
        found = conn.execute("SELECT team_id FROM workspaces WHERE id = %s", (chain,)).fetchone()
    assert found is not None
    key = ("--public-key", str(log.public_key), "--database-url", log.url)
    for name in (found[0], str(chain)[:8], str(chain)):
        done = cli("verify", *key, "--workspace", name, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["chains"] == 1
    # A typo must not read as an intact chain of 0 events.
    typo = cli("verify", *key, "--workspace", str(uuid.UUID(int=7)))
    assert typo.returncode == 2
    assert "no workspace has the id" in typo.stderr
    alone = cli("verify", *key, "--workspace", str(uuid.UUID(int=0)))
    assert alone.returncode == 0, alone.stderr
    # Before `auditledger db upgrade`, both commands say so.
    empty = log.pg.create()
    for command in (
        ("verify", *key[:2], "--database-url", empty),
        ("checkpoint", "--signing-key", str(log.private_key), "--database-url", empty),
    ):
        done = cli(*command)
        assert done.returncode == 2
        assert "run `auditledger db upgrade`" in done.stderr, done.stderr


def test_a_bad_signing_key_fails_at_start_up(tmp_path: Path) -> None:
    from auditledger import ConfigurationError

    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(ConfigurationError, match=r"bad\.key"):
        AuditLogger(f"sqlite:///{tmp_path / 'x.db'}", signing_key=tmp_path / "bad.key")


# ---- append-only ---------------------------------------------------------------------------


def _statements(table: str, postgres: bool) -> list[str]:
    out = [f"UPDATE {table} SET created_at = created_at", f"DELETE FROM {table}"]
    if postgres:
        out.append(f"TRUNCATE {table}")
    return out


@pytest.mark.parametrize("table", ["audit_logs", "audit_checkpoints", "audit_quarantine"])
def test_ordinary_changes_are_refused(
    db_url: str, spool_dir: Path, table: str, tmp_path: Path
) -> None:
    generate_keys(tmp_path / "k")
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.audit_login("U1", None)
        audit.log_audit_event("not a valid action!")  # quarantined
        assert audit.flush(10)
    if db_url.startswith("sqlite"):
        from auditledger._chain.checkpoints import Signer

        path = db_url.removeprefix("sqlite:///")
        sink = SqliteSink(path, timeout=5)
        sink.write_checkpoint(Signer.from_file(tmp_path / "k" / "signing.key"))
        sink.close()
        conn = sqlite3.connect(path)
        for statement in _statements(table, postgres=False):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)
        conn.close()
        return
    done = cli("checkpoint", "--signing-key", str(tmp_path / "k" / "signing.key"),
                "--database-url", db_url)  # fmt: skip
    assert done.returncode == 0, done.stderr
    with psycopg.connect(db_url, autocommit=True) as pg:
        for statement in _statements(table, postgres=True):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                pg.execute(statement)
        assert pg.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)


# ---- a chain walked in ranges by several processes -----------------------------------------


def _edit_at(seq: int) -> Callable[[psycopg.Connection[Any], uuid.UUID], None]:
    def edit(conn: psycopg.Connection[Any], chain: uuid.UUID) -> None:
        conn.execute(
            "UPDATE audit_logs SET resource = 'forged' WHERE chain_id = %s AND chain_seq = %s",
            (chain, seq),
        )

    return edit


def _delete_at(seq: int) -> Callable[[psycopg.Connection[Any], uuid.UUID], None]:
    def delete(conn: psycopg.Connection[Any], chain: uuid.UUID) -> None:
        conn.execute("DELETE FROM audit_logs WHERE chain_id = %s AND chain_seq = %s", (chain, seq))

    return delete


def _swap_at(seq: int) -> Callable[[psycopg.Connection[Any], uuid.UUID], None]:
    """The rows at seq - 1 and seq change places: a pair straddling the boundary."""

    def swap(conn: psycopg.Connection[Any], chain: uuid.UUID) -> None:
        for old, new in ((seq - 1, -1), (seq, seq - 1), (-1, seq)):
            conn.execute(
                "UPDATE audit_logs SET chain_seq = %s WHERE chain_id = %s AND chain_seq = %s",
                (new, chain, old),
            )

    return swap


def _relink_at(seq: int) -> Callable[[psycopg.Connection[Any], uuid.UUID], None]:
    """The row before seq is edited and re-hashed: the break shows at seq itself."""

    def relink(conn: psycopg.Connection[Any], chain: uuid.UUID) -> None:
        rows = {r["chain_seq"]: r for r in _rows(conn, chain)}
        edited = bytes(rows[seq - 1]["canonical"]).replace(b'"login"', b'"logout"', 1)
        edited = edited.replace(b'"settings_changed"', b'"settings_viewed"', 1)
        digest = link(bytes(rows[seq - 2]["chain_hash"]), seq - 1, edited)
        conn.execute(
            "UPDATE audit_logs SET canonical = %s, chain_hash = %s WHERE id = %s",
            (edited, digest, rows[seq - 1]["id"]),
        )

    return relink


def _forge_at(seq: int) -> Callable[[psycopg.Connection[Any], uuid.UUID], None]:
    """A forged row with a valid link at seq - 1, the rows from there on renumbered: the row
    at seq links past it."""

    def forge(conn: psycopg.Connection[Any], chain: uuid.UUID) -> None:
        rows = {r["chain_seq"]: r for r in _rows(conn, chain)}
        model, previous = rows[seq - 1], rows[seq - 2]
        conn.execute(
            "UPDATE audit_logs SET chain_seq = -chain_seq - 1 WHERE chain_id = %s"
            " AND chain_seq >= %s",
            (chain, seq - 1),
        )
        conn.execute(
            "UPDATE audit_logs SET chain_seq = -chain_seq WHERE chain_id = %s AND chain_seq < 0",
            (chain,),
        )
        hashed = orjson.loads(model["canonical"])
        forged = uuid.uuid4()
        hashed[1] = str(forged)
        canonical = orjson.dumps(hashed)
        digest = link(bytes(previous["chain_hash"]), seq - 1, canonical)
        conn.execute(
            "INSERT INTO audit_logs (id, action, created_at, chain_id, chain_seq, chain_hash,"
            " canonical) SELECT %s, action, created_at, chain_id, %s, %s, %s FROM audit_logs"
            " WHERE id = %s",
            (forged, seq - 1, digest, canonical, model["id"]),
        )

    return forge


@pytest.mark.parametrize("attack", [_edit_at, _delete_at, _swap_at, _relink_at, _forge_at])
@pytest.mark.parametrize("side", ["first", "last"])
def test_a_tamper_at_a_range_boundary_is_found_as_by_one_walk(
    log: Log, attack: Callable[[int], Any], side: str
) -> None:
    """Four processes, the busiest chain cut so that the tampered position is the first of a
    range (or the last of the one before): the same problems as one process walking it."""
    seq = 120
    url, _ = _attack(log, lambda conn, chain: attack(seq)(conn, chain))
    boundary = seq if side == "first" else seq + 1
    for external in (False, True):
        options: dict[str, Any] = {"public_keys": [log.public_key]}
        if external:
            options["checkpoints_file"] = log.checkpoints
        report = assert_same_when_cut(url, 10_000, at=[boundary], **options)
        assert not report.ok
        assert any(p.seq in (seq - 1, seq, seq + 1) for p in report.problems), report.problems


def test_every_process_reads_the_log_as_at_one_moment(log: Log) -> None:
    """Processes walking ranges of one chain start their reads at different moments: they
    share one snapshot, so rows expired (or written) meanwhile do not make a range differ."""
    url = log.copy()
    with psycopg.connect(url) as conn:
        chain = str(_busiest_chain(conn))
    source = Source(url)
    with source.shared_snapshot() as snapshot:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET session_replication_role = replica")
            conn.execute("DELETE FROM audit_logs WHERE chain_id = %s AND chain_seq <= 10", (chain,))
        another = Source(url, snapshot)
        assert [r[ROW_SEQ] for r in another.range_rows(chain, None, 10)] == list(range(1, 11))
        assert [r[ROW_SEQ] for r in source.before(chain, 1, 12)] == [10, 11]
    assert list(Source(url).range_rows(chain, None, 10)) == []
