"""The catalog probe against a real keystone database (schema from keystone 30's migrations).

Rows are written as keystone's SQL catalog driver writes them
(keystone/catalog/backends/sql.py create_region / create_service /
create_endpoint -> Region/Service/Endpoint.from_dict: attributes go to columns,
everything else, like a service's name and description, into the `extra` JSON).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from checks.catalog import CatalogProbe
from healthd.model import Severity, Status
from tests.helpers.novadb import NovaDB
from tests.helpers.probes import ProbeRun, make_backends, run_probe
from tests.helpers.servers import free_port

INTERFACES = ("public", "internal", "admin")


class Keystone:
    """One per-run keystone database, filled the way keystone-manage bootstrap and the CLI do."""

    def __init__(self, novadb: NovaDB) -> None:
        self.novadb = novadb
        self.db = novadb.create("keystone", "keystone")
        # keystone-manage bootstrap --bootstrap-region-id RegionOne -> create_region
        self.novadb.insert(self.db, "region", {"id": "RegionOne", "description": "", "extra": "{}"})

    def service(self, type_: str, name: str, enabled: bool = True) -> str:
        """`openstack service create --name NAME TYPE` -> POST /v3/services -> create_service."""
        sid = uuid.uuid4().hex
        extra = json.dumps({"name": name, "description": f"OpenStack {name}"})
        self.novadb.insert(
            self.db, "service", {"id": sid, "type": type_, "enabled": int(enabled), "extra": extra}
        )
        return sid

    def endpoint(self, sid: str, interface: str, enabled: bool = True, region: str = "RegionOne",
                 url: str = "") -> str:
        """`openstack endpoint create SID INTERFACE URL --region R` -> create_endpoint."""
        eid = uuid.uuid4().hex
        self.novadb.insert(
            self.db,
            "endpoint",
            {
                "id": eid,
                "legacy_endpoint_id": None,
                "interface": interface,
                "service_id": sid,
                "url": url or f"http://127.0.0.1:9696/{interface}",
                "extra": "{}",
                "enabled": int(enabled),
                "region_id": region,
            },
        )
        return eid

    def full_service(self, type_: str, name: str, interfaces: tuple[str, ...] = INTERFACES) -> str:
        sid = self.service(type_, name)
        for iface in interfaces:
            self.endpoint(sid, iface)
        return sid

    def delete_service(self, sid: str) -> None:
        """`openstack service delete SID`: keystone's catalog Manager.delete_service drops the
        service's endpoints, then the driver deletes the row."""
        self.novadb.exec(f"DELETE FROM `{self.db}`.endpoint WHERE service_id = %s", (sid,))
        self.novadb.exec(f"DELETE FROM `{self.db}`.service WHERE id = %s", (sid,))


@pytest.fixture
def keystone(novadb: NovaDB) -> Keystone:
    ks = Keystone(novadb)
    ks.full_service("identity", "keystone")
    ks.full_service("compute", "nova")
    ks.full_service("placement", "placement")
    ks.full_service("network", "neutron")
    return ks


def run(url: str, password: str | None = None, **settings: object) -> ProbeRun:
    db: dict[str, object] = {"url": url}
    if password:
        db["password"] = password
    backends = make_backends(databases={"keystone": db})
    return run_probe(CatalogProbe(CatalogProbe.Settings(source="db", **settings)), backends)


def test_healthy_catalog_has_no_findings(keystone: Keystone) -> None:
    result = run(NovaDB.url(keystone.db))
    assert result.status is Status.OK, result.findings
    assert result.findings == []
    assert result.value("healthd_catalog_services", type="network") == 1
    assert result.value("healthd_catalog_duplicate_services", type="network") == 0
    assert result.value("healthd_catalog_problems", kind="duplicate_service") == 0
    assert result.value("healthd_catalog_endpoints") == 12


def test_duplicate_endpointless_service_is_critical_and_clears(keystone: Keystone) -> None:
    [keep] = [
        r["id"]
        for r in keystone.novadb.query(f"SELECT id FROM `{keystone.db}`.service WHERE type = 'network'")
    ]
    dirty = keystone.service("network", "neutron")  # the second `openstack service create`
    result = run(NovaDB.url(keystone.db))
    assert result.status is Status.CRITICAL
    [finding] = result.findings
    assert finding.subject == f"service {dirty}"
    assert f"openstack service delete {dirty}" in finding.remediation
    assert "memcached" in finding.remediation and "cache" in finding.remediation
    assert "Invalid service catalog service: network" in finding.message
    assert f"keep {keep}" in finding.message
    assert result.value("healthd_catalog_services", type="network") == 2
    assert result.value("healthd_catalog_duplicate_services", type="network") == 1
    assert result.value("healthd_catalog_service_endpoints", service_id=dirty, type="network") == 0
    assert result.value("healthd_catalog_problems", kind="duplicate_service") == 1

    keystone.delete_service(dirty)
    cleared = run(NovaDB.url(keystone.db))
    assert cleared.status is Status.OK and cleared.findings == []
    assert cleared.value("healthd_catalog_duplicate_services", type="network") == 0


