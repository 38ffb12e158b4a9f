"""checks.catalog's judgement on plain services, endpoints and clients: no keystone, no database.

What keystone does and the probe relies on: a token's catalog carries only enabled
services and, of those, only enabled endpoints whose URL keystone can substitute
(keystone/catalog/backends/sql.py get_v3_catalog, keystone/common/utils.py format_url).
What clients do: keystoneauth takes the first interface of its list that has an
endpoint of the type in its region, none raises EndpointNotFound
(keystoneauth1/access/service_catalog.py get_endpoints_data / endpoint_data_for);
Horizon takes the first catalog entry of a type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from checks.catalog import (
    Catalog,
    CatalogProbe,
    Client,
    ConfigProblem,
    Endpoint,
    Service,
    _extra_name,
    clients_of,
    judge,
    read_clients,
    same_type,
    url_formats,
)
from healthd.model import Report, Result, Severity, Status
from healthd.openstack import oslo_ini

INTERFACES = ("public", "internal", "admin")


def svc(sid: str, type_: str, name: str = "", enabled: bool = True) -> Service:
    return Service(sid, type_, name, enabled)


def eps(sid: str, interfaces: tuple[str, ...] = INTERFACES, region: str = "RegionOne",
        enabled: bool = True, url: str = "http://127.0.0.1/x") -> list[Endpoint]:
    return [Endpoint(f"{sid}-{region}-{i}", sid, i, region, enabled, url) for i in interfaces]


def healthy(interfaces: tuple[str, ...] = INTERFACES) -> tuple[list[Service], list[Endpoint]]:
    services = [svc("ks", "identity", "keystone"), svc("nova", "compute", "nova"),
                svc("placement", "placement", "placement"), svc("neutron", "network", "neutron")]
    return services, [e for s in services for e in eps(s.id, interfaces)]


def judged(services: list[Service], endpoints: list[Endpoint], clients: list[Client] | None = None,
           problems: list[ConfigProblem] | None = None, **settings: Any) -> Result:
    report = Report(CatalogProbe.name, CatalogProbe.metrics)
    judge(Catalog(services, endpoints, clients or [], problems or []), CatalogProbe.Settings(**settings),
          report)
    return report.result(0, 0)


def value(result: Result, name: str, **labels: str) -> float | None:
    want = sorted(labels.items())
    found = [s.value for s in result.samples if s.name == name and sorted(s.labels) == want]
    assert len(found) <= 1
    return found[0] if found else None


def problems(result: Result) -> dict[str, float]:
    return {dict(s.labels)["kind"]: s.value for s in result.samples if s.name == "healthd_catalog_problems"}


def nova_client(section: str, type_: str, interfaces: tuple[str, ...], option: str = "valid_interfaces",
                explicit: bool = True, region: str | None = "RegionOne") -> Client:
    return Client("/etc/nova/nova.conf", section, type_, interfaces, option, explicit, region,
                  ",".join(interfaces))


# -- the shapes real clouds have: no finding --------------------------------------------


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
    assert problems(result) == dict.fromkeys(problems(result), 0) and len(problems(result)) == 10


@pytest.mark.parametrize("interfaces", [
    ("public",),  # devstack: get_or_create_endpoint registers public only, keystone bootstrap too
    ("public", "internal"),  # kolla-ansible since Zed: no admin endpoints
    ("public", "internal", "admin"),  # openstack-ansible, older kolla-ansible
])
def test_uniform_catalogs_of_deployment_tools_are_clean(interfaces: tuple[str, ...]) -> None:
    result = judged(*healthy(interfaces))
    assert result.status is Status.OK and result.findings == ()
    assert problems(result)["missing_interface"] == 0


def test_devstack_catalog_with_devstack_configs_is_clean() -> None:
    # devstack's configure_keystoneauth writes `interface = public` (nova ignores it in its
    # keystoneauth groups: valid_interfaces' default internal,public falls back to public).
    services, endpoints = healthy(("public",))
    clients = [nova_client("keystone_authtoken", "identity", ("public",), "interface"),
               nova_client("placement", "placement", ("internal", "public"), "default", explicit=False),
               nova_client("neutron", "network", ("internal", "public"), "default", explicit=False)]
    result = judged(services, endpoints, clients)
    assert result.status is Status.OK and result.findings == ()
    assert result.summary == "4 services, 4 endpoints, no problems; 3 catalog clients from config_files"


def test_kolla_catalog_where_only_keystone_kept_admin_is_clean() -> None:
    services, endpoints = healthy(("public", "internal"))
    endpoints += eps("ks", ("admin",))
    clients = [nova_client("placement", "placement", ("internal",)),
               nova_client("keystone_authtoken", "identity", ("internal",), "default", explicit=False)]
    assert judged(services, endpoints, clients).findings == ()


# -- an interface the rest of the cloud has ------------------------------------------------


def test_service_lacking_the_internal_endpoint_every_other_service_has_is_warning() -> None:
    services, endpoints = healthy(("public", "internal"))
    services.append(svc("glance", "image", "glance"))
    endpoints += eps("glance", ("public",))  # its internal endpoint was deleted with the CLI
    result = judged(services, endpoints)
    assert result.status is Status.WARNING
    [finding] = result.findings
    assert finding.subject == "service glance"
    assert finding.message == ("image service glance (name glance) in region RegionOne has no internal "
                               "endpoint (4 of the 5 services in the region have one).")
    assert finding.remediation.startswith(
        "openstack endpoint create --region RegionOne glance internal URL; ")
    assert "memcached" in finding.remediation
    assert problems(result)["missing_interface"] == 1


def test_admin_that_only_the_others_have_is_info() -> None:
    services, endpoints = healthy()
    services.append(svc("glance", "image", "glance"))
    endpoints += eps("glance", ("public", "internal"))
    result = judged(services, endpoints)
    assert result.status is Status.OK
    [finding] = result.findings
    assert finding.severity is Severity.INFO and "no admin endpoint (4 of the 5" in finding.message
    # internal and admin gone: one finding, as severe as the worst
    endpoints = [e for e in endpoints if e.id != "glance-RegionOne-internal"]
    [both] = judged(services, endpoints).findings
    assert both.severity is Severity.WARNING
    assert "has no internal endpoint (4 of the 5 services in the region have one); no admin" \
        in both.message
    counts = problems(judged(services, endpoints))
    assert counts["missing_interface"] == 1 and counts["missing_admin_interface"] == 1


def test_a_minority_of_services_with_an_interface_sets_no_convention() -> None:
    # devstack with the s3 plugin: one service has public, internal and admin
    services, endpoints = healthy(("public",))
    services.append(svc("s3", "s3", "s3"))
    endpoints += eps("s3")
    assert judged(services, endpoints).findings == ()
    # two of four without internal: half is no majority, neither is flagged
    services, endpoints = healthy(("public", "internal"))
    endpoints = [e for e in endpoints
                 if not (e.service_id in ("nova", "neutron") and e.interface == "internal")]
    assert judged(services, endpoints).findings == ()
    # one of four without internal: the three others are a majority
    services, endpoints = healthy(("public", "internal"))
    endpoints = [e for e in endpoints if e.id != "nova-RegionOne-internal"]
    [finding] = judged(services, endpoints).findings
    assert finding.subject == "service nova" and "3 of the 4 services" in finding.message
    # a region of two services, one with internal: no majority either
    services, endpoints = healthy(("public",))
    endpoints += eps("ks", ("internal",), "RegionOne")
    assert judged(services[:2], [e for e in endpoints if e.service_id in ("ks", "nova")]).findings == ()


def test_missing_public_is_judged_like_the_others() -> None:
    services, endpoints = healthy(("public", "internal"))
    endpoints = [e for e in endpoints if e.id != "placement-RegionOne-public"]
    [finding] = judged(services, endpoints).findings
    assert finding.severity is Severity.WARNING and "has no public endpoint" in finding.message


def test_interfaces_are_judged_per_region() -> None:
    services, endpoints = healthy()
    # RegionTwo has only nova, public only: no other service there sets a convention
    assert judged(services, endpoints + eps("nova", ("public",), region="RegionTwo")).findings == ()
    # RegionTwo: identity and placement have internal, nova does not
    endpoints += eps("ks", ("public", "internal"), "RegionTwo") + eps("placement", ("public", "internal"),
                                                                       "RegionTwo")
    endpoints += eps("nova", ("public",), "RegionTwo")
    [finding] = judged(services, endpoints).findings
    assert finding.subject == "service nova"
    assert "in region RegionTwo has no internal endpoint (2 of the 3 services" in finding.message
    assert finding.remediation.startswith("openstack endpoint create --region RegionTwo nova internal URL")


def test_required_interfaces_setting_is_a_policy_warning() -> None:
    services, endpoints = healthy(("public",))
    result = judged(services, endpoints, required_interfaces=["public", "internal"])
    assert result.status is Status.WARNING
    assert [f.subject for f in result.findings] == ["service ks", "service neutron", "service nova",
                                                    "service placement"]
    assert all("checks.catalog.required_interfaces lists it" in f.message for f in result.findings)
    repeated = judged(services, endpoints, required_interfaces=["internal", "internal"])
    assert len(repeated.findings) == 4


def test_endpoint_without_region() -> None:
    services = [svc("ks", "identity", "keystone")]
    result = judged(services, eps("ks", ("public", "internal"), region=""), required_interfaces=["admin"])
    [finding] = result.findings
    assert "in region - has no admin endpoint" in finding.message
    assert finding.remediation.startswith("openstack endpoint create ks admin URL")


def test_old_warning_interfaces_setting_is_accepted_and_ignored() -> None:
    settings = CatalogProbe.Settings.model_validate({"warning_interfaces": ["admin"]})
    assert "warning_interfaces" not in settings.model_dump()
    assert settings.required_interfaces == [] and settings.config_files == []


# -- clients read from config_files ----------------------------------------------------------


def test_client_whose_only_interface_is_missing_is_critical() -> None:
    services, endpoints = healthy(("public",))
    services.append(svc("glance", "image", "glance"))
    endpoints += eps("glance", ("public",))
    result = judged(services, endpoints, [nova_client("glance", "image", ("internal",))])
    assert result.status is Status.CRITICAL
    [finding] = result.findings
    assert finding.subject == "service glance"
    assert ("has no internal endpoint (/etc/nova/nova.conf [glance] sets valid_interfaces = internal: "
            "none exists, so that client fails with EndpointNotFound)") in finding.message
    assert "or add an interface that exists to valid_interfaces in /etc/nova/nova.conf [glance]" \
        in finding.remediation
    assert problems(result)["client_without_endpoint"] == 1 and problems(result)["missing_interface"] == 0


def test_client_that_falls_back_is_warning_and_default_fallback_is_nothing() -> None:
    services, endpoints = healthy(("public",))
    explicit = nova_client("placement", "placement", ("internal", "public"))
    [finding] = judged(services, endpoints, [explicit]).findings
    assert finding.severity is Severity.WARNING and finding.subject == "service placement"
    assert "sets valid_interfaces = internal,public: that client falls back to public" in finding.message
    # nova's own default (internal, public) is what devstack runs on: no finding
    default = nova_client("placement", "placement", ("internal", "public"), "default", explicit=False)
    assert judged(services, endpoints, [default]).findings == ()
    # a client whose preferred interface exists says nothing about the others
    assert judged(services, endpoints, [nova_client("placement", "placement", ("public", "internal"))]
                  ).findings == ()


def test_keystonemiddleware_default_internal_on_a_public_only_catalog_is_critical() -> None:
    services, endpoints = healthy(("public",))
    authtoken = nova_client("keystone_authtoken", "identity", ("internal",), "default", explicit=False)
    [finding] = judged(services, endpoints, [authtoken]).findings
    assert finding.severity is Severity.CRITICAL and finding.subject == "service ks"
    assert "[keystone_authtoken] uses its default interface internal: none exists" in finding.message
    assert "or set interface = public in /etc/nova/nova.conf [keystone_authtoken]" in finding.remediation


def test_client_types_match_with_aliases() -> None:
    services, endpoints = healthy(("public", "internal"))
    services.append(svc("cinder", "block-storage", "cinderv3"))
    endpoints += eps("cinder", ("public",))
    cinder = Client("/etc/nova/nova.conf", "cinder", "volumev3", ("internal",), "catalog_info", True,
                    None, "volumev3:cinderv3:internalURL")
    [finding] = judged(services, endpoints, [cinder]).findings
    assert finding.severity is Severity.CRITICAL and finding.subject == "service cinder"
    assert "sets catalog_info = volumev3:cinderv3:internalURL" in finding.message
    assert same_type("volumev3", "block-storage") and not same_type("volumev3", "image")
    assert same_type("no-such-type", "no-such-type") and not same_type("no-such-type", "image")


def test_client_sees_every_service_of_its_type_and_only_its_region() -> None:
    services, endpoints = healthy(("public",))
    # region-less client: an internal endpoint in another region is enough for keystoneauth
    endpoints += eps("placement", ("public", "internal"), "RegionTwo")
    anywhere = nova_client("placement", "placement", ("internal",), region=None)
    assert judged(services, endpoints, [anywhere]).findings == ()
    pinned = nova_client("placement", "placement", ("internal",))
    [finding] = judged(services, endpoints, [pinned]).findings
    assert finding.severity is Severity.CRITICAL and "in region RegionOne has no internal" in finding.message


def test_client_pinned_to_a_region_without_the_service_is_critical() -> None:
    services, endpoints = healthy()
    typo = nova_client("placement", "placement", ("internal", "public"), "default", False, "regionone")
    result = judged(services, endpoints, [typo])
    [finding] = result.findings
    assert finding.severity is Severity.CRITICAL and finding.subject == "service placement"
    assert ("/etc/nova/nova.conf [placement] looks for placement in region regionone, where the catalog "
            "has no placement endpoint (it has some in RegionOne)") in finding.message
    assert finding.remediation.startswith("fix region_name in /etc/nova/nova.conf [placement]")
    assert problems(result)["client_without_endpoint"] == 1
    # a section for a service the cloud does not run (nova.conf [cinder] without cinder) is boilerplate
    no_cinder = nova_client("cinder", "volumev3", ("public",), "default", False, "RegionOne")
    assert judged(services, endpoints, [no_cinder]).findings == ()


def test_config_problems_are_warnings() -> None:
    services, endpoints = healthy()
    unreadable = ConfigProblem("file /etc/x.conf", "cannot read it", "fix")
    result = judged(services, endpoints, problems=[unreadable])
    assert [(f.severity, f.subject) for f in result.findings] == [(Severity.WARNING, "file /etc/x.conf")]


# -- reading the clients from files (oslo_ini; local files only) ------------------------------


def conf(tmp_path: Path, name: str, text: str) -> oslo_ini.ConfigFile:
    path = tmp_path / name
    path.write_text(text)
    return oslo_ini.read(str(path))


def brief(clients: list[Client]) -> list[tuple[Any, ...]]:
    return [(c.section, c.service_type, c.interfaces, c.option, c.explicit, c.region) for c in clients]


def test_nova_conf_clients(tmp_path: Path) -> None:
    cf = conf(tmp_path, "nova.conf", """
