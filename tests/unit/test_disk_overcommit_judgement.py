"""checks.disk_overcommit's judgement on plain compute_nodes rows and placement providers: no database."""

from __future__ import annotations

from typing import Any

from checks.disk_overcommit import DiskOvercommitProbe, DiskView, Node, Provider, judge
from healthd.model import Report, Result, Severity, Status

GIB = 2**30
FREE = "healthd_disk_overcommit_free_disk_bytes"
LEAST = "healthd_disk_overcommit_disk_available_least_bytes"
LOCAL = "healthd_disk_overcommit_local_bytes"
USED = "healthd_disk_overcommit_used_bytes"
P_CAP = "healthd_disk_overcommit_placement_capacity_bytes"
P_USE = "healthd_disk_overcommit_placement_usage_bytes"
P_RATIO = "healthd_disk_overcommit_placement_allocation_ratio"


def node(host: str, cell: str = "cell1", total: int = 100, used: int = 20, least: int | None = None,
         ratio: float | None = 1.0, **fields: Any) -> Node:
    """A libvirt compute node as the resource tracker writes it (free = total - used)."""
    row: dict[str, Any] = {"hypervisor_hostname": host, "uuid": f"rp-{host}", "local_gb": total,
                           "local_gb_used": used, "free_disk_gb": total - used,
                           "disk_available_least": total - used - 10 if least is None else least,
                           "disk_allocation_ratio": ratio}
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
    assert value(result, USED, **labels("compute-2", "cell2")) == 50 * GIB
    assert value(result, P_CAP, provider="compute-2") == 100 * GIB
    assert value(result, P_USE, provider="compute-2") == 50 * GIB
    assert value(result, P_RATIO, provider="compute-1") == 1.0
    assert result.summary == ("2 compute nodes in 2 cells: 0 with negative free disk, 0 with negative "
                              "disk_available_least, 0 highly committed; placement: 2 DISK_GB providers, "
                              "0 over capacity")


def test_negative_free_disk_is_critical_with_the_placement_view() -> None:
    # disk_allocation_ratio 1.5 let 130 GiB of flavour disks onto a 100 GiB disk
    result = judged([node("compute-2", cell="cell2", used=130, least=40, ratio=1.5)],
                    [provider("compute-2", used=130, ratio=1.5)])
    finding = one(result, Status.CRITICAL)
    assert finding.subject == "compute node compute-2 (host compute-2, cell cell2)"
    assert finding.message.startswith(
        "free_disk_gb is -30 GiB: instances' flavour disks commit 130 GiB on 100 GiB of local disk "
        "(scheduler view; compute disk_allocation_ratio 1.5).")
    assert finding.message.endswith(
        " Placement allows 150 GiB DISK_GB here (ratio 1.5), 130 GiB allocated. An allocation ratio "
        "above 1 on a disk that is already short makes it worse.")
    assert "set [DEFAULT] disk_allocation_ratio = 1.0 in nova.conf on compute-2" in finding.remediation
    assert finding.remediation.startswith("on compute-2: df -h /var/lib/nova/instances")
    assert finding.remediation.endswith("do not force hosts with --availability-zone nova:HOST")
    assert value(result, FREE, **labels("compute-2", "cell2")) == -30 * GIB
    assert result.summary.startswith("1 compute nodes in 2 cells: 1 with negative free disk, 0 with")


def test_negative_free_disk_with_ratio_one_or_unset() -> None:
    forced = one(judged([node("compute-1", used=110, least=5)], [provider("compute-1", used=100)]),
                 Status.CRITICAL)
    assert "disk_allocation_ratio 1.0)" in forced.message
    assert "Placement allows 100 GiB DISK_GB here (ratio 1), 100 GiB allocated." in forced.message
    assert "above 1" not in forced.message and "disk_allocation_ratio = 1.0" not in forced.remediation
    unset = one(judged([node("compute-1", used=110, least=5, ratio=None)]), Status.CRITICAL)
    assert "disk_allocation_ratio unset)" in unset.message
    assert "Placement" not in unset.message and "disk_allocation_ratio = 1.0" not in unset.remediation


def test_negative_disk_available_least_is_critical() -> None:
    result = judged([node("compute-1", least=-12)])
    finding = one(result, Status.CRITICAL)
    assert finding.subject == "compute node compute-1 (host compute-1, cell cell1)"
    assert finding.message.startswith("disk_available_least is -12 GiB:") and "host view" in finding.message
    assert "free_disk_gb" not in finding.message
    assert value(result, LEAST, **labels("compute-1")) == -12 * GIB
    assert "0 with negative free disk, 1 with negative disk_available_least" in result.summary


def test_both_views_negative_make_one_finding() -> None:
    result = judged([node("compute-1", used=120, least=-50)])
    finding = one(result, Status.CRITICAL)
    assert "free_disk_gb is -20 GiB" in finding.message
    assert "disk_available_least is -50 GiB" in finding.message
    assert ("1 with negative free disk, 1 with negative disk_available_least, 0 highly committed"
            in result.summary)


