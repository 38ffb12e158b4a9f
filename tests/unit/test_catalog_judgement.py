"""checks.catalog's judgement on plain services and endpoints: no keystone, no database.

What keystone does and the probe relies on: a token's catalog carries only enabled
services and, of those, only enabled endpoints (keystone/catalog/backends/sql.py
get_v3_catalog filters on enabled); clients pick the first entry of a type.
"""

from __future__ import annotations

from typing import Any

import pytest

from checks.catalog import Catalog, CatalogProbe, Endpoint, Service, _extra_name, judge
from healthd.model import Report, Result, Severity, Status

INTERFACES = ("public", "internal", "admin")


def svc(sid: str, type_: str, name: str = "", enabled: bool = True) -> Service:
    return Service(sid, type_, name, enabled)


def eps(sid: str, interfaces: tuple[str, ...] = INTERFACES, region: str = "RegionOne",
        enabled: bool = True) -> list[Endpoint]:
    return [Endpoint(f"{sid}-{region}-{i}", sid, i, region, enabled) for i in interfaces]


def healthy() -> tuple[list[Service], list[Endpoint]]:
    services = [svc("ks", "identity", "keystone"), svc("nova", "compute", "nova"),
                svc("placement", "placement", "placement"), svc("neutron", "network", "neutron")]
    return services, [e for s in services for e in eps(s.id)]


def judged(services: list[Service], endpoints: list[Endpoint], **settings: Any) -> Result:
    report = Report(CatalogProbe.name, CatalogProbe.metrics)
    judge(Catalog(services, endpoints), CatalogProbe.Settings(**settings), report)
    return report.result(0, 0)


def value(result: Result, name: str, **labels: str) -> float | None:
    want = sorted(labels.items())
    found = [s.value for s in result.samples if s.name == name and sorted(s.labels) == want]
    assert len(found) <= 1
    return found[0] if found else None


def problems(result: Result) -> dict[str, float]:
    return {dict(s.labels)["kind"]: s.value for s in result.samples if s.name == "healthd_catalog_problems"}


def test_healthy_catalog_is_ok_with_every_series() -> None:
    result = judged(*healthy())
    assert result.status is Status.OK and result.findings == ()
    assert result.summary == "4 services, 12 endpoints, no problems"
    assert value(result, "healthd_catalog_services", type="network") == 1
    assert value(result, "healthd_catalog_duplicate_services", type="network") == 0
    assert value(result, "healthd_catalog_service_endpoints", service_id="nova", type="compute") == 3
    assert value(result, "healthd_catalog_service_info", service_id="nova", type="compute",
                 service_name="nova", enabled="true") == 1
    assert value(result, "healthd_catalog_endpoints") == 12
    # every kind is exported, 0 when clean, so a fixed problem's series does not vanish
    assert problems(result) == dict.fromkeys(problems(result), 0) and len(problems(result)) == 7


def test_endpointless_duplicate_is_critical_and_names_the_one_to_keep() -> None:
    services, endpoints = healthy()
    result = judged([*services, svc("dirty", "network", "neutron")], endpoints)
    assert result.status is Status.CRITICAL
    [finding] = result.findings
    assert finding.subject == "service dirty"
    assert "keep neutron (name neutron, 3 endpoints)" in finding.message
    assert "Invalid service catalog service: network" in finding.message
    assert finding.remediation.startswith("openstack service delete dirty; ")
    assert "memcached" in finding.remediation
    assert value(result, "healthd_catalog_services", type="network") == 2
    assert value(result, "healthd_catalog_duplicate_services", type="network") == 1
    assert value(result, "healthd_catalog_service_endpoints", service_id="dirty", type="network") == 0
    # reported once, as a duplicate, not again as an endpointless service
    assert problems(result)["duplicate_service"] == 1 and problems(result)["service_without_endpoints"] == 0
    assert result.summary == "5 services, 12 endpoints, 1 problems"


def test_duplicate_whose_endpoints_are_all_disabled_counts_as_empty() -> None:
    services, endpoints = healthy()
    result = judged([*services, svc("dirty", "network", "neutron")],
                    endpoints + eps("dirty", ("public",), enabled=False))
    severities = {(f.subject, f.severity) for f in result.findings}
    assert severities == {("service dirty", Severity.CRITICAL),
                          ("endpoint dirty-RegionOne-public", Severity.INFO)}
    assert problems(result)["duplicate_service"] == 1 and problems(result)["disabled_endpoint"] == 1


