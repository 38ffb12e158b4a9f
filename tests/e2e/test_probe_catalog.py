"""catalog probe end to end on the loopback lab: real Keystone 30, real catalog.

The faults are made the way they happen in the field: a second `network`
service created through the Keystone API (lab fault `duplicate-service`);
endpoints deleted with `openstack endpoint delete`, every internal and admin
one (`catalog-public-only`, devstack's shape, healthy) or the image service's
only (`catalog-missing-interface`, a service lacking what the others have).
Whether a client really fails is asked of keystoneauth itself, the way
keystonemiddleware and nova build their adapters. Keystone down is a real
HTTP server answering 500, and a port where nothing listens.
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
from keystoneauth1 import adapter, session
from keystoneauth1 import exceptions as ksa_exceptions
from keystoneauth1.identity import v3

from checks.catalog import CatalogProbe
from healthd.connections import Backends
from healthd.model import Severity, Status
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


def nova_confs(lab: dict[str, Any]) -> str:
    """The glob an operator would list: the lab's nova.conf and its computes' configs."""
    return str(Path(lab["paths"]["nova_conf"]).parent / "nova*.conf")


def lookup(lab: dict[str, Any], service_type: str, interfaces: list[str]) -> str:
    """What a keystoneauth client finds, the way keystonemiddleware (interface=...) and nova
    (valid_interfaces) build their Adapter: a fresh token, so today's catalog."""
    auth = yaml.safe_load(Path(lab["paths"]["clouds_yaml"]).read_text())["clouds"]["healthd-lab"]["auth"]
    sess = session.Session(auth=v3.Password(**auth))
    ad = adapter.Adapter(sess, service_type=service_type, interface=interfaces, region_name="RegionOne")
    return str(ad.get_endpoint())


def test_public_only_catalog_is_clean_and_judged_by_the_configs(lab: dict[str, Any], lab_api: Any) -> None:
    backends = lab_backends(lab)
    lab_api.inject("catalog-public-only")  # openstack endpoint delete <every internal and admin>
    try:
        for source in ("api", "db"):
            result = run(backends, source=source)
            assert result.status is Status.OK, (source, [f.as_dict() for f in result.findings])
            assert result.findings == []
            assert result.value("healthd_catalog_endpoints") == 5
        # nova's clients fall back: [placement] valid_interfaces = public (the lab's), and
        # nova's default internal,public. keystonemiddleware has no fallback: the lab's
        # [keystone_authtoken] sets no interface, its default is internal.
        assert lookup(lab, "placement", ["internal", "public"]).startswith("http://127.0.0.1:")
        with pytest.raises(ksa_exceptions.EndpointNotFound):
            lookup(lab, "identity", ["internal"])
        result = run(backends, config_files=[nova_confs(lab)])
        assert result.status is Status.CRITICAL
        [finding] = result.findings
        assert finding.severity is Severity.CRITICAL and finding.subject.startswith("service ")
        assert "identity service" in finding.message and "has no internal endpoint" in finding.message
        assert "nova.conf [keystone_authtoken] uses its default interface internal: none exists" \
            in finding.message
        assert "or set interface = public in" in finding.remediation
    finally:
        lab_api.revert("catalog-public-only")
    cleared = run(backends, config_files=[nova_confs(lab)])
    assert cleared.status is Status.OK and cleared.findings == []
    assert cleared.value("healthd_catalog_endpoints") == 15


def test_service_missing_what_the_others_have(lab: dict[str, Any], lab_api: Any, tmp_path: Path) -> None:
    backends = lab_backends(lab)
    info = lab_api.inject("catalog-missing-interface")  # the image service's internal and admin
    image = info["service_id"]
    try:
        for source in ("api", "db"):
            result = run(backends, source=source)
            assert result.status is Status.WARNING, (source, [f.as_dict() for f in result.findings])
            [finding] = result.findings
            assert finding.subject == f"service {image}"
            assert ("in region RegionOne has no internal endpoint (4 of the 5 services in the region have "
                    "one); no admin endpoint (4 of the 5") in finding.message
            assert f"openstack endpoint create --region RegionOne {image} internal URL" in finding.remediation
        # the lab's nova.conf selects public for glance: nova works, still a WARNING
        assert lookup(lab, "image", ["public"]).startswith("http://127.0.0.1:")
        assert run(backends, config_files=[nova_confs(lab)]).status is Status.WARNING
        # a nova.conf like kolla-ansible's, internal only: nova's image calls fail
        with pytest.raises(ksa_exceptions.EndpointNotFound):
            lookup(lab, "image", ["internal"])
        kolla = tmp_path / "nova.conf"
        kolla.write_text("[glance]\nvalid_interfaces = internal\nregion_name = RegionOne\n")
        result = run(backends, config_files=[str(kolla)])
        assert result.status is Status.CRITICAL
        [finding] = result.findings
        assert finding.subject == f"service {image}"
        assert f"{kolla} [glance] sets valid_interfaces = internal: none exists, so that client fails " \
            "with EndpointNotFound" in finding.message
    finally:
        lab_api.revert("catalog-missing-interface")
    cleared = run(backends, config_files=[nova_confs(lab)])
    assert cleared.status is Status.OK and cleared.findings == []


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
