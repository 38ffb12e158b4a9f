"""deploy/mysql/grants.sql gives every database probe what it reads, and nothing to write with.

A monitoring account with ALL PRIVILEGES is one typo away from damaging the
cloud it watches; one missing grant turns a probe UNKNOWN on the day it is
needed. Here grants.sql is applied, exactly as shipped (placeholders
substituted), for a per-run user on per-run databases built from the real
keystone / nova / placement schemas; every DB probe runs with that user and
must complete. Each grant is also shown to be needed: without it some probe
loses part of its view. Writes are refused. Databases and user are dropped
afterwards.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pymysql
import pytest

from checks.catalog import CatalogProbe
from checks.cell_mapping import CellMappingProbe
from checks.disk_overcommit import DiskOvercommitProbe
from checks.flavor_filters import FlavorFiltersProbe
from checks.nova_services import NovaServicesProbe
from checks.placement_allocations import PlacementAllocationsProbe
from healthd.config import BackendsConfig
from healthd.connections import Backends
from healthd.model import Status
from healthd.probe import Probe
from tests.helpers.novadb import HOST, Deployment, NovaDB, utcnow
from tests.helpers.probes import ProbeRun, run_probe

GRANTS = Path(__file__).resolve().parent.parent / "deploy" / "mysql" / "grants.sql"
CELL_DB = "@NOVA_CELL_DB@"


def statements(sql: str) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def render(sql: str, names: dict[str, str], cells: list[str]) -> list[str]:
    """Substitute the placeholders; statements on the cell database repeat once per cell."""
    out: list[str] = []
    for stmt in statements(sql):
        copies = [stmt.replace(CELL_DB, c) for c in cells] if CELL_DB in stmt else [stmt]
        for copy in copies:
            for key, value in names.items():
                copy = copy.replace(f"@{key}@", value)
            assert not re.search(r"@[A-Z_]+@", copy), f"placeholder left: {copy}"
            out.append(copy)
    return out


@dataclass
class Cloud:
    novadb: NovaDB
    dep: Deployment
    keystone: str
    user: str
    password: str

    def backends(self) -> Backends:
        def db(name: str) -> dict[str, Any]:
            return {"url": NovaDB.url(name, self.user), "password": self.password}

        cell = self.dep.cells["cell1"]
        return Backends(BackendsConfig.model_validate({"databases": {
            "keystone": db(self.keystone), "nova_api": db(self.dep.api),
            "placement": db(self.dep.placement or ""), "cells": {"cell1": db(cell.db)},
        }}))

    def connect(self, database: str) -> pymysql.Connection:
        return pymysql.connect(host=HOST, port=3306, user=self.user, password=self.password,
                               database=database, autocommit=True)


def populate(novadb: NovaDB, dep: Deployment, keystone: str) -> None:
    """A small healthy cloud, plus one stuck build so nova_services reads request_specs too."""
    cell = dep.cells["cell1"]
    node = dep.add_compute(cell, "compute-1")
    dep.map_host(cell, "compute-1")
    rp = dep.add_provider("compute-1", node["node_uuid"], total=100)
    dep.allocate(rp, 20)
    novadb.insert(cell.db, "services", {
        "created_at": utcnow(), "updated_at": utcnow(), "host": "ctl-1", "binary": "nova-scheduler",
        "topic": "scheduler", "report_count": 5, "disabled": 0, "deleted": 0, "last_seen_up": utcnow(),
        "forced_down": 0, "version": 74, "uuid": str(uuid.uuid4()),
    })
    stuck = str(uuid.uuid4())
    old = utcnow() - timedelta(hours=2)
    novadb.insert(cell.db, "instances", {"uuid": stuck, "created_at": old, "updated_at": old,
                                         "vm_state": "building", "task_state": "scheduling", "deleted": 0})
    novadb.insert(dep.api, "request_specs", {"created_at": old, "instance_uuid": stuck, "spec": "{}"})
    novadb.insert(keystone, "region", {"id": "RegionOne", "description": "", "extra": "{}"})
    novadb.insert(keystone, "service", {"id": "svc-compute", "type": "compute", "enabled": 1,
                                        "extra": '{"name": "nova"}'})
    for iface in ("public", "internal", "admin"):
        novadb.insert(keystone, "endpoint", {
            "id": f"ep-{iface}", "interface": iface, "service_id": "svc-compute",
            "url": "http://127.0.0.1:8774/v2.1", "extra": "{}", "enabled": 1, "region_id": "RegionOne",
        })


@pytest.fixture(scope="module")
def cloud() -> Iterator[Cloud]:
    novadb = NovaDB()
    try:
        dep = Deployment(novadb, with_placement=True)
        dep.add_cell0()
        cell = dep.add_cell("cell1")
        keystone = novadb.create("keystone", "keystone")
        # The mapped URL carries nova's account; a bogus one proves healthd uses the override.
        novadb.exec(f"UPDATE `{dep.api}`.cell_mappings SET database_connection = %s WHERE id = %s",
                    (NovaDB.url(cell.db, "not-healthd", "wrong"), cell.id))
        populate(novadb, dep, keystone)
        user, password = f"{novadb.prefix}_hd", f"Grant-{uuid.uuid4().hex[:12]}"
        novadb.users.append(user)  # dropped by close(), even if applying fails half-way
        names = {"HEALTHD_USER": user, "HEALTHD_HOST": HOST, "HEALTHD_PASSWORD": password,
                 "KEYSTONE_DB": keystone, "NOVA_API_DB": dep.api, "PLACEMENT_DB": dep.placement or ""}
        for stmt in render(GRANTS.read_text(), names, [cell.db]):
            novadb.exec(stmt)
        yield Cloud(novadb, dep, keystone, user, password)
    finally:
        novadb.close()


PROBES: dict[str, Probe] = {
    "catalog": CatalogProbe(CatalogProbe.Settings(source="db")),
    "cell_mapping": CellMappingProbe(CellMappingProbe.Settings()),
    "nova_services": NovaServicesProbe(NovaServicesProbe.Settings(source="db")),
    "disk_overcommit": DiskOvercommitProbe(DiskOvercommitProbe.Settings()),
    "placement_allocations": PlacementAllocationsProbe(PlacementAllocationsProbe.Settings()),
    "flavor_filters": FlavorFiltersProbe(FlavorFiltersProbe.Settings()),
}


def lost_view(run: ProbeRun) -> str:
    """Why a run shows the probe could not read something ('' if it read everything)."""
    if run.status is Status.UNKNOWN:
        return run.summary
    for f in run.findings:
        text = f"{f.message} {f.remediation}".lower()
        if "grant" in text or "denied" in text:
            return f.message
    return ""


@pytest.mark.parametrize("name", sorted(PROBES))
def test_every_db_probe_completes_with_the_shipped_grants(cloud: Cloud, name: str) -> None:
    run = run_probe(PROBES[name], cloud.backends())
    assert lost_view(run) == "", run.summary
    assert run.status is not Status.UNKNOWN
    assert run.result.samples, "the probe exported nothing"


def test_probes_see_the_data_through_the_grants(cloud: Cloud) -> None:
    backends = cloud.backends()
    disk = run_probe(PROBES["disk_overcommit"], backends)
    assert disk.values("healthd_disk_overcommit_placement_usage_bytes")  # placement was read
    assert disk.values("healthd_disk_overcommit_free_disk_bytes")  # the cell was read
    nova = run_probe(PROBES["nova_services"], backends)
    assert nova.value("healthd_nova_services_stuck_instances", cell="cell1") == 1
    assert run_probe(PROBES["cell_mapping"], backends).status is Status.OK
    allocs = run_probe(PROBES["placement_allocations"], backends)
    assert allocs.value("healthd_placement_allocations_cell_up", cell="cell1") == 1
    assert allocs.value("healthd_placement_allocations_unjudged") == 0
    assert run_probe(PROBES["catalog"], backends).value("healthd_catalog_services", type="compute") == 1


def test_cell_connections_needs_only_cell_mappings(cloud: Cloud) -> None:
    """cell_connections reads cell_mappings through the grants and logs in to each cell with the
    mapping's own credentials: here cell1's mapping carries a bogus account, which it reports."""
    from checks.cell_connections import CellConnectionsProbe

    run = run_probe(CellConnectionsProbe(), cloud.backends())
    assert run.status is Status.CRITICAL, run.summary
    assert run.value("healthd_cell_connections_cells") == 2
    assert run.value("healthd_cell_connections_database_up", cell="cell0") == 1
    assert run.value("healthd_cell_connections_database_up", cell="cell1") == 0
    [finding] = run.findings
    assert finding.subject == "cell cell1 database" and "refused the stored credentials" in finding.message


def grant_lines() -> list[str]:
    # The grant tables (`mysql`.*) are db_grants' own: tests/test_db_grants_probe.py
    # test_every_audit_grant_is_needed shows each of them is needed.
    return [s for s in statements(GRANTS.read_text()) if s.startswith("GRANT") and "ON `mysql`." not in s]


def grant_id(stmt: str) -> str:
    return re.sub(r".*`\.`(\w+)`.*", r"\1", stmt, flags=re.S)


@pytest.mark.parametrize("grant", grant_lines(), ids=grant_id)
def test_every_grant_is_needed(cloud: Cloud, grant: str) -> None:
    """Without this one grant, at least one probe loses part of its view."""
    table = re.search(r"ON `@(\w+)@`\.`(\w+)`", grant)
    assert table
    db = {"KEYSTONE_DB": cloud.keystone, "NOVA_API_DB": cloud.dep.api,
          "PLACEMENT_DB": cloud.dep.placement, "NOVA_CELL_DB": cloud.dep.cells["cell1"].db}[table.group(1)]
    target = f"`{db}`.`{table.group(2)}`"
    cloud.novadb.exec(f"REVOKE SELECT ON {target} FROM '{cloud.user}'@'{HOST}'")
    try:
        backends = cloud.backends()
        lost = {name: lost_view(run_probe(p, backends)) for name, p in PROBES.items()}
    finally:
        cloud.novadb.exec(f"GRANT SELECT ON {target} TO '{cloud.user}'@'{HOST}'")
    assert any(lost.values()), f"no probe needs SELECT on {target}"


@pytest.mark.parametrize("table", ["compute_nodes", "services"])
def test_the_account_cannot_write(cloud: Cloud, table: str) -> None:
    cell_db = cloud.dep.cells["cell1"].db
    with cloud.connect(cell_db) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError) as denied:
            cur.execute(f"UPDATE `{table}` SET deleted = 1")
        assert denied.value.args[0] == 1142  # command denied to user
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute(f"DELETE FROM `{table}`")
    with cloud.connect(cloud.keystone) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError) as denied:
            cur.execute("INSERT INTO service (id, type, enabled, extra) VALUES ('x', 'network', 1, '{}')")
        assert denied.value.args[0] == 1142
        with pytest.raises(pymysql.err.OperationalError):  # tables outside the list are invisible
            cur.execute("SELECT * FROM credential")


def test_render_repeats_the_cell_block_per_cell() -> None:
    names = {"HEALTHD_USER": "hd", "HEALTHD_HOST": "%", "HEALTHD_PASSWORD": "pw", "KEYSTONE_DB": "keystone",
             "NOVA_API_DB": "nova_api", "PLACEMENT_DB": "placement"}
    rendered = render(GRANTS.read_text(), names, ["nova", "nova_cell2"])
    assert "GRANT SELECT ON `nova_cell2`.`compute_nodes` TO 'hd'@'%'" in rendered
    assert not [s for s in rendered if re.search(r"\bGRANT (ALL|INSERT|UPDATE|DELETE)", s)]
