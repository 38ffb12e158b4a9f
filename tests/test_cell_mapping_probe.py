"""cell_mapping on real MariaDB with nova 34's own schemas (tests/schemas).

Each test builds a fresh deployment (nova_api, cell0, cells) under a unique
prefix and drops it afterwards. The probe connects as a MariaDB user that has
exactly the grants docs/probes/cell_mapping.md lists, and whose password is a
canary that must never appear in the result.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from checks.cell_mapping import CellMappingProbe
from healthd.config import BackendsConfig
from healthd.connections import Backends
from healthd.model import Severity, Status
from tests.helpers.novadb import Deployment, NovaDB
from tests.helpers.probes import ProbeRun, run_probe
from tests.helpers.servers import free_port


class Lab:
    """A deployment plus the least-privilege healthd user and a way to run the probe."""

    def __init__(self, novadb: NovaDB) -> None:
        self.novadb = novadb
        self.dep = Deployment(novadb, with_placement=False)
        self.password = f"Canary-{uuid.uuid4().hex[:12]}"
        self.dep.add_cell0()
        self.cell1 = self.dep.add_cell("cell1")
        self.cell2 = self.dep.add_cell("cell2")
        grants = [f"SELECT ON `{self.dep.api}`.`{t}`" for t in ("cell_mappings", "host_mappings")]
        for cell in (self.cell1, self.cell2):
            grants += [f"SELECT ON `{cell.db}`.`{t}`" for t in ("services", "compute_nodes")]
        self.user = novadb.create_user("probe", self.password, grants)
        # cell_mappings.database_connection carries the password, as in real deployments.
        for cell in (self.cell1, self.cell2):
            novadb.exec(f"UPDATE `{self.dep.api}`.cell_mappings SET database_connection = %s WHERE id = %s",
                        (NovaDB.url(cell.db, self.user, self.password), cell.id))

    def config(self, **cells: Any) -> BackendsConfig:
        dbs: dict[str, Any] = {"nova_api": {"url": NovaDB.url(self.dep.api, self.user),
                                            "password": self.password}}
        if cells:
            dbs["cells"] = cells
        return BackendsConfig.model_validate({"databases": dbs})

    def run(self, backends: Backends | None = None, **settings: Any) -> ProbeRun:
        probe = CellMappingProbe(CellMappingProbe.Settings(**settings))
        result = run_probe(probe, backends or Backends(self.config()))
        assert self.password not in result.everything()  # the canary
        return result


@pytest.fixture
def lab(novadb: NovaDB) -> Lab:
    return Lab(novadb)


def test_healthy_deployment_is_ok(lab: Lab) -> None:
    for cell, host in ((lab.cell1, "compute-1"), (lab.cell1, "compute-2"), (lab.cell2, "compute-3")):
        lab.dep.add_compute(cell, host)
        lab.dep.map_host(cell, host)
    result = lab.run()
    assert result.status is Status.OK, result.findings
    assert result.findings == []
    assert result.value("healthd_cell_mapping_cells") == 2
    assert result.value("healthd_cell_mapping_mapped_hosts", cell="cell1") == 2
    assert result.value("healthd_cell_mapping_mapped_hosts", cell="cell2") == 1
    assert result.value("healthd_cell_mapping_unmapped_hosts", cell="cell1") == 0
    assert result.value("healthd_cell_mapping_stale_mappings", cell="cell2") == 0
    assert "3 compute hosts in 2 cells: 0 unmapped" in result.summary


def test_unmapped_host_is_critical_and_clears_after_discover_hosts(lab: Lab) -> None:
    lab.dep.add_compute(lab.cell1, "compute-1")
    lab.dep.map_host(lab.cell1, "compute-1")
    lab.dep.add_compute(lab.cell1, "compute-new")  # started an hour ago, never discovered

    result = lab.run()
    assert result.status is Status.CRITICAL
    [finding] = result.findings
    assert finding.severity is Severity.CRITICAL
    assert finding.subject == "host compute-new (cell cell1)"
    assert "not mapped to any cell" in finding.message
    assert f"nova-manage cell_v2 discover_hosts --cell_uuid {lab.cell1.uuid} --verbose" in finding.remediation
    assert result.value("healthd_cell_mapping_unmapped_hosts", cell="cell1") == 1
    assert result.value("healthd_cell_mapping_host_unmapped", cell="cell1", host="compute-new") == 1

    lab.dep.map_host(lab.cell1, "compute-new")  # what discover_hosts writes
    result = lab.run()
    assert result.status is Status.OK and result.findings == []
    assert result.value("healthd_cell_mapping_unmapped_hosts", cell="cell1") == 0
    assert result.value("healthd_cell_mapping_host_unmapped", cell="cell1", host="compute-new") is None


def test_new_host_within_grace_is_only_info(lab: Lab) -> None:
    lab.dep.add_compute(lab.cell2, "compute-fresh", age=timedelta(seconds=20))
    result = lab.run(grace_seconds=300)
    assert result.status is Status.OK
    [finding] = result.findings
    assert finding.severity is Severity.INFO and "compute-fresh" in finding.subject
    assert result.value("healthd_cell_mapping_unmapped_hosts", cell="cell2") == 1


def test_down_unmapped_host_is_warning(lab: Lab) -> None:
    lab.dep.add_compute(lab.cell1, "compute-old")
    lab.novadb.exec(f"UPDATE `{lab.cell1.db}`.services SET updated_at = updated_at - INTERVAL 1 DAY, "
                    "last_seen_up = last_seen_up - INTERVAL 1 DAY WHERE host = 'compute-old'")
    result = lab.run()
    assert result.status is Status.WARNING
    assert "down, disabled or missing" in result.findings[0].message


def test_mapping_removed_after_discovery_needs_by_service(lab: Lab) -> None:
    lab.dep.add_compute(lab.cell1, "compute-1")
    lab.dep.map_host(lab.cell1, "compute-1")  # compute_nodes.mapped = 1 from now on
    lab.dep.unmap_host("compute-1")  # e.g. the API DB was restored from an old backup
    result = lab.run()
    [finding] = result.findings
    assert finding.severity is Severity.CRITICAL
    assert "--by-service" in finding.remediation and "mapped=1" in finding.message


def test_stale_mapping_is_warning_with_delete_host(lab: Lab) -> None:
    lab.dep.add_compute(lab.cell1, "compute-1")
    lab.dep.map_host(lab.cell1, "compute-1")
    lab.dep.map_host(lab.cell2, "compute-gone")  # host decommissioned, mapping left behind
    result = lab.run()
    assert result.status is Status.WARNING
    [finding] = result.findings
    assert finding.subject == "host mapping compute-gone (cell cell2)"
    assert (f"nova-manage cell_v2 delete_host --cell_uuid {lab.cell2.uuid} --host compute-gone"
            in finding.remediation)
    assert result.value("healthd_cell_mapping_stale_mappings", cell="cell2") == 1


def test_host_mapped_to_the_wrong_cell_is_critical(lab: Lab) -> None:
    lab.dep.add_compute(lab.cell2, "compute-moved")
    lab.dep.map_host(lab.cell1, "compute-moved")
    result = lab.run()
    assert result.status is Status.CRITICAL
    [finding] = result.findings
    assert finding.subject == "host compute-moved (cell cell2)"
    assert "maps it to cell cell1" in finding.message
    assert f"delete_host --cell_uuid {lab.cell1.uuid} --host compute-moved" in finding.remediation
    assert result.value("healthd_cell_mapping_misplaced_hosts", cell="cell2") == 1
    assert result.value("healthd_cell_mapping_stale_mappings", cell="cell1") == 0


def test_no_cells_besides_cell0_is_critical(novadb: NovaDB) -> None:
    dep = Deployment(novadb, with_placement=False)
    dep.add_cell0()
    config = BackendsConfig.model_validate(dep.backends_config())
    result = run_probe(CellMappingProbe(), Backends(config))
    assert result.status is Status.CRITICAL
    assert any("create_cell" in f.remediation for f in result.findings)


def test_one_unreachable_cell_is_unknown_alone_the_others_are_judged(lab: Lab) -> None:
    lab.dep.add_compute(lab.cell1, "compute-1")
    lab.dep.map_host(lab.cell1, "compute-1")
    lab.dep.add_compute(lab.cell1, "compute-new")  # unmapped: still found while cell2 is down
    lab.dep.add_compute(lab.cell2, "compute-2")
    lab.dep.map_host(lab.cell2, "compute-2")
    dead = NovaDB.url(lab.cell2.db, lab.user, port=free_port())
    override = {"url": dead, "password": lab.password, "connect_timeout": 2}
    result = lab.run(Backends(lab.config(cell2=override)))
    assert result.status is Status.CRITICAL
    assert result.about("compute-new", Severity.CRITICAL)
    [cell] = result.about("could not be read")
    assert cell.subject == "cell cell2" and cell.severity is Severity.WARNING
    assert "database cells.cell2 at" in cell.message and "cannot connect" in cell.message
    assert "1 host mapping(s) that name it" in cell.message
    assert not result.about("host mapping compute-2")  # not called stale: its cell was not read
    assert result.value("healthd_cell_mapping_cell_up", cell="cell2") == 0
    assert result.value("healthd_cell_mapping_cell_up", cell="cell1") == 1
    assert result.value("healthd_cell_mapping_mapped_hosts", cell="cell2") is None

    both = lab.run(Backends(lab.config(cell1=override, cell2=override)))
    assert both.status is Status.UNKNOWN  # no cell could be read: nothing was judged
    assert "database cells.cell1 at" in both.summary and "cannot connect" in both.summary


def test_unreachable_api_database_is_unknown() -> None:
    url = NovaDB.url("nova_api", "nova", "Canary-api-pw", port=free_port())
    result = run_probe(CellMappingProbe(), Backends(BackendsConfig.model_validate(
        {"databases": {"nova_api": {"url": url, "connect_timeout": 2}}})))
    assert result.status is Status.UNKNOWN
    assert "nova_api" in result.summary and "Canary-api-pw" not in result.everything()


def test_missing_grant_names_the_cell_and_the_reason(lab: Lab) -> None:
    lab.novadb.exec(f"REVOKE SELECT ON `{lab.cell2.db}`.`compute_nodes` FROM '{lab.user}'@'127.0.0.1'")
    result = lab.run()
    assert result.status is Status.WARNING
    [finding] = result.findings
    assert finding.subject == "cell cell2" and "SELECT grant is missing" in finding.message
    lab.novadb.exec(f"REVOKE SELECT ON `{lab.cell1.db}`.`compute_nodes` FROM '{lab.user}'@'127.0.0.1'")
    result = lab.run()
    assert result.status is Status.UNKNOWN
    assert "SELECT grant is missing" in result.summary


def test_statement_count_does_not_grow_with_hosts(lab: Lab) -> None:
    def statements() -> int:
        backends = Backends(lab.config())
        lab.run(backends)
        return sum(backends.sql_statements.values())

    lab.dep.add_compute(lab.cell1, "compute-0")
    few = statements()
    for i in range(1, 30):
        lab.dep.add_compute(lab.cell1 if i % 2 else lab.cell2, f"compute-{i}")
    assert statements() == few == 4  # cell_mappings, host_mappings, one per cell
