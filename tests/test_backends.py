"""Backends against real servers and misbehaving peers: timeouts, read-only sessions, no secrets.

Handles are taken from a Context, as probes take them (healthd/probe.py); the run's deadline
is long here (10 s), so what ends a call is the configured per-call timeout. The other way
round (a deadline shorter than every configured timeout) is tests/test_deadlines.py.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from healthd.config import BackendsConfig, DatabaseConfig, OpenStackConfig
from healthd.connections import Backends
from healthd.deadline import Deadline
from healthd.errors import BackendUnavailable, Refused, TimedOut
from healthd.probe import Context
from tests.helpers.hung import silent
from tests.helpers.servers import free_port

CANARY = "canary-backend-pw-5521"
ROOT = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


@pytest.fixture
def context() -> Iterator[Callable[[Backends], Context]]:
    """Contexts for a test (deadline 10 s), closed afterwards as the scheduler closes a run's."""
    made: list[Context] = []

    def make(backends: Backends) -> Context:
        ctx = Context(backends, Deadline(10), logging.getLogger("tests.backends"), {})
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


def db_backends(url: str, **kw: Any) -> Backends:
    db = DatabaseConfig(url=url, password=CANARY, connect_timeout=1, read_timeout=1, **kw)
    return Backends(BackendsConfig(databases={"nova_api": db}))


def test_hung_database_peer_times_out_without_secret(context) -> None:
    with silent() as hung:
        ctx = context(db_backends(f"mysql+pymysql://nova@{hung.server}/nova_api"))
        t0 = time.monotonic()
        with pytest.raises(TimedOut) as err, ctx.db("nova_api"):
            pass
        took = time.monotonic() - t0
    assert took < 2.5, took  # read_timeout 1 s, not the 10 s deadline
    assert "nova_api" in str(err.value) and hung.server in str(err.value)
    assert CANARY not in str(err.value)


def test_database_down_names_the_target(context) -> None:
    port = free_port()
    ctx = context(db_backends(f"mysql+pymysql://nova:{CANARY}@127.0.0.1:{port}/nova_api"))
    with pytest.raises(Refused) as err, ctx.db("nova_api"):
        pass
    assert f"nova@127.0.0.1:{port}/nova_api" in str(err.value)
    assert "cannot connect" in str(err.value) and CANARY not in str(err.value)


# -- sessions on the real MariaDB ------------------------------------------------------------


def root(database: str | None = None) -> pymysql.Connection:
    return pymysql.connect(**ROOT, database=database, autocommit=True,
                           cursorclass=pymysql.cursors.DictCursor)


@pytest.fixture
def scratch_db() -> Iterator[str]:
    name = f"hdtest_{uuid.uuid4().hex[:10]}"
    conn = root()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
        cur.execute(f"CREATE TABLE {name}.t (id INT PRIMARY KEY) ENGINE=InnoDB")
        cur.execute(f"INSERT INTO {name}.t VALUES (1), (2)")
    try:
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE {name}")
        conn.close()


@pytest.fixture
def scratch_user(scratch_db: str) -> Iterator[tuple[str, str]]:
    """A MariaDB user of this run only (SELECT on the scratch database), dropped afterwards."""
    user, password = f"hdtest_{uuid.uuid4().hex[:10]}", secrets.token_hex(12)
    conn = root()
    with conn.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY %s", (password,))
        cur.execute(f"GRANT SELECT ON `{scratch_db}`.* TO '{user}'@'127.0.0.1'")
    try:
        yield user, password
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")
        conn.close()


def user_backends(scratch_db: str, user: str, password: str) -> Backends:
    url = f"mysql+pymysql://{user}@127.0.0.1:3306/{scratch_db}"
    return Backends(BackendsConfig(databases={"nova_api": DatabaseConfig(url=url, password=password)}))


def sessions_of(user: str) -> list[int]:
    with root() as conn, conn.cursor() as cur:
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
        return [row["ID"] for row in cur.fetchall()]


def wait_no_session(user: str, limit: float = 2.0) -> list[int]:
    """The user's sessions still on the server; polled, since the server ends a session
    just after it reads COM_QUIT."""
    end = time.monotonic() + limit
    while (left := sessions_of(user)) and time.monotonic() < end:
        time.sleep(0.02)
    return left


def open_transactions(connection_id: int) -> list[dict[str, Any]]:
    with root() as conn, conn.cursor() as cur:
        cur.execute("SELECT trx_id, trx_state FROM information_schema.INNODB_TRX "
                    "WHERE trx_mysql_thread_id = %s", (connection_id,))
        return list(cur.fetchall())


