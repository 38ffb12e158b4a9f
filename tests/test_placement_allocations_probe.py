"""placement_allocations on real MariaDB with nova 34's and placement's own schemas.

Each test builds a fresh deployment (nova_api, cell0, two cells, placement) under a
unique prefix and drops it afterwards. The probe connects as a MariaDB user with
exactly the grants docs/probes/placement_allocations.md lists, whose password is a
canary that must never appear in the result. Rows are written as nova and
placement write them (the helper below names each code path).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from checks.placement_allocations import PlacementAllocationsProbe
from healthd.config import BackendsConfig
from healthd.connections import Backends
from healthd.model import Severity, Status
from tests.helpers.novadb import DISK_GB_ID, Cell, Deployment, NovaDB, utcnow
from tests.helpers.probes import ProbeRun, run_probe
from tests.helpers.servers import free_port

VCPU_ID, MEMORY_MB_ID = 0, 1  # os_resource_classes.STANDARDS indexes, as placement syncs them


class Lab:
    def __init__(self, novadb: NovaDB) -> None:
        self.novadb = novadb
        self.dep = Deployment(novadb)
        self.password = f"Canary-{uuid.uuid4().hex[:12]}"
        self.dep.add_cell0()
        self.cell1 = self.dep.add_cell("cell1")
        self.cell2 = self.dep.add_cell("cell2")
        grants = [f"SELECT ON `{self.dep.api}`.`{t}`"
                  for t in ("cell_mappings", "instance_mappings", "build_requests")]
        grants += [f"SELECT ON `{self.dep.placement}`.`{t}`"
                   for t in ("allocations", "resource_providers", "resource_classes")]
        for cell in self.dep.cells.values():
            grants += [f"SELECT ON `{cell.db}`.`{t}`" for t in ("instances", "migrations", "compute_nodes")]
        self.user = novadb.create_user("probe", self.password, grants)
        for cell in self.dep.cells.values():
            novadb.exec(f"UPDATE `{self.dep.api}`.cell_mappings SET database_connection = %s WHERE id = %s",
                        (NovaDB.url(cell.db, self.user, self.password), cell.id))
        self.rp: dict[str, int] = {}
        self.node: dict[str, str] = {}

    def config(self, **cells: Any) -> BackendsConfig:
        dbs: dict[str, Any] = {
            "nova_api": {"url": NovaDB.url(self.dep.api, self.user), "password": self.password},
            "placement": {"url": NovaDB.url(self.dep.placement or "", self.user), "password": self.password},
        }
        if cells:
            dbs["cells"] = cells
        return BackendsConfig.model_validate({"databases": dbs})

    def run(self, backends: Backends | None = None, **settings: Any) -> ProbeRun:
        probe = PlacementAllocationsProbe(PlacementAllocationsProbe.Settings(**settings))
        result = run_probe(probe, backends or Backends(self.config()))
        assert self.password not in result.everything()
        return result

    # -- rows as nova / placement write them ------------------------------------------
    def compute(self, cell: Cell, host: str) -> None:
        """nova-compute starts: compute node in the cell, its provider in placement
        (the root provider's uuid is the compute node's uuid)."""
        node = self.dep.add_compute(cell, host)["node_uuid"]
        self.dep.map_host(cell, host)
        self.node[host] = node
        self.rp[host] = self.dep.add_provider(host, node, 1000)

    def allocate(self, consumer: str, host: str, age: timedelta = timedelta(hours=1)) -> None:
        """PUT /allocations/{consumer} (placement/objects/allocation.py _set_allocations)."""
        for rc, used in ((VCPU_ID, 1), (MEMORY_MB_ID, 64), (DISK_GB_ID, 1)):
            self.novadb.insert(self.dep.placement or "", "allocations", {
                "created_at": utcnow() - age, "resource_provider_id": self.rp[host],
                "consumer_id": consumer, "resource_class_id": rc, "used": used})

    def server(self, cell: Cell | None, host: str | None, *, building: bool = False,
               deleted_ago: timedelta | None = None) -> str:
        """nova/compute/api.py _provision_instances (build request + mapping, cell NULL),
        then conductor schedule_and_build_instances (instance in the cell, mapping's cell
        set, build request deleted); a delete soft-deletes (deleted = id)."""
        inst = str(uuid.uuid4())
        cell_id = None if cell is None else cell.id
        self.novadb.insert(self.dep.api, "instance_mappings", {
            "created_at": utcnow(), "instance_uuid": inst, "cell_id": cell_id, "project_id": "p1",
            "queued_for_delete": int(deleted_ago is not None)})
        if building:
            self.novadb.insert(self.dep.api, "build_requests", {
                "created_at": utcnow(), "instance_uuid": inst, "project_id": "p1"})
        if cell is not None:
            row = {"created_at": utcnow(), "uuid": inst, "host": host, "node": host,
                   "vm_state": "active" if host else "building", "deleted": 0, "hidden": 0}
            row_id = self.novadb.insert(cell.db, "instances", row)
            if deleted_ago is not None:
                self.novadb.exec(f"UPDATE `{cell.db}`.instances SET deleted = id, deleted_at = %s, "
                                 "vm_state = 'deleted' WHERE id = %s", (utcnow() - deleted_ago, row_id))
        return inst

    def migration(self, cell: Cell, inst: str, status: str, source: str, dest: str,
                  kind: str = "resize") -> str:
        """nova/conductor/tasks/migrate.py _create_migration (uuid = the source's consumer)."""
        mig = str(uuid.uuid4())
        self.novadb.insert(cell.db, "migrations", {
            "created_at": utcnow(), "updated_at": utcnow(), "uuid": mig, "instance_uuid": inst,
            "status": status, "migration_type": kind, "source_compute": source, "source_node": source,
            "dest_compute": dest, "dest_node": dest, "deleted": 0, "hidden": 0})
        return mig


@pytest.fixture
def lab(novadb: NovaDB) -> Lab:
    lab = Lab(novadb)
    lab.compute(lab.cell1, "compute-1")
    lab.compute(lab.cell1, "compute-2")
    lab.compute(lab.cell2, "compute-3")
    return lab


def orphans(result: ProbeRun, kind: str) -> float | None:
    return result.value("healthd_placement_allocations_orphans", kind=kind)


def test_healthy_cloud_with_builds_and_a_resize_is_ok(lab: Lab) -> None:
    for cell, host in ((lab.cell1, "compute-1"), (lab.cell1, "compute-2"), (lab.cell2, "compute-3")):
        lab.allocate(lab.server(cell, host), host)
    building = lab.server(None, None, building=True)  # scheduler claimed, conductor not there yet
    lab.allocate(building, "compute-2", age=timedelta(seconds=5))
    resized = lab.server(lab.cell1, "compute-1")
    mig = lab.migration(lab.cell1, resized, "finished", "compute-1", "compute-2")
    lab.allocate(mig, "compute-1")  # source share moved to the migration's uuid
    lab.allocate(resized, "compute-2")  # destination share under the instance
    result = lab.run()
    assert result.status is Status.OK, result.findings
    assert not result.findings
    assert result.value("healthd_placement_allocations_consumers") == 6
    assert result.value("healthd_placement_allocations_in_flight", kind="building") == 1
    assert result.value("healthd_placement_allocations_in_flight", kind="migrating") == 2
    assert "0 stray allocation(s)" in result.summary


def test_allocation_for_an_unknown_consumer_is_stray_and_clears_on_delete(lab: Lab) -> None:
    lab.allocate(lab.server(lab.cell1, "compute-1"), "compute-1")
    stray = str(uuid.uuid4())
    lab.allocate(stray, "compute-1")  # what the scheduler writes, for a consumer nova lacks
    result = lab.run()
    assert result.status is Status.WARNING
    [finding] = result.findings
    assert finding.subject == f"consumer {stray} on compute-1"
    assert "not found in the database" in finding.message and "VCPU=1" in finding.message
    assert f"openstack resource provider allocation delete {stray}" in finding.remediation
    assert orphans(result, "no_mapping") == 1
    assert result.value("healthd_placement_allocations_orphan", consumer=stray,
                        provider=lab.node["compute-1"], kind="no_mapping") == 1

    lab.novadb.exec(f"DELETE FROM `{lab.dep.placement}`.allocations WHERE consumer_id = %s", (stray,))
    result = lab.run()
    assert result.status is Status.OK and orphans(result, "no_mapping") == 0


def test_deleted_instance_wrong_host_and_confirmed_migration(lab: Lab) -> None:
    gone = lab.server(lab.cell1, "compute-1", deleted_ago=timedelta(hours=2))
    lab.allocate(gone, "compute-1")
    fresh = lab.server(lab.cell1, "compute-1", deleted_ago=timedelta(seconds=10))
    lab.allocate(fresh, "compute-1")
    moved = lab.server(lab.cell1, "compute-2")
    lab.allocate(moved, "compute-2")
    lab.allocate(moved, "compute-3")  # leaked on another host, no migration
    done = lab.migration(lab.cell1, moved, "confirmed", "compute-1", "compute-2")
    lab.allocate(done, "compute-1")
    result = lab.run()
    assert result.status is Status.WARNING
    assert orphans(result, "deleted") == 1
    assert orphans(result, "wrong_host") == 1
    assert orphans(result, "finished_migration") == 1
    assert result.value("healthd_placement_allocations_in_flight", kind="recently_deleted") == 1
    [wrong] = result.about("wrong_host")
    assert wrong.subject == f"consumer {moved} on compute-3"
    assert f"--resource_provider {lab.node['compute-3']} --delete" in wrong.remediation


def test_instance_missing_from_its_mapped_cell(lab: Lab) -> None:
    inst = lab.server(lab.cell1, "compute-1")
    lab.allocate(inst, "compute-1")
    lab.novadb.exec(f"DELETE FROM `{lab.cell1.db}`.instances WHERE uuid = %s", (inst,))  # archived
    result = lab.run()
    assert orphans(result, "not_in_cell") == 1
    assert "names cell cell1, which has no such instance" in result.findings[0].message


def test_unreadable_cell_is_named_and_its_consumers_unjudged(lab: Lab) -> None:
    lab.allocate(lab.server(lab.cell2, "compute-3"), "compute-3")
    lab.allocate(str(uuid.uuid4()), "compute-1")
    dead = {"url": NovaDB.url(lab.cell2.db, lab.user, port=free_port()), "password": lab.password,
            "connect_timeout": 2}
    result = lab.run(Backends(lab.config(cell2=dead)))
    assert result.value("healthd_placement_allocations_cell_up", cell="cell2") == 0
    assert result.value("healthd_placement_allocations_unjudged") == 2
    assert orphans(result, "no_mapping") == 0
    [finding] = result.about("could not be read", Severity.WARNING)
    assert finding.subject == "cell cell2"
    both = lab.run(Backends(lab.config(cell1=dead, cell2=dead)))
    assert both.status is Status.UNKNOWN


def test_unreachable_placement_database_is_unknown(lab: Lab) -> None:
    dead = NovaDB.url("placement", lab.user, port=free_port())
    config = BackendsConfig.model_validate({"databases": {
        "nova_api": {"url": NovaDB.url(lab.dep.api, lab.user), "password": lab.password},
        "placement": {"url": dead, "password": lab.password, "connect_timeout": 2}}})
    result = lab.run(Backends(config))
    assert result.status is Status.UNKNOWN
    assert "placement" in result.summary


def test_statement_count_does_not_grow_with_hosts(lab: Lab) -> None:
    def statements() -> int:
        backends = Backends(lab.config())
        lab.run(backends)
        return sum(backends.sql_statements.values())

    few = statements()
    for i in range(4, 30):
        cell = lab.cell1 if i % 2 else lab.cell2
        lab.compute(cell, f"compute-{i}")
        lab.allocate(lab.server(cell, f"compute-{i}"), f"compute-{i}")
    # placement 3, cell_mappings, instance_mappings; instances + migrations per cell, + nodes (not cell0)
    assert statements() == few == 5 + 2 + 3 + 3  # cell0, cell1, cell2
