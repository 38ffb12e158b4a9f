"""checks.cell_mapping's judgement on plain cells, host mappings and cell rows: no database.

Hosts are what CELL_HOSTS_SQL folds each cell database into, one HostInCell per
host; mappings are nova_api.host_mappings rows.
"""

from __future__ import annotations

from typing import Any

from checks.cell_mapping import CellMappingProbe, CellView, HostInCell, Mapping, judge
from healthd.model import Report, Result, Severity, Status
from healthd.openstack.cells import CELL0_UUID, Cell

CELL0 = Cell(CELL0_UUID, "cell0")
CELL1 = Cell("c1c1c1c1-0000-4000-8000-000000000001", "cell1")
CELL2 = Cell("c2c2c2c2-0000-4000-8000-000000000002", "cell2")
DISCOVER1 = f"nova-manage cell_v2 discover_hosts --cell_uuid {CELL1.uuid} --verbose"
BY_SERVICE1 = f"nova-manage cell_v2 discover_hosts --cell_uuid {CELL1.uuid} --by-service --verbose"


def compute(host: str, **row: Any) -> HostInCell:
    """A nova-compute an hour old, up, enabled, with its compute node (what add_compute makes)."""
    fields: dict[str, Any] = {"services": 1, "nodes": 1, "age_s": 3600.0, "silent_s": 5.0,
                              "service_uuid": f"svc-{host}"}
    return HostInCell(host, **{**fields, **row})


def mapped(cell: Cell, *hosts: str) -> list[Mapping]:
    return [Mapping(h, cell.uuid, cell.name) for h in hosts]


def judged(hosts: dict[Cell, list[HostInCell]], mappings: list[Mapping],
           cells: tuple[Cell, ...] = (CELL0, CELL1, CELL2), unreadable: dict[Cell, str] | None = None,
           **settings: Any) -> Result:
    view = CellView(list(cells), mappings, {c.uuid: list(h) for c, h in hosts.items()},
                    {c.uuid: why for c, why in (unreadable or {}).items()})
    report = Report(CellMappingProbe.name, CellMappingProbe.metrics)
    judge(view, CellMappingProbe.Settings(**settings), report)
    return report.result(0, 0)


def value(result: Result, name: str, **labels: str) -> float | None:
    want = sorted(labels.items())
    found = [s.value for s in result.samples if s.name == name and sorted(s.labels) == want]
    assert len(found) <= 1
    return found[0] if found else None


def one(result: Result, status: Status) -> Any:
    assert result.status is status, result.findings
    [finding] = result.findings
    return finding


def test_healthy_deployment_is_ok() -> None:
    result = judged({CELL1: [compute("compute-1"), compute("compute-2")], CELL2: [compute("compute-3")]},
                    mapped(CELL1, "compute-1", "compute-2") + mapped(CELL2, "compute-3"))
    assert result.status is Status.OK and result.findings == ()
    assert value(result, "healthd_cell_mapping_cells") == 2
    assert value(result, "healthd_cell_mapping_mapped_hosts", cell="cell1") == 2
    assert value(result, "healthd_cell_mapping_mapped_hosts", cell="cell2") == 1
    for kind in ("unmapped_hosts", "misplaced_hosts", "stale_mappings"):
        assert value(result, f"healthd_cell_mapping_{kind}", cell="cell1") == 0
        assert value(result, f"healthd_cell_mapping_{kind}", cell="cell2") == 0
    assert [s for s in result.samples if s.name == "healthd_cell_mapping_host_unmapped"] == []
    assert result.summary == "3 compute hosts in 2 cells: 0 unmapped, 0 misplaced, 0 stale mappings"


def test_unmapped_usable_host_is_critical_with_discover_hosts() -> None:
    result = judged({CELL1: [compute("compute-1"), compute("compute-new")]}, mapped(CELL1, "compute-1"))
    finding = one(result, Status.CRITICAL)
    assert finding.subject == "host compute-new (cell cell1)"
    assert "its nova-compute is up and reporting" in finding.message
    # What nova 34 really does (not "the scheduler can never place instances on it"):
    assert "so the scheduler may pick it (placement offers its resources" in finding.message
    assert ("A build sent to it then fails in nova-conductor (\"No host-to-cell mapping found for selected "
            "host compute-new. Setup is incomplete.\") and the server goes to ERROR in cell0 with \"Host "
            "'compute-new' is not mapped to any cell\"") in finding.message
    assert "`openstack server create --host compute-new` is refused" in finding.message
    assert "can never" not in finding.message
    assert finding.remediation.startswith(f"on a controller: {DISCOVER1} (or set [scheduler] ")
    assert value(result, "healthd_cell_mapping_unmapped_hosts", cell="cell1") == 1
    assert value(result, "healthd_cell_mapping_mapped_hosts", cell="cell1") == 1
    assert value(result, "healthd_cell_mapping_host_unmapped", cell="cell1", host="compute-new") == 1
    assert result.summary == "2 compute hosts in 2 cells: 1 unmapped, 0 misplaced, 0 stale mappings"


