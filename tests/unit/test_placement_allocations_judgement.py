"""checks.placement_allocations' judgement on plain rows: no database.

Allocations are PLACEMENT_SQL rows (consumer, root provider), mappings nova_api's
instance_mappings joined with build_requests, and per cell the instances,
migrations and compute nodes the probe reads.
"""

from __future__ import annotations

from typing import Any

from checks.placement_allocations import (
    Allocation,
    AllocationView,
    CellData,
    Instance,
    InstanceMapping,
    Migration,
    Node,
    PlacementAllocationsProbe,
    judge,
)
from healthd.model import Report, Result, Severity, Status
from healthd.openstack.cells import CELL0_UUID, Cell

CELL0 = Cell(CELL0_UUID, "cell0")
CELL1 = Cell("c1c1c1c1-0000-4000-8000-000000000001", "cell1")
CELL2 = Cell("c2c2c2c2-0000-4000-8000-000000000002", "cell2")
RP1 = "11111111-0000-4000-8000-000000000001"
RP2 = "22222222-0000-4000-8000-000000000002"
NODES = [Node(RP1, "compute-1", "compute-1"), Node(RP2, "compute-2", "compute-2")]
I1 = "aaaaaaaa-0000-4000-8000-000000000001"
M1 = "bbbbbbbb-0000-4000-8000-000000000001"
X = "eeeeeeee-0000-4000-8000-000000000001"


def alloc(consumer: str, rp: str = RP1, age_s: float = 3600.0) -> Allocation:
    return Allocation(consumer, rp, "compute-1" if rp == RP1 else "compute-2",
                      "DISK_GB=1,MEMORY_MB=64,VCPU=1", age_s)


def judged(allocs: list[Allocation], mappings: list[InstanceMapping] | None = None,
           cell1: CellData | None = None, cell2: CellData | None = None,
           unreadable: dict[str, str] | None = None, **settings: Any) -> Result:
    data = {CELL0.uuid: CellData(), CELL1.uuid: cell1 or CellData(nodes=NODES[:1]),
            CELL2.uuid: cell2 or CellData(nodes=NODES[1:])}
    for uuid in unreadable or {}:
        data.pop(uuid)
    view = AllocationView([CELL0, CELL1, CELL2], allocs, mappings or [], data, unreadable or {})
    report = Report(PlacementAllocationsProbe.name, PlacementAllocationsProbe.metrics)
    judge(view, PlacementAllocationsProbe.Settings(**settings), report)
    return report.result(0, 0)


def value(result: Result, name: str, **labels: str) -> float | None:
    found = [s.value for s in result.samples if s.name == name and dict(s.labels) == labels]
    assert len(found) <= 1
    return found[0] if found else None


def live(uuid: str = I1, host: str = "compute-1", **kw: Any) -> Instance:
    return Instance(uuid, host, host, **kw)


def orphans(result: Result, kind: str) -> float | None:
    return value(result, "healthd_placement_allocations_orphans", kind=kind)


def test_instance_on_its_host_is_ok() -> None:
    result = judged([alloc(I1)], [InstanceMapping(I1, CELL1.uuid)],
                    CellData([live()], [], NODES[:1]))
    assert result.status is Status.OK and result.findings == ()
    assert value(result, "healthd_placement_allocations_consumers") == 1
    assert all(orphans(result, k) == 0 for k in ("no_mapping", "deleted", "wrong_host"))
    assert value(result, "healthd_placement_allocations_cell_up", cell="cell1") == 1


def test_unknown_consumer_is_the_seed_message() -> None:
    result = judged([alloc(X)])
    assert result.status is Status.WARNING
    [finding] = result.findings
    assert finding.severity is Severity.WARNING
    assert finding.subject == f"consumer {X} on compute-1"
    assert "no_mapping" in finding.message and "not found in the database" in finding.message
    assert f"openstack resource provider allocation delete {X}" in finding.remediation
    assert f"nova-manage placement audit --resource_provider {RP1} --delete" in finding.remediation
    assert orphans(result, "no_mapping") == 1
    assert value(result, "healthd_placement_allocations_orphan", consumer=X, provider=RP1,
                        kind="no_mapping") == 1