[keystone_authtoken]
www_authenticate_uri = http://ks:5000
auth_url = http://ks:5000
service_type = compute
region_name = RegionOne
[placement]
auth_type = password
interface = internal
[neutron]
valid_interfaces = internal, public
region_name = RegionOne
service_type = network
[glance]
endpoint_override = http://glance:9292
[cinder]
catalog_info = volumev3:cinderv3:internalURL
os_region_name = RegionOne
[service_user]
send_service_user_token = true
valid_interfaces = internal
[barbican]
barbican_endpoint_type = internal
""")
    assert brief(clients_of(cf)) == [
        # keystonemiddleware's default; its service_type names the protected service
        ("keystone_authtoken", "identity", ("internal",), "default", False, "RegionOne"),
        # nova ignores the deprecated `interface` in its keystoneauth groups
        ("placement", "placement", ("internal", "public"), "default", False, None),
        ("neutron", "network", ("internal", "public"), "valid_interfaces", True, "RegionOne"),
        # [glance] with endpoint_override does not use the catalog; [service_user] is no client
        ("cinder", "volumev3", ("internal",), "catalog_info", True, "RegionOne"),
        ("barbican", "key-manager", ("internal",), "barbican_endpoint_type", True, None),
    ]


def test_other_services_files(tmp_path: Path) -> None:
    neutron = conf(tmp_path, "neutron.conf", """