def test_new_host_within_grace_is_only_info() -> None:
    result = judged({CELL1: [compute("compute-fresh", age_s=20.7)]}, [], grace_seconds=300)
    finding = one(result, Status.OK)
    assert finding.severity is Severity.INFO
    assert "new compute host (20 s old)" in finding.message
    assert finding.remediation == f"on a controller: {DISCOVER1}"
    assert value(result, "healthd_cell_mapping_unmapped_hosts", cell="cell1") == 1
    # past the grace period it is CRITICAL; grace 0 means never INFO
    for age, grace in ((300, 300), (0, 0)):
        late = judged({CELL1: [compute("compute-fresh", age_s=age)]}, [], grace_seconds=grace)
        assert late.status is Status.CRITICAL, (age, grace)


def test_unknown_age_counts_as_old() -> None:
    finding = one(judged({CELL1: [compute("compute-x", age_s=None)]}, []), Status.CRITICAL)
    assert finding.subject == "host compute-x (cell cell1)"


def test_down_disabled_forced_down_or_serviceless_unmapped_host_is_warning() -> None:
    cases = {
        "silent": compute("h", silent_s=61.0),
        "disabled": compute("h", disabled=True),
        "forced_down": compute("h", forced_down=True),
        "node only": compute("h", services=0, silent_s=None, service_uuid=None),
    }
    for why, host in cases.items():
        finding = one(judged({CELL1: [host]}, []), Status.WARNING)
        assert "its nova-compute is down, disabled or missing; once it is up and enabled the scheduler may "\
               "pick it" in finding.message, why
        assert DISCOVER1 in finding.remediation, why


def test_service_down_threshold_is_inclusive_and_configurable() -> None:
    assert judged({CELL1: [compute("h", silent_s=60.0)]}, []).status is Status.CRITICAL
    stricter = judged({CELL1: [compute("h", silent_s=60.0)]}, [], service_down_seconds=30)
    assert stricter.status is Status.WARNING
    # a service that never reported a time (all NULL) is taken as just seen
    assert judged({CELL1: [compute("h", silent_s=None)]}, []).status is Status.CRITICAL


def test_service_without_compute_node_is_warning_mapped_by_service() -> None:
    finding = one(judged({CELL1: [compute("ironic-1", nodes=0)]}, []), Status.WARNING)
    assert "registered but has no compute node" in finding.message
    assert finding.remediation == (f"check the nova-compute log on ironic-1; for ironic, on a controller: "
                                   f"{BY_SERVICE1}")


def test_mapping_removed_after_discovery_needs_by_service() -> None:
    finding = one(judged({CELL1: [compute("compute-1", mapped=True)]}, []), Status.CRITICAL)
    assert "flagged mapped=1" in finding.message
    assert finding.remediation.startswith(f"on a controller: {BY_SERVICE1} ")
    # also when it is down: WARNING, still --by-service
    down = one(judged({CELL1: [compute("compute-1", mapped=True, disabled=True)]}, []), Status.WARNING)
    assert BY_SERVICE1 in down.remediation and "mapped=1" in down.message


def test_host_mapped_to_the_wrong_cell_is_critical() -> None:
    result = judged({CELL2: [compute("compute-moved")]}, mapped(CELL1, "compute-moved"))
    finding = one(result, Status.CRITICAL)
    assert finding.subject == "host compute-moved (cell cell2)"
    assert "host reports in cell cell2 but nova_api.host_mappings maps it to cell cell1" in finding.message
    assert finding.remediation == (
        f"on a controller: nova-manage cell_v2 delete_host --cell_uuid {CELL1.uuid} --host compute-moved, "
        f"then nova-manage cell_v2 discover_hosts --cell_uuid {CELL2.uuid} --by-service --verbose")
    assert value(result, "healthd_cell_mapping_misplaced_hosts", cell="cell2") == 1
    assert value(result, "healthd_cell_mapping_stale_mappings", cell="cell1") == 0
    assert result.summary == "1 compute hosts in 2 cells: 0 unmapped, 1 misplaced, 0 stale mappings"