def test_duplicates_none_of_which_has_endpoints_are_one_critical() -> None:
    services, endpoints = healthy()
    services += [svc("net-a", "image", "glance"), svc("net-b", "image", "glance")]
    result = judged(services, endpoints)
    assert result.status is Status.CRITICAL
    [finding] = result.findings
    assert finding.subject == "services net-a, net-b"
    assert "2 image services and none has an enabled endpoint" in finding.message
    assert "openstack endpoint create net-a public URL" in finding.remediation
    assert value(result, "healthd_catalog_duplicate_services", type="image") == 2
    assert problems(result)["duplicate_service"] == 2 and problems(result)["service_without_endpoints"] == 0


def test_disabled_second_service_is_no_duplicate() -> None:
    services, endpoints = healthy()
    result = judged([*services, svc("old", "network", "neutron", enabled=False)], endpoints)
    assert result.status is Status.OK and result.findings == ()
    assert value(result, "healthd_catalog_services", type="network") == 2  # counted, not judged
    assert value(result, "healthd_catalog_service_info", service_id="old", type="network",
                 service_name="neutron", enabled="false") == 1


def test_two_services_with_endpoints_in_one_region_are_ambiguous() -> None:
    services, endpoints = healthy()
    # the second lacks internal/admin: not reported, the ambiguity is the finding
    result = judged([*services, svc("neutron-new", "network", "neutron")],
                    endpoints + eps("neutron-new", ("public",)))
    assert result.status is Status.CRITICAL
    [finding] = result.findings
    assert finding.subject == "services neutron, neutron-new"
    assert "2 network services have endpoints in region RegionOne" in finding.message
    assert "`openstack endpoint list --service <id>` for neutron, neutron-new" in finding.remediation
    assert problems(result)["ambiguous_service"] == 1 and problems(result)["missing_interface"] == 0
    assert value(result, "healthd_catalog_duplicate_services", type="network") == 1


def test_services_of_one_type_in_different_regions_are_fine() -> None:
    services, endpoints = healthy()
    result = judged([*services, svc("neutron-2", "network", "neutron")],
                    endpoints + eps("neutron-2", region="RegionTwo"))
    assert result.status is Status.OK and result.findings == ()


def test_ambiguous_pair_plus_an_empty_one() -> None:
    services, endpoints = healthy()
    services += [svc("neutron-new", "network"), svc("empty", "network")]
    result = judged(services, endpoints + eps("neutron-new"))
    subjects = sorted(f.subject for f in result.findings)
    assert subjects == ["service empty", "services neutron, neutron-new"]
    [dup] = [f for f in result.findings if f.subject == "service empty"]
    assert "keep neutron (name neutron, 3 endpoints), neutron-new (name -, 3 endpoints)" in dup.message
    assert value(result, "healthd_catalog_duplicate_services", type="network") == 2


def test_lonely_service_without_endpoints_is_warning() -> None:
    services, endpoints = healthy()
    result = judged([*services, svc("swift", "object-store")], endpoints)
    assert result.status is Status.WARNING
    [finding] = result.findings
    assert finding.subject == "service swift"
    assert "object-store service swift (name -) has no enabled endpoint" in finding.message
    assert "openstack endpoint create swift public|internal|admin URL --region REGION" in finding.remediation
    assert "openstack service delete swift" in finding.remediation
    assert problems(result)["service_without_endpoints"] == 1


def test_disabled_service_without_endpoints_is_not_reported() -> None:
    services, endpoints = healthy()
    result = judged([*services, svc("swift", "object-store", enabled=False)], endpoints)
    assert result.findings == ()


def test_orphan_endpoint_is_critical_even_when_disabled() -> None:
    services, endpoints = healthy()
    orphan = Endpoint("ep-orphan", "gone", "public", "", True)
    disabled_orphan = Endpoint("ep-orphan2", "gone", "admin", "RegionOne", False)
    result = judged(services, [*endpoints, orphan, disabled_orphan])
    assert result.status is Status.CRITICAL
    assert [(f.subject, f.severity) for f in result.findings] == [
        ("endpoint ep-orphan", Severity.CRITICAL), ("endpoint ep-orphan2", Severity.CRITICAL)]
    first = result.findings[0]
    assert ("public endpoint ep-orphan in region - belongs to service gone, which does not exist"
            in first.message)
    assert first.remediation.startswith("openstack endpoint delete ep-orphan ")
    assert problems(result)["orphan_endpoint"] == 2 and problems(result)["disabled_endpoint"] == 0
    assert value(result, "healthd_catalog_endpoints") == 14


