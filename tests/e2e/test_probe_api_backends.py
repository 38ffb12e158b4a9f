"""api_backends end to end on the loopback lab: the real catalog of Keystone 30, the real
keystone, placement, nova and glance APIs, and Debian's HAProxy in front of two keystones.

Faults (lab/healthd_lab/faults_backends.py): `keystone-haproxy` puts HAProxy (a VIP port,
`option httpchk GET /healthcheck`, a stats socket) in front of the lab keystone and a second
keystone worker; `keystone-backend-down` stops that second worker; `keystone-bind-failure`
has another process take its port before it is started again (it exits: Address already in
use), the seed's AH00072. The probe finds HAProxy's backend by itself (the servers' port is
the catalog's identity port); no mapping is configured.
"""

from __future__ import annotations

from typing import Any

import pytest

from checks.api_backends import ApiBackendsProbe
from healthd.model import Severity, Status
from tests.helpers.probes import ProbeRun, lab_backends, run_probe

pytestmark = pytest.mark.e2e


def run(lab: dict[str, Any], info: dict[str, Any] | None = None, **settings: Any) -> ProbeRun:
    if info is not None:
        settings.setdefault("endpoints", [{"service": "identity", "url": info["vip"]}])
        settings.setdefault("haproxy", [{"name": "lab-lb", "socket": info["socket"]}])
    settings.setdefault("request_timeout", 5)
    probe = ApiBackendsProbe(ApiBackendsProbe.Settings(timeout=30, **settings))
    return run_probe(probe, lab_backends(lab))


def url(lab: dict[str, Any], port_key: str, suffix: str = "") -> str:
    return f"http://127.0.0.1:{lab['ports'][port_key]}{suffix}"


def test_healthy_lab_every_endpoint_answers(lab: dict[str, Any]) -> None:
    result = run(lab)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert result.findings == []
    region = "RegionOne"
    # keystone-manage bootstrap registered identity with a trailing slash (lab.py up)
    for service, key, suffix in (("identity", "keystone", "/v3/"), ("placement", "placement", ""),
                                 ("compute", "nova_api", "/v2.1"), ("image", "glance", ""),
                                 ("network", "network", "")):
        labels = {"service": service, "region": region, "url": url(lab, key, suffix)}
        assert result.value("healthd_api_backends_endpoint_up", **labels) == 1, (service, result.values(
            "healthd_api_backends_endpoint_up"))
        latency = result.value("healthd_api_backends_endpoint_latency_seconds", **labels)
        assert latency is not None and 0 < latency < 5
    # the public, internal and admin endpoints of the lab share one URL each: probed once
    assert len(result.values("healthd_api_backends_endpoint_up")) == 5


def test_backend_stopped_behind_haproxy_then_back(lab: dict[str, Any], lab_api: Any) -> None:
    try:
        info = lab_api.inject("keystone-haproxy")
        ks1, ks2 = info["servers"]["ks1"], info["servers"]["ks2"]
        healthy = run(lab, info)
        assert healthy.status is Status.OK, [f.as_dict() for f in healthy.findings]
        for address in (ks1, ks2):
            assert healthy.value("healthd_api_backends_backend_up", service="identity", address=address) == 1
        assert healthy.value("healthd_api_backends_haproxy_server_up", lb="lab-lb", backend="keystone_api",
                             server="ks2") == 1
        assert healthy.value("healthd_api_backends_endpoint_up", service="identity", region="",
                             url=info["vip"]) == 1

        lab_api.inject("keystone-backend-down")  # keystone-2's process ends
        fault = run(lab, info)
        assert fault.status is Status.WARNING, [f.as_dict() for f in fault.findings]
        [finding] = fault.findings
        assert finding.subject == f"backend {ks2} (identity)"
        assert "connection refused" in finding.message and "capacity lost" in finding.message
        assert "lab-lb keystone_api/ks2: DOWN" in finding.message  # HAProxy's own view
        assert fault.value("healthd_api_backends_backend_up", service="identity", address=ks2) == 0
        assert fault.value("healthd_api_backends_haproxy_server_up", lb="lab-lb", backend="keystone_api",
                           server="ks2") == 0
        assert fault.value("healthd_api_backends_service_backends_up", service="identity") == 1
        assert fault.value("healthd_api_backends_endpoint_up", service="identity", region="",
                           url=info["vip"]) == 1

        lab_api.revert("keystone-backend-down")  # keystone-2 started again
        again = run(lab, info)
        assert again.status is Status.OK, [f.as_dict() for f in again.findings]
        assert again.value("healthd_api_backends_backend_up", service="identity", address=ks2) == 1

        # The load balancer's process ends: the VIP is down while both keystones answer.
        lab_api.Lab().stop("haproxy")
        vip_down = run(lab, info)
        assert vip_down.status is Status.CRITICAL, [f.as_dict() for f in vip_down.findings]
        [vip] = vip_down.about(f"endpoint {info['vip']}", Severity.CRITICAL)
        assert "connection refused" in vip.message and "clients fail now" in vip.message
        assert vip_down.about("load balancer lab-lb", Severity.WARNING)  # its stats socket is gone
        # HAProxy's list is gone with it; the same backends as a static list are still probed
        static = [{"service": "identity", "servers": [ks1, ks2]}]
        vip_down = run(lab, info, haproxy=[], static_backends=static)
        [vip] = vip_down.about(f"endpoint {info['vip']}", Severity.CRITICAL)
        assert "2 of 2 backend(s) answer directly" in vip.message
    finally:
        lab_api.revert("keystone-backend-down")
        lab_api.revert("keystone-haproxy")


def test_keystone_that_cannot_bind_its_port(lab: dict[str, Any], lab_api: Any) -> None:
    try:
        info = lab_api.inject("keystone-bind-failure")  # with keystone-haproxy under it
        ks2 = info["address"]
        fault = run(lab, info, request_timeout=2)
        assert fault.status is Status.WARNING, [f.as_dict() for f in fault.findings]
        [finding] = fault.about(ks2, Severity.WARNING)
        # the port's holder accepts and never answers: no HTTP answer from "keystone"
        assert "no complete answer within 2 s" in finding.message
        assert "keystone_api/ks2: DOWN" in finding.message
        assert "ss -ltnp sport = :" in finding.remediation
        assert fault.value("healthd_api_backends_endpoint_up", service="identity", region="",
                           url=info["vip"]) == 1

        lab_api.revert("keystone-bind-failure")  # the holder ends, keystone-2 starts
        again = run(lab, info)
        assert again.status is Status.OK, [f.as_dict() for f in again.findings]
    finally:
        lab_api.revert("keystone-bind-failure")
        lab_api.revert("keystone-haproxy")
