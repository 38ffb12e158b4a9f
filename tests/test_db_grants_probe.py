"""db_grants against the local MariaDB 10.11: real grants, real logins, real denials.

Every run makes its own databases and users (prefix ``hdgr`` + random hex), changes their
grants with the SQL a DBA runs (GRANT, REVOKE, CREATE ROLE, SET DEFAULT ROLE, an anonymous
CREATE USER on a host nothing else uses: 127.0.0.3), and drops them afterwards. healthd's
audit account gets exactly the db_grants lines of deploy/mysql/grants.sql. Each verdict of
the probe is checked against what the service's own login really gets from the server.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from checks.db_grants import DbGrantsProbe
from healthd.model import Severity, Status
from tests.helpers.hung import silent
from tests.helpers.novadb import HOST, NovaDB, server
from tests.helpers.probes import ProbeRun, make_backends, run_probe
from tests.helpers.servers import free_port

GRANTS = Path(__file__).resolve().parent.parent / "deploy" / "mysql" / "grants.sql"


def audit_grants(user: str, password: str) -> list[str]:
    """The db_grants statements of grants.sql (those on the `mysql` schema), rendered."""
    body = "\n".join(line for line in GRANTS.read_text().splitlines() if not line.lstrip().startswith("--"))
    out = []
    for stmt in (s.strip() for s in body.split(";")):
        if stmt.startswith("GRANT") and "ON `mysql`." in stmt:
            stmt = stmt.replace("@HEALTHD_USER@", user).replace("@HEALTHD_HOST@", HOST)
            stmt = stmt.replace("@HEALTHD_PASSWORD@", password)
            assert not re.search(r"@[A-Z_]+@", stmt), stmt
            out.append(stmt)
    assert out, "grants.sql has no db_grants lines"
    return out


class World:
    """A service user and its database, an audit account, a nova.conf naming them."""

    def __init__(self, tmp: Path) -> None:
        self.prefix = f"hdgr{uuid.uuid4().hex[:8]}"
        self.root = server()
        self.db = f"{self.prefix}_nova_api"
        self.user = f"{self.prefix}_nova"
        self.password = f"Svc-{uuid.uuid4().hex[:10]}"
        self.audit = f"{self.prefix}_hd"
        self.audit_password = f"Aud-{uuid.uuid4().hex[:10]}"
        self.users: list[tuple[str, str]] = []
        self.roles: list[str] = []
        try:
            self._setup(tmp)
        except BaseException:
            self.close()
            raise

    def _setup(self, tmp: Path) -> None:
        self.exec(f"CREATE DATABASE `{self.db}`")
        self.exec(f"CREATE TABLE `{self.db}`.cell_mappings (id INT PRIMARY KEY)")
        self.exec(f"CREATE TABLE `{self.db}`.host_mappings (id INT PRIMARY KEY)")
        self.create_user(self.user, "%", self.password)
        self.create_user(self.audit, HOST, self.audit_password)
        for stmt in audit_grants(self.audit, self.audit_password):
            self.exec(stmt)
        self.conf = tmp / "nova.conf"
        self.conf.write_text(
            "[DEFAULT]\ndebug = false\n[api_database]\n"
            f"connection = mysql+pymysql://{self.user}:{self.password}@{HOST}:3306/{self.db}?charset=utf8\n")

    def exec(self, sql: str, args: Any = None) -> None:
        with self.root.cursor() as cur:
            cur.execute(sql, args)

    def create_user(self, user: str, host: str, password: str | None = None) -> None:
        self.users.append((user, host))
        if password is None:
            self.exec(f"CREATE USER '{user}'@'{host}'")
        else:
            self.exec(f"CREATE USER '{user}'@'{host.replace('%', '%%')}' IDENTIFIED BY %s", (password,))

    def close(self) -> None:
        for user, host in self.users:
            self.exec(f"DROP USER IF EXISTS '{user}'@'{host}'")
        for role in self.roles:
            self.exec(f"DROP ROLE IF EXISTS `{role}`")
        self.exec(f"DROP DATABASE IF EXISTS `{self.db}`")
        self.root.close()

    def backends(self, port: int = 3306) -> Any:
        return make_backends(databases={"mysql": {
            "url": f"mysql+pymysql://{self.audit}@{HOST}:{port}/mysql", "password": self.audit_password}})

    def run(self, state: dict[str, Any] | None = None, **settings: Any) -> ProbeRun:
        settings.setdefault("config_files", [str(self.conf)])
        settings.setdefault("cells", False)
        return run_probe(DbGrantsProbe(DbGrantsProbe.Settings(**settings)), self.backends(), state)

    def service_login(self, bind: str = HOST, password: str | None = None,
                      statement: str = "SELECT COUNT(*) FROM cell_mappings") -> str:
        """What the service's own login gets: 'ok' or the server's error code and message."""
        try:
            conn = pymysql.connect(host=HOST, port=3306, user=self.user, password=password or self.password,
                                   database=self.db, bind_address=bind, connect_timeout=5)
        except pymysql.err.MySQLError as exc:
            return f"{exc.args[0]} {exc.args[1]}"
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
            return "ok"
        except pymysql.err.MySQLError as exc:
            return f"{exc.args[0]} {exc.args[1]}"
        finally:
            conn.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.close()


def grantee(w: World, host: str = "%") -> str:
    return f"'{w.user}'@'{host}'"


def ok_value(run: ProbeRun, w: World, host: str = "127.0.0.1") -> float | None:
    return run.value("healthd_db_grants_ok", service="nova", user=w.user, database=w.db, host=host)


def test_healthy_all_privileges_on_the_database(world: World) -> None:
    world.exec(f"GRANT ALL PRIVILEGES ON `{world.db}`.* TO {grantee(world)}")
    run = world.run()
    assert run.status is Status.OK, run.everything()
    assert not run.findings
    assert ok_value(run, world) == 1
    assert world.service_login() == "ok"
    assert world.password not in run.everything()


def test_missing_grant_as_a_dba_revokes_it(world: World) -> None:
    world.exec(f"GRANT ALL PRIVILEGES ON `{world.db}`.* TO {grantee(world)}")
    world.exec(f"REVOKE ALL PRIVILEGES ON `{world.db}`.* FROM {grantee(world)}")
    # the seed's error, from the server itself
    assert world.service_login().startswith(f"1044 Access denied for user '{world.user}'@'%' to database")
    run = world.run()
    assert run.status is Status.CRITICAL
    [finding] = run.about(world.db, Severity.CRITICAL)
    assert finding.subject == f"'{world.user}'@'127.0.0.1' on {world.db}"
    assert "lacks SELECT, INSERT, UPDATE, DELETE" in finding.message
    assert finding.remediation == f"GRANT ALL PRIVILEGES ON `{world.db}`.* TO '{world.user}'@'%';"
    assert ok_value(run, world) == 0
    assert world.password not in run.everything()
    world.exec(finding.remediation)  # the fix it names works
    assert world.service_login() == "ok"
    assert world.run().status is Status.OK


def test_select_only_is_missing_the_writes(world: World) -> None:
    world.exec(f"GRANT SELECT ON `{world.db}`.* TO {grantee(world)}")
    assert world.service_login(statement="INSERT INTO cell_mappings VALUES (1)").startswith("1142")
    run = world.run()
    [finding] = run.about(world.db, Severity.CRITICAL)
    assert "lacks INSERT, UPDATE, DELETE" in finding.message


def test_global_grant_only(world: World) -> None:
    world.exec(f"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER ON *.* TO {grantee(world)}")
    assert world.service_login() == "ok"
    run = world.run()
    assert run.status is Status.OK, run.everything()
    assert ok_value(run, world) == 1


def test_wildcard_database_grant_with_escaped_underscore(world: World) -> None:
    pattern = world.prefix + "\\_nova%"
    world.exec(f"GRANT ALL PRIVILEGES ON `{pattern}`.* TO {grantee(world)}")
    assert world.service_login() == "ok"
    assert world.run().status is Status.OK
    # a more specific row with less wins over the wildcard one (first match, not a union)
    world.exec(f"GRANT SELECT ON `{world.db}`.* TO {grantee(world)}")
    assert world.service_login(statement="DELETE FROM cell_mappings").startswith("1142")
    run = world.run()
    [finding] = run.about(world.db, Severity.CRITICAL)
    assert "lacks INSERT, UPDATE, DELETE" in finding.message


def test_table_level_grants_only(world: World) -> None:
    world.exec(f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{world.db}`.`cell_mappings` TO {grantee(world)}")
    assert world.service_login() == "ok"
    assert world.service_login(statement="SELECT * FROM host_mappings").startswith("1142")
    run = world.run()
    assert run.status is Status.WARNING
    [finding] = run.about(world.db, Severity.WARNING)
    assert "table-level grant(s) only (cell_mappings)" in finding.message
    assert ok_value(run, world) == 0


def test_anonymous_user_shadows_the_service_on_a_more_specific_host(world: World) -> None:
    world.exec(f"GRANT ALL PRIVILEGES ON `{world.db}`.* TO {grantee(world)}")
    assert world.service_login(bind="127.0.0.3") == "ok"
    world.create_user("", "127.0.0.3")
    # the right password, from 127.0.0.3: refused by the anonymous row
    assert world.service_login(bind="127.0.0.3").startswith(
        f"1045 Access denied for user '{world.user}'@'127.0.0.3'")
    assert world.service_login(bind="127.0.0.1") == "ok"
    run = world.run(client_hosts=["127.0.0.1", "127.0.0.3"])
    assert run.status is Status.CRITICAL
    [finding] = run.about("127.0.0.3", Severity.CRITICAL)
    assert "anonymous account ''@'127.0.0.3'" in finding.message
    assert "DROP USER ''@'127.0.0.3'" in finding.remediation
    assert ok_value(run, world, "127.0.0.1") == 1 and ok_value(run, world, "127.0.0.3") == 0
    # the service connects from 127.0.0.1 only (the default for a loopback URL): not its problem
    assert world.run().status is Status.OK


def test_role_grant_counts_only_as_the_default_role(world: World) -> None:
    role = f"{world.prefix}_role"
    world.roles.append(role)
    world.exec(f"CREATE ROLE `{role}`")
    world.exec(f"GRANT ALL PRIVILEGES ON `{world.db}`.* TO `{role}`")
    world.exec(f"GRANT `{role}` TO {grantee(world)}")
    assert world.service_login().startswith("1044")  # granted, not active
    run = world.run()
    assert run.status is Status.CRITICAL
    world.exec(f"SET DEFAULT ROLE `{role}` FOR {grantee(world)}")
    assert world.service_login() == "ok"
    run = world.run()
    assert run.status is Status.OK, run.everything()


def test_no_account_for_the_user(world: World) -> None:
    world.exec(f"DROP USER {grantee(world)}")
    assert world.service_login().startswith("1045")
    run = world.run()
    [finding] = run.about(world.user, Severity.CRITICAL)
    assert f"no '{world.user}' account matches a client at 127.0.0.1" in finding.message


def test_login_as_service_with_a_wrong_password(world: World) -> None:
    world.exec(f"GRANT ALL PRIVILEGES ON `{world.db}`.* TO {grantee(world)}")
    run = world.run(login_as_service=True)
    assert run.status is Status.OK, run.everything()
    assert run.value("healthd_db_grants_login_up", user=world.user, database=world.db) == 1
    wrong = f"Wrong-{uuid.uuid4().hex[:10]}"
    world.conf.write_text(world.conf.read_text().replace(world.password, wrong))
    run = world.run(login_as_service=True)
    assert run.status is Status.CRITICAL
    assert run.value("healthd_db_grants_login_up", user=world.user, database=world.db) == 0
    [finding] = run.about(f"{world.user}@{world.db} login", Severity.CRITICAL)
    assert "access denied" in finding.message.lower()
    assert wrong not in run.everything() and world.password not in run.everything()
    assert "IDENTIFIED BY PASSWORD" not in run.everything()


def test_access_denied_errors_delta(world: World) -> None:
    world.exec(f"GRANT ALL PRIVILEGES ON `{world.db}`.* TO {grantee(world)}")
    state: dict[str, Any] = {}
    first = world.run(state)
    assert first.value("healthd_db_grants_access_denied_increase") == 0
    for _ in range(5):  # the default threshold
        world.service_login(password="not-the-password")
    second = world.run(state)
    assert (second.value("healthd_db_grants_access_denied_increase") or 0) >= 5
    assert second.about("Access_denied_errors rose", Severity.WARNING)


def test_every_audit_grant_is_needed(world: World) -> None:
    """Least privilege: without any one of grants.sql's db_grants lines the probe is UNKNOWN."""
    world.exec(f"GRANT ALL PRIVILEGES ON `{world.db}`.* TO {grantee(world)}")
    assert world.run().status is Status.OK
    for stmt in audit_grants(world.audit, world.audit_password):
        revoke = re.sub(r"^GRANT (.*) TO (.*)$", r"REVOKE \1 FROM \2", stmt, flags=re.S)
        world.exec(revoke)
        try:
            run = world.run()
            assert run.status is Status.UNKNOWN, (stmt, run.summary)
            assert "denied" in run.summary.lower() or "grant" in run.summary.lower()
        finally:
            world.exec(stmt)
    # and it sees no password hash, nor can it read global_priv
    conn = pymysql.connect(host=HOST, user=world.audit, password=world.audit_password, database="mysql")
    try:
        with conn.cursor() as cur:
            for sql in ("SELECT authentication_string FROM mysql.user", "SELECT Password FROM mysql.user",
                        "SELECT Priv FROM mysql.global_priv"):
                with pytest.raises(pymysql.err.OperationalError) as denied:
                    cur.execute(sql)
                assert denied.value.args[0] in (1142, 1143)
    finally:
        conn.close()