def test_leftover_rows_in_another_cell_are_warning() -> None:
    result = judged({CELL1: [compute("compute-1")], CELL2: [compute("compute-1", service_uuid="old-svc")]},
                    mapped(CELL1, "compute-1"))
    finding = one(result, Status.WARNING)
    assert finding.subject == "host compute-1 (cell cell2)"
    assert "also has rows in cell cell1, where it is mapped" in finding.message
    assert finding.remediation.startswith("openstack compute service delete old-svc (service in cell cell2)")
    # nova's service delete also destroys the host's (good) mapping: the fix must map it again
    assert f"discover_hosts --cell_uuid {CELL1.uuid} --by-service" in finding.remediation
    assert value(result, "healthd_cell_mapping_mapped_hosts", cell="cell1") == 1
    assert value(result, "healthd_cell_mapping_misplaced_hosts", cell="cell2") == 1
    # only a compute node left behind: no service to delete
    nodes_only = judged({CELL1: [compute("compute-1")], CELL2: [compute("compute-1", service_uuid=None)]},
                        mapped(CELL1, "compute-1"))
    assert one(nodes_only, Status.WARNING).remediation == (
        "remove the leftover compute node rows of compute-1 in cell cell2")


def test_stale_mapping_is_warning_with_delete_host() -> None:
    result = judged({CELL1: [compute("compute-1")]},
                    mapped(CELL1, "compute-1") + mapped(CELL2, "compute-gone"))
    finding = one(result, Status.WARNING)
    assert finding.subject == "host mapping compute-gone (cell cell2)"
    assert finding.remediation.startswith(
        f"on a controller: nova-manage cell_v2 delete_host --cell_uuid {CELL2.uuid} --host compute-gone ")
    assert value(result, "healthd_cell_mapping_stale_mappings", cell="cell2") == 1
    assert value(result, "healthd_cell_mapping_stale_mappings", cell="cell1") == 0
    assert result.summary == "1 compute hosts in 2 cells: 0 unmapped, 0 misplaced, 1 stale mappings"


def test_stale_mapping_to_a_cell_that_is_gone_is_labelled_by_its_uuid() -> None:
    result = judged({CELL1: []}, [Mapping("compute-9", "dead-cell-uuid", None)], cells=(CELL0, CELL1))
    finding = one(result, Status.WARNING)
    assert finding.subject == "host mapping compute-9 (cell dead-cell-uuid)"
    assert value(result, "healthd_cell_mapping_stale_mappings", cell="dead-cell-uuid") == 1


def test_host_names_compare_case_insensitively() -> None:
    result = judged({CELL1: [compute("Compute-1")]}, mapped(CELL1, "COMPUTE-1"))
    assert result.status is Status.OK and result.findings == ()
    assert value(result, "healthd_cell_mapping_mapped_hosts", cell="cell1") == 1
    # and a misplaced host is found whatever the case of its mapping
    moved = judged({CELL2: [compute("compute-2")]}, mapped(CELL1, "Compute-2"))
    assert one(moved, Status.CRITICAL).subject == "host compute-2 (cell cell2)"


def test_rows_without_a_host_name_are_ignored() -> None:
    result = judged({CELL1: [compute("")]}, [])
    assert result.status is Status.OK and result.findings == ()
    assert value(result, "healthd_cell_mapping_unmapped_hosts", cell="cell1") == 0


def test_missing_cell0_is_critical() -> None:
    result = judged({CELL1: [compute("compute-1")]}, mapped(CELL1, "compute-1"), cells=(CELL1,))
    finding = one(result, Status.CRITICAL)
    assert finding.subject == "cell0"
    assert finding.remediation == "nova-manage cell_v2 map_cell0 --database_connection <cell0 DB URL>"
    assert value(result, "healthd_cell_mapping_cells") == 1


def test_no_cell_besides_cell0_is_critical() -> None:
    result = judged({}, [], cells=(CELL0,))
    finding = one(result, Status.CRITICAL)
    assert finding.subject == "cell_mappings"
    assert finding.remediation.startswith("nova-manage cell_v2 create_cell --name cell1 --verbose")
    assert value(result, "healthd_cell_mapping_cells") == 0
    assert result.summary == "0 compute hosts in 0 cells: 0 unmapped, 0 misplaced, 0 stale mappings"


def test_no_cells_at_all_is_two_criticals() -> None:
    result = judged({}, mapped(CELL1, "compute-1"), cells=())
    assert [(f.subject, f.severity) for f in result.findings] == [
        ("cell0", Severity.CRITICAL), ("cell_mappings", Severity.CRITICAL),
        ("host mapping compute-1 (cell cell1)", Severity.WARNING)]


