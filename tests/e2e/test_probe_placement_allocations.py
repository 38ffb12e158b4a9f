"""placement_allocations end to end on the loopback lab: nova 34 and placement, for real.

The fault is made the real way (lab fault `stray-allocation`): an allocation written
through the placement API for a consumer nova does not have, as the scheduler claims
(PUT /allocations/{uuid}); the fault waits until lab-compute1's resource tracker logs
"Instance <uuid> has allocations against this compute host but is not found in the
database.". `nova-manage placement audit` agrees with the probe; the revert deletes
the allocation through the API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import healthd.config
import healthd.registry
from checks.placement_allocations import PlacementAllocationsProbe
from healthd.connections import Backends
from healthd.model import Severity, Status
from tests.helpers.probes import ProbeRun, lab_backends, run_probe
from tests.helpers.servers import free_port

pytestmark = pytest.mark.e2e


def run(lab: dict[str, Any], **settings: Any) -> ProbeRun:
    return run_probe(PlacementAllocationsProbe(PlacementAllocationsProbe.Settings(**settings)),
                     lab_backends(lab))


def test_healthy_lab_with_a_real_server_is_ok(lab: dict[str, Any], lab_api: Any) -> None:
    handle = lab_api.Lab()
    server = handle.boot_server("healthd-e2e-allocs")
    try:
        handle.wait_server(server, "ACTIVE")
        result = run(lab, grace_seconds=0)  # no grace: the server's own allocations must match
        assert result.status is Status.OK, [f.as_dict() for f in result.findings]
        assert not result.findings
        assert (result.value("healthd_placement_allocations_consumers") or 0) >= 1
        assert result.value("healthd_placement_allocations_orphans", kind="no_mapping") == 0
        assert result.value("healthd_placement_allocations_orphans", kind="wrong_host") == 0
        assert result.value("healthd_placement_allocations_cell_up", cell="cell1") == 1
    finally:
        handle.delete_server(server)
        handle.wait_server(server, "DELETED")
    result = run(lab, grace_seconds=0)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]


def test_stray_allocation_is_reported_as_nova_audit_does_and_clears(lab: dict[str, Any],
                                                                    lab_api: Any) -> None:
    info = lab_api.inject("stray-allocation")  # returns once lab-compute1 logged the message
    consumer, provider = info["consumer"], info["provider"]
    try:
        # Within the grace period it may be a build in flight: not judged.
        result = run(lab)
        assert result.status is Status.OK
        assert result.value("healthd_placement_allocations_in_flight", kind="young") == 1
        result = run(lab, grace_seconds=0)
        assert result.status is Status.WARNING
        [finding] = result.about(consumer, Severity.WARNING)
        assert finding.subject == f"consumer {consumer} on {info['host']}"
        assert "no_mapping" in finding.message and "not found in the database" in finding.message
        assert f"openstack resource provider allocation delete {consumer}" in finding.remediation
        assert f"nova-manage placement audit --resource_provider {provider} --delete" in finding.remediation
        assert result.value("healthd_placement_allocations_orphans", kind="no_mapping") == 1
        assert result.value("healthd_placement_allocations_orphan", consumer=consumer, provider=provider,
                            kind="no_mapping") == 1
        # nova's own audit finds the same consumer (exit 3: orphaned allocations detected).
        code, out = lab_api.Lab().nova_manage("placement", "audit", "--verbose", check=False)
        assert code == 3 and consumer in out, out
    finally:
        lab_api.revert("stray-allocation")
    result = run(lab, grace_seconds=0)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert result.value("healthd_placement_allocations_orphans", kind="no_mapping") == 0
    assert result.value("healthd_placement_allocations_orphan", consumer=consumer, provider=provider,
                        kind="no_mapping") is None


def test_allocation_left_on_another_host_is_wrong_host(lab: dict[str, Any], lab_api: Any) -> None:
    """A live server whose allocations also cover a second compute, no migration: what a failed
    move leaves. Written with the consumer's generation at microversion 1.28, as nova's report
    client writes allocations (nova/scheduler/client/report.py put_allocations)."""
    from healthd_lab.util import _http

    handle = lab_api.Lab()
    server = handle.boot_server("healthd-e2e-allocs-wrong-host")
    try:
        handle.wait_server(server, "ACTIVE")
        host = handle.api("compute", "GET", f"/servers/{server}")[1]["server"]["OS-EXT-SRV-ATTR:host"]
        other = next(h for h in lab_api.COMPUTES if h != host)
        rp_other = handle.api("placement", "GET", f"/resource_providers?name={other}")[1][
            "resource_providers"][0]["uuid"]
        url = handle.url("placement") + f"/allocations/{server}"

        def call(method: str, body: Any = None) -> Any:
            headers = {"X-Auth-Token": handle.token(), "OpenStack-API-Version": "placement 1.28"}
            code, _, data = _http(method, url, body, headers)
            assert code in (200, 204), (code, data)
            return data

        current = call("GET")
        before = {rp: {"resources": a["resources"]} for rp, a in current["allocations"].items()}
        leaked = {**before, rp_other: {"resources": {"VCPU": 1, "MEMORY_MB": 64}}}
        call("PUT", {"allocations": leaked, "project_id": current["project_id"],
                     "user_id": current["user_id"], "consumer_generation": current["consumer_generation"]})
        result = run(lab, grace_seconds=0)
        assert result.status is Status.WARNING
        [finding] = result.about(server, Severity.WARNING)
        assert finding.subject == f"consumer {server} on {other}"
        assert "wrong_host" in finding.message and f"runs on {host}" in finding.message
        assert f"--resource_provider {rp_other} --delete" in finding.remediation
        assert result.value("healthd_placement_allocations_orphans", kind="wrong_host") == 1
        now = call("GET")
        call("PUT", {"allocations": before, "project_id": now["project_id"], "user_id": now["user_id"],
                     "consumer_generation": now["consumer_generation"]})
        result = run(lab, grace_seconds=0)
        assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    finally:
        handle.delete_server(server)
        handle.wait_server(server, "DELETED")


def test_unreachable_placement_database_is_unknown(lab: dict[str, Any]) -> None:
    config = healthd.config.load(Path(lab["healthd_yaml"]), healthd.registry.discover())
    data = config.backends.model_dump(mode="json", exclude_none=True)
    port = free_port()  # a loopback port where nothing listens
    data["databases"]["placement"] = {"url": f"mysql+pymysql://nobody@127.0.0.1:{port}/placement",
                                      "connect_timeout": 2}
    result = run_probe(PlacementAllocationsProbe(), Backends(type(config.backends).model_validate(data)))
    assert result.status is Status.UNKNOWN
    assert "placement" in result.summary and "cannot connect" in result.summary