def test_sessions_are_read_only_and_counted(scratch_db: str, context) -> None:
    ctx = context(Backends(BackendsConfig(databases={
        "nova_api": DatabaseConfig(url=f"mysql+pymysql://root@127.0.0.1:3306/{scratch_db}")})))
    with ctx.db("nova_api") as db:
        assert [r["id"] for r in db.query("SELECT id FROM t ORDER BY id")] == [1, 2]
        with pytest.raises(BackendUnavailable) as err:
            db.query("INSERT INTO t VALUES (3)")
        assert "READ ONLY" in str(err.value) or "read only" in str(err.value).lower()
    assert ctx.backends.sql_statements["nova_api"] == 2


def test_session_is_gone_from_the_server_when_the_block_ends(scratch_db: str, scratch_user, context) -> None:
    user, password = scratch_user
    ctx = context(user_backends(scratch_db, user, password))
    with ctx.db("nova_api") as db:
        [row] = db.query("SELECT CONNECTION_ID() AS id")
        assert sessions_of(user) == [row["id"]]  # the session the block holds, and only it
    assert wait_no_session(user) == []
    # Also when the block ends with an error (a missing table: ProtocolError).
    with pytest.raises(BackendUnavailable), ctx.db("nova_api") as db:
        assert len(sessions_of(user)) == 1
        db.query("SELECT * FROM no_such_table")
    assert wait_no_session(user) == []
    # And when it ends with the probe's own exception.
    with pytest.raises(ZeroDivisionError), ctx.db("nova_api") as db:
        db.query("SELECT 1")
        _ = 1 / 0
    assert wait_no_session(user) == []


def test_no_transaction_stays_open_between_queries(scratch_db: str, scratch_user, context) -> None:
    user, password = scratch_user
    ctx = context(user_backends(scratch_db, user, password))
    # The check can see one: a session that is not autocommit keeps its SELECT's transaction
    # (and its snapshot, and its metadata locks against `nova-manage db sync`) open.
    with root(scratch_db) as control, control.cursor() as cur:
        cur.execute("SET autocommit = 0")
        cur.execute("SELECT CONNECTION_ID() AS id")
        control_id = cur.fetchone()["id"]
        cur.execute("SELECT id FROM t")
        assert len(open_transactions(control_id)) == 1
    # A probe's session: every statement is its own transaction, over when it returns.
    with ctx.db("nova_api") as db:
        [row] = db.query("SELECT CONNECTION_ID() AS id")
        for sql in ("SELECT id FROM t ORDER BY id", "SELECT COUNT(*) AS n FROM t",
                    "SELECT id FROM t WHERE id = 2", "SELECT MAX(id) AS m FROM t"):
            assert db.query(sql)
            assert open_transactions(row["id"]) == [], sql


# -- the OpenStack APIs --------------------------------------------------------------------


def clouds_yaml(path: Path, auth_url: str) -> Path:
    path.write_text(
        "clouds:\n  test:\n    auth:\n"
        f"      auth_url: {auth_url}/v3\n"
        f"      username: admin\n      password: {CANARY}\n      project_name: admin\n"
        "      user_domain_name: Default\n      project_domain_name: Default\n"
    )
    return path


def test_hung_keystone_times_out(context, tmp_path: Path) -> None:
    with silent() as hung:
        cfg = OpenStackConfig(cloud="test", clouds_yaml=clouds_yaml(tmp_path / "clouds.yaml", hung.url),
                              connect_timeout=1, read_timeout=1)
        ctx = context(Backends(BackendsConfig(openstack=cfg)))
        conn = ctx.openstack()
        t0 = time.monotonic()
        with pytest.raises(TimedOut) as err, ctx.api_call("listing services"):
            list(conn.identity.services())
        took = time.monotonic() - t0
    # read_timeout 1 s per request (version discovery, then the token), not the 10 s deadline
    assert took < 5, took
    assert str(err.value) == f"listing services: {hung.url}: timed out"
    assert CANARY not in str(err.value)


def test_keystone_down_names_the_endpoint(context, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    cfg = OpenStackConfig(cloud="test", clouds_yaml=clouds_yaml(tmp_path / "clouds.yaml", url))
    ctx = context(Backends(BackendsConfig(openstack=cfg)))
    with pytest.raises(Refused) as err, ctx.api_call("listing services"):
        list(ctx.openstack().identity.services())
    assert str(err.value) == f"listing services: {url}: cannot connect: connection refused"
