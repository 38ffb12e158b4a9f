"""cell_mapping end to end on the loopback lab: nova 34 with real cell mappings.

The fault is made the real way (lab fault `unmapped-compute`): a third
nova-compute starts, registers its service and compute node in cell1 and
reports, but nobody runs `nova-manage cell_v2 discover_hosts`. Reverting
deletes the service through the compute API, which also drops the node.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import healthd.config
import healthd.registry
from checks.cell_mapping import CellMappingProbe
from healthd.connections import Backends
from healthd.model import Severity, Status
from tests.helpers.probes import ProbeRun, lab_backends, run_probe
from tests.helpers.servers import free_port

pytestmark = pytest.mark.e2e


def run(lab: dict[str, Any], **settings: Any) -> ProbeRun:
    return run_probe(CellMappingProbe(CellMappingProbe.Settings(**settings)), lab_backends(lab))


def test_healthy_lab_has_every_compute_mapped(lab: dict[str, Any]) -> None:
    result = run(lab)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert result.findings == []
    assert result.value("healthd_cell_mapping_cells") == 1
    assert result.value("healthd_cell_mapping_mapped_hosts", cell="cell1") == 2
    assert result.value("healthd_cell_mapping_unmapped_hosts", cell="cell1") == 0


def test_undiscovered_compute_is_reported_and_clears(lab: dict[str, Any], lab_api: Any) -> None:
    info = lab_api.inject("unmapped-compute")
    host = info["host"]
    try:
        # Fresh host: within the default grace period it is only INFO (discovery may be pending).
        result = run(lab)
        assert result.status is Status.OK
        assert result.about(host, Severity.INFO)
        # Past the grace period (0 here) it is the real failure: up, reporting, unschedulable.
        result = run(lab, grace_seconds=0)
        assert result.status is Status.CRITICAL
        [finding] = result.about(host, Severity.CRITICAL)
        assert finding.subject == f"host {host} (cell cell1)"
        assert "nova-manage cell_v2 discover_hosts --cell_uuid" in finding.remediation
        assert result.value("healthd_cell_mapping_host_unmapped", cell="cell1", host=host) == 1
        assert result.value("healthd_cell_mapping_unmapped_hosts", cell="cell1") == 1
        # What the finding says is what nova does: the scheduler picks the host, the conductor
        # fails the build and the server goes to ERROR with nova's own words.
        assert "so the scheduler may pick it" in finding.message
        said = f"Host '{host}' is not mapped to any cell"
        assert said in finding.message
        handle = lab_api.Lab()
        server = handle.boot_server("healthd-e2e-unmapped", host=host)  # --availability-zone nova:HOST
        try:
            deadline = time.monotonic() + 60
            got = handle.api("compute", "GET", f"/servers/{server}")[1]["server"]
            while got["status"] == "BUILD":
                assert time.monotonic() < deadline, got
                time.sleep(0.5)
                got = handle.api("compute", "GET", f"/servers/{server}")[1]["server"]
            assert got["status"] == "ERROR" and got["fault"]["message"] == said, got
        finally:
            handle.delete_server(server)
            handle.wait_server(server, "DELETED")
        code, body = handle.api("compute", "POST", "/servers", {"server": {  # --host (2.74)
            "name": "healthd-e2e-unmapped-2", "imageRef": handle.state["ids"]["image"],
            "flavorRef": handle.state["ids"]["flavor_tiny"], "networks": "none", "host": host}}, ok=None)
        assert code == 400 and f"Compute host {host} could not be found" in str(body)
        assert f"`openstack server create --host {host}` is refused" in finding.message
    finally:
        lab_api.revert("unmapped-compute")
    result = run(lab, grace_seconds=0)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert result.value("healthd_cell_mapping_host_unmapped", cell="cell1", host=host) is None


def test_unreachable_cell_database_is_unknown(lab: dict[str, Any]) -> None:
    config = healthd.config.load(Path(lab["healthd_yaml"]), healthd.registry.discover())
    data = config.backends.model_dump(mode="json", exclude_none=True)
    # A cell override pointing at a loopback port where nothing listens.
    port = free_port()
    data["databases"]["cells"] = {"cell1": {"url": f"mysql+pymysql://nobody@127.0.0.1:{port}/nova_cell1",
                                            "connect_timeout": 2}}
    backends = Backends(type(config.backends).model_validate(data))
    result = run_probe(CellMappingProbe(), backends)
    assert result.status is Status.UNKNOWN
    assert "database cells.cell1 at" in result.summary and "cannot connect" in result.summary