def test_cells_from_nova_api(world: World) -> None:
    """Each cell mapping's user and database are judged (here the cell's URL uses the service user)."""
    novadb = NovaDB(prefix=f"{world.prefix}c")
    try:
        from tests.helpers.novadb import Deployment

        dep = Deployment(novadb, with_placement=False)
        cell = dep.add_cell("cell1", NovaDB.url(f"{world.prefix}c_nova_cell1", world.user, world.password))
        world.exec(f"GRANT SELECT ON `{dep.api}`.`cell_mappings` TO '{world.audit}'@'{HOST}'")
        world.exec(f"GRANT ALL PRIVILEGES ON `{world.db}`.* TO {grantee(world)}")
        backends = make_backends(databases={
            "mysql": {"url": f"mysql+pymysql://{world.audit}@{HOST}:3306/mysql",
                      "password": world.audit_password},
            "nova_api": {"url": f"mysql+pymysql://{world.audit}@{HOST}:3306/{dep.api}",
                         "password": world.audit_password}})
        run = run_probe(DbGrantsProbe(DbGrantsProbe.Settings(config_files=[str(world.conf)])), backends)
        [finding] = run.about(cell.db, Severity.CRITICAL)
        assert "cell cell1 (nova_api.cell_mappings.database_connection)" in finding.message
        world.exec(f"GRANT ALL PRIVILEGES ON `{cell.db}`.* TO {grantee(world)}")
        run = run_probe(DbGrantsProbe(DbGrantsProbe.Settings(config_files=[str(world.conf)])), backends)
        assert run.status is Status.OK, run.everything()
        assert world.password not in run.everything()
    finally:
        novadb.close()


