"""checks.disk_overcommit's judgement on plain compute_nodes rows and placement providers: no database.

What nova and placement do, and the judgement follows: the resource tracker writes
free_disk_gb = local_gb - local_gb_used and lets it go negative "depending on policy"
(nova/compute/resource_tracker.py _update_usage); placement accepts DISK_GB allocations
up to (total - reserved) * allocation_ratio (placement/objects/allocation.py
_check_capacity_exceeded) and keeps them when the inventory shrinks
(placement/objects/resource_provider.py _update_inventory_for_provider).
"""

from __future__ import annotations

from typing import Any

import pytest

from checks.disk_overcommit import DiskOvercommitProbe, DiskView, Node, Provider, effective_ratio, judge
from healthd.model import Report, Result, Status

GIB = 2**30
FREE = "healthd_disk_overcommit_free_disk_bytes"
LEAST = "healthd_disk_overcommit_disk_available_least_bytes"
LOCAL = "healthd_disk_overcommit_local_bytes"
USED = "healthd_disk_overcommit_used_bytes"
RATIO = "healthd_disk_overcommit_allocation_ratio"
P_CAP = "healthd_disk_overcommit_placement_capacity_bytes"
P_USE = "healthd_disk_overcommit_placement_usage_bytes"
P_RATIO = "healthd_disk_overcommit_placement_allocation_ratio"


def node(host: str, cell: str = "cell1", total: int = 100, used: int = 20, least: int | None = None,
         ratio: float | None = 1.0, **fields: Any) -> Node:
    """A libvirt compute node as the resource tracker writes it (free = total - used)."""
    row: dict[str, Any] = {"hypervisor_hostname": host, "uuid": f"rp-{host}", "local_gb": total,
                           "local_gb_used": used, "free_disk_gb": total - used,
                           "disk_available_least": total - used - 10 if least is None else least,
                           "disk_allocation_ratio": ratio, "hypervisor_type": "QEMU"}
    return Node(cell, host, **{**row, **fields})


def provider(host: str, total: int = 100, used: int = 20, ratio: float = 1.0, reserved: int = 0) -> Provider:
    return Provider(f"rp-{host}", host, total, reserved, ratio, used)


def judged(nodes: list[Node], providers: list[Provider] | None = None, cells: int = 2,
           placement_error: str = "", **settings: Any) -> Result:
    report = Report(DiskOvercommitProbe.name, DiskOvercommitProbe.metrics)
    view = DiskView(cells, nodes, providers, placement_error)
    judge(view, DiskOvercommitProbe.Settings(**settings), report)
    return report.result(0, 0)


def value(result: Result, name: str, **labels: str) -> float | None:
    want = sorted(labels.items())
    found = [s.value for s in result.samples if s.name == name and sorted(s.labels) == want]
    assert len(found) <= 1
    return found[0] if found else None


def labels(host: str, cell: str = "cell1", node_name: str | None = None) -> dict[str, str]:
    return {"cell": cell, "host": host, "node": node_name or host}


def one(result: Result, status: Status) -> Any:
    assert result.status is status, result.findings
    [finding] = result.findings
    return finding


def test_healthy_nodes_are_ok_with_their_metrics() -> None:
    result = judged([node("compute-1"), node("compute-2", cell="cell2", used=50)],
                    [provider("compute-1"), provider("compute-2", used=50)])
    assert result.status is Status.OK and result.findings == ()
    n = labels("compute-1")
    assert value(result, FREE, **n) == 80 * GIB
    assert value(result, LEAST, **n) == 70 * GIB
    assert value(result, LOCAL, **n) == 100 * GIB
    assert value(result, RATIO, **n) == 1.0
    assert value(result, USED, **labels("compute-2", "cell2")) == 50 * GIB
    assert value(result, P_CAP, provider="compute-2") == 100 * GIB
    assert value(result, P_USE, provider="compute-2") == 50 * GIB
    assert value(result, P_RATIO, provider="compute-1") == 1.0
    assert result.summary == ("2 compute nodes in 2 cells: 0 committed beyond what placement allows, 0 "
                              "overcommitted by policy, 0 with negative disk_available_least, 0 highly "
                              "committed; placement: 2 DISK_GB providers, 0 over capacity")


