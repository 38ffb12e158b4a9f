"""flavor_filters end to end on the loopback lab: nova 34's scheduler and placement, for real.

Each fault is made the real way (lab/healthd_lab/faults_flavors.py): a flavor created with
the `openstack` CLI, then a server booted from it with the CLI that really goes to ERROR
"No valid host was found". The probe must name that flavor before anyone boots, and the
revert (server and flavor deleted, nova.conf restored, nova-scheduler restarted) clears it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from checks.flavor_filters import AIESF, CCF, FlavorFiltersProbe
from healthd.model import Severity, Status
from tests.helpers.probes import ProbeRun, lab_backends, run_probe

pytestmark = pytest.mark.e2e


def run(lab: dict[str, Any], **settings: Any) -> ProbeRun:
    """The lab's computes heartbeat every 2 s and nova there calls them down after 8 s;
    the scheduler's nova.conf is the controller's."""
    settings.setdefault("scheduler_files", [lab["paths"]["nova_conf"]])
    settings.setdefault("service_down_time", 8)
    return patient(FlavorFiltersProbe(FlavorFiltersProbe.Settings(**settings)), lambda: lab_backends(lab))


def patient(probe: FlavorFiltersProbe, backends: Any) -> ProbeRun:
    for _ in range(20):
        result = run_probe(probe, backends())
        # The machine's MariaDB is shared by several labs and may be at max_connections: that
        # refusal (1040) is the machine's, not the probe's; anything else is returned as it is.
        if "(1040, 'Too many connections')" not in result.summary:
            return result
        time.sleep(3)
    return result


def the_flavor(result: ProbeRun, flavor_id: str, name: str) -> Any:
    found = [f for f in result.findings if f.subject == f"flavor {flavor_id} ({name})"]
    assert len(found) == 1, [f.as_dict() for f in result.findings]
    return found[0]


def test_healthy_lab_is_ok(lab: dict[str, Any]) -> None:
    result = run(lab)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert not result.findings
    assert result.value("healthd_flavor_filters_hosts", state="eligible") == 2
    assert result.value("healthd_flavor_filters_placement_checked") == 1
    assert result.value("healthd_flavor_filters_filter_enabled", filter=CCF) == 1
    assert result.value("healthd_flavor_filters_filter_enabled", filter=AIESF) == 0
    assert (result.value("healthd_flavor_filters_flavors", visibility="public") or 0) >= 2
    assert result.value("healthd_flavor_filters_unschedulable", visibility="public") == 0
    # lab-tiny and lab-huge (400000 GB, within the fake driver's DISK_GB) fit on both computes
    per_flavor = result.values("healthd_flavor_filters_flavor_hosts")
    assert len(per_flavor) >= 2 and all(v == 2 for _, v in per_flavor), per_flavor


def test_capability_no_host_has(lab: dict[str, Any], lab_api: Any) -> None:
    info = lab_api.inject("flavor-badcap")  # returns once the server is in ERROR "No valid host"
    try:
        assert "No valid host" in info["fault"]
        result = run(lab)
        assert result.status is Status.CRITICAL
        f = the_flavor(result, info["flavor"], "lab-badcap")
        assert f.severity is Severity.CRITICAL
        assert CCF in f.message and "capabilities:hypervisor_type=QEMU" in f.message
        fix = f"openstack flavor unset --property capabilities:hypervisor_type {info['flavor']}"
        assert f.remediation == fix
        assert result.value("healthd_flavor_filters_flavor_hosts", flavor=info["flavor"]) == 0
        assert result.value("healthd_flavor_filters_unschedulable", visibility="public") == 1
    finally:
        lab_api.revert("flavor-badcap")
    result = run(lab)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]


def test_aggregate_filter_and_the_seeds_unscoped_keys(lab: dict[str, Any], lab_api: Any) -> None:
    info = lab_api.inject("flavor-aggregate-filter")
    try:
        assert "No valid host" in info["fault"]
        result = run(lab)
        assert result.value("healthd_flavor_filters_filter_enabled", filter=AIESF) == 1
        f = the_flavor(result, info["flavor"], "lab-xxx")
        assert f.severity is Severity.CRITICAL and AIESF in f.message
        assert "xxx=123" in f.message and "yyy=321" in f.message
        assert f"openstack flavor unset --property xxx {info['flavor']}" in f.remediation
        assert "openstack aggregate set --property xxx=123 AGGREGATE" in f.remediation
        # Read without the scheduler's file (nova's default filters) the same flavor is fine:
        # ComputeCapabilitiesFilter ignores unscoped keys since Newton.
        default = run(lab, scheduler_files=[])
        assert not [f for f in default.findings if info["flavor"] in f.subject]
        assert default.value("healthd_flavor_filters_filter_enabled", filter=AIESF) == 0
    finally:
        lab_api.revert("flavor-aggregate-filter")
    result = run(lab)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert result.value("healthd_flavor_filters_filter_enabled", filter=AIESF) == 0


def test_flavor_wider_than_max_unit(lab: dict[str, Any], lab_api: Any) -> None:
    info = lab_api.inject("flavor-wide")
    try:
        assert "No valid host" in info["fault"]
        result = run(lab)
        f = the_flavor(result, info["flavor"], "lab-wide")
        assert f.severity is Severity.WARNING and "too large for every compute node" in f.message
        assert result.value("healthd_flavor_filters_too_large", visibility="public") == 1
        assert "vcpus=2000" in f.message and "placement" in f.message
        assert result.value("healthd_flavor_filters_flavor_hosts", flavor=info["flavor"]) == 0
    finally:
        lab_api.revert("flavor-wide")
    result = run(lab)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]


def test_placement_database_down_is_unknown(lab: dict[str, Any]) -> None:
    from pathlib import Path

    import healthd.config
    import healthd.registry
    from healthd.connections import Backends
    from tests.helpers.servers import free_port

    config = healthd.config.load(Path(lab["healthd_yaml"]), healthd.registry.discover())
    dbs = config.backends.databases
    placement = dbs["placement"]
    dead = placement.model_copy(update={"url": placement.url.replace(
        f":{placement.url.split('@')[1].split('/')[0].split(':')[1]}", f":{free_port()}"),
        "connect_timeout": 2})
    backends = Backends(config.backends.model_copy(update={"databases": {**dbs, "placement": dead}}))
    result = patient(FlavorFiltersProbe(FlavorFiltersProbe.Settings(
        scheduler_files=[lab["paths"]["nova_conf"]], service_down_time=8)), lambda: backends)
    assert result.status is Status.UNKNOWN
    assert "placement" in result.summary