def test_highly_committed_disk_is_warning_above_the_ratio() -> None:
    result = judged([node("compute-1", used=95, least=50)], committed_warning_ratio=0.9)
    finding = one(result, Status.WARNING)
    assert finding.subject == "compute node compute-1 (host compute-1, cell cell1)"
    assert finding.message == ("95 of 100 GiB local disk (95%) is committed to instances' flavour disks, "
                               "above 90%.")
    assert finding.remediation.endswith("check df -h /var/lib/nova/instances on compute-1")
    assert "1 highly committed" in result.summary
    assert judged([node("compute-1", used=95, least=50)], committed_warning_ratio=1.0).status is Status.OK
    assert judged([node("compute-1", used=90, least=50)], committed_warning_ratio=0.9).status is Status.OK
    # a full disk is no overcommitment: free_disk_gb 0 is not negative
    assert judged([node("compute-1", used=100, least=0)], committed_warning_ratio=1.0).status is Status.OK


def test_a_critical_node_is_not_also_highly_committed() -> None:
    result = judged([node("compute-1", used=130, least=40)])
    assert one(result, Status.CRITICAL).severity is Severity.CRITICAL
    assert "0 highly committed" in result.summary


def test_ironic_and_null_columns_skip_only_their_metric() -> None:
    ironic = Node("cell1", "ironic-conductor", "bm-node-1", "bm-uuid", local_gb=0, local_gb_used=0)
    never_reported = Node("cell1", "compute-9", "compute-9", "uuid-9")  # every disk column NULL
    no_capacity = Node("cell1", "compute-8", "compute-8", "uuid-8", local_gb=None, local_gb_used=500)
    result = judged([node("compute-1"), ironic, never_reported, no_capacity])
    assert result.status is Status.OK and result.findings == ()
    bm = labels("ironic-conductor", node_name="bm-node-1")
    assert value(result, FREE, **bm) is None
    assert value(result, LEAST, **bm) is None
    assert value(result, LOCAL, **bm) == 0
    assert value(result, USED, **bm) == 0
    assert [s for s in result.samples if dict(s.labels).get("host") == "compute-9"] == []
    assert value(result, USED, **labels("compute-8")) == 500 * GIB
    assert value(result, FREE, **labels("compute-1")) == 80 * GIB
    assert result.summary.startswith("4 compute nodes in 2 cells: 0 with negative free disk")


def test_node_label_falls_back_to_uuid_then_host() -> None:
    by_uuid = Node("cell1", "compute-1", None, "uuid-1", disk_available_least=-1)
    by_host = Node("cell1", "compute-2", None, None, disk_available_least=-1)
    no_host = Node("cell1", None, None, None, disk_available_least=-1)
    result = judged([by_uuid, by_host, no_host])
    assert [f.subject for f in result.findings] == [
        "compute node uuid-1 (host compute-1, cell cell1)",
        "compute node compute-2 (host compute-2, cell cell1)",
        "compute node ? (host ?, cell cell1)"]
    assert value(result, LEAST,
                 **labels("compute-1", node_name="uuid-1")) == -GIB
    assert result.findings[2].remediation.startswith("on ?: df -h")


def test_placement_over_capacity_is_warning() -> None:
    # the ratio was lowered from 2.0 to 1.0 after 150 GiB had been allocated
    result = judged([node("compute-1", used=90, least=10)], [provider("compute-1", used=150)],
                    committed_warning_ratio=1.0)
    finding = one(result, Status.WARNING)
    assert finding.subject == "resource provider compute-1 (rp-compute-1)"
    assert finding.message.startswith("placement has 150 GiB DISK_GB allocated against a capacity of 100 GiB "
                                      "((total 100 - reserved 0) x ratio 1);")
    assert finding.remediation.startswith("openstack resource provider usage show rp-compute-1;")
    assert value(result, P_USE, provider="compute-1") == 150 * GIB
    assert result.summary.endswith("; placement: 1 DISK_GB providers, 1 over capacity")


def test_placement_capacity_counts_reserved_and_ratio() -> None:
    reserved = judged([], [provider("compute-1", total=100, reserved=10, used=91)])
    assert "capacity of 90 GiB ((total 100 - reserved 10) x ratio 1)" in one(reserved, Status.WARNING).message
    assert value(reserved, P_CAP, provider="compute-1") == 90 * GIB
    assert judged([], [provider("compute-1", total=100, reserved=10, used=90)]).status is Status.OK
    assert judged([], [provider("compute-1", total=100, used=150, ratio=1.5)]).status is Status.OK
    half = judged([], [provider("compute-1", total=100, reserved=1, used=50, ratio=0.5)])
    assert "capacity of 49.5 GiB" in one(half, Status.WARNING).message


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
    result = judged([node("compute-1", least=-1)], [other])
    assert "Placement" not in one(result, Status.CRITICAL).message
    nameless = judged([node("compute-1", least=-1, uuid=None)], [provider("compute-1")])
    assert "Placement" not in one(nameless, Status.CRITICAL).message


def test_no_nodes() -> None:
    result = judged([], [], cells=0)
    assert result.status is Status.OK
    assert result.summary == ("0 compute nodes in 0 cells: 0 with negative free disk, 0 with negative "
                              "disk_available_least, 0 highly committed")