# -- overcommit by policy: what nova computes by design ------------------------------------


def test_negative_free_disk_within_the_ratio_is_a_policy_warning() -> None:
    # disk_allocation_ratio 1.5: placement accepted 130 GiB of flavour disks on a 100 GiB disk
    result = judged([node("compute-2", cell="cell2", used=130, least=40, ratio=1.5)],
                    [provider("compute-2", used=130, ratio=1.5)])
    finding = one(result, Status.WARNING)
    assert finding.subject == "compute node compute-2 (host compute-2, cell cell2)"
    assert finding.message == (
        "free_disk_gb is -30 GiB: overcommitted by policy: instances commit 130 GiB (local_gb_used, "
        "reserved_host_disk_mb included) on 100 GiB of local disk, which placement's DISK_GB "
        "allocation_ratio 1.5 allows up to 150 GiB (placement: 130 GiB allocated of its 150 GiB DISK_GB "
        "capacity). Nova computes a negative free_disk_gb by design here; it holds while the guests' "
        "sparse disks stay smaller than the disk: watch disk_available_least (40 GiB).")
    assert finding.remediation.startswith("nothing to fix if 1.5 is the intended ratio; on compute-2: df -h")
    assert value(result, FREE, **labels("compute-2", "cell2")) == -30 * GIB
    assert value(result, RATIO, **labels("compute-2", "cell2")) == 1.5
    assert result.summary.startswith("1 compute nodes in 2 cells: 0 committed beyond what placement allows, "
                                     "1 overcommitted by policy, 0 with")


def test_policy_overcommit_without_placement_uses_the_nodes_ratio() -> None:
    finding = one(judged([node("compute-1", used=150, least=5, ratio=16.0)]), Status.WARNING)
    assert "which disk_allocation_ratio 16 allows up to 1600 GiB. Nova computes" in finding.message
    assert "placement:" not in finding.message


def test_policy_overcommit_near_its_limit_is_still_one_warning() -> None:
    result = judged([node("compute-1", used=149, least=5, ratio=1.5)], [provider("compute-1", 100, 149, 1.5)])
    assert one(result, Status.WARNING).message.startswith("free_disk_gb is -49 GiB: overcommitted by policy")
    assert "0 highly committed" in result.summary


# -- what really fails: CRITICAL ----------------------------------------------------------


def test_negative_free_disk_at_ratio_one_is_beyond_what_placement_allows() -> None:
    # forced past placement (or its allocations lost): compute counts 110, placement 100
    forced = one(judged([node("compute-1", used=110, least=5)], [provider("compute-1", used=100)]),
                 Status.CRITICAL)
    assert forced.message.startswith(
        "free_disk_gb is -10 GiB: instances commit 110 GiB (local_gb_used, reserved_host_disk_mb included) "
        "on 100 GiB of local disk, more than placement's DISK_GB allocation_ratio 1 allows (100 GiB). "
        "Placement would not have placed them: they were forced past it")
    assert "landed. Placement has 100 GiB allocated of its 100 GiB DISK_GB capacity." in forced.message
    assert "nova-manage placement audit / heal_allocations" in forced.remediation
    assert forced.remediation.startswith("on compute-1: df -h /var/lib/nova/instances")
    assert forced.remediation.endswith("forced evacuate/live-migrate)")
    result = judged([node("compute-1", used=110, least=5, ratio=None)])
    unset = one(result, Status.CRITICAL)
    assert ("more than disk_allocation_ratio NULL in compute_nodes, which nova reads as the compute's "
            "[DEFAULT] disk_allocation_ratio or initial_disk_allocation_ratio (1 by default) allows "
            "(100 GiB)") in unset.message
    assert value(result, RATIO, **labels("compute-1")) == 1.0
    assert "1 committed beyond what placement allows, 0 overcommitted by policy" in result.summary