[keystone_authtoken]
interface = public
[nova]
auth_type = password
valid_interfaces = internal
[placement]
endpoint_type = internal
""")
    assert brief(clients_of(neutron)) == [
        ("keystone_authtoken", "identity", ("public",), "interface", True, None),
        # neutron reads endpoint_type only (neutron/conf/common.py), default public
        ("nova", "compute", ("public",), "default", False, None),
        ("placement", "placement", ("internal",), "endpoint_type", True, None),
    ]
    cinder = conf(tmp_path, "cinder.conf", "[nova]\ninterface = internal\nregion_name = R2\n")
    assert brief(clients_of(cinder)) == [("nova", "compute", ("internal",), "interface", True, "R2")]
    other = conf(tmp_path, "octavia.conf", "[glance]\ninterface = internalURL\n[nova]\nauth_type = password\n"
                 "[neutron]\nvalid_interfaces = admin\nservice_type = network\n")
    assert brief(clients_of(other)) == [
        ("neutron", "network", ("admin",), "valid_interfaces", True, None),
        ("glance", "image", ("internal",), "interface", True, None),
        ("nova", "compute", ("public",), "default", False, None),  # keystoneauth's own default
    ]
    assert clients_of(conf(tmp_path, "keystone.conf", "[cache]\nenabled = true\n")) == []


def test_read_clients_reports_missing_and_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "nova.conf").write_text("[placement]\nvalid_interfaces = internal\n")
    (tmp_path / "broken.conf").write_text("no section header\n")
    clients, found = read_clients([str(tmp_path / "*.conf"), str(tmp_path / "nothing-*.conf")])
    assert brief(clients) == [("placement", "placement", ("internal",), "valid_interfaces", True, None)]
    assert [p.subject for p in found] == [f"config_files pattern {tmp_path}/nothing-*.conf",
                                          f"file {tmp_path}/broken.conf"]
    assert "fix checks.catalog.config_files" in found[0].remediation
    assert found[1].message.startswith("cannot read it (oslo.config cannot parse it")


# -- keystone's catalog rules --------------------------------------------------------------


@pytest.mark.parametrize(("url", "ok"), [
    ("http://10.0.0.1:8774/v2.1", True),
    ("http://10.0.0.1:8776/v3/$(project_id)s", True),
    ("http://10.0.0.1:8776/v3/$(tenant_id)s", True),
    ("http://10.0.0.1:8080/v1/AUTH_$(user_id)s", True),
    ("http://10.0.0.1:8776/v3/$(tenant)s", False),  # unknown key: MalformedEndpoint
    ("http://10.0.0.1:8776/v3/$(compute_host)s", False),  # whitelisted but not in keystone's CONF
    ("http://10.0.0.1:8776/v3/%(project_id)", False),  # incomplete format
    ("http://10.0.0.1/a%20b", False),  # a literal % must be %%
    ("http://10.0.0.1/a%%20b", True),
])
def test_url_substitution_as_keystone_does_it(url: str, ok: bool) -> None:
    assert url_formats(url) is ok


def test_malformed_endpoint_is_dropped_from_the_catalog() -> None:
    services, endpoints = healthy(("public", "internal"))
    bad = Endpoint("bad", "nova", "internal", "RegionOne", True, "http://n/$(tenant)s")
    endpoints = [e for e in endpoints if e.id != "nova-RegionOne-internal"] + [bad]
    result = judged(services, endpoints)
    by_subject = {f.subject: f for f in result.findings}
    assert by_subject["endpoint bad"].severity is Severity.WARNING
    assert "keystone drops it from every token's catalog" in by_subject["endpoint bad"].message
    assert by_subject["endpoint bad"].remediation.startswith("openstack endpoint set --url <fixed URL> bad")
    # without it nova lacks the internal endpoint the others have
    assert "has no internal endpoint" in by_subject["service nova"].message
    assert value(result, "healthd_catalog_service_endpoints", service_id="nova", type="compute") == 1
    assert problems(result)["malformed_endpoint"] == 1 and problems(result)["missing_interface"] == 1


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
    assert "2 image services and none has an endpoint in the catalog" in finding.message
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
    assert "object-store service swift (name -) has no endpoint in the catalog" in finding.message
    assert "openstack endpoint create swift public URL --region REGION" in finding.remediation
    assert "openstack service delete swift" in finding.remediation
    assert problems(result)["service_without_endpoints"] == 1


def test_disabled_service_without_endpoints_is_not_reported() -> None:
    services, endpoints = healthy()
    result = judged([*services, svc("swift", "object-store", enabled=False)], endpoints)
    assert result.findings == ()


def test_endpoint_of_an_unlisted_service_is_a_warning_that_explains_the_foreign_key() -> None:
    services, endpoints = healthy()
    orphan = Endpoint("ep-orphan", "gone", "public", "", True)
    disabled_orphan = Endpoint("ep-orphan2", "gone", "admin", "RegionOne", False)
    result = judged(services, [*endpoints, orphan, disabled_orphan])
    assert result.status is Status.WARNING
    assert [(f.subject, f.severity) for f in result.findings] == [
        ("endpoint ep-orphan", Severity.WARNING), ("endpoint ep-orphan2", Severity.WARNING)]
    first = result.findings[0]
    assert ("public endpoint ep-orphan in region - refers to service gone, which keystone does not list. "
            "It is in no catalog; keystone's foreign key forbids such a row") in first.message
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
