"""flavor_filters on real MariaDB with nova 34's and placement 16's own schemas.

Each test builds a fresh deployment (nova_api, cell0, two cells, placement) under a unique
prefix and drops it afterwards. The probe connects as a MariaDB user with exactly the
grants docs/probes/flavor_filters.md lists (the least-privilege case), whose password is a
canary that must never appear in the result. Rows are written as nova and placement write
them; each helper names the code path.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from checks.flavor_filters import AIESF, FlavorFiltersProbe
from healthd.config import BackendsConfig
from healthd.connections import Backends
from healthd.model import Severity, Status
from tests.helpers.novadb import Cell, Deployment, NovaDB, utcnow
from tests.helpers.probes import ProbeRun, run_probe
from tests.helpers.servers import free_port

API_TABLES = ("flavors", "flavor_extra_specs", "flavor_projects", "aggregate_hosts", "aggregate_metadata",
              "cell_mappings")
CELL_TABLES = ("compute_nodes", "services")
PLACEMENT_TABLES = ("resource_providers", "inventories", "resource_classes", "resource_provider_traits",
                    "traits")


class Lab:
    def __init__(self, novadb: NovaDB) -> None:
        self.novadb = novadb
        self.dep = Deployment(novadb)
        self.password = f"Canary-{uuid.uuid4().hex[:12]}"
        self.dep.add_cell0()
        self.cell1 = self.dep.add_cell("cell1")
        self.cell2 = self.dep.add_cell("cell2")
        grants = [f"SELECT ON `{self.dep.api}`.`{t}`" for t in API_TABLES]
        grants += [f"SELECT ON `{self.dep.placement}`.`{t}`" for t in PLACEMENT_TABLES]
        for cell in self.dep.cells.values():
            grants += [f"SELECT ON `{cell.db}`.`{t}`" for t in CELL_TABLES]
        self.user = novadb.create_user("probe", self.password, grants)
        for cell in self.dep.cells.values():
            novadb.exec(f"UPDATE `{self.dep.api}`.cell_mappings SET database_connection = %s WHERE id = %s",
                        (NovaDB.url(cell.db, self.user, self.password), cell.id))
        self.rp: dict[str, int] = {}
        self._sync_classes_and_traits()

    def config(self, placement: bool = True, **cells: Any) -> BackendsConfig:
        dbs: dict[str, Any] = {"nova_api": {"url": NovaDB.url(self.dep.api, self.user),
                                            "password": self.password}}
        if placement:
            dbs["placement"] = {"url": NovaDB.url(self.dep.placement or "", self.user),
                                "password": self.password}
        if cells:
            dbs["cells"] = cells
        return BackendsConfig.model_validate({"databases": dbs})

    def run(self, backends: Backends | None = None, **settings: Any) -> ProbeRun:
        probe = FlavorFiltersProbe(FlavorFiltersProbe.Settings(**settings))
        result = run_probe(probe, backends or Backends(self.config()))
        assert self.password not in result.everything()
        return result

    # -- rows as nova / placement write them ------------------------------------------
    def _sync_classes_and_traits(self) -> None:
        """placement/objects/resource_class.py _resource_classes_sync (PCPU is id 19 in
        os-resource-classes 1.1) and trait.py _trait_sync for the traits used here."""
        self.novadb.insert(self.dep.placement or "", "resource_classes", {"id": 19, "name": "PCPU"})
        self.trait = {}
        for name in ("HW_CPU_X86_AVX", "COMPUTE_STATUS_DISABLED", "MISC_SHARES_VIA_AGGREGATE"):
            self.trait[name] = self.novadb.insert(self.dep.placement or "", "traits",
                                                  {"created_at": utcnow(), "name": name})

    def compute(self, cell: Cell, host: str, vcpus: int = 64, **service: Any) -> None:
        """nova-compute starts (Service.create, ResourceTracker._init_compute_node) and its
        report client creates the provider and PUTs VCPU/MEMORY_MB/DISK_GB inventories
        (nova/virt/driver.py update_provider_tree: max_unit = total for the libvirt driver)."""
        node = self.dep.add_compute(cell, host)["node_uuid"]
        if service:
            sets = ", ".join(f"`{k}` = %s" for k in service)
            self.novadb.exec(f"UPDATE `{cell.db}`.services SET {sets} WHERE host = %s",
                             (*service.values(), host))
        self.dep.map_host(cell, host)
        rp = self.dep.add_provider(host, node, 1000)
        self.rp[host] = rp
        for rc, total in ((0, vcpus), (1, 16384)):
            self.novadb.insert(self.dep.placement or "", "inventories", {
                "created_at": utcnow(), "resource_provider_id": rp, "resource_class_id": rc, "total": total,
                "reserved": 0, "min_unit": 1, "max_unit": total, "step_size": 1, "allocation_ratio": 4.0})

    def add_trait(self, host: str, name: str) -> None:
        """PUT /resource_providers/{uuid}/traits (placement/objects/trait.py _set_traits)."""
        self.novadb.insert(self.dep.placement or "", "resource_provider_traits", {
            "created_at": utcnow(), "trait_id": self.trait[name], "resource_provider_id": self.rp[host]})

    def flavor(self, name: str, specs: dict[str, str] | None = None, vcpus: int = 1, ram: int = 512,
               disk: int = 1, public: bool = True, disabled: bool = False, projects: int = 0) -> str:
        """POST /flavors + os-extra_specs + os-flavor-access (nova/objects/flavor.py _flavor_create,
        _flavor_extra_specs_add, _flavor_add_project)."""
        flavorid = str(uuid.uuid4())
        fid = self.novadb.insert(self.dep.api, "flavors", {
            "created_at": utcnow(), "name": name, "memory_mb": ram, "vcpus": vcpus, "swap": 0,
            "vcpu_weight": None, "flavorid": flavorid, "rxtx_factor": 1.0, "root_gb": disk, "ephemeral_gb": 0,
            "disabled": int(disabled), "is_public": int(public), "description": None})
        for key, value in (specs or {}).items():
            self.novadb.insert(self.dep.api, "flavor_extra_specs", {
                "created_at": utcnow(), "flavor_id": fid, "key": key, "value": value})
        for _ in range(projects):
            self.novadb.insert(self.dep.api, "flavor_projects", {
                "created_at": utcnow(), "flavor_id": fid, "project_id": uuid.uuid4().hex})
        return flavorid

    def aggregate(self, name: str, hosts: list[str], **metadata: str) -> None:
        """openstack aggregate create/add host/set --property (nova/objects/aggregate.py
        _aggregate_create_in_db, _host_add, _metadata_add_to_db)."""
        agg = self.novadb.insert(self.dep.api, "aggregates", {
            "created_at": utcnow(), "uuid": str(uuid.uuid4()), "name": name})
        for host in hosts:
            self.novadb.insert(self.dep.api, "aggregate_hosts", {
                "created_at": utcnow(), "host": host, "aggregate_id": agg})
        for key, value in metadata.items():
            self.novadb.insert(self.dep.api, "aggregate_metadata", {
                "created_at": utcnow(), "aggregate_id": agg, "key": key, "value": value})


@pytest.fixture
def lab():
    novadb = NovaDB()
    try:
        yield Lab(novadb)
    finally:
        novadb.close()


@pytest.fixture
def aggregate_filter(tmp_path: Path) -> str:
    conf = tmp_path / "nova.conf"
    conf.write_text("[DEFAULT]\ntransport_url = rabbit://nova:Sekret@127.0.0.1:5672/\n"
                    "[filter_scheduler]\nenabled_filters = ComputeFilter,ComputeCapabilitiesFilter,"
                    "AggregateInstanceExtraSpecsFilter\n")
    return str(conf)


def flavor_finding(result: ProbeRun, flavorid: str) -> Any:
    found = [f for f in result.findings if f.subject.startswith(f"flavor {flavorid} ")]
    assert len(found) == 1, result.findings
    return found[0]


def test_healthy_cloud_is_ok(lab: Lab) -> None:
    lab.compute(lab.cell1, "compute-1")
    lab.compute(lab.cell2, "compute-2")
    lab.flavor("m1.small", {"hw:cpu_policy": "shared", "capabilities:hypervisor_type": "QEMU",
                            "quota:disk_read_bytes_sec": "10240000", "xxx": "123"})
    lab.flavor("m1.large", {"trait:HW_CPU_X86_AVX": "required"}, vcpus=64)
    lab.add_trait("compute-2", "HW_CPU_X86_AVX")
    result = lab.run()
    assert result.status is Status.OK, result.findings
    assert result.findings == []
    assert result.value("healthd_flavor_filters_hosts", state="eligible") == 2
    assert result.value("healthd_flavor_filters_flavors", visibility="public") == 2
    assert result.value("healthd_flavor_filters_unschedulable", visibility="public") == 0
    assert result.value("healthd_flavor_filters_placement_checked") == 1


def test_capability_no_host_has_is_critical_and_names_the_fix(lab: Lab) -> None:
    lab.compute(lab.cell1, "compute-1")
    bad = lab.flavor("lab-badcap", {"capabilities:hypervisor_type": "fake"})
    result = lab.run()
    assert result.status is Status.CRITICAL
    f = flavor_finding(result, bad)
    assert f.subject == f"flavor {bad} (lab-badcap)"
    assert "ComputeCapabilitiesFilter" in f.message and "capabilities:hypervisor_type=fake" in f.message
    assert f.remediation == f"openstack flavor unset --property capabilities:hypervisor_type {bad}"
    assert result.value("healthd_flavor_filters_flavor_hosts", flavor=bad) == 0


def test_unscoped_key_breaks_only_with_the_aggregate_filter(lab: Lab, aggregate_filter: str) -> None:
    lab.compute(lab.cell1, "compute-1")
    lab.compute(lab.cell2, "compute-2")
    xxx = lab.flavor("lab-xxx", {"xxx": "123", "yyy": "321"})
    assert lab.run().status is Status.OK  # nova's default filters: ignored since Newton
    result = lab.run(scheduler_files=[aggregate_filter])
    assert "Sekret" not in result.everything()  # the file's transport_url password
    f = flavor_finding(result, xxx)
    assert f.severity is Severity.CRITICAL and AIESF in f.message
    assert "openstack aggregate set --property xxx=123 AGGREGATE" in f.remediation
    assert result.value("healthd_flavor_filters_filter_enabled", filter=AIESF) == 1
    lab.aggregate("agg1", ["compute-2"], xxx="123", yyy="321")
    fixed = lab.run(scheduler_files=[aggregate_filter])
    assert fixed.status is Status.OK, fixed.findings
    assert fixed.value("healthd_flavor_filters_flavor_hosts", flavor=xxx) == 1


def test_flavor_wider_than_max_unit_private_and_disabled(lab: Lab) -> None:
    lab.compute(lab.cell1, "compute-1")
    wide = lab.flavor("lab-wide", vcpus=2000)
    private = lab.flavor("lab-priv", {"trait:HW_CPU_X86_AVX": "required"}, public=False, projects=1)
    off = lab.flavor("lab-off", {"capabilities:hypervisor_type": "fake"}, disabled=True)
    result = lab.run()
    f = flavor_finding(result, wide)
    assert f.severity is Severity.WARNING and "vcpus=2000" in f.message and "placement" in f.message
    assert result.value("healthd_flavor_filters_too_large", visibility="public") == 1
    assert flavor_finding(result, private).severity is Severity.WARNING
    assert flavor_finding(result, off).severity is Severity.INFO
    assert result.value("healthd_flavor_filters_unschedulable", visibility="private") == 1
    assert result.value("healthd_flavor_filters_unschedulable", visibility="disabled") == 1


def test_down_and_disabled_hosts_are_counted_apart(lab: Lab) -> None:
    lab.compute(lab.cell1, "compute-1")
    lab.compute(lab.cell2, "compute-2", last_seen_up=utcnow() - timedelta(minutes=10))
    lab.compute(lab.cell2, "compute-3", disabled=1, disabled_reason="maintenance")
    lab.add_trait("compute-2", "HW_CPU_X86_AVX")
    only_down = lab.flavor("avx", {"trait:HW_CPU_X86_AVX": "required"})
    result = lab.run()
    assert result.value("healthd_flavor_filters_hosts", state="down") == 1
    assert result.value("healthd_flavor_filters_hosts", state="disabled") == 1
    assert result.value("healthd_flavor_filters_hosts", state="eligible") == 1
    f = flavor_finding(result, only_down)
    assert f.severity is Severity.WARNING and "1 down" in f.message


def test_without_placement_the_checks_are_skipped_and_said(lab: Lab) -> None:
    lab.compute(lab.cell1, "compute-1")
    lab.flavor("lab-wide", vcpus=2000)
    result = lab.run(Backends(lab.config(placement=False)))
    assert result.status is Status.OK
    assert len(result.about("placement checks skipped", Severity.INFO)) == 1
    assert result.value("healthd_flavor_filters_placement_checked") == 0


def test_unreadable_cell_downgrades_and_all_unreadable_is_unknown(lab: Lab) -> None:
    lab.compute(lab.cell1, "compute-1")
    lab.compute(lab.cell2, "compute-2")
    bad = lab.flavor("lab-badcap", {"capabilities:hypervisor_type": "fake"})
    dead = {"url": NovaDB.url(lab.cell2.db, lab.user, port=free_port()), "password": lab.password,
            "connect_timeout": 2}
    result = lab.run(Backends(lab.config(cell2=dead)))
    assert result.about("could not be read", Severity.WARNING)
    assert flavor_finding(result, bad).severity is Severity.WARNING
    both = lab.run(Backends(lab.config(cell1=dead, cell2=dead)))
    assert both.status is Status.UNKNOWN


def test_nova_api_down_is_unknown(lab: Lab) -> None:
    config = BackendsConfig.model_validate({"databases": {
        "nova_api": {"url": NovaDB.url("nova_api", lab.user, port=free_port()), "password": lab.password,
                     "connect_timeout": 2}}})
    result = lab.run(Backends(config))
    assert result.status is Status.UNKNOWN
    assert "nova_api" in result.summary


def test_placement_down_is_unknown(lab: Lab) -> None:
    lab.compute(lab.cell1, "compute-1")
    config = BackendsConfig.model_validate({"databases": {
        "nova_api": {"url": NovaDB.url(lab.dep.api, lab.user), "password": lab.password},
        "placement": {"url": NovaDB.url("placement", lab.user, port=free_port()), "password": lab.password,
                      "connect_timeout": 2}}})
    result = lab.run(Backends(config))
    assert result.status is Status.UNKNOWN
    assert "placement" in result.summary


def test_missing_grant_is_unknown_with_the_reason(lab: Lab) -> None:
    lab.compute(lab.cell1, "compute-1")
    lab.novadb.exec(f"REVOKE SELECT ON `{lab.dep.api}`.`flavor_projects` FROM '{lab.user}'@'127.0.0.1'")
    result = lab.run()
    assert result.status is Status.UNKNOWN
    assert "denied" in result.summary.lower() or "access" in result.summary.lower()


def test_statement_count_does_not_grow_with_hosts_or_flavors(lab: Lab) -> None:
    def statements() -> int:
        backends = Backends(lab.config())
        lab.run(backends)
        return sum(backends.sql_statements.values())

    lab.compute(lab.cell1, "compute-1")
    lab.flavor("f0", {"xxx": "1"})
    few = statements()
    for i in range(2, 30):
        lab.compute(lab.cell1 if i % 2 else lab.cell2, f"compute-{i}")
        lab.flavor(f"f{i}", {"capabilities:hypervisor_type": "QEMU", "trait:HW_CPU_X86_AVX": "forbidden"})
    # nova_api: cell_mappings (cells), flavors, aggregates, disabled cells; 2 per cell; placement 4
    assert statements() == few == 4 + 2 * 2 + 4