def test_ratio_lowered_after_instances_landed_is_critical_on_the_node() -> None:
    # placed with ratio 2.0, the compute now runs with 1.0: placement keeps 150 GiB on 100
    result = judged([node("compute-1", used=150, least=10, ratio=1.0)], [provider("compute-1", used=150)])
    finding = one(result, Status.CRITICAL)
    assert finding.subject == "compute node compute-1 (host compute-1, cell cell1)"
    assert "free_disk_gb is -50 GiB" in finding.message
    assert "Placement has 150 GiB allocated of its 100 GiB DISK_GB capacity." in finding.message
    assert "or restore the DISK_GB capacity the instances were placed with" in finding.remediation
    assert result.summary.endswith("; placement: 1 DISK_GB providers, 1 over capacity")


def test_placement_over_capacity_with_a_ratio_above_one_is_critical() -> None:
    # ratio lowered from 4 to 2 with 300 GiB allocated on 100: still "above 1", but beyond policy
    result = judged([node("compute-1", used=300, least=10, ratio=2.0)],
                    [provider("compute-1", used=300, ratio=2.0)])
    finding = one(result, Status.CRITICAL)
    assert finding.message.startswith(
        "free_disk_gb is -200 GiB: instances commit 300 GiB (local_gb_used, reserved_host_disk_mb included) "
        "on 100 GiB of local disk; placement has 300 GiB DISK_GB allocated against a capacity of 200 GiB "
        "((total 100 - reserved 0) x ratio 2): placement refuses every new DISK_GB allocation here")


def test_beyond_the_ratio_without_placement_is_critical() -> None:
    result = judged([node("compute-1", used=200, least=10, ratio=1.5)])
    assert "more than disk_allocation_ratio 1.5 allows (150 GiB)" in one(result, Status.CRITICAL).message


def test_placement_over_capacity_with_free_disk_left_is_critical() -> None:
    # reserved raised to 30 GiB after 90 GiB were allocated: capacity 70
    result = judged([node("compute-1", used=90, least=5)], [provider("compute-1", used=90, reserved=30)],
                    committed_warning_ratio=1.0)
    finding = one(result, Status.CRITICAL)
    assert finding.message.startswith("placement has 90 GiB DISK_GB allocated against a capacity of 70 GiB "
                                      "((total 100 - reserved 30) x ratio 1)")


def test_provider_without_a_node_is_judged_by_placement_alone() -> None:
    shared = Provider("rp-shared", "ceph-pool", 1000, 0, 1.0, 1200)
    result = judged([node("compute-1")], [provider("compute-1"), shared])
    finding = one(result, Status.CRITICAL)
    assert finding.subject == "resource provider ceph-pool (rp-shared)"
    assert finding.remediation.startswith("openstack resource provider usage show rp-shared;")
    assert judged([], [Provider("rp-x", "x", 100, 1, 0.5, 49)]).status is Status.OK  # 49.5 capacity
    half = judged([], [Provider("rp-x", "x", 100, 1, 0.5, 50)])
    assert "capacity of 49.5 GiB" in one(half, Status.CRITICAL).message


def test_negative_disk_available_least_is_critical() -> None:
    result = judged([node("compute-1", least=-12)])
    finding = one(result, Status.CRITICAL)
    assert finding.subject == "compute node compute-1 (host compute-1, cell cell1)"
    assert finding.message.startswith("disk_available_least is -12 GiB:") and "host view" in finding.message
    assert "free_disk_gb" not in finding.message
    assert value(result, LEAST, **labels("compute-1")) == -12 * GIB
    assert "0 overcommitted by policy, 1 with negative disk_available_least" in result.summary


