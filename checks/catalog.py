"""Keystone service catalog: duplicate, endpointless and half-registered services.

The failure this probe exists for: a deployment tool (or a person re-running
`openstack service create`) leaves a second service of a type that already
exists, say two `network` services called neutron, one with endpoints and one
without. Keystone puts both into every token's catalog. Horizon takes the
first entry of the wanted type and fails with "Invalid service catalog
service: network" when that is the empty one, while the service itself runs
fine and keystoneauth-based clients (which merge the entries of a type) work.

The probe reasons about what a token's catalog carries, as keystone builds it
(keystone/catalog/backends/sql.py Catalog.get_v3_catalog): enabled services
only, of those only enabled endpoints, and only endpoints whose URL
substitution works (keystone/common/utils.py format_url; a malformed one is
dropped with a log line). On that catalog it finds:

- services of one type that appear more than once (names the one to delete:
  the endpointless one, and the one to keep: the one with endpoints);
- services with no endpoints, disabled services that still have endpoints,
  endpoints keystone drops (malformed URL), endpoints of a service keystone
  did not list;
- interfaces a service lacks although the cloud uses them. An interface is
  used when the other services of the region have it, when
  `required_interfaces` says so, or when a client configured in one of the
  `config_files` selects it (`valid_interfaces`, `interface`, ...). Public-only
  catalogs (devstack) and catalogs without admin endpoints (kolla-ansible since
  Zed) are normal. A missing interface is CRITICAL only where such a client
  finds none of the interfaces it accepts, as keystoneauth would
  (keystoneauth1/access/service_catalog.py get_endpoints_data: the first
  interface of the list that has an endpoint wins, none raises
  EndpointNotFound); otherwise WARNING, or INFO for admin endpoints that only
  the rest of the cloud has.

Catalogs are cached (keystone's own cache in memcached, Horizon's session), so
every fix tells the reader to flush or wait for the cache too.

Sources: the Keystone API (`GET /v3/services`, `GET /v3/endpoints`, two
paginated calls whatever the size of the catalog) or, with `source: db`, the
keystone database's `service` and `endpoint` tables; the config files are read
locally.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from oslo_config import types
from pydantic import Field, model_validator

from healthd.model import MetricSpec, MetricType, Report, Severity
from healthd.openstack import oslo_ini
from healthd.openstack.service_types import same_type
from healthd.probe import Context, Probe, ProbeSettings

Interface = Literal["public", "internal", "admin"]
INTERFACES: tuple[str, ...] = ("public", "internal", "admin")

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
    "missing_interface",  # an interface the region's other services have, or required_interfaces
    "missing_admin_interface",  # an admin endpoint only the rest of the region has (INFO)
    "client_without_endpoint",  # a client from config_files finds none of its interfaces
    "disabled_endpoint",
    "malformed_endpoint",
)
# The kind a missing interface is counted as, by the severity of its finding.
_MISSING_KIND = {Severity.CRITICAL: "client_without_endpoint", Severity.WARNING: "missing_interface",
                 Severity.INFO: "missing_admin_interface"}


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
    url: str = ""


@dataclass(frozen=True)
class Client:
    """One catalog consumer found in a service config file: what it looks up, and how.

    ``interfaces`` is in the client's order of preference; ``explicit`` is False when
    the file sets none of the interface options and the client's default applies.
    """

    file: str
    section: str
    service_type: str
    interfaces: tuple[str, ...]
    option: str  # where `interfaces` comes from, for the message
    explicit: bool = True
    region: str | None = None  # None: the client does not filter on region
    value: str = ""  # the option's value as written

    @property
    def where(self) -> str:
        return f"{self.file} [{self.section}]"


@dataclass(frozen=True)
class ConfigProblem:
    """A config_files pattern that matches nothing, or a file that cannot be read."""

    subject: str
    message: str
    remediation: str


@dataclass(frozen=True)
class Catalog:
    """Every service and endpoint keystone has, enabled or not, plus the clients
    read from config_files (what judge() reasons on)."""

    services: list[Service]
    endpoints: list[Endpoint]
    clients: list[Client] = field(default_factory=list)
    config_problems: list[ConfigProblem] = field(default_factory=list)


class CatalogProbe(Probe):
    name = "catalog"
    description = "Keystone catalog: duplicate or endpointless services, interfaces the cloud uses but lacks."
    default_interval = 300.0
    default_timeout = 30.0
    requires = ("openstack",)  # or "db:keystone" with source: db
    privileges = (
        "Keystone: role reader with system scope (identity:list_services and "
        "identity:list_endpoints are admin_required or system reader). "
        "With source: db, SELECT on keystone.service and keystone.endpoint. "
        "Read access to the files in config_files."
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
            "Endpoints of the service that keystone puts in the catalog (all regions and interfaces).",
            ("service_id", "type"),
        ),
        MetricSpec("healthd_catalog_endpoints", "Endpoints in the catalog, enabled or not.", ()),
        MetricSpec("healthd_catalog_problems", "Catalog problems found, by kind.", ("kind",)),
    )

    class Settings(ProbeSettings):
        source: Literal["api", "db"] = Field("api", description="Keystone API or keystone database")
        required_interfaces: list[Interface] = Field(
            default_factory=list,
            description="interfaces every enabled service must have in each region it is in, whatever "
            "the rest of the cloud does (a missing one is a WARNING)",
        )
        config_files: list[str] = Field(
            default_factory=list,
            description="service config files (globs allowed) whose catalog clients ([keystone_authtoken], "
            "[placement], [neutron], [glance], [cinder], [nova], ...) must find their interfaces",
        )

        @model_validator(mode="before")
        @classmethod
        def _drop_warning_interfaces(cls, data: Any) -> Any:
            # Until issue 12 a missing interface was CRITICAL unless listed here. Severity
            # now follows what clients do; the old key is accepted so configs keep loading.
            if isinstance(data, dict) and "warning_interfaces" in data:
                logging.getLogger(__name__).warning(
                    "checks.catalog.warning_interfaces no longer has any effect (severity now "
                    "follows what clients do, docs/probes/catalog.md); remove it from the config")
                data = {k: v for k, v in data.items() if k != "warning_interfaces"}
            return data

    settings: Settings

    def run(self, ctx: Context, report: Report) -> None:
        clients, problems = read_clients(self.settings.config_files)
        catalog = load(ctx, self.settings.source)
        judge(Catalog(catalog.services, catalog.endpoints, clients, problems), self.settings, report)


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
        Endpoint(str(e.id), str(e.service_id), str(e.interface), str(e.region_id or ""), bool(e.is_enabled),
                 str(e.url or ""))
        for e in raw_endpoints
    ]
    return services, endpoints


def _load_db(ctx: Context) -> tuple[list[Service], list[Endpoint]]:
    with ctx.db("keystone") as db:
        srows = db.query("SELECT id, type, enabled, extra FROM service")
        erows = db.query("SELECT id, service_id, interface, region_id, enabled, url FROM endpoint")
    services = [Service(r["id"], r["type"] or "", _extra_name(r["extra"]), bool(r["enabled"])) for r in srows]
    endpoints = [
        Endpoint(r["id"], r["service_id"], r["interface"], r["region_id"] or "", bool(r["enabled"]),
                 r["url"] or "")
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


# -- loading: the catalog clients configured in service config files -------------------


@dataclass(frozen=True)
class ClientSpec:
    """How one config section looks a service up in the catalog (per the service's code)."""

    service_type: str
    options: tuple[str, ...]  # interface options, the first one set wins
    default: tuple[str, ...]  # the client's own default when none is set
    region_options: tuple[str, ...] = ("region_name",)
    bypass: tuple[str, ...] = ("endpoint_override",)  # set: the catalog is not consulted
    type_option: bool = False  # keystoneauth's adapter option service_type overrides the type


# keystonemiddleware/auth_token/_opts.py: `interface` defaults to "internal", one value;
# auth_token/__init__.py _create_identity_server builds Adapter(service_type="identity",
# interface=..., region_name=...) and every token validation looks identity up through it
# (its own `service_type` option names the protected service, not the one looked up).
AUTHTOKEN = ClientSpec("identity", ("interface",), ("internal",))


def _nova_ksa(service_type: str) -> ClientSpec:
    # nova/conf/utils.py get_ksa_adapter_opts: keystoneauth's adapter options without the
    # deprecated `interface` (include_deprecated=False: nova ignores it) and
    # valid_interfaces defaulting to [internal, public].
    return ClientSpec(service_type, ("valid_interfaces",), ("internal", "public"), type_option=True)


def _ksa(service_type: str) -> ClientSpec:
    # keystoneauth1/loading/adapter.py process_conf_options: valid_interfaces, else the
    # deprecated `interface`; with neither, keystoneauth1/identity/base.py
    # get_endpoint_data looks for "public".
    return ClientSpec(service_type, ("valid_interfaces", "interface"), ("public",), type_option=True)


# castellan/key_manager/barbican_key_manager.py: barbican_endpoint_type (default public),
# barbican_region_name; barbican_endpoint skips the catalog.
CASTELLAN = ClientSpec("key-manager", ("barbican_endpoint_type",), ("public",),
                       ("barbican_region_name",), ("barbican_endpoint",))
# nova/conf/cinder.py catalog_info "<type>:<name>:<interface>", default volumev3::publicURL
# (nova/volume/cinder.py _get_cinderclient_parameters); endpoint_template skips the catalog.
NOVA_CINDER = ClientSpec("volumev3", ("catalog_info",), ("public",), ("os_region_name",),
                         ("endpoint_template",))

# Sections per service, chosen by the file name (nova.conf, nova-compute.conf, neutron.conf,
# cinder.conf, ...); any other file is read with keystoneauth's generic options.
PROFILES: dict[str, dict[str, ClientSpec]] = {
    "nova": {
        "placement": _nova_ksa("placement"),  # nova/conf/placement.py
        "neutron": _nova_ksa("network"),  # nova/conf/neutron.py
        "glance": _nova_ksa("image"),  # nova/conf/glance.py
        "ironic": _nova_ksa("baremetal"),  # nova/conf/ironic.py
        "cyborg": _nova_ksa("accelerator"),  # nova/conf/cyborg.py
        "keystone": _nova_ksa("identity"),  # nova/conf/keystone.py
        "manila": _nova_ksa("shared-file-system"),  # nova/conf/manila.py
        "cinder": NOVA_CINDER,
        "barbican": CASTELLAN,
        # [service_user] is not a client: nova/conf/service_token.py registers only session
        # and auth options, its token is fetched from auth_url, not from the catalog.
    },
    # neutron/conf/common.py: [nova] and [placement] endpoint_type, default public.
    "neutron": {
        "nova": ClientSpec("compute", ("endpoint_type",), ("public",)),
        "placement": ClientSpec("placement", ("endpoint_type",), ("public",)),
    },
    # cinder/compute/nova.py: [nova] interface, default public.
    "cinder": {"nova": ClientSpec("compute", ("interface",), ("public",)), "barbican": CASTELLAN},
    "": {
        "placement": _ksa("placement"),
        "neutron": _ksa("network"),
        "glance": _ksa("image"),
        "nova": _ksa("compute"),
        "ironic": _ksa("baremetal"),
        "cyborg": _ksa("accelerator"),
        "manila": _ksa("shared-file-system"),
        "barbican": CASTELLAN,
    },
}

# A section is in use when it configures authentication or the lookup itself; an empty or
# absent section is not a client (nova without cinder has no [cinder] to speak of).
_IN_USE = ("auth_type", "auth_url", "username", "www_authenticate_uri", "auth_uri", "service_type")


def _profile(path: str) -> str:
    service = oslo_ini.service_of(path)  # nova.conf, nova-compute.conf, /etc/kolla/nova-api/nova.conf
    return service if service in PROFILES else ""


def _split_list(value: str) -> list[str]:
    """An oslo.config ListOpt as oslo.config parses it (oslo_config/types.py List)."""
    try:
        return [str(item).strip() for item in types.List()(value) if str(item).strip()]
    except ValueError:
        return [value.strip()]


def read_clients(patterns: list[str]) -> tuple[list[Client], list[ConfigProblem]]:
    """The catalog clients configured in the files the patterns name (globs allowed)."""
    paths, missing = oslo_ini.expand(patterns)
    problems = [ConfigProblem(f"config_files pattern {m.pattern}", "matches no file",
                              "fix checks.catalog.config_files in healthd.yaml") for m in missing]
    clients: list[Client] = []
    for path in paths:
        cf = oslo_ini.read(path)
        if cf.error:
            problems.append(ConfigProblem(
                f"file {cf.path}", f"cannot read it ({cf.error}); the catalog clients it configures are "
                "not checked",
                f"let the healthd user read it (e.g. setfacl -m u:healthd:r {cf.path}) or fix "
                "checks.catalog.config_files"))
            continue
        clients += clients_of(cf)
    return clients, problems


def clients_of(cf: oslo_ini.ConfigFile) -> list[Client]:
    """The catalog clients of one parsed config file (no I/O)."""
    specs = {"keystone_authtoken": AUTHTOKEN, **PROFILES[_profile(cf.path)]}
    found = []
    for section, spec in specs.items():
        client = _client(cf, section, spec)
        if client is not None:
            found.append(client)
    return found


def _client(cf: oslo_ini.ConfigFile, section: str, spec: ClientSpec) -> Client | None:
    def get(option: str) -> str:
        return (cf.get(section, option) or "").strip()

    looked_at = (*spec.options, *spec.region_options, *spec.bypass, *_IN_USE)
    if not any(get(o) for o in looked_at):
        return None
    if any(get(o) for o in spec.bypass):
        return None  # a fixed URL: keystoneauth1/identity/base.py uses endpoint_override as is
    region = next((get(o) for o in spec.region_options if get(o)), None)
    service_type = (spec.type_option and get("service_type")) or spec.service_type
    for option in spec.options:
        value = get(option)
        if not value:
            continue
        written = value
        if option == "catalog_info":  # "volumev3:cinderv3:internalURL"
            parts = value.split(":")
            if len(parts) == 3 and parts[0]:
                service_type, value = parts[0], parts[2]
        interfaces = tuple(_normalize(i) for i in _split_list(value))
        return Client(cf.path, section, service_type, interfaces, option, True, region, written)
    return Client(cf.path, section, service_type, spec.default, "default", False, region)


def _normalize(interface: str) -> str:
    # keystoneauth1/access/service_catalog.py ServiceCatalogV3.normalize_interface: "internalURL"
    # (v2 style, e.g. nova's catalog_info) is "internal" in a v3 catalog.
    return interface[:-3] if interface.endswith("URL") else interface


# -- judging: what a token's catalog carries (plain data in, no I/O) -------------


def judge(catalog: Catalog, settings: CatalogProbe.Settings, report: Report) -> None:
    """Findings, metrics and summary for one catalog."""
    for problem in catalog.config_problems:
        report.warning(problem.subject, problem.message, problem.remediation)
    analysis = Analysis(catalog, settings, report)
    analysis.run()
    _export(report, catalog, analysis)


# keystone/common/utils.py WHITELISTED_PROPERTIES, as keystone/catalog/backends/sql.py
# get_v3_catalog fills them for a project-scoped token (compute_host is whitelisted but
# not in keystone's CONF, so it fails there too).
_URL_SUBSTITUTIONS = {"tenant_id": "p", "project_id": "p", "user_id": "u", "public_endpoint": "e"}


def url_formats(url: str) -> bool:
    """Whether keystone can substitute the URL (keystone/common/utils.py format_url)."""
    try:
        url.replace("$(", "%(") % _URL_SUBSTITUTIONS
    except (KeyError, TypeError, ValueError):
        return False
    return True


@dataclass
class _Use:
    """Why an interface a service lacks in a region matters, and how much."""

    severity: Severity = Severity.INFO
    reasons: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)

    def add(self, severity: Severity, reason: str, fix: str = "") -> None:
        self.severity = max(self.severity, severity)
        self.reasons.append(reason)
        if fix and fix not in self.fixes:
            self.fixes.append(fix)


