"""disk_overcommit end to end on the loopback lab: nova 34 and placement 16.

The shapes are made the real way. Lab fault `disk-overcommit`: lab-compute1 is
restarted with [DEFAULT] disk_allocation_ratio = 16 (placement takes the new
ratio from the compute's update_provider_tree), and two servers of a
400000 GB flavour are booted with `host` (microversion 2.74, which goes through
the scheduler and placement, like `openstack server create --host`) until the
resource tracker writes a negative free_disk_gb: overcommit by policy, a
WARNING. Lab fault `disk-over-capacity`: the compute is restarted with the
ratio back at 1.0 while the servers stay; placement keeps their allocations on
the smaller inventory (it only logs "exceeded"), so usage is above capacity
and the node commits more than its ratio allows: CRITICAL. Reverting deletes
the servers and puts the ratio back to 1.0.
"""

from __future__ import annotations

from typing import Any

import pytest

from checks.disk_overcommit import DiskOvercommitProbe
from healthd.model import Severity, Status
from tests.helpers.probes import ProbeRun, lab_backends, run_probe

pytestmark = pytest.mark.e2e


def run(lab: dict[str, Any], **settings: Any) -> ProbeRun:
    return run_probe(DiskOvercommitProbe(DiskOvercommitProbe.Settings(**settings)), lab_backends(lab))


def node_value(result: ProbeRun, metric: str, host: str) -> float | None:
    values = [v for labels, v in result.values(metric) if labels["host"] == host]
    return values[0] if values else None


def placement(result: ProbeRun, metric: str) -> dict[str, float]:
    return {labels["provider"]: v for labels, v in result.values(metric)}


def test_healthy_lab_has_no_overcommit(lab: dict[str, Any]) -> None:
    result = run(lab, committed_warning_ratio=1.0)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert len(result.values("healthd_disk_overcommit_local_bytes")) >= 2
    assert result.values("healthd_disk_overcommit_placement_capacity_bytes")  # placement configured
    for _, ratio in result.values("healthd_disk_overcommit_placement_allocation_ratio"):
        assert ratio == 1.0


def test_policy_overcommit_is_a_warning_and_over_capacity_is_critical(lab: dict[str, Any],
                                                                       lab_api: Any) -> None:
    gib = 2**30
    info = lab_api.inject("disk-overcommit")
    host = info["host"]
    try:
        result = run(lab)
        assert result.status is Status.WARNING, [f.as_dict() for f in result.findings]
        [finding] = result.about(f"host {host}")
        assert finding.severity is Severity.WARNING
        assert finding.message.startswith("free_disk_gb is -200000 GiB: overcommitted by policy: instances "
                                          "commit 800000 GiB")
        assert "on 600000 GiB of local disk, which placement's DISK_GB allocation_ratio 16 allows up to " \
               "9600000 GiB" in finding.message
        assert finding.remediation.startswith("nothing to fix if 16 is the intended ratio")
        assert node_value(result, "healthd_disk_overcommit_free_disk_bytes", host) == -200000 * gib
        assert node_value(result, "healthd_disk_overcommit_allocation_ratio", host) == 16.0
        assert placement(result, "healthd_disk_overcommit_placement_allocation_ratio")[host] == 16.0
        assert placement(result, "healthd_disk_overcommit_placement_usage_bytes")[host] == 800000 * gib
        assert "1 overcommitted by policy" in result.summary

        lab_api.inject("disk-over-capacity")  # ratio 1.0 again, the servers stay
        try:
            result = run(lab)
            assert result.status is Status.CRITICAL, [f.as_dict() for f in result.findings]
            [finding] = result.about(f"host {host}", Severity.CRITICAL)
            assert "free_disk_gb is -200000 GiB" in finding.message
            assert "more than placement's DISK_GB allocation_ratio 1 allows (600000 GiB)" in finding.message
            assert "Placement has 800000 GiB allocated of its 600000 GiB DISK_GB capacity." in finding.message
            assert f"openstack server list --all-projects --host {host}" in finding.remediation
            assert "restore the DISK_GB capacity" in finding.remediation
            capacity = placement(result, "healthd_disk_overcommit_placement_capacity_bytes")[host]
            usage = placement(result, "healthd_disk_overcommit_placement_usage_bytes")[host]
            assert usage > capacity == 600000 * gib
            assert "1 over capacity" in result.summary
        finally:
            lab_api.revert("disk-over-capacity")  # back to ratio 16: policy again
        assert run(lab).status is Status.WARNING
    finally:
        lab_api.revert("disk-overcommit")
    result = run(lab, committed_warning_ratio=1.0)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    value = node_value(result, "healthd_disk_overcommit_free_disk_bytes", host)
    assert value is not None and value >= 0
    assert node_value(result, "healthd_disk_overcommit_allocation_ratio", host) == 1.0
