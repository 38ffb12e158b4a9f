"""disk_overcommit end to end on the loopback lab: nova 34 and placement 16.

The fault is made the real way (lab fault `disk-overcommit`): lab-compute1 is
restarted with disk_allocation_ratio = 16, placement takes the new ratio, and
servers with a large-disk flavour are booted onto it until the resource
tracker writes a negative free_disk_gb. Reverting deletes the servers and
puts the ratio back to 1.0.
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


def free_bytes(result: ProbeRun, host: str) -> float | None:
    values = [v for labels, v in result.values("healthd_disk_overcommit_free_disk_bytes")
              if labels["host"] == host]
    return values[0] if values else None


def test_healthy_lab_has_no_overcommit(lab: dict[str, Any]) -> None:
    result = run(lab, committed_warning_ratio=1.0)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert len(result.values("healthd_disk_overcommit_local_bytes")) >= 2
    assert result.values("healthd_disk_overcommit_placement_capacity_bytes")  # placement configured
    for _, ratio in result.values("healthd_disk_overcommit_placement_allocation_ratio"):
        assert ratio == 1.0


def test_overcommitted_compute_is_critical_and_clears(lab: dict[str, Any], lab_api: Any) -> None:
    info = lab_api.inject("disk-overcommit")
    host = info["host"]
    try:
        result = run(lab)
        assert result.status is Status.CRITICAL
        [finding] = result.about(f"host {host}", Severity.CRITICAL)
        assert "free_disk_gb is" in finding.message and "scheduler view" in finding.message
        assert "disk_allocation_ratio = 1.0" in finding.remediation
        value = free_bytes(result, host)
        assert value is not None and value < 0
        ratios = dict((labels["provider"], v) for labels, v in
                      result.values("healthd_disk_overcommit_placement_allocation_ratio"))
        assert ratios.get(host) == 16.0
    finally:
        lab_api.revert("disk-overcommit")
    result = run(lab, committed_warning_ratio=1.0)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    value = free_bytes(result, host)
    assert value is not None and value >= 0