def test_database_down_is_unknown_with_the_reason(world: World) -> None:
    port = free_port()
    run = run_probe(DbGrantsProbe(DbGrantsProbe.Settings(config_files=[str(world.conf)], cells=False)),
                    world.backends(port))
    assert run.status is Status.UNKNOWN
    assert "refused" in run.summary and str(port) in run.summary


def test_database_hung_is_unknown_by_the_timeout(world: World) -> None:
    with silent() as peer:
        t0 = time.monotonic()
        run = run_probe(DbGrantsProbe(DbGrantsProbe.Settings(config_files=[str(world.conf)], cells=False,
                                                             timeout=2)), world.backends(peer.port))
        assert time.monotonic() - t0 < 2 + 2
    assert run.status is Status.UNKNOWN
    assert "deadline" in run.summary or "timed out" in run.summary


def test_constant_statements(world: World) -> None:
    """Five statements on the audit connection, for one service or twenty."""
    world.exec(f"GRANT ALL PRIVILEGES ON `{world.db}`.* TO {grantee(world)}")
    backends = world.backends()
    run_probe(DbGrantsProbe(DbGrantsProbe.Settings(config_files=[str(world.conf)], cells=False)), backends)
    one = backends.sql_statements["mysql"]
    extra = "".join(f"[database]\nconnection = mysql+pymysql://{world.user}x{i}:pw-{i}xx@{HOST}/"
                    f"{world.db}{i}\n" for i in range(20))
    many = world.conf.parent / "many.conf"
    many.write_text(world.conf.read_text() + extra)
    backends = world.backends()
    run_probe(DbGrantsProbe(DbGrantsProbe.Settings(config_files=[str(world.conf), str(many)],
                                                   cells=False)), backends)
    assert backends.sql_statements["mysql"] == one == 5


def test_unreadable_cell_mappings_leave_the_files_judged(world: World) -> None:
    world.exec(f"GRANT ALL PRIVILEGES ON `{world.db}`.* TO {grantee(world)}")
    backends = make_backends(databases={
        "mysql": {"url": f"mysql+pymysql://{world.audit}@{HOST}:3306/mysql",
                  "password": world.audit_password},
        "nova_api": {"url": f"mysql+pymysql://{world.audit}@{HOST}:{free_port()}/nova_api",
                     "password": world.audit_password}})
    run = run_probe(DbGrantsProbe(DbGrantsProbe.Settings(config_files=[str(world.conf)])), backends)
    assert run.status is Status.WARNING
    [finding] = run.about("cell mappings", Severity.WARNING)
    assert "refused" in finding.message
    assert ok_value(run, world) == 1
