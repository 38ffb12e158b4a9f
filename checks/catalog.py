"""Keystone service catalog: duplicate, endpointless and half-registered services.

The failure this probe exists for: a deployment tool (or a person re-running
`openstack service create`) leaves a second service of a type that already
exists, say two `network` services called neutron, one with endpoints and one
without. Keystone puts both into every token's catalog. Clients and Horizon
pick the first entry of the wanted type; when that is the empty one they fail
with "Invalid service catalog service: network" or EndpointNotFound, while the
service itself runs fine and the CLI may even work (it picked the other one).

Keystone hides disabled services and disabled endpoints from the catalog, so
the probe reasons about what a token would carry:

- services of one type that appear more than once (name the one to delete:
  the endpointless one, and the one to keep: the one with endpoints);
- services with no endpoints, and endpoints whose service is gone or disabled;
- enabled services that lack a required interface (public/internal/admin) in
  a region where they have endpoints.

Catalogs are cached (keystone's own cache in memcached, Horizon's session), so
every fix tells the reader to flush or wait for the cache too.

Sources: the Keystone API (`GET /v3/services`, `GET /v3/endpoints`, two
paginated calls whatever the size of the catalog) or, with `source: db`, the
keystone database's `service` and `endpoint` tables.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from healthd.model import MetricSpec, MetricType, Report, Severity
from healthd.probe import Context, Probe, ProbeSettings

Interface = Literal["public", "internal", "admin"]

CACHE_NOTE = (
    "then restart httpd/memcached (keystone's catalog cache) or wait for the cache expiry, "
    "and have Horizon users log in again"
)

# Every kind of problem has its own series so alerts can tell them apart; all
# kinds are exported (0 when clean) so a series does not vanish when fixed.
PROBLEM_KINDS = (
    "duplicate_service",
    "ambiguous_service",
    "service_without_endpoints",
    "orphan_endpoint",
    "disabled_service_with_endpoints",
    "missing_interface",
    "disabled_endpoint",
)


@dataclass(frozen=True)
class Service:
    id: str
    type: str
    name: str
    enabled: bool


@dataclass(frozen=True)
class Endpoint:
    id: str
    service_id: str
    interface: str
    region: str
    enabled: bool


@dataclass(frozen=True)
class Catalog:
    """Every service and endpoint keystone has, enabled or not (what judge() reasons on)."""

    services: list[Service]
    endpoints: list[Endpoint]


class CatalogProbe(Probe):
    name = "catalog"
    description = "Keystone catalog: duplicate or endpointless services, missing interfaces."
    default_interval = 300.0
    default_timeout = 30.0
    requires = ("openstack",)  # or "db:keystone" with source: db
    privileges = (
        "Keystone: role reader with system scope (identity:list_services and "
        "identity:list_endpoints are admin_required or system reader). "
        "With source: db, SELECT on keystone.service and keystone.endpoint."
    )
    metrics = (
        MetricSpec("healthd_catalog_services", "Services in the catalog, by type.", ("type",)),
        MetricSpec(
            "healthd_catalog_duplicate_services",
            "Services of this type that duplicate another one (to delete or ambiguous).",
            ("type",),
        ),
        MetricSpec(
            "healthd_catalog_service_info",
            "One series per Keystone service, value 1.",
            ("service_id", "type", "service_name", "enabled"),
            MetricType.INFO,
        ),
        MetricSpec(
            "healthd_catalog_service_endpoints",
            "Enabled endpoints of the service (all regions and interfaces).",
            ("service_id", "type"),
        ),
        MetricSpec("healthd_catalog_endpoints", "Endpoints in the catalog, enabled or not.", ()),
        MetricSpec("healthd_catalog_problems", "Catalog problems found, by kind.", ("kind",)),
    )

    class Settings(ProbeSettings):
        source: Literal["api", "db"] = Field("api", description="Keystone API or keystone database")
        required_interfaces: list[Interface] = Field(
            default_factory=lambda: ["public", "internal", "admin"],
            description="interfaces every enabled service needs in each region it is in",
        )
        warning_interfaces: list[Interface] = Field(
            default_factory=lambda: ["admin"],
            description="missing one of these is only a WARNING (many clouds drop admin)",
        )

    settings: Settings

    def run(self, ctx: Context, report: Report) -> None:
        judge(load(ctx, self.settings.source), self.settings, report)


# -- loading: the Keystone API or the keystone database -> Catalog ----------------


def load(ctx: Context, source: str) -> Catalog:
    """Two statements or two paginated API listings, whatever the size of the catalog."""
    services, endpoints = _load_db(ctx) if source == "db" else _load_api(ctx)
    return Catalog(services, endpoints)


def _load_api(ctx: Context) -> tuple[list[Service], list[Endpoint]]:
    conn = ctx.openstack()
    with ctx.api_call("Keystone service list"):
        raw_services = list(conn.identity.services())
    with ctx.api_call("Keystone endpoint list"):
        raw_endpoints = list(conn.identity.endpoints())
    services = [
        Service(str(s.id), str(s.type or ""), str(s.name or ""), bool(s.is_enabled)) for s in raw_services
    ]
    endpoints = [
        Endpoint(str(e.id), str(e.service_id), str(e.interface), str(e.region_id or ""), bool(e.is_enabled))
        for e in raw_endpoints
    ]
    return services, endpoints


def _load_db(ctx: Context) -> tuple[list[Service], list[Endpoint]]:
    with ctx.db("keystone") as db:
        srows = db.query("SELECT id, type, enabled, extra FROM service")
        erows = db.query("SELECT id, service_id, interface, region_id, enabled FROM endpoint")
    services = [Service(r["id"], r["type"] or "", _extra_name(r["extra"]), bool(r["enabled"])) for r in srows]
    endpoints = [
        Endpoint(r["id"], r["service_id"], r["interface"], r["region_id"] or "", bool(r["enabled"]))
        for r in erows
    ]
    return services, endpoints


def _extra_name(extra: Any) -> str:
    """keystone keeps name/description in the service.extra JSON column."""
    try:
        data = json.loads(extra or "{}")
    except (TypeError, ValueError):
        return ""
    return str(data.get("name") or "") if isinstance(data, dict) else ""


# -- judging: what a token's catalog carries (plain data in, no I/O) -------------


def judge(catalog: Catalog, settings: CatalogProbe.Settings, report: Report) -> None:
    """Findings, metrics and summary for one catalog."""
    analysis = Analysis(catalog, settings, report)
    analysis.run()
    _export(report, catalog, analysis)


class Analysis:
    """Reasons about what a token's catalog carries; fills findings, counts problems."""

    def __init__(self, catalog: Catalog, settings: CatalogProbe.Settings, report: Report) -> None:
        self.services = {s.id: s for s in catalog.services}
        self.endpoints = catalog.endpoints
        self.settings = settings
        self.report = report
        self.live: dict[str, list[Endpoint]] = defaultdict(list)  # enabled endpoints per service
        for ep in catalog.endpoints:
            if ep.enabled:
                self.live[ep.service_id].append(ep)
        self.problems: dict[str, int] = dict.fromkeys(PROBLEM_KINDS, 0)
        self.duplicates: dict[str, int] = defaultdict(int)  # per type

    def run(self) -> None:
        flagged = self._duplicates()
        self._without_endpoints(flagged)
        self._orphans_and_disabled()
        self._interfaces(flagged)

    def _count(self, kind: str, type_: str | None = None) -> None:
        self.problems[kind] += 1
        if type_ is not None:
            self.duplicates[type_] += 1

    def _describe(self, svc: Service) -> str:
        return f"{svc.type} service {svc.id} (name {svc.name or '-'})"

    def _duplicates(self) -> set[str]:
        """Enabled services sharing a type. Returns ids already reported."""
        by_type: dict[str, list[Service]] = defaultdict(list)
        for svc in self.services.values():
            if svc.enabled:  # keystone leaves disabled services out of the catalog
                by_type[svc.type].append(svc)
        flagged: set[str] = set()
        for type_, group in sorted(by_type.items()):
            if len(group) < 2:
                continue
            keep = [s for s in group if self.live[s.id]]
            empty = [s for s in group if not self.live[s.id]]
            if keep:
                for svc in empty:
                    self._report_duplicate(svc, keep)
                    flagged.add(svc.id)
            else:
                self._report_all_empty(type_, group)
                flagged.update(s.id for s in group)
            flagged.update(self._ambiguous(type_, keep))
        return flagged

    def _report_duplicate(self, svc: Service, keep: list[Service]) -> None:
        self._count("duplicate_service", svc.type)
        kept = ", ".join(f"{k.id} (name {k.name or '-'}, {len(self.live[k.id])} endpoints)" for k in keep)
        self.report.critical(
            f"service {svc.id}",
            f"duplicate {self._describe(svc)} has no endpoints; keep {kept}. Clients and Horizon "
            f"that pick the empty entry fail with 'Invalid service catalog service: {svc.type}' "
            "or EndpointNotFound.",
            f"openstack service delete {svc.id}; {CACHE_NOTE}",
        )

    def _report_all_empty(self, type_: str, group: list[Service]) -> None:
        for _ in group:
            self._count("duplicate_service", type_)
        ids = ", ".join(s.id for s in group)
        self.report.critical(
            f"services {ids}",
            f"{len(group)} {type_} services and none has an enabled endpoint: every client "
            f"looking for {type_} fails.",
            f"create endpoints for one (openstack endpoint create {group[0].id} public URL ...) and "
            f"delete the others (openstack service delete <id>); {CACHE_NOTE}",
        )

    def _ambiguous(self, type_: str, keep: list[Service]) -> set[str]:
        """Two services of one type with endpoints in the same region: clients pick either."""
        by_region: dict[str, set[str]] = defaultdict(set)
        for svc in keep:
            for ep in self.live[svc.id]:
                by_region[ep.region].add(svc.id)
        flagged: set[str] = set()
        for region, ids in sorted(by_region.items()):
            if len(ids) < 2:
                continue
            self._count("ambiguous_service", type_)
            listed = ", ".join(sorted(ids))
            self.report.critical(
                f"services {listed}",
                f"{len(ids)} {type_} services have endpoints in region {region or '-'}: clients "
                "pick either one, so requests may go to the stale endpoints.",
                f"compare `openstack endpoint list --service <id>` for {listed}, delete the stale "
                f"service with `openstack service delete <id>`; {CACHE_NOTE}",
            )
            flagged |= ids
        return flagged

    def _without_endpoints(self, flagged: set[str]) -> None:
        for svc in sorted(self.services.values(), key=lambda s: s.id):
            if svc.id in flagged or self.live[svc.id] or not svc.enabled:
                continue
            self._count("service_without_endpoints")
            self.report.warning(
                f"service {svc.id}",
                f"{self._describe(svc)} has no enabled endpoint: the catalog carries an empty "
                f"{svc.type} entry and clients looking for {svc.type} fail.",
                f"add its endpoints (openstack endpoint create {svc.id} public|internal|admin URL "
                f"--region REGION) or remove it (openstack service delete {svc.id}); {CACHE_NOTE}",
            )

    def _orphans_and_disabled(self) -> None:
        hidden: dict[str, int] = defaultdict(int)
        for ep in sorted(self.endpoints, key=lambda e: e.id):
            svc = self.services.get(ep.service_id)
            if svc is None:
                self._count("orphan_endpoint")
                self.report.critical(
                    f"endpoint {ep.id}",
                    f"{ep.interface} endpoint {ep.id} in region {ep.region or '-'} belongs to "
                    f"service {ep.service_id}, which does not exist.",
                    f"openstack endpoint delete {ep.id} (or remove the row from keystone.endpoint "
                    f"if the API refuses); {CACHE_NOTE}",
                )
            elif not ep.enabled:
                self._count("disabled_endpoint")
                self.report.finding(
                    Severity.INFO,
                    f"endpoint {ep.id}",
                    f"{ep.interface} endpoint {ep.id} of {self._describe(svc)} in region "
                    f"{ep.region or '-'} is disabled and left out of the catalog.",
                    f"openstack endpoint set --enable {ep.id} if it should be used, or "
                    f"openstack endpoint delete {ep.id}",
                )
            elif not svc.enabled:
                hidden[svc.id] += 1
        for sid, count in sorted(hidden.items()):
            svc = self.services[sid]
            self._count("disabled_service_with_endpoints")
            self.report.warning(
                f"service {sid}",
                f"{self._describe(svc)} is disabled, so keystone hides its {count} enabled "
                "endpoints from the catalog.",
                f"openstack service set --enable {sid} if it should be reachable, otherwise "
                f"openstack service delete {sid}; {CACHE_NOTE}",
            )

    def _interfaces(self, flagged: set[str]) -> None:
        required = list(dict.fromkeys(self.settings.required_interfaces))
        soft = set(self.settings.warning_interfaces)
        for svc in sorted(self.services.values(), key=lambda s: s.id):
            if not svc.enabled or svc.id in flagged:
                continue
            per_region: dict[str, set[str]] = defaultdict(set)
            for ep in self.live[svc.id]:
                per_region[ep.region].add(ep.interface)
            for region, present in sorted(per_region.items()):
                for iface in (i for i in required if i not in present):
                    self._missing_interface(svc, region, iface, iface in soft)

    def _missing_interface(self, svc: Service, region: str, iface: str, soft: bool) -> None:
        self._count("missing_interface")
        where = f"--region {region} " if region else ""
        self.report.finding(
            Severity.WARNING if soft else Severity.CRITICAL,
            f"service {svc.id}",
            f"{self._describe(svc)} has no {iface} endpoint in region {region or '-'}: clients "
            f"configured for the {iface} interface fail with EndpointNotFound.",
            f"openstack endpoint create {where}{svc.id} {iface} URL; {CACHE_NOTE}",
        )


