"""cell_mapping end to end on the loopback lab: nova 34 with real cell mappings.

The fault is made the real way (lab fault `unmapped-compute`): a third
nova-compute starts, registers its service and compute node in cell1 and
reports, but nobody runs `nova-manage cell_v2 discover_hosts`. Reverting
deletes the service through the compute API, which also drops the node.
"""

from __future__ import annotations

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