def test_unmapped_host_series_are_capped() -> None:
    hosts = [compute(f"compute-{i}") for i in range(5)]
    result = judged({CELL1: hosts[:3], CELL2: hosts[3:]}, [], max_host_series=2)
    assert result.status is Status.CRITICAL and len(result.findings) == 5  # every host still has a finding
    series = [dict(s.labels) for s in result.samples if s.name == "healthd_cell_mapping_host_unmapped"]
    assert series == [{"cell": "cell1", "host": "compute-0"}, {"cell": "cell1", "host": "compute-1"}]
    assert value(result, "healthd_cell_mapping_unmapped_hosts", cell="cell1") == 3
    assert value(result, "healthd_cell_mapping_unmapped_hosts", cell="cell2") == 2
    assert result.summary == ("5 compute hosts in 2 cells: 5 unmapped, 0 misplaced, 0 stale mappings "
                              "(only 2 unmapped hosts exported as series)")
    none = judged({CELL1: hosts}, [], max_host_series=0)
    assert [s for s in none.samples if s.name == "healthd_cell_mapping_host_unmapped"] == []
    assert none.summary.endswith("(only 0 unmapped hosts exported as series)")


def test_cell_without_a_name_is_labelled_by_its_uuid() -> None:
    nameless = Cell("c3c3c3c3-0000-4000-8000-000000000003", "")
    result = judged({nameless: [compute("compute-1")]}, [], cells=(CELL0, nameless))
    assert one(result, Status.CRITICAL).subject == f"host compute-1 (cell {nameless.uuid})"
    assert value(result, "healthd_cell_mapping_unmapped_hosts", cell=nameless.uuid) == 1


# -- a cell whose database cannot be read -------------------------------------------------

WHY = "database cell cell2 at nova@db2:3306/nova_cell2: cannot connect"


def test_an_unreadable_cell_is_unknown_alone_and_the_others_are_judged() -> None:
    result = judged({CELL1: [compute("compute-1"), compute("compute-new")]},
                    mapped(CELL1, "compute-1") + mapped(CELL2, "compute-3", "compute-4"),
                    unreadable={CELL2: WHY})
    assert result.status is Status.CRITICAL  # compute-new in cell1 is still found
    [cell] = [f for f in result.findings if f.subject == "cell cell2"]
    assert cell.severity is Severity.WARNING
    assert cell.message == ("the database of cell cell2 could not be read, so its compute hosts and the 2 "
                            f"host mapping(s) that name it are not judged (the other cells are): {WHY}")
    assert "backends.databases.cells.cell2" in cell.remediation
    assert value(result, "healthd_cell_mapping_cell_up", cell="cell2") == 0
    assert value(result, "healthd_cell_mapping_cell_up", cell="cell1") == 1
    # nothing said (or counted) about cell2's hosts: the mappings to it are not stale
    assert value(result, "healthd_cell_mapping_mapped_hosts", cell="cell2") is None
    assert value(result, "healthd_cell_mapping_stale_mappings", cell="cell2") is None
    assert not [f for f in result.findings if "compute-3" in f.subject + f.message]
    assert value(result, "healthd_cell_mapping_unmapped_hosts", cell="cell1") == 1
    assert result.summary.endswith("; cell(s) not read: cell2")


def test_a_host_mapped_to_an_unreadable_cell_is_a_warning_that_says_so() -> None:
    result = judged({CELL1: [compute("compute-3")]}, mapped(CELL2, "compute-3"), unreadable={CELL2: WHY})
    [finding] = [f for f in result.findings if f.subject == "host compute-3 (cell cell1)"]
    assert finding.severity is Severity.WARNING
    assert "maps it to cell cell2, whose database could not be read" in finding.message
    assert value(result, "healthd_cell_mapping_misplaced_hosts", cell="cell1") == 1


def test_a_stale_looking_mapping_says_an_unreadable_cell_may_hold_the_host() -> None:
    result = judged({CELL1: []}, mapped(CELL1, "gone-1"), unreadable={CELL2: WHY})
    [finding] = [f for f in result.findings if f.subject.startswith("host mapping")]
    assert "cell(s) cell2 could not be read" in finding.message
    assert value(result, "healthd_cell_mapping_stale_mappings", cell="cell1") == 1


def test_all_cells_readable_export_cell_up() -> None:
    result = judged({CELL1: [compute("compute-1")], CELL2: []}, mapped(CELL1, "compute-1"))
    assert value(result, "healthd_cell_mapping_cell_up", cell="cell1") == 1
    assert value(result, "healthd_cell_mapping_cell_up", cell="cell2") == 1
    assert value(result, "healthd_cell_mapping_cell_up", cell="cell0") is None