def test_policy_overcommit_plus_negative_least_is_one_critical_naming_both() -> None:
    result = judged([node("compute-1", used=120, least=-50, ratio=2.0)],
                    [provider("compute-1", 100, 120, 2.0)])
    finding = one(result, Status.CRITICAL)
    assert finding.message.startswith("disk_available_least is -50 GiB")
    assert "free_disk_gb is -20 GiB: overcommitted by policy" in finding.message
    assert "1 overcommitted by policy, 1 with negative disk_available_least" in result.summary


# -- capacity warnings, relative to what the ratio allows --------------------------------------


def test_highly_committed_disk_is_warning_above_the_share_the_ratio_allows() -> None:
    result = judged([node("compute-1", used=95, least=50)], committed_warning_ratio=0.9)
    finding = one(result, Status.WARNING)
    assert finding.subject == "compute node compute-1 (host compute-1, cell cell1)"
    assert finding.message == ("95 GiB committed of 100 GiB local disk (95%), above 90%: new instances with "
                               "large disks may not fit.")
    assert finding.remediation.endswith("check df -h /var/lib/nova/instances on compute-1")
    assert "1 highly committed" in result.summary
    assert judged([node("compute-1", used=95, least=50)], committed_warning_ratio=1.0).status is Status.OK
    assert judged([node("compute-1", used=90, least=50)], committed_warning_ratio=0.9).status is Status.OK
    # a full disk is no overcommitment: free_disk_gb 0 is not negative
    assert judged([node("compute-1", used=100, least=0)], committed_warning_ratio=1.0).status is Status.OK
    # with ratio 4, 95 GiB of 100 is a quarter of what placement hands out
    assert judged([node("compute-1", used=95, least=50, ratio=4.0)]).status is Status.OK
    high = one(judged([node("compute-1", used=95, least=50, ratio=1.05)]), Status.WARNING)
    assert high.message.startswith("95 GiB committed of the 105 GiB that ratio 1.05 allows on 100 GiB")


# -- nova's own readings -------------------------------------------------------------------


@pytest.mark.parametrize(("stored", "ratio"), [(0.0, 1.0), (None, 1.0), (1.5, 1.5)])
def test_ratio_zero_or_null_means_the_default_as_nova_reads_it(stored: float | None, ratio: float) -> None:
    n = node("compute-1", ratio=stored)
    assert effective_ratio(n, None)[0] == ratio
    # placement's inventory, written by the compute, wins: it is what the scheduler obeys
    assert effective_ratio(n, provider("compute-1", ratio=3.0)) == (3.0, "placement's DISK_GB "
                                                                      "allocation_ratio 3")


def test_old_release_ratio_zero_with_policy_overcommit_is_critical_without_placement() -> None:
    # a pre-Stein row: 0.0 means initial_disk_allocation_ratio, 1.0 unless the compute sets it
    finding = one(judged([node("compute-1", used=120, least=5, ratio=0.0)]), Status.CRITICAL)
    assert "disk_allocation_ratio 0.0 in compute_nodes, which nova reads as" in finding.message
    # with placement the real ratio is known: policy
    result = judged([node("compute-1", used=120, least=5, ratio=0.0)], [provider("compute-1", 100, 120, 2.0)])
    assert one(result, Status.WARNING).message.startswith("free_disk_gb is -20 GiB: overcommitted by policy")


def test_ironic_nodes_are_not_judged_and_have_no_series() -> None:
    # nova/virt/ironic/driver.py _node_resource: local_gb 0, hypervisor_type ironic
    ironic = Node("cell1", "ironic-conductor", "bm-node-1", "bm-uuid", local_gb=0, local_gb_used=0,
                  free_disk_gb=0, disk_available_least=0, disk_allocation_ratio=1.0, hypervisor_type="ironic")
    weird = Node("cell1", "ironic-conductor", "bm-node-2", "bm-2", local_gb=0, local_gb_used=40,
                 free_disk_gb=-40, disk_available_least=-40, hypervisor_type="ironic")
    result = judged([node("compute-1"), ironic, weird])
    assert result.status is Status.OK and result.findings == ()
    assert [s for s in result.samples if dict(s.labels).get("host") == "ironic-conductor"] == []
    assert result.summary.startswith("1 compute nodes in 2 cells") and "; 2 ironic nodes not judged" in \
        result.summary