# -- judging: metrics and summary -----------------------------------------------


def _export(report: Report, catalog: Catalog, analysis: Analysis) -> None:
    services, endpoints = catalog.services, catalog.endpoints
    by_type: dict[str, int] = defaultdict(int)
    live: dict[str, int] = defaultdict(int)
    for ep in endpoints:
        if ep.enabled:
            live[ep.service_id] += 1
    for svc in services:
        by_type[svc.type] += 1
        report.metric(
            "healthd_catalog_service_info",
            1,
            service_id=svc.id,
            type=svc.type,
            service_name=svc.name,
            enabled=str(svc.enabled).lower(),
        )
        report.metric("healthd_catalog_service_endpoints", live[svc.id], service_id=svc.id, type=svc.type)
    dupes, problems = analysis.duplicates, analysis.problems
    for type_, count in sorted(by_type.items()):
        report.metric("healthd_catalog_services", count, type=type_)
        report.metric("healthd_catalog_duplicate_services", dupes.get(type_, 0), type=type_)
    report.metric("healthd_catalog_endpoints", len(endpoints))
    for kind, count in problems.items():
        report.metric("healthd_catalog_problems", count, kind=kind)
    total = sum(problems.values())
    report.summary = f"{len(services)} services, {len(endpoints)} endpoints, " + (
        f"{total} problems" if total else "no problems"
    )