@dataclass(frozen=True)
class _ClientUse:
    """A configured client that fails, or falls back, because of interfaces a service lacks."""

    severity: Severity
    reason: str
    fix: str
    looks_for: tuple[str, ...]  # the missing interfaces that make it so


class Analysis:
    """Reasons about what a token's catalog carries; fills findings, counts problems."""

    def __init__(self, catalog: Catalog, settings: CatalogProbe.Settings, report: Report) -> None:
        self.services = {s.id: s for s in catalog.services}
        self.endpoints = catalog.endpoints
        self.clients = catalog.clients
        self.settings = settings
        self.report = report
        # Endpoints keystone puts in a token: enabled, with a URL it can substitute.
        self.live: dict[str, list[Endpoint]] = defaultdict(list)
        self.malformed: list[Endpoint] = []
        for ep in catalog.endpoints:
            if not ep.enabled:
                continue
            if ep.url and not url_formats(ep.url):
                self.malformed.append(ep)
            else:
                self.live[ep.service_id].append(ep)
        self.problems: dict[str, int] = dict.fromkeys(PROBLEM_KINDS, 0)
        self.duplicates: dict[str, int] = defaultdict(int)  # per type

    def run(self) -> None:
        flagged = self._duplicates()
        self._without_endpoints(flagged)
        self._orphans_and_disabled()
        self._malformed()
        self._interfaces(flagged)

    def _count(self, kind: str, type_: str | None = None) -> None:
        self.problems[kind] += 1
        if type_ is not None:
            self.duplicates[type_] += 1

    def _describe(self, svc: Service) -> str:
        return f"{svc.type} service {svc.id} (name {svc.name or '-'})"

    # -- duplicates ------------------------------------------------------------------

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
        # openstack_dashboard/api/base.py get_service_from_catalog takes the first entry of
        # the type; keystoneauth merges the endpoints of all entries of a type.
        self.report.critical(
            f"service {svc.id}",
            f"duplicate {self._describe(svc)} has no endpoints; keep {kept}. Horizon and clients "
            f"that take the first {svc.type} entry fail with 'Invalid service catalog service: "
            f"{svc.type}' or EndpointNotFound when they pick the empty one.",
            f"openstack service delete {svc.id}; {CACHE_NOTE}",
        )

    def _report_all_empty(self, type_: str, group: list[Service]) -> None:
        for _ in group:
            self._count("duplicate_service", type_)
        ids = ", ".join(s.id for s in group)
        self.report.critical(
            f"services {ids}",
            f"{len(group)} {type_} services and none has an endpoint in the catalog: every client "
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

    # -- services without endpoints, orphans, disabled, malformed ------------------------

    def _without_endpoints(self, flagged: set[str]) -> None:
        for svc in sorted(self.services.values(), key=lambda s: s.id):
            if svc.id in flagged or self.live[svc.id] or not svc.enabled:
                continue
            # keystone/catalog/backends/sql.py get_v3_catalog keeps an enabled service with
            # an empty endpoint list in the catalog (its TODO, bug #1436704).
            self._count("service_without_endpoints")
            self.report.warning(
                f"service {svc.id}",
                f"{self._describe(svc)} has no endpoint in the catalog: tokens carry an empty "
                f"{svc.type} entry and clients looking for {svc.type} fail with EndpointNotFound.",
                f"add its endpoints (openstack endpoint create {svc.id} public URL --region REGION) "
                f"or remove it (openstack service delete {svc.id}); {CACHE_NOTE}",
            )

    def _orphans_and_disabled(self) -> None:
        hidden: dict[str, int] = defaultdict(int)
        for ep in sorted(self.endpoints, key=lambda e: e.id):
            svc = self.services.get(ep.service_id)
            if svc is None:
                # keystone's schema has a foreign key endpoint.service_id -> service.id
                # (tests/schemas/keystone.sql) and the API deletes a service's endpoints
                # with it in one transaction (keystone/catalog/backends/sql.py
                # delete_service): such a row exists only when the tables were written with
                # foreign_key_checks off, or the service was created/deleted between the
                # probe's two listings. get_v3_catalog walks services: it is in no catalog.
                self._count("orphan_endpoint")
                self.report.warning(
                    f"endpoint {ep.id}",
                    f"{ep.interface} endpoint {ep.id} in region {ep.region or '-'} refers to service "
                    f"{ep.service_id}, which keystone does not list. It is in no catalog; keystone's "
                    "foreign key forbids such a row, so either the service changed between the "
                    "probe's two listings (gone next run) or the keystone tables were edited with "
                    "foreign_key_checks off.",
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

    def _malformed(self) -> None:
        for ep in sorted(self.malformed, key=lambda e: e.id):
            svc = self.services.get(ep.service_id)
            if svc is None or not svc.enabled:
                continue  # reported above
            self._count("malformed_endpoint")
            self.report.warning(
                f"endpoint {ep.id}",
                f"{ep.interface} endpoint {ep.id} of {self._describe(svc)} in region "
                f"{ep.region or '-'} has a URL keystone cannot substitute ({ep.url}): keystone drops "
                "it from every token's catalog (MalformedEndpoint in keystone's log). Only "
                "$(project_id)s, $(tenant_id)s, $(user_id)s and $(public_endpoint)s are "
                "substituted, and a literal % must be written %%.",
                f"openstack endpoint set --url <fixed URL> {ep.id}; {CACHE_NOTE}",
            )

    # -- interfaces -------------------------------------------------------------------

    def _interfaces(self, flagged: set[str]) -> None:
        judged = [s for s in sorted(self.services.values(), key=lambda s: s.id)
                  if s.enabled and s.id not in flagged and self.live[s.id]]
        # region -> service id -> interfaces it has there (what a token carries)
        present: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for svc in self.services.values():
            if svc.enabled:
                for ep in self.live[svc.id]:
                    present[ep.region][svc.id].add(ep.interface)
        uses = self._client_uses(present)
        for svc in judged:
            for region in sorted(r for r in present if svc.id in present[r]):
                have = present[region][svc.id]
                missing = {}
                for iface in INTERFACES:
                    if iface in have:
                        continue
                    use = self._why_used(svc, region, iface, present, judged, uses)
                    if use.reasons:
                        missing[iface] = use
                if missing:
                    self._missing_interfaces(svc, region, missing)
        self._clients_without_region(present)

    def _why_used(self, svc: Service, region: str, iface: str, present: dict[str, dict[str, set[str]]],
                  judged: list[Service], uses: dict[tuple[str, str], list[_ClientUse]]) -> _Use:
        use = _Use()
        in_region = [s for s in judged if s.id in present[region]]
        having = [s for s in in_region if iface in present[region][s.id]]
        if 2 * len(having) > len(in_region):
            # The cloud's convention (most services of the region have it): clients configured
            # like those of the other services (one valid_interfaces for all, as deployment
            # tools write it) look for it here too. Admin endpoints are a keystone v2 leftover
            # that no client looks for by default.
            severity = Severity.INFO if iface == "admin" else Severity.WARNING
            use.add(severity, f"{len(having)} of the {len(in_region)} services in the region have one")
        if iface in self.settings.required_interfaces:
            use.add(Severity.WARNING, "checks.catalog.required_interfaces lists it")
        for client_use in uses.get((svc.id, region), []):
            if iface in client_use.looks_for:
                use.add(client_use.severity, client_use.reason, client_use.fix)
        return use

    def _client_uses(self, present: dict[str, dict[str, set[str]]]
                     ) -> dict[tuple[str, str], list[_ClientUse]]:
        """What each configured client needs from each (service, region) it can look in.

        keystoneauth1/access/service_catalog.py get_endpoints_data: the endpoints of every
        service of the type (aliases included) in the client's region (any region when it
        sets none) are candidates; the first interface of its list that has one wins; none
        raises EndpointNotFound (endpoint_data_for).
        """
        uses: dict[tuple[str, str], list[_ClientUse]] = defaultdict(list)
        for client in self.clients:
            regions = [r for r in present if client.region is None or r == client.region]
            matches = {(r, sid) for r in regions for sid in present[r]
                       if same_type(client.service_type, self.services[sid].type)}
            if not matches:
                continue  # no such service in scope: see _clients_without_region
            available = {i for r, sid in matches for i in present[r][sid]}
            chosen = next((i for i in client.interfaces if i in available), None)
            how = (f"{client.where} sets {client.option} = {client.value}" if client.explicit
                   else f"{client.where} uses its default interface {', '.join(client.interfaces)}")
            if chosen is None:
                entry = _ClientUse(Severity.CRITICAL, f"{how}: none exists, so that client fails with "
                                   "EndpointNotFound", _client_fix(client), client.interfaces)
            elif client.explicit and client.interfaces.index(chosen) > 0:
                skipped = client.interfaces[: client.interfaces.index(chosen)]
                entry = _ClientUse(Severity.WARNING, f"{how}: that client falls back to {chosen}, not "
                                   "the route it prefers", "", skipped)
            else:
                continue
            for r, sid in sorted(matches):
                uses[(sid, r)].append(entry)
        return uses

    def _clients_without_region(self, present: dict[str, dict[str, set[str]]]) -> None:
        """A client pinned to a region where its service type has no endpoint at all fails."""
        for client in self.clients:
            if client.region is None or any(same_type(client.service_type, self.services[sid].type)
                                            for sid in present.get(client.region, {})):
                continue
            elsewhere = sorted({self.services[sid].id for r in present for sid in present[r]
                                if same_type(client.service_type, self.services[sid].type)})
            if not elsewhere:
                continue  # the service is not deployed: the section is boilerplate
            self._count("client_without_endpoint")
            regions = sorted(r or "-" for r in present
                             if any(self.services[s].id in elsewhere for s in present[r]))
            self.report.critical(
                f"service {elsewhere[0]}" if len(elsewhere) == 1 else f"services {', '.join(elsewhere)}",
                f"{client.where} looks for {client.service_type} in region {client.region}, where the "
                f"catalog has no {client.service_type} endpoint (it has some in {', '.join(regions)}): "
                "that client fails with EndpointNotFound.",
                f"fix region_name in {client.where} or create the endpoints: openstack endpoint create "
                f"--region {client.region} {elsewhere[0]} INTERFACE URL; {CACHE_NOTE}",
            )

    def _missing_interfaces(self, svc: Service, region: str, missing: dict[str, _Use]) -> None:
        severity = max(u.severity for u in missing.values())
        where = f"--region {region} " if region else ""
        parts = []
        for iface, use in missing.items():
            self._count(_MISSING_KIND[use.severity])
            parts.append(f"no {iface} endpoint ({'; '.join(use.reasons)})")
        fixes = [f"openstack endpoint create {where}{svc.id} {i} URL" for i in missing]
        fixes += [f for u in missing.values() for f in u.fixes if f not in fixes]
        self.report.finding(
            severity,
            f"service {svc.id}",
            f"{self._describe(svc)} in region {region or '-'} has " + "; ".join(parts) + ".",
            "; ".join(fixes) + f"; {CACHE_NOTE}",
        )


def _client_fix(client: Client) -> str:
    if client.section == "keystone_authtoken":
        return f"or set interface = public in {client.where} if the cloud has no internal endpoints"
    if client.option == "catalog_info":
        return f"or point catalog_info in {client.where} at an interface that exists"
    return f"or add an interface that exists to valid_interfaces in {client.where}"


# -- judging: metrics and summary -----------------------------------------------


def _export(report: Report, catalog: Catalog, analysis: Analysis) -> None:
    services, endpoints = catalog.services, catalog.endpoints
    by_type: dict[str, int] = defaultdict(int)
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
        report.metric("healthd_catalog_service_endpoints", len(analysis.live[svc.id]),
                      service_id=svc.id, type=svc.type)
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
    if catalog.clients:
        report.summary += f"; {len(catalog.clients)} catalog clients from config_files"