def test_null_columns_skip_only_their_metric() -> None:
    never_reported = Node("cell1", "compute-9", "compute-9", "uuid-9")  # every disk column NULL
    no_capacity = Node("cell1", "compute-8", "compute-8", "uuid-8", local_gb=None, local_gb_used=500)
    zero_disk = Node("cell1", "compute-7", "compute-7", "uuid-7", local_gb=0, local_gb_used=20,
                     free_disk_gb=-20, disk_available_least=0, hypervisor_type="QEMU")
    result = judged([node("compute-1"), never_reported, no_capacity, zero_disk])
    assert result.status is Status.OK and result.findings == ()
    assert {dict(s.labels)["host"] for s in result.samples if s.name != RATIO} == {
        "compute-1", "compute-8", "compute-7"}
    assert value(result, RATIO, **labels("compute-9")) == 1.0
    assert value(result, USED, **labels("compute-8")) == 500 * GIB
    assert value(result, FREE, **labels("compute-7")) == -20 * GIB
    assert value(result, FREE, **labels("compute-1")) == 80 * GIB
    assert result.summary.startswith("4 compute nodes in 2 cells: 0 committed beyond")


def test_node_label_falls_back_to_uuid_then_host() -> None:
    by_uuid = Node("cell1", "compute-1", None, "uuid-1", disk_available_least=-1)
    by_host = Node("cell1", "compute-2", None, None, disk_available_least=-1)
    no_host = Node("cell1", None, None, None, disk_available_least=-1)
    result = judged([by_uuid, by_host, no_host])
    assert [f.subject for f in result.findings] == [
        "compute node uuid-1 (host compute-1, cell cell1)",
        "compute node compute-2 (host compute-2, cell cell1)",
        "compute node ? (host ?, cell cell1)"]
    assert value(result, LEAST, **labels("compute-1", node_name="uuid-1")) == -GIB
    assert result.findings[2].remediation.startswith("on ?: df -h")


# -- placement, optional -----------------------------------------------------------------


def test_placement_not_configured_is_noted() -> None:
    result = judged([node("compute-1", least=-1)], None)
    assert one(result, Status.CRITICAL).message.endswith("errors.")  # no placement note
    assert result.summary.endswith("0 highly committed; placement not configured")
    assert [s for s in result.samples if "placement" in s.name] == []


def test_unreachable_placement_is_warning_and_keeps_the_node_view() -> None:
    result = judged([node("compute-1")], [], placement_error="database placement at x: cannot connect")
    finding = one(result, Status.WARNING)
    assert finding.subject == "placement database"
    assert finding.message == "placement view missing from this run: database placement at x: cannot connect"
    assert value(result, FREE, **labels("compute-1")) == 80 * GIB
    assert result.summary.endswith("0 highly committed")  # neither providers nor "not configured"


def test_provider_is_matched_by_node_uuid() -> None:
    other = Provider("rp-elsewhere", "compute-1", 100, 0, 4.0, 10)  # same name, another uuid
    result = judged([node("compute-1", used=120, least=5)], [other])
    finding = one(result, Status.CRITICAL)  # the node's own ratio 1.0 applies, not the other's 4.0
    assert "placement:" not in finding.message and "disk_allocation_ratio 1 allows" in finding.message
    nameless = judged([node("compute-1", least=-1, uuid=None)], [provider("compute-1")])
    assert "placement:" not in one(nameless, Status.CRITICAL).message


def test_no_nodes() -> None:
    result = judged([], [], cells=0)
    assert result.status is Status.OK
    assert result.summary == ("0 compute nodes in 0 cells: 0 committed beyond what placement allows, 0 "
                              "overcommitted by policy, 0 with negative disk_available_least, 0 highly "
                              "committed")
