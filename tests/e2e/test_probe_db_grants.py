"""db_grants end to end on the loopback lab: nova 34, keystone, placement, glance, for real.

healthd's audit account gets exactly the db_grants lines of deploy/mysql/grants.sql (a
per-run user, dropped afterwards); the probe reads the lab's real config files
(nova.conf, keystone.conf, placement.conf, glance-api.conf) and nova_api.cell_mappings.

The fault is made the way a DBA makes it (lab fault `nova-api-grant`): REVOKE ALL on the
lab's nova_api database from the services' user, then KILL its sessions there. nova-api
really fails (GET /flavors answers 500, its log says "Access denied for user ..."), the
probe is CRITICAL with the GRANT that fixes it, and the revert (that GRANT) restores both.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from checks.db_grants import DbGrantsProbe
from healthd.config import DatabaseConfig
from healthd.connections import Backends
from healthd.model import Severity, Status
from tests.helpers.probes import ProbeRun, lab_backends, run_probe

pytestmark = pytest.mark.e2e

GRANTS = Path(__file__).resolve().parents[2] / "deploy" / "mysql" / "grants.sql"
HOST = "127.0.0.1"


def port() -> int:
    from healthd_lab.constants import DB_PORT  # the lab's server (HEALTHD_LAB_DB_PORT)

    return DB_PORT


def root() -> pymysql.Connection:
    return pymysql.connect(host=HOST, port=port(), user="root", password="", autocommit=True)


@pytest.fixture(scope="module")
def audit() -> Iterator[tuple[str, str]]:
    """healthd's audit account with the grants.sql db_grants lines, nothing else."""
    user, password = f"hdgr{uuid.uuid4().hex[:8]}_hd", f"Aud-{uuid.uuid4().hex[:12]}"
    body = "\n".join(line for line in GRANTS.read_text().splitlines() if not line.lstrip().startswith("--"))
    stmts = [s.strip() for s in body.split(";") if s.strip().startswith("GRANT") and "ON `mysql`." in s]
    conn = root()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'{HOST}' IDENTIFIED BY %s", (password,))
            for stmt in stmts:
                cur.execute(stmt.replace("@HEALTHD_USER@", user).replace("@HEALTHD_HOST@", HOST))
        yield user, password
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'{HOST}'")
        conn.close()


def backends(lab: dict[str, Any], audit: tuple[str, str]) -> Backends:
    base = lab_backends(lab)
    dbs = dict(base.config.databases)
    dbs["mysql"] = DatabaseConfig(url=f"mysql+pymysql://{audit[0]}@{HOST}:{port()}/mysql", password=audit[1])
    return Backends(base.config.model_copy(update={"databases": dbs}))


def files(lab: dict[str, Any]) -> list[str]:
    p = lab["paths"]
    return [p["nova_conf"], p["keystone_conf"], p["placement_conf"], p["glance_conf"]]


def run(lab: dict[str, Any], audit: tuple[str, str], **settings: Any) -> ProbeRun:
    probe = DbGrantsProbe(DbGrantsProbe.Settings(config_files=files(lab), **settings))
    return run_probe(probe, backends(lab, audit))


def test_healthy_lab_is_ok(lab: dict[str, Any], audit: tuple[str, str], lab_api: Any) -> None:
    result = run(lab, audit, login_as_service=True)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    svc, api_db = lab_api.SVC_DB_USER, lab_api.DBS["nova_api"]
    assert result.value("healthd_db_grants_ok", service="nova", user=svc, database=api_db,
                        host="127.0.0.1") == 1
    # nova's [api_database] and [database], cell0 and cell1 mappings, keystone, placement, glance
    judged = {labels["database"] for labels, _ in result.values("healthd_db_grants_ok")}
    assert {lab_api.DBS[k] for k in ("nova_api", "nova_cell0", "nova_cell1", "keystone", "placement",
                                     "glance")} <= judged
    assert result.value("healthd_db_grants_login_up", user=svc, database=api_db) == 1
    secret = Path(lab["paths"]["lab_dir"], "secrets", "db_svc_password").read_text().strip()
    assert secret not in result.everything()


def test_revoked_nova_api_grant_is_critical_and_clears(lab: dict[str, Any], audit: tuple[str, str],
                                                        lab_api: Any) -> None:
    svc, api_db = lab_api.SVC_DB_USER, lab_api.DBS["nova_api"]
    info = lab_api.inject("nova-api-grant")
    try:
        # nova-api really fails: the fault returns only once GET /flavors answered 500 and
        # nova-api.log said "Access denied for user '<svc>'..."
        assert info["flavors_status"] == 500
        assert f"Access denied for user '{svc}'" in info["logged"]
        result = run(lab, audit, login_as_service=True)
        assert result.status is Status.CRITICAL
        [finding] = [f for f in result.about(api_db, Severity.CRITICAL) if f.subject.endswith(f"on {api_db}")]
        assert finding.subject == f"'{svc}'@'127.0.0.1' on {api_db}"
        assert "lacks SELECT, INSERT, UPDATE, DELETE" in finding.message
        assert "[api_database] connection" in finding.message
        assert finding.remediation == f"GRANT ALL PRIVILEGES ON `{api_db}`.* TO '{svc}'@'127.0.0.1';"
        assert result.value("healthd_db_grants_ok", service="nova", user=svc, database=api_db,
                            host="127.0.0.1") == 0
        # the service's own login, from healthd's host, gets the seed's error too
        assert result.value("healthd_db_grants_login_up", user=svc, database=api_db) == 0
        [login] = result.about(f"{svc}@{api_db} login", Severity.CRITICAL)
        assert re.search(rf"Access denied for user '{svc}'@'[^']+' to database '{api_db}'", login.message)
        assert login.remediation == f"GRANT ALL PRIVILEGES ON `{api_db}`.* TO '{svc}'@'127.0.0.1';"
        # the other databases of the same user are fine
        assert result.value("healthd_db_grants_ok", service="keystone", user=svc,
                            database=lab_api.DBS["keystone"], host="127.0.0.1") == 1
        secret = Path(lab["paths"]["lab_dir"], "secrets", "db_svc_password").read_text().strip()
        assert secret not in result.everything()
    finally:
        lab_api.revert("nova-api-grant")
    code, _ = lab_api.Lab().api("compute", "GET", "/flavors", ok=None)
    assert code == 200
    result = run(lab, audit)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
