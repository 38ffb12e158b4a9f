"""disk_overcommit on real MariaDB with nova 34's and placement 16's own schemas.

The probe connects as a user with exactly the grants docs/probes/disk_overcommit.md
lists; its password is a canary that must never appear in the result.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from checks.disk_overcommit import DiskOvercommitProbe
from healthd.config import BackendsConfig
from healthd.connections import Backends
from healthd.model import Severity, Status
from tests.helpers.novadb import Deployment, NovaDB
from tests.helpers.probes import ProbeRun, run_probe
from tests.helpers.servers import free_port

GIB = 2**30
PLACEMENT_TABLES = ("resource_providers", "inventories", "allocations", "resource_classes")


class Lab:
    def __init__(self, novadb: NovaDB) -> None:
        self.novadb = novadb
        self.dep = Deployment(novadb, with_placement=True)
        self.password = f"Canary-{uuid.uuid4().hex[:12]}"
        self.dep.add_cell0()
        self.cell1 = self.dep.add_cell("cell1")
        self.cell2 = self.dep.add_cell("cell2")
        grants = [f"SELECT ON `{self.dep.api}`.`cell_mappings`"]
        grants += [f"SELECT ON `{c.db}`.`compute_nodes`" for c in (self.cell1, self.cell2)]
        grants += [f"SELECT ON `{self.dep.placement}`.`{t}`" for t in PLACEMENT_TABLES]
        self.user = novadb.create_user("probe", self.password, grants)
        for cell in (self.cell1, self.cell2):
            novadb.exec(f"UPDATE `{self.dep.api}`.cell_mappings SET database_connection = %s WHERE id = %s",
                        (NovaDB.url(cell.db, self.user, self.password), cell.id))

    def add_host(self, cell: Any, host: str, total: int = 100, ratio: float = 1.0, used: int = 20,
                 **node: Any) -> int:
        """A compute node and its placement provider (the provider uuid is the node uuid, as nova sets it)."""
        made = self.dep.add_compute(cell, host, local_gb=total, local_gb_used=used,
                                    disk_allocation_ratio=ratio, **node)
        rp = self.dep.add_provider(host, made["node_uuid"], total, allocation_ratio=ratio)
        if used:
            self.dep.allocate(rp, used)
        return rp

    def config(self, placement: bool = True, placement_url: str | None = None) -> BackendsConfig:
        dbs: dict[str, Any] = {"nova_api": {"url": NovaDB.url(self.dep.api, self.user),
                                            "password": self.password}}
        if placement:
            dbs["placement"] = {"url": placement_url or NovaDB.url(self.dep.placement or "", self.user),
                                "password": self.password, "connect_timeout": 2}
        return BackendsConfig.model_validate({"databases": dbs})

    def run(self, backends: Backends | None = None, **settings: Any) -> ProbeRun:
        probe = DiskOvercommitProbe(DiskOvercommitProbe.Settings(**settings))
        result = run_probe(probe, backends or Backends(self.config()))
        assert self.password not in result.everything()  # the canary
        return result


@pytest.fixture
def lab(novadb: NovaDB) -> Lab:
    return Lab(novadb)


def node(cell: str, host: str) -> dict[str, str]:
    return {"cell": cell, "host": host, "node": host}


def test_healthy_nodes_are_ok(lab: Lab) -> None:
    lab.add_host(lab.cell1, "compute-1")
    lab.add_host(lab.cell2, "compute-2", used=50)
    result = lab.run()
    assert result.status is Status.OK and result.findings == []
    n = node("cell1", "compute-1")
    assert result.value("healthd_disk_overcommit_free_disk_bytes", **n) == 80 * GIB
    assert result.value("healthd_disk_overcommit_disk_available_least_bytes", **n) == 70 * GIB
    assert result.value("healthd_disk_overcommit_local_bytes", **n) == 100 * GIB
    assert result.value("healthd_disk_overcommit_used_bytes", **node("cell2", "compute-2")) == 50 * GIB
    assert result.value("healthd_disk_overcommit_placement_capacity_bytes", provider="compute-2") == 100 * GIB
    assert result.value("healthd_disk_overcommit_placement_usage_bytes", provider="compute-2") == 50 * GIB
    assert result.value("healthd_disk_overcommit_placement_allocation_ratio", provider="compute-1") == 1.0
    assert result.summary.startswith("2 compute nodes in 2 cells: 0 committed beyond what placement allows")


def test_policy_overcommit_is_warning_and_beyond_it_is_critical(lab: Lab) -> None:
    lab.add_host(lab.cell1, "compute-1")
    # disk_allocation_ratio 1.5: placement lets 150 GiB of flavour disks onto a 100 GiB disk;
    # it accepted 130 and the resource tracker writes local_gb_used 130, free_disk_gb -30.
    rp = lab.add_host(lab.cell2, "compute-2", ratio=1.5, used=0)
    lab.dep.allocate(rp, 130)
    lab.dep.set_disk_usage(lab.cell2, "compute-2", local_gb_used=130, disk_available_least=40)

    result = lab.run()
    assert result.status is Status.WARNING
    [finding] = result.findings
    assert finding.subject == "compute node compute-2 (host compute-2, cell cell2)"
    assert "free_disk_gb is -30 GiB: overcommitted by policy" in finding.message
    assert "placement's DISK_GB allocation_ratio 1.5 allows up to 150 GiB" in finding.message
    assert result.value("healthd_disk_overcommit_free_disk_bytes", **node("cell2", "compute-2")) == -30 * GIB
    assert result.value("healthd_disk_overcommit_allocation_ratio", **node("cell2", "compute-2")) == 1.5
    assert result.value("healthd_disk_overcommit_placement_capacity_bytes", provider="compute-2") == 150 * GIB

    # The compute restarts with ratio 1.0 (update_provider_tree writes it): placement keeps
    # the 130 GiB on a capacity of 100, the node and nova_cell's row say 1.0.
    lab.novadb.exec(f"UPDATE `{lab.dep.placement}`.inventories SET allocation_ratio = 1.0 "
                    "WHERE resource_provider_id = %s", (rp,))
    lab.novadb.exec(f"UPDATE `{lab.cell2.db}`.compute_nodes SET disk_allocation_ratio = 1.0 "
                    "WHERE host = 'compute-2'")
    result = lab.run()
    assert result.status is Status.CRITICAL
    [finding] = result.findings
    assert "more than placement's DISK_GB allocation_ratio 1 allows (100 GiB)" in finding.message
    assert "Placement has 130 GiB allocated of its 100 GiB DISK_GB capacity." in finding.message
    assert "migrate --live-migration" in finding.remediation and "compute-2" in finding.remediation

    lab.dep.set_disk_usage(lab.cell2, "compute-2", local_gb_used=60, disk_available_least=30)
    lab.novadb.exec(f"UPDATE `{lab.dep.placement}`.allocations SET used = 60 WHERE resource_provider_id = %s",
                    (rp,))
    result = lab.run()
    assert result.status is Status.OK and result.findings == []


def test_ratio_zero_of_an_old_release_reads_as_the_default(lab: Lab) -> None:
    lab.add_host(lab.cell1, "compute-1", used=110, disk_available_least=5)
    lab.novadb.exec(f"UPDATE `{lab.cell1.db}`.compute_nodes SET disk_allocation_ratio = 0.0")
    result = lab.run(Backends(lab.config(placement=False)))
    assert result.value("healthd_disk_overcommit_allocation_ratio", **node("cell1", "compute-1")) == 1.0
    [finding] = result.findings
    assert finding.severity is Severity.CRITICAL
    assert "disk_allocation_ratio 0.0 in compute_nodes, which nova reads as" in finding.message


def test_negative_disk_available_least_is_critical(lab: Lab) -> None:
    lab.add_host(lab.cell1, "compute-1", disk_available_least=-12)
    result = lab.run()
    [finding] = result.findings
    assert finding.severity is Severity.CRITICAL and "compute-1" in finding.subject
    assert "disk_available_least is -12 GiB" in finding.message and "host view" in finding.message
    assert result.value("healthd_disk_overcommit_disk_available_least_bytes",
                        **node("cell1", "compute-1")) == -12 * GIB


def test_highly_committed_disk_is_warning(lab: Lab) -> None:
    lab.add_host(lab.cell1, "compute-1", used=95, disk_available_least=50)
    result = lab.run(committed_warning_ratio=0.9)
    assert result.status is Status.WARNING
    assert "95 GiB committed of 100 GiB" in result.findings[0].message
    assert lab.run(committed_warning_ratio=1.0).status is Status.OK


def test_placement_over_capacity_is_critical(lab: Lab) -> None:
    rp = lab.add_host(lab.cell1, "compute-1", ratio=2.0, used=150, disk_available_least=10)
    lab.dep.set_disk_usage(lab.cell1, "compute-1", local_gb_used=90, disk_available_least=10)
    # An operator lowers the ratio to 1.0 (the compute's update_provider_tree writes it).
    lab.novadb.exec(f"UPDATE `{lab.dep.placement}`.inventories SET allocation_ratio = 1.0 "
                    "WHERE resource_provider_id = %s", (rp,))
    result = lab.run(committed_warning_ratio=1.0)
    assert result.status is Status.CRITICAL
    [finding] = result.findings
    assert finding.subject == "compute node compute-1 (host compute-1, cell cell1)"
    assert "150 GiB DISK_GB allocated against a capacity of 100 GiB" in finding.message
    assert "placement refuses every new DISK_GB allocation here" in finding.message


def test_ironic_nodes_are_not_judged(lab: Lab) -> None:
    lab.add_host(lab.cell1, "compute-1")
    lab.dep.add_compute(lab.cell1, "ironic-conductor", local_gb=0, local_gb_used=0,
                        disk_available_least=0, hypervisor_hostname="bm-node-1")
    # nova/virt/ironic/driver.py _node_resource: hypervisor_type ironic, local_gb 0
    lab.novadb.exec(f"UPDATE `{lab.cell1.db}`.compute_nodes SET hypervisor_type = 'ironic' "
                    "WHERE hypervisor_hostname = 'bm-node-1'")
    lab.dep.add_compute(lab.cell1, "compute-9", local_gb=100, local_gb_used=0, disk_available_least=None,
                        hypervisor_hostname="compute-9")
    result = lab.run()
    assert result.status is Status.OK
    bm = {"cell": "cell1", "host": "ironic-conductor", "node": "bm-node-1"}
    assert result.value("healthd_disk_overcommit_local_bytes", **bm) is None
    assert "1 ironic nodes not judged" in result.summary
    assert result.value("healthd_disk_overcommit_disk_available_least_bytes", **node("cell1", "compute-9")) \
        is None
    assert result.value("healthd_disk_overcommit_free_disk_bytes", **node("cell1", "compute-1")) == 80 * GIB


def test_works_without_placement(lab: Lab) -> None:
    lab.add_host(lab.cell1, "compute-1", disk_available_least=-1)
    backends = Backends(lab.config(placement=False))
    result = lab.run(backends)
    assert result.status is Status.CRITICAL and "placement not configured" in result.summary
    assert result.values("healthd_disk_overcommit_placement_capacity_bytes") == []
    assert backends.sql_statements["placement"] == 0


def test_unreachable_placement_keeps_the_node_view(lab: Lab) -> None:
    lab.add_host(lab.cell1, "compute-1")
    dead = NovaDB.url("placement", lab.user, lab.password, port=free_port())
    result = lab.run(Backends(lab.config(placement_url=dead)))
    assert result.status is Status.WARNING
    [finding] = result.findings
    assert finding.subject == "placement database" and "cannot connect" in finding.message
    assert result.value("healthd_disk_overcommit_free_disk_bytes", **node("cell1", "compute-1")) == 80 * GIB


def test_unreachable_cell_database_is_unknown(lab: Lab) -> None:
    lab.add_host(lab.cell1, "compute-1")
    dead = NovaDB.url(lab.cell2.db, lab.user, lab.password, port=free_port())
    lab.novadb.exec(f"UPDATE `{lab.dep.api}`.cell_mappings SET database_connection = %s WHERE id = %s",
                    (dead, lab.cell2.id))
    result = lab.run()
    assert result.status is Status.UNKNOWN
    assert "database cell cell2 at" in result.summary and "cannot connect" in result.summary


def test_statement_count_does_not_grow_with_hosts(lab: Lab) -> None:
    def statements() -> int:
        backends = Backends(lab.config())
        lab.run(backends)
        return sum(backends.sql_statements.values())

    lab.add_host(lab.cell1, "compute-0")
    few = statements()
    for i in range(1, 30):
        lab.add_host(lab.cell1 if i % 2 else lab.cell2, f"compute-{i}")
    assert statements() == few == 4  # cell_mappings, one per cell, placement