def test_young_unknown_consumer_is_in_flight() -> None:
    result = judged([alloc(X, age_s=30)], grace_seconds=600)
    assert result.status is Status.OK and result.findings == ()
    assert value(result, "healthd_placement_allocations_in_flight", kind="young") == 1


def test_build_request_is_building_even_when_old() -> None:
    result = judged([alloc(I1, age_s=7200)], [InstanceMapping(I1, None, building=True)])
    assert result.status is Status.OK
    assert value(result, "healthd_placement_allocations_in_flight", kind="building") == 1


def test_mapping_without_cell_or_build_request_is_stray() -> None:
    result = judged([alloc(I1)], [InstanceMapping(I1, None)])
    assert orphans(result, "no_cell") == 1


def test_deleted_instance_after_grace_is_stray_before_is_in_flight() -> None:
    mapping = [InstanceMapping(I1, CELL1.uuid, queued_for_delete=True)]
    old = judged([alloc(I1)], mapping,
                 CellData([live(deleted=True, deleted_s=7200.0)], [], NODES[:1]))
    assert orphans(old, "deleted") == 1 and "deleted 2.0 h ago" in old.findings[0].message
    fresh = judged([alloc(I1)], mapping, CellData([live(deleted=True, deleted_s=20.0)], [], NODES[:1]))
    assert fresh.status is Status.OK
    assert value(fresh, "healthd_placement_allocations_in_flight", kind="recently_deleted") == 1


def test_instance_not_in_the_cell_its_mapping_names() -> None:
    result = judged([alloc(I1)], [InstanceMapping(I1, CELL2.uuid)], CellData([live()], [], NODES[:1]))
    assert orphans(result, "not_in_cell") == 1
    assert "names cell cell2 but the instance is in cell cell1" in result.findings[0].message
    archived = judged([alloc(I1)], [InstanceMapping(I1, CELL1.uuid)])
    assert orphans(archived, "not_in_cell") == 1


def test_allocation_on_another_host_without_migration_is_stray() -> None:
    result = judged([alloc(I1, RP1), alloc(I1, RP2)], [InstanceMapping(I1, CELL1.uuid)],
                    CellData([live(host="compute-2")], [], NODES[:1]))
    assert orphans(result, "wrong_host") == 1
    [finding] = result.findings
    assert finding.subject == f"consumer {I1} on compute-1"
    assert "runs on compute-2" in finding.message
    assert f"--resource_provider {RP1} --delete" in finding.remediation


def test_resize_in_progress_is_migrating_on_both_hosts() -> None:
    mig = Migration(M1, I1, "finished", "resize", "compute-1", "compute-1", "compute-2", "compute-2")
    # source share under the migration uuid, destination share under the instance uuid
    result = judged([alloc(M1, RP1), alloc(I1, RP2)], [InstanceMapping(I1, CELL1.uuid)],
                    CellData([live(host="compute-1")], [mig], NODES))
    assert result.status is Status.OK and result.findings == ()
    assert value(result, "healthd_placement_allocations_in_flight", kind="migrating") == 2


def test_confirmed_migration_still_holding_is_stray() -> None:
    mig = Migration(M1, I1, "confirmed", "resize", "compute-1", "compute-1", "compute-2", "compute-2")
    result = judged([alloc(M1, RP1)], [InstanceMapping(I1, CELL1.uuid)],
                    CellData([live(host="compute-2")], [mig], NODES))
    assert orphans(result, "finished_migration") == 1
    assert "status confirmed" in result.findings[0].message


