"""Backends against real servers and misbehaving peers: timeouts, read-only sessions, no secrets."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path

import pymysql
import pytest

from healthd.backends import Backends
from healthd.config import BackendsConfig, DatabaseConfig, DatabasesConfig, OpenStackConfig
from healthd.probe import BackendUnavailable

CANARY = "canary-backend-pw-5521"


@pytest.fixture
def hung_peer():
    """A TCP listener that accepts connections and never says a word."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    srv.close()


def db_backends(url: str, **kw) -> Backends:
    db = DatabaseConfig(url=url, password=CANARY, connect_timeout=1, read_timeout=1, **kw)
    return Backends(BackendsConfig(databases=DatabasesConfig(nova_api=db)))


def test_hung_database_peer_times_out_without_secret(hung_peer):
    backends = db_backends(f"mysql+pymysql://nova@127.0.0.1:{hung_peer}/nova_api")
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable) as err, backends.database("nova_api"):
        pass
    assert time.monotonic() - t0 < 5
    assert "nova_api" in str(err.value) and CANARY not in str(err.value)


def test_database_down_names_the_target(hung_peer):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backends = db_backends(f"mysql+pymysql://nova:{CANARY}@127.0.0.1:{port}/nova_api")
    with pytest.raises(BackendUnavailable) as err, backends.database("nova_api"):
        pass
    assert f"nova@127.0.0.1:{port}/nova_api" in str(err.value)
    assert "cannot connect" in str(err.value) and CANARY not in str(err.value)


@pytest.fixture
def scratch_db():
    name = f"hdtest_{uuid.uuid4().hex[:10]}"
    root = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    with root.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
        cur.execute(f"CREATE TABLE {name}.t (id INT PRIMARY KEY)")
        cur.execute(f"INSERT INTO {name}.t VALUES (1), (2)")
    yield name
    with root.cursor() as cur:
        cur.execute(f"DROP DATABASE {name}")
    root.close()


def test_sessions_are_read_only_and_counted(scratch_db):
    backends = Backends(BackendsConfig(databases=DatabasesConfig(
        nova_api=DatabaseConfig(url=f"mysql+pymysql://root@127.0.0.1:3306/{scratch_db}"))))
    with backends.database("nova_api") as db:
        assert [r["id"] for r in db.query("SELECT id FROM t ORDER BY id")] == [1, 2]
        with pytest.raises(BackendUnavailable) as err:
            db.query("INSERT INTO t VALUES (3)")
        assert "READ ONLY" in str(err.value) or "read only" in str(err.value).lower()
    assert backends.sql_statements["nova_api"] == 2


def test_hung_keystone_times_out(hung_peer, tmp_path: Path):
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  hung:\n    auth:\n"
        f"      auth_url: http://127.0.0.1:{hung_peer}/v3\n"
        f"      username: admin\n      password: {CANARY}\n      project_name: admin\n"
        "      user_domain_name: Default\n      project_domain_name: Default\n"
    )
    cfg = OpenStackConfig(cloud="hung", clouds_yaml=clouds, read_timeout=1)
    backends = Backends(BackendsConfig(openstack=cfg))
    conn = backends.openstack()
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable) as err, backends.openstack_call("listing services"):
        list(conn.identity.services())
    assert time.monotonic() - t0 < 10
    assert "listing services" in str(err.value) and CANARY not in str(err.value)