def test_interfaces_the_rest_of_the_cloud_has(keystone: Keystone, tmp_path: Path) -> None:
    no_internal = keystone.full_service("image", "glance", ("public", "admin"))
    no_admin = keystone.full_service("volumev3", "cinderv3", ("public", "internal"))
    result = run(NovaDB.url(keystone.db))
    by_subject = {(f.subject, f.severity) for f in result.findings}
    assert by_subject == {(f"service {no_internal}", Severity.WARNING),
                          (f"service {no_admin}", Severity.INFO)}
    assert result.value("healthd_catalog_problems", kind="missing_interface") == 1
    assert result.value("healthd_catalog_problems", kind="missing_admin_interface") == 1
    # nova.conf selects internal for glance, with no fallback: nova's image calls fail
    conf = tmp_path / "nova.conf"
    conf.write_text("[glance]\nvalid_interfaces = internal\nregion_name = RegionOne\n"
                    "[placement]\nvalid_interfaces = internal,public\n")
    with_configs = run(NovaDB.url(keystone.db), config_files=[str(tmp_path / "*.conf")])
    [glance] = [f for f in with_configs.findings if f.subject == f"service {no_internal}"]
    assert glance.severity is Severity.CRITICAL
    assert f"{conf} [glance] sets valid_interfaces = internal: none exists" in glance.message
    assert with_configs.summary.endswith("; 2 catalog clients from config_files")
    assert with_configs.value("healthd_catalog_problems", kind="client_without_endpoint") == 1


def test_public_only_catalog_is_clean(novadb: NovaDB) -> None:
    """devstack's shape: keystone-manage bootstrap --bootstrap-public-url, public endpoints only."""
    ks = Keystone(novadb)
    for type_, name in (("identity", "keystone"), ("compute", "nova"), ("placement", "placement"),
                        ("image", "glance"), ("network", "neutron")):
        ks.full_service(type_, name, ("public",))
    result = run(NovaDB.url(ks.db))
    assert result.status is Status.OK and result.findings == []


def test_malformed_endpoint_url_is_dropped(keystone: Keystone) -> None:
    sid = keystone.full_service("volumev3", "cinderv3", ("public", "admin"))
    bad = keystone.endpoint(sid, "internal", url="http://127.0.0.1:8776/v3/$(tenant)s")
    result = run(NovaDB.url(keystone.db))
    by_subject = {f.subject: f for f in result.findings}
    assert by_subject[f"endpoint {bad}"].severity is Severity.WARNING
    assert "keystone drops it from every token's catalog" in by_subject[f"endpoint {bad}"].message
    assert "no internal endpoint" in by_subject[f"service {sid}"].message
    assert result.value("healthd_catalog_problems", kind="malformed_endpoint") == 1


def test_lonely_service_without_endpoints_and_disabled_things(keystone: Keystone) -> None:
    lonely = keystone.service("object-store", "swift")
    hidden = keystone.full_service("dns", "designate")
    keystone.novadb.exec(f"UPDATE `{keystone.db}`.service SET enabled = 0 WHERE id = %s", (hidden,))
    result = run(NovaDB.url(keystone.db))
    severities = {f.subject: f.severity for f in result.findings}
    assert severities[f"service {lonely}"] is Severity.WARNING
    assert severities[f"service {hidden}"] is Severity.WARNING
    assert result.status is Status.WARNING
    assert result.value("healthd_catalog_problems", kind="service_without_endpoints") == 1
    assert result.value("healthd_catalog_problems", kind="disabled_service_with_endpoints") == 1
    assert (
        result.value(
            "healthd_catalog_service_info",
            service_id=hidden,
            type="dns",
            service_name="designate",
            enabled="false",
        )
        == 1
    )


def test_two_services_with_endpoints_in_one_region_are_ambiguous(keystone: Keystone) -> None:
    second = keystone.full_service("network", "neutron-new")
    result = run(NovaDB.url(keystone.db))
    assert result.status is Status.CRITICAL
    [finding] = result.findings
    assert second in finding.subject and "RegionOne" in finding.message
    assert result.value("healthd_catalog_problems", kind="ambiguous_service") == 1


def test_password_never_leaves_the_probe(keystone: Keystone) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    user = keystone.novadb.create_user(
        "catalog",
        canary,
        [f"SELECT ON `{keystone.db}`.`service`", f"SELECT ON `{keystone.db}`.`endpoint`"],
    )
    dirty = keystone.service("network", "neutron")
    url = NovaDB.url(keystone.db, user=user)
    result = run(url, password=canary)
    assert result.status is Status.CRITICAL, result.summary  # the two grants are enough
    assert any(dirty in f.subject for f in result.findings)
    wrong = run(url, password=canary + "x")
    assert wrong.status is Status.UNKNOWN and "access denied" in wrong.summary
    for r in (result, wrong):
        assert canary not in r.everything() + json.dumps(r.result.as_dict())


def test_database_down_is_unknown_with_reason() -> None:
    result = run(f"mysql+pymysql://root@127.0.0.1:{free_port()}/keystone")
    assert result.status is Status.UNKNOWN
    assert "database keystone" in result.summary and "cannot connect" in result.summary
    assert not result.result.completed


def test_api_source_without_cloud_is_unknown() -> None:
    result = run_probe(CatalogProbe(), make_backends())
    assert result.status is Status.UNKNOWN and "no OpenStack cloud configured" in result.summary