def test_evacuation_source_is_named() -> None:
    mig = Migration(M1, I1, "done", "evacuation", "compute-1", "compute-1", "compute-2", "compute-2")
    result = judged([alloc(I1, RP1), alloc(I1, RP2)], [InstanceMapping(I1, CELL1.uuid)],
                    CellData([live(host="compute-2")], [mig], NODES))
    assert orphans(result, "evacuated_source") == 1
    assert "start nova-compute on compute-1" in result.findings[0].remediation


def test_building_instance_without_host_is_in_flight() -> None:
    inst = Instance(I1, None, None, vm_state="building", task_state="spawning")
    result = judged([alloc(I1)], [InstanceMapping(I1, CELL1.uuid)], CellData([inst], [], NODES[:1]))
    assert result.status is Status.OK
    assert value(result, "healthd_placement_allocations_in_flight", kind="building") == 1


def test_sharing_provider_of_live_instance_is_ok() -> None:
    shared = Allocation(I1, "5a5a5a5a-0000-4000-8000-000000000001", "nfs-pool", "DISK_GB=10", 3600.0)
    result = judged([alloc(I1), shared], [InstanceMapping(I1, CELL1.uuid)],
                    CellData([live()], [], NODES[:1]))
    assert result.status is Status.OK and result.findings == ()


def test_unreadable_cell_leaves_its_consumers_unjudged() -> None:
    result = judged([alloc(I1, RP2), alloc(X)], [InstanceMapping(I1, CELL2.uuid)],
                    unreadable={CELL2.uuid: "cell cell2: connection refused"})
    assert value(result, "healthd_placement_allocations_unjudged") == 2
    assert value(result, "healthd_placement_allocations_cell_up", cell="cell2") == 0
    assert orphans(result, "no_mapping") == 0
    [finding] = result.findings
    assert finding.subject == "cell cell2" and "connection refused" in finding.message


def test_series_and_findings_are_bounded() -> None:
    consumers = [f"eeeeeeee-0000-4000-8000-{i:012d}" for i in range(30)]
    result = judged([alloc(c) for c in consumers], max_consumer_series=5, max_findings=10)
    assert orphans(result, "no_mapping") == 30
    assert len([s for s in result.samples if s.name == "healthd_placement_allocations_orphan"]) == 5
    assert len(result.findings) == 11
    assert "20 more stray allocation(s)" in result.findings[-1].message
    assert "30 stray allocation(s)" in result.summary


def test_host_names_compare_case_insensitively_as_mysql_does() -> None:
    result = judged([alloc(I1)], [InstanceMapping(I1, CELL1.uuid)],
                    CellData([Instance(I1, "Compute-1", "COMPUTE-1")], [], NODES[:1]))
    assert result.status is Status.OK and result.findings == ()


def test_fold_allocations_by_root_provider_keeps_only_nova_classes() -> None:
    from checks.placement_allocations import fold_allocations

    providers = [{"id": 1, "uuid": RP1, "name": "compute-1", "root_id": 1},
                 {"id": 2, "uuid": "child", "name": "compute-1:bw", "root_id": 1},
                 {"id": 3, "uuid": "ironic-node", "name": "node-3", "root_id": 3}]
    classes = [{"id": 0, "name": "VCPU"}, {"id": 1, "name": "MEMORY_MB"},
               {"id": 9, "name": "NET_BW_EGR_KILOBIT_PER_SEC"}, {"id": 1000, "name": "CUSTOM_BAREMETAL"}]
    rows = [{"consumer_id": I1, "rp_id": 1, "resources": b"0=1,1=64", "age_s": 100},
            {"consumer_id": I1, "rp_id": 2, "resources": "9=1000", "age_s": 50},
            {"consumer_id": X, "rp_id": 3, "resources": "1000=1", "age_s": 100}]  # ironic: not nova's
    [folded] = fold_allocations(rows, providers, classes)
    assert folded == Allocation(I1, RP1, "compute-1", "MEMORY_MB=64,NET_BW_EGR_KILOBIT_PER_SEC=1000,VCPU=1",
                                50.0)