def test_disabled_endpoint_is_info_and_not_counted_as_live() -> None:
    services, endpoints = healthy()
    extra = Endpoint("ep-off", "nova", "public", "RegionTwo", False)
    result = judged(services, [*endpoints, extra])
    assert result.status is Status.OK  # INFO only; RegionTwo has no live endpoint: no missing interface
    [finding] = result.findings
    assert finding.severity is Severity.INFO and finding.subject == "endpoint ep-off"
    assert "openstack endpoint set --enable ep-off" in finding.remediation
    assert value(result, "healthd_catalog_service_endpoints", service_id="nova", type="compute") == 3
    assert value(result, "healthd_catalog_endpoints") == 13
    assert problems(result)["disabled_endpoint"] == 1


def test_disabled_service_with_enabled_endpoints_is_one_warning() -> None:
    services, endpoints = healthy()
    services.append(svc("designate", "dns", "designate", enabled=False))
    # only public and internal: a disabled service is not judged for missing interfaces
    endpoints += [*eps("designate", ("public", "internal")),
                  Endpoint("dns-off", "designate", "public", "RegionTwo", False)]
    result = judged(services, endpoints)
    assert result.status is Status.WARNING
    by_subject = {f.subject: f for f in result.findings}
    assert len(result.findings) == 2
    hidden = by_subject["service designate"]
    assert hidden.severity is Severity.WARNING
    assert "is disabled, so keystone hides its 2 enabled endpoints" in hidden.message
    assert "openstack service set --enable designate" in hidden.remediation
    assert by_subject["endpoint dns-off"].severity is Severity.INFO
    assert problems(result)["disabled_service_with_endpoints"] == 1
    assert problems(result)["missing_interface"] == 0  # a disabled service needs no interfaces


def test_missing_interface_critical_but_admin_only_warning() -> None:
    services, endpoints = healthy()
    services += [svc("glance", "image", "glance"), svc("cinder", "volumev3", "cinderv3")]
    endpoints += eps("glance", ("public", "admin")) + eps("cinder", ("public", "internal"))
    result = judged(services, endpoints)
    assert result.status is Status.CRITICAL
    assert [(f.subject, f.severity) for f in result.findings] == [
        ("service cinder", Severity.WARNING), ("service glance", Severity.CRITICAL)]
    no_internal = result.findings[1]
    assert "has no internal endpoint in region RegionOne" in no_internal.message
    assert no_internal.remediation.startswith(
        "openstack endpoint create --region RegionOne glance internal URL")
    assert problems(result)["missing_interface"] == 2


def test_interface_settings() -> None:
    services, endpoints = healthy()
    services += [svc("glance", "image"), svc("cinder", "volumev3")]
    endpoints += eps("glance", ("public", "admin")) + eps("cinder", ("public", "internal"))
    relaxed = judged(services, endpoints, required_interfaces=["public", "internal"])
    assert [(f.subject, f.severity) for f in relaxed.findings] == [("service glance", Severity.CRITICAL)]
    soft = judged(services, endpoints, warning_interfaces=["admin", "internal"])
    assert soft.status is Status.WARNING
    repeated = judged(services, endpoints, required_interfaces=["internal", "internal"])
    assert len(repeated.findings) == 1


def test_missing_interfaces_are_judged_per_region() -> None:
    services, endpoints = healthy()
    result = judged(services, endpoints + eps("nova", ("public",), region="RegionTwo"))
    assert [(f.severity, f.message.split(" has no ")[1].split(":")[0]) for f in result.findings] == [
        (Severity.CRITICAL, "internal endpoint in region RegionTwo"),
        (Severity.WARNING, "admin endpoint in region RegionTwo")]


def test_endpoint_without_region() -> None:
    services = [svc("ks", "identity", "keystone")]
    result = judged(services, eps("ks", ("public", "internal"), region=""))
    [finding] = result.findings
    assert "no admin endpoint in region -" in finding.message
    assert finding.remediation.startswith("openstack endpoint create ks admin URL")


def test_empty_catalog() -> None:
    result = judged([], [])
    assert result.status is Status.OK
    assert result.summary == "0 services, 0 endpoints, no problems"
    assert value(result, "healthd_catalog_endpoints") == 0


@pytest.mark.parametrize(("extra", "name"), [
    ('{"name": "neutron", "description": "x"}', "neutron"),
    ('{"description": "x"}', ""),
    (None, ""),
    ("not json", ""),
    ("[1, 2]", ""),
    ('{"name": null}', ""),
])
def test_service_name_from_the_extra_column(extra: str | None, name: str) -> None:
    assert _extra_name(extra) == name
