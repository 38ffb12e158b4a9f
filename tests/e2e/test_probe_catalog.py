"""catalog probe end to end on the loopback lab: real Keystone 30, real catalog.

The fault is made the way it happens in the field: a second `network` service
created through the Keystone API (lab fault `duplicate-service`). Keystone
down is a real HTTP server answering 500, and a port where nothing listens.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from checks.catalog import CatalogProbe
from healthd.connections import Backends
from healthd.model import Status
from tests.helpers.probes import ProbeRun, lab_backends, run_probe
from tests.helpers.servers import free_port

pytestmark = pytest.mark.e2e



def run(backends: Backends, **settings: Any) -> ProbeRun:
    return run_probe(CatalogProbe(CatalogProbe.Settings(**settings)), backends)


@pytest.mark.parametrize("source", ["api", "db"])
def test_healthy_lab_catalog_is_clean(lab: dict[str, Any], source: str) -> None:
    result = run(lab_backends(lab), source=source)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert result.findings == []
    assert result.value("healthd_catalog_services", type="network") == 1
    assert result.value("healthd_catalog_duplicate_services", type="network") == 0


def test_duplicate_network_service_is_critical_and_clears(lab: dict[str, Any], lab_api: Any) -> None:
    backends = lab_backends(lab)
    info = lab_api.inject("duplicate-service")  # POST /v3/services type=network name=neutron
    try:
        dirty = info["service_id"]
        for source in ("api", "db"):
            result = run(backends, source=source)
            assert result.status is Status.CRITICAL, (source, result.summary)
            [finding] = result.findings
            assert finding.subject == f"service {dirty}"
            assert f"openstack service delete {dirty}" in finding.remediation
            assert "cache" in finding.remediation
            assert result.value("healthd_catalog_duplicate_services", type="network") == 1
            assert result.value("healthd_catalog_service_endpoints", service_id=dirty, type="network") == 0
    finally:
        lab_api.revert("duplicate-service")
    cleared = run(backends)
    assert cleared.status is Status.OK and cleared.findings == []
    assert cleared.value("healthd_catalog_duplicate_services", type="network") == 0


class _Always500(http.server.BaseHTTPRequestHandler):
    def _fail(self) -> None:
        body = b'{"error": {"code": 500, "message": "An unexpected error occurred", "title": "Internal"}}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _fail

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def keystone_500() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Always500)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _clouds_yaml(lab: dict[str, Any], tmp_path: Path, port: int) -> Path:
    """The lab's clouds.yaml with auth_url moved to PORT (same user and password)."""
    clouds = yaml.safe_load(Path(lab["paths"]["clouds_yaml"]).read_text())
    clouds["clouds"]["healthd-lab"]["auth"]["auth_url"] = f"http://127.0.0.1:{port}/v3"
    path = tmp_path / "clouds.yaml"
    path.write_text(yaml.safe_dump(clouds))
    return path


def test_keystone_answering_500_is_unknown(lab: dict[str, Any], keystone_500: int, tmp_path: Path) -> None:
    backends = lab_backends(lab, clouds_yaml=_clouds_yaml(lab, tmp_path, keystone_500))
    result = run(backends)
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith("Keystone service list:"), result.summary
    assert "500" in result.summary or "Internal" in result.summary


def test_keystone_unreachable_is_unknown(lab: dict[str, Any], tmp_path: Path) -> None:
    backends = lab_backends(lab, clouds_yaml=_clouds_yaml(lab, tmp_path, free_port()))
    result = run(backends)
    assert result.status is Status.UNKNOWN and result.summary.startswith("Keystone service list:")
    auth = yaml.safe_load(Path(lab["paths"]["clouds_yaml"]).read_text())["clouds"]["healthd-lab"]["auth"]
    assert auth["password"] not in result.everything() + json.dumps(result.result.as_dict())
