"""cell_connections end to end on the loopback lab: nova 34's own cell mappings.

The faults are made the real way (lab faults `cell-db-password` and
`cell-transport-password`): `nova-manage cell_v2 update_cell` rewrites cell1's
mapping with a wrong password, as a password rotation that forgot
nova_api.cell_mappings leaves it. Reverting writes the right URL back the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import healthd.config
import healthd.registry
from checks.cell_connections import CellConnectionsProbe
from healthd.connections import Backends
from healthd.model import Severity, Status
from tests.helpers.probes import ProbeRun, lab_backends, run_probe
from tests.helpers.servers import free_port

pytestmark = pytest.mark.e2e

WRONG = "healthd-lab-wrong-password"


def run(lab: dict[str, Any], **settings: Any) -> ProbeRun:
    result = run_probe(CellConnectionsProbe(CellConnectionsProbe.Settings(**settings)), lab_backends(lab))
    assert WRONG not in result.everything()
    return result


def secrets(lab: dict[str, Any]) -> list[str]:
    folder = Path(lab["paths"]["lab_dir"]) / "secrets"
    return [p.read_text().strip() for p in folder.iterdir()] if folder.is_dir() else []


def assert_healthy(lab: dict[str, Any]) -> ProbeRun:
    result = run(lab)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert result.findings == []
    assert result.value("healthd_cell_connections_cells") == 2
    assert result.value("healthd_cell_connections_database_up", cell="cell0") == 1
    assert result.value("healthd_cell_connections_database_up", cell="cell1") == 1
    [(labels, up)] = result.values("healthd_cell_connections_transport_up")  # cell0 is none:///
    assert labels["cell"] == "cell1" and up == 1
    return result


def test_healthy_lab_is_ok(lab: dict[str, Any]) -> None:
    result = assert_healthy(lab)
    text = result.everything()
    for secret in secrets(lab):
        assert len(secret) < 3 or secret not in text


def test_stale_database_password_is_critical_and_clears(lab: dict[str, Any], lab_api: Any) -> None:
    info = lab_api.inject("cell-db-password")
    try:
        result = run(lab)
        assert result.status is Status.CRITICAL
        [finding] = result.about("cell cell1 database", Severity.CRITICAL)
        assert info["cell_uuid"] in finding.message
        assert "refused the stored credentials" in finding.message
        assert f"--cell_uuid {info['cell_uuid']} --database_connection" in finding.remediation
        assert result.value("healthd_cell_connections_database_up", cell="cell1") == 0
        assert result.value("healthd_cell_connections_database_up", cell="cell0") == 1
        # nova itself, in a fresh process (no cached connection), reaches the cell through the
        # mapping and is refused the same way.
        code, out = lab_api.Lab().nova_manage("cell_v2", "discover_hosts", "--cell_uuid",
                                              info["cell_uuid"], check=False)
        assert code != 0 and "(1045, \"Access denied for user" in out
    finally:
        lab_api.revert("cell-db-password")
    assert_healthy(lab)


def test_stale_transport_password_is_critical_and_clears(lab: dict[str, Any], lab_api: Any) -> None:
    info = lab_api.inject("cell-transport-password")
    try:
        result = run(lab)
        assert result.status is Status.CRITICAL
        [finding] = result.about("cell cell1 transport", Severity.CRITICAL)
        assert info["cell_uuid"] in finding.message
        assert "refused the stored credentials" in finding.message
        assert f"--cell_uuid {info['cell_uuid']} --transport-url 'rabbit://" in finding.remediation
        [(labels, up)] = result.values("healthd_cell_connections_transport_up")
        assert up == 0 and labels["cell"] == "cell1"
        assert result.value("healthd_cell_connections_database_up", cell="cell1") == 1
    finally:
        lab_api.revert("cell-transport-password")
    assert_healthy(lab)


def test_unreachable_nova_api_is_unknown(lab: dict[str, Any]) -> None:
    config = healthd.config.load(Path(lab["healthd_yaml"]), healthd.registry.discover())
    data = config.backends.model_dump(mode="json", exclude_none=True)
    data["databases"]["nova_api"] = {"url": f"mysql+pymysql://nobody@127.0.0.1:{free_port()}/nova_api",
                                     "connect_timeout": 2}
    backends = Backends(type(config.backends).model_validate(data))
    result = run_probe(CellConnectionsProbe(), backends)
    assert result.status is Status.UNKNOWN
    assert "database nova_api at" in result.summary and "cannot connect" in result.summary
