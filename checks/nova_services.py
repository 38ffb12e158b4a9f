"""Nova services that stopped reporting, rows nova itself would refuse, and stuck builds.

Every nova-compute, nova-conductor and nova-scheduler writes a heartbeat into
a cell database's `services` table (report_count, last_seen_up) every
report_interval. Nova calls a service down when the last heartbeat is older
than `service_down_time`, or when an operator forced it down after fencing.

A service is (cell, binary, host): the super-conductor of the API level
registers in cell0's database (in the superconductor layout of devstack and
kolla-ansible) and each cell has conductors of its own, often on the same
controllers, so two `nova-conductor` rows of one host in two cells are two
services, and one dead one is never hidden by the other. A conductor is
judged with the other conductors of its cell (a cell whose conductors are all
down cannot work, whatever the other cells have); schedulers serve the whole
API level and are judged together.

A down service is not always visible to users: the scheduler skips down
computes. But a server booted onto a chosen host (`--availability-zone
nova:HOST`) bypasses the filters: the build is cast to a compute that is not
listening, and the server sits in vm_state `building` / task_state
`scheduling`. With the conductor or scheduler down, every new build hangs.

The probe separates a service an operator disabled for maintenance (status
disabled, usually with a reason: at most a WARNING) from one that died while
enabled, and from one nova disabled itself (libvirt's "AUTO: " reason). Rows
nova no longer runs (nova-consoleauth, nova-cert, ...) are leftovers of old
releases: INFO with the cleanup. With the databases it also does what
`nova-status upgrade check` does for "Older than N-1 computes" (a compute row
too old for nova 34 stops nova-api and nova-conductor from starting) and
finds a nova-compute registered in cell0, where discover_hosts never looks.

Sources: the compute API (`GET /os-services`, one call, and `GET
/servers/detail?all_tenants&status=BUILD`, one paginated call), and/or each
cell database, cell0 included (one `services` query per cell and one
`instances` query per cell but cell0, plus one `build_requests` and one
availability-zone query on nova_api). `source: both` takes the state from the
API and adds from the databases where (cell) each service is, its heartbeat
age and its version. os-services has neither cell nor version: with `source:
api` conductors are judged as one pool and versions are not checked.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field

from healthd.connections import Database
from healthd.errors import AccessDenied
from healthd.model import MetricSpec, Report, Severity
from healthd.openstack.cells import Cell, cell_db, cells
from healthd.probe import BackendUnavailable, Context, Probe, ProbeSettings

COMPUTE = "nova-compute"
CONDUCTOR = "nova-conductor"
SCHEDULER = "nova-scheduler"
# The API services write a row but never heartbeat; nova's os-services API hides them too
# (nova/api/openstack/compute/services.py _get_services).
API_BINARIES = ("nova-osapi_compute", "nova-metadata")
# What nova 34 still runs that writes a services row: the console_scripts of nova's setup.cfg
# (nova-34.0.0.dist-info/entry_points.txt) that call nova/service.py Service.create, i.e.
# nova/cmd/compute.py, conductor.py, scheduler.py, plus the two WSGI apps
# (nova/api/openstack/wsgi_app.py _setup_service: "nova-osapi_compute", "nova-metadata").
# The console proxies (nova-novncproxy, -serialproxy, -spicehtml5proxy) write none. Anything
# else (nova-consoleauth, nova-cert, nova-network, nova-console, nova-xvpvncproxy, nova-cells:
# the binaries nova/objects/fields.py NotificationSource still names for old notifications)
# is a row an old release left behind.
CURRENT_BINARIES = frozenset({COMPUTE, CONDUCTOR, SCHEDULER, *API_BINARIES})
# nova/objects/service.py (nova 34): SERVICE_VERSION = 74; OLDEST_SUPPORTED_SERVICE_VERSION =
# 'Gazpacho' and SERVICE_VERSION_ALIASES['Gazpacho'] = 72. nova/utils.py raise_if_old_compute
# (called by nova/api/openstack/wsgi_app.py _setup_service, nova/service.py Service.create and
# nova/cmd/status.py _check_old_computes) refuses to start when the minimum nova-compute
# version is below 72.
NOVA_RELEASE = "nova 34"
SERVICE_VERSION = 74
OLDEST_SUPPORTED_RELEASE = "Gazpacho"
OLDEST_SUPPORTED_VERSION = 72
# nova/virt/libvirt/driver.py DISABLE_PREFIX: _set_host_enabled disables the compute service
# itself with "AUTO: <reason>" when the libvirt connection drops, and re-enables only such a
# service when it comes back; an operator's reason never starts with it.
AUTO_DISABLED = "AUTO: "
UNSCHEDULED = "(none)"  # cell label of builds still in nova_api.build_requests

# Debian/Ubuntu unit names; RDO prefixes them with "openstack-".
RESTART = (
    "on {host}: systemctl restart {unit} (check `journalctl -u {unit}` / /var/log/nova/{binary}.log "
    "and its connection to RabbitMQ and the database)"
)
# nova/api/openstack/compute/services.py delete: from microversion 2.53 the id is the uuid.
DELETE = "openstack --os-compute-api-version 2.53 compute service delete {uuid}"


@dataclass
class Svc:
    binary: str
    host: str
    zone: str = ""
    cell: str = ""  # cell label; "" when unknown (API source)
    in_cell0: bool = False
    enabled: bool = True
    up: bool | None = True  # None: nova could not tell (down cell)
    forced_down: bool = False
    disabled_reason: str = ""
    heartbeat_age: float | None = None  # seconds, DB source only
    uuid: str = ""  # services.uuid (the os-services id from microversion 2.53)
    row_id: str = ""  # services.id in its cell database (DB source)
    version: int | None = None  # services.version: the SERVICE_VERSION of the code that wrote it (DB)

    @property
    def auto_disabled(self) -> bool:
        return not self.enabled and self.disabled_reason.startswith(AUTO_DISABLED)


@dataclass
class Stuck:
    uuid: str
    host: str  # "" while not scheduled to a host
    cell: str
    age: float
    task_state: str = ""
    forced_host: str = ""  # request_specs force_hosts (AZ "zone:HOST"), DB source only


@dataclass
class View:
    services: list[Svc] = field(default_factory=list)
    stuck: list[Stuck] = field(default_factory=list)
    stuck_cells: set[str] = field(default_factory=set)  # cells looked at (metric 0 when clean)
    zones: dict[str, str] | None = field(default_factory=dict)  # host -> AZ (DB); None: unreadable
    zones_denied: str = ""  # why the zones could not be read (the grant is missing)
    cells_read: list[str] = field(default_factory=list)  # cell labels whose services were read
    cell0_read: bool = False  # cell0's services were read: computes there can be seen
    unreadable: dict[str, str] = field(default_factory=dict)  # cell label -> why it could not be read


class NovaServicesProbe(Probe):
    name = "nova_services"
    description = "Nova services down (vs disabled for maintenance), rows nova would refuse, stuck builds."
    default_interval = 60.0
    default_timeout = 30.0
    requires = ("openstack",)  # "cells" with source: db or both
    privileges = (
        "Nova: os_compute_api:os-services:list and os_compute_api:servers:detail:get_all_tenants "
        "default to admin; grant them to a reader role in nova's policy.yaml for least privilege. "
        "With source: db or both: SELECT on nova_api.cell_mappings, build_requests, request_specs, "
        "aggregate_hosts and aggregate_metadata, on services in every cell database (cell0 included) "
        "and on instances in every cell database but cell0."
    )
    metrics = (
        MetricSpec(
            "healthd_nova_services_up",
            "1 if nova considers the service up (recent heartbeat, not forced down), else 0. A host "
            "running the binary in several cells gets its worst copy.",
            ("binary", "host", "zone"),
        ),
        MetricSpec(
            "healthd_nova_services_enabled",
            "1 if the service is enabled, 0 if disabled (worst copy, as for _up).",
            ("binary", "host", "zone"),
        ),
        MetricSpec(
            "healthd_nova_services_forced_down",
            "1 if an operator forced the service down (fenced host; worst copy, as for _up).",
            ("binary", "host", "zone"),
        ),
        MetricSpec(
            "healthd_nova_services_heartbeat_age_seconds",
            "Seconds since the service's last heartbeat (last_seen_up), from the cell database.",
            ("cell", "binary", "host"),
        ),
        MetricSpec(
            "healthd_nova_services_conductors_up",
            "nova-conductor services up in the cell (cell0: the super-conductor), for each cell with "
            "a conductor; cell \"\" for conductors whose cell is unknown (source api).",
            ("cell",),
        ),
        MetricSpec(
            "healthd_nova_services_problems",
            "Service rows nova would refuse or that need cleanup, by kind: too_old_compute (stops "
            "nova-api/nova-conductor from starting), compute_in_cell0, auto_disabled (nova disabled "
            "the compute itself), obsolete_service (binary nova no longer runs).",
            ("kind",),
        ),
        MetricSpec(
            "healthd_nova_services_stuck_instances",
            "Servers in BUILD longer than stuck_build_seconds (cell '' from the API source).",
            ("cell",),
        ),
    )

    class Settings(ProbeSettings):
        source: Literal["api", "db", "both"] = Field(
            "api", description="compute API, cell databases, or both (state from the API)"
        )
        service_down_time: float = Field(
            60.0, gt=0, description="seconds without heartbeat before a service is down (DB source)"
        )
        stuck_build_seconds: float = Field(
            600.0, gt=0, description="a server in BUILD for longer than this since its creation is stuck"
        )
        check_stuck_builds: bool = Field(True, description="look for servers stuck in BUILD")
        default_availability_zone: str = Field(
            "nova", description="nova.conf [DEFAULT] default_availability_zone: the zone label of a "
            "compute in no AZ aggregate (DB source; the API reports it itself)"
        )
        internal_service_availability_zone: str = Field(
            "internal", description="nova.conf [DEFAULT] internal_service_availability_zone: the zone "
            "label of conductors and schedulers (DB source)"
        )
        max_listed_servers: int = Field(10, ge=1, description="server uuids named per finding")

    def run(self, ctx: Context, report: Report) -> None:
        judge(report, load(ctx, self.settings), self.settings)


# == loading: the compute API and the databases -> View (all I/O goes through ctx) ==


def load(ctx: Context, s: NovaServicesProbe.Settings) -> View:
    """Everything the judgement needs, read from the sources the settings name."""
    view = View()
    if s.source in ("api", "both"):
        _load_api_services(ctx, view)
    if s.source in ("db", "both"):
        _load_db(ctx, view, s, merge=s.source == "both")
    elif s.check_stuck_builds:
        _load_api_stuck(ctx, view, s.stuck_build_seconds)
    return view


# -- compute API ---------------------------------------------------------------


def _load_api_services(ctx: Context, view: View) -> None:
    conn = ctx.openstack()
    with ctx.api_call("compute service list (os-services)"):
        rows = list(conn.compute.services())
    for r in rows:
        svc = service_from_api(r)
        if svc is not None:
            view.services.append(svc)


def _load_api_stuck(ctx: Context, view: View, threshold: float) -> None:
    conn = ctx.openstack()
    now = datetime.now(UTC)
    with ctx.api_call("compute server list (status BUILD, all projects)"):
        servers = list(conn.compute.servers(details=True, all_projects=True, status="BUILD"))
    view.stuck_cells.add("")
    view.stuck.extend(stuck_from_api(servers, now, threshold))


def service_from_api(r: Any) -> Svc | None:
    """One os-services entry (openstacksdk Service, microversion 2.69) as a Svc; None for the API
    services. From 2.53 the id is the service's uuid; an entry of a cell nova cannot reach has
    none (nova/api/openstack/compute/services.py _get_service_detail, cell_down_support)."""
    if r.binary in API_BINARIES:
        return None
    # A service in a cell nova cannot reach comes back with status UNKNOWN and no state.
    up = {"up": True, "down": False}.get(str(r.state or "").lower())
    return Svc(
        binary=str(r.binary),
        host=str(r.host),
        zone=str(r.availability_zone or ""),
        enabled=str(r.status or "").lower() != "disabled",
        up=up,
        forced_down=bool(r.is_forced_down),
        disabled_reason=str(r.disabled_reason or ""),
        uuid=_uuid_like(getattr(r, "id", None)),
    )


def _uuid_like(value: Any) -> str:
    """The os-services id when it is a uuid (microversion 2.53+), else "" (an id before 2.53 is
    the row id of some cell: ambiguous across cells, nova/compute/api.py _find_service_in_cell)."""
    text = str(value or "")
    return text if len(text) == 36 and text.count("-") == 4 else ""


def stuck_from_api(servers: list[Any], now: datetime, threshold: float) -> list[Stuck]:
    """The servers in BUILD for longer than threshold seconds at ``now``."""
    stuck = []
    for srv in servers:
        # Since creation, as nova's own build timeout counts (nova/compute/manager.py
        # _check_instance_build_time: timeutils.is_older_than(instance.created_at,
        # instance_build_timeout)). Not `updated`: nova renders a NULL updated_at as the current
        # time (utils.isotime(None)).
        since = _parse_time(srv.created_at)
        age = (now - since).total_seconds() if since else 0.0
        if age > threshold:
            stuck.append(Stuck(str(srv.id), str(srv.compute_host or ""), "", age, str(srv.task_state or "")))
    return stuck


def _parse_time(value: Any) -> datetime | None:
    """Nova gives '2024-05-01T10:00:00Z' (servers) or naive UTC '...T10:00:00.000000' (services)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- cell databases ------------------------------------------------------------

# nova/servicegroup/drivers/db.py DbDriver.is_up: last_seen_up or created_at, compared with
# utcnow(); updated_at is not a heartbeat (disabling a service bumps it too). The DB's own
# clock is used so that healthd's clock does not matter. Nova's elapsed time is a float
# (utcnow() has microseconds), so whole seconds would call a service 8.4 s silent "up" at
# service_down_time 8 while nova already says down. `version` is what
# nova/db/main/api.py service_get_minimum_version reads.
SERVICES_SQL = (
    "SELECT id, uuid, host, `binary`, disabled, disabled_reason, forced_down, version, "
    "TIMESTAMPDIFF(MICROSECOND, COALESCE(last_seen_up, created_at), UTC_TIMESTAMP(6)) / 1e6 AS age "
    "FROM services WHERE deleted = 0"
)
# Servers in BUILD (vm_state building: nova/api/openstack/common.py _STATE_MAP) created longer
# ago than the threshold: the same age as the API source and nova's _check_instance_build_time.
INSTANCES_SQL = (
    "SELECT uuid, host, task_state, TIMESTAMPDIFF(SECOND, created_at, UTC_TIMESTAMP()) AS age "
    "FROM instances WHERE deleted = 0 AND vm_state = 'building' "
    "AND created_at < UTC_TIMESTAMP() - INTERVAL %s SECOND"
)
# nova/availability_zones.py set_availability_zones: a compute's zone is the availability_zone
# metadata of its aggregates (joined with ',' when several), else default_availability_zone.
ZONES_SQL = (
    "SELECT ah.host, am.value FROM aggregate_hosts ah JOIN aggregate_metadata am "
    "ON am.aggregate_id = ah.aggregate_id WHERE am.`key` = 'availability_zone'"
)
# Builds the conductor never scheduled into a cell (scheduler or conductor not working).
BUILD_REQUESTS_SQL = (
    "SELECT instance_uuid, TIMESTAMPDIFF(SECOND, created_at, UTC_TIMESTAMP()) AS age "
    "FROM build_requests WHERE created_at < UTC_TIMESTAMP() - INTERVAL %s SECOND"
)


def _load_db(ctx: Context, view: View, s: NovaServicesProbe.Settings, merge: bool) -> None:
    threshold = int(s.stuck_build_seconds)
    # cell0 too: the super-conductor and the schedulers of the superconductor layout register
    # there, and a nova-compute there is a fault (nova/objects/host_mapping.py discover_hosts
    # skips cell0).
    all_cells = cells(ctx, include_cell0=True)
    if not any(not c.is_cell0 for c in all_cells):
        raise BackendUnavailable("nova_api.cell_mappings lists no cell besides cell0")
    if not merge or s.check_stuck_builds:
        with ctx.db("nova_api") as api:
            if not merge:  # with source: both, the API names the zones
                _load_zones(api, view)
            if s.check_stuck_builds:
                for row in api.query(BUILD_REQUESTS_SQL, (threshold,)):
                    view.stuck.append(
                        Stuck(row["instance_uuid"], "", UNSCHEDULED, float(row["age"]), "scheduling")
                    )
                view.stuck_cells.add(UNSCHEDULED)
    zone_of = zone_rule(view.zones, s.default_availability_zone, s.internal_service_availability_zone)
    index = ApiIndex.of(view.services)  # the API's entries (source: both), before rows are added
    failures: list[BackendUnavailable] = []
    for cell in all_cells:
        # cell0 only holds servers that failed to schedule (buried in ERROR), never builds.
        look_for_builds = s.check_stuck_builds and not cell.is_cell0
        try:
            with cell_db(ctx, cell) as db:
                services = db.query(SERVICES_SQL)
                instances = db.query(INSTANCES_SQL, (threshold,)) if look_for_builds else []
        except BackendUnavailable as exc:  # that cell is unknown, the others are still judged
            view.unreadable[cell.label] = str(exc)
            if not cell.is_cell0:
                failures.append(exc)
            continue
        view.cells_read.append(cell.label)
        view.cell0_read = view.cell0_read or cell.is_cell0
        for row in services:
            merge_db_service(view, cell, row, s.service_down_time, merge, zone_of, index)
        for row in instances:
            view.stuck.append(
                Stuck(row["uuid"], row["host"] or "", cell.label, float(row["age"]), row["task_state"] or "")
            )
        if look_for_builds:
            view.stuck_cells.add(cell.label)
    if failures and len(failures) == sum(1 for c in all_cells if not c.is_cell0):
        raise failures[0]  # no cell could be read: nothing to judge, the probe is UNKNOWN
    if view.stuck:
        _forced_hosts(ctx, view)


def _load_zones(api: Database, view: View) -> None:
    """Zones are labels, not the verdict: without the grant the probe still judges, and
    _judge_zones says why its zone labels are missing."""
    try:
        rows = api.query(ZONES_SQL)
    except AccessDenied as exc:
        view.zones, view.zones_denied = None, str(exc)
        return
    view.zones = zones_from_rows(rows)


def zones_from_rows(rows: list[dict[str, Any]]) -> dict[str, str]:
    """host -> zone label from ZONES_SQL rows (several AZ aggregates: joined with ',')."""
    zones: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        zones[row["host"]].add(row["value"])
    return {host: ",".join(sorted(names)) for host, names in zones.items()}


def zone_rule(zones: dict[str, str] | None, default: str, internal: str) -> Callable[[str, str], str]:
    """zone_of(binary, host) as nova labels it; "" for everything when the zones are unknown."""
    if zones is None:
        return lambda binary, host: ""

    def zone_of(binary: str, host: str) -> str:
        return zones.get(host, default) if binary == COMPUTE else internal

    return zone_of


def _forced_hosts(ctx: Context, view: View) -> None:
    """Which host each stuck build was forced onto: one request_specs query for all of them.

    The conductor casts the build to the chosen compute before instance.host is set (the
    compute sets it when it claims), so a build sent to a dead compute has no host; the
    request spec keeps force_hosts (nova/objects/request_spec.py _get_update_primitives
    persists it, dropping only per-request fields).
    """
    uuids = [st.uuid for st in view.stuck if not st.host][:1000]
    if not uuids:
        return
    marks = ", ".join(["%s"] * len(uuids))
    with ctx.db("nova_api") as api:
        rows = api.query(
            f"SELECT instance_uuid, spec FROM request_specs WHERE instance_uuid IN ({marks})", uuids
        )
    forced = {r["instance_uuid"]: spec_forced_host(r["spec"]) for r in rows}
    for st in view.stuck:
        st.forced_host = forced.get(st.uuid, "") or st.forced_host


def spec_forced_host(spec: Any) -> str:
    """The one host of a serialized RequestSpec's force_hosts, else ""."""
    try:
        data = json.loads(spec or "{}").get("nova_object.data", {})
    except (TypeError, ValueError, AttributeError):
        return ""
    hosts = data.get("force_hosts") or []
    return str(hosts[0]) if isinstance(hosts, list) and len(hosts) == 1 else ""


@dataclass
class ApiIndex:
    """The os-services entries by uuid, and by (binary, host) those without one (a down cell's)."""

    by_uuid: dict[str, Svc]
    by_name: dict[tuple[str, str], list[Svc]]

    @classmethod
    def of(cls, services: list[Svc]) -> ApiIndex:
        by_name: dict[tuple[str, str], list[Svc]] = defaultdict(list)
        for svc in services:
            if not svc.uuid:
                by_name[(svc.binary, svc.host)].append(svc)
        return cls({s.uuid: s for s in services if s.uuid}, by_name)

    def entry(self, row: dict[str, Any]) -> Svc | None:
        """The entry of a services row: by uuid (the API id from 2.53), else the one entry of that
        binary and host without an id and not matched yet."""
        found = self.by_uuid.get(str(row.get("uuid") or ""))
        if found is not None:
            return found
        free = [s for s in self.by_name.get((row["binary"], row["host"]), []) if not s.row_id]
        return free[0] if len(free) == 1 else None


def merge_db_service(view: View, cell: Cell, row: dict[str, Any], down_time: float, merge: bool,
                     zone_of: Callable[[str, str], str], index: ApiIndex | None = None) -> None:
    """Add one SERVICES_SQL row of a cell to the view; with merge, to the API's entry for it
    (``index``: ApiIndex.of(view.services) built once per run; built here when not given)."""
    if row["binary"] in API_BINARIES:
        return
    age = float(row["age"]) if row.get("age") is not None else None
    version = int(row["version"]) if row.get("version") is not None else None
    known = (index or ApiIndex.of(view.services)).entry(row) if merge else None
    if known is not None:  # the API's verdict stands; the DB adds where, how old and which version
        known.cell, known.in_cell0, known.heartbeat_age = cell.label, cell.is_cell0, age
        known.row_id, known.uuid = str(row.get("id") or ""), known.uuid or str(row.get("uuid") or "")
        known.version = version
        return
    forced = bool(row["forced_down"])
    view.services.append(Svc(
        binary=row["binary"],
        host=row["host"],
        zone=zone_of(row["binary"], row["host"]),
        cell=cell.label,
        in_cell0=cell.is_cell0,
        enabled=not row["disabled"],
        # nova/servicegroup/api.py service_is_up: forced_down first, then the driver's is_up
        # (nova/servicegroup/drivers/db.py: abs(elapsed) <= service_down_time).
        up=not forced and age is not None and abs(age) <= down_time,
        forced_down=forced,
        disabled_reason=row["disabled_reason"] or "",
        heartbeat_age=age,
        uuid=str(row.get("uuid") or ""),
        row_id=str(row.get("id") or ""),
        version=version,
    ))


# == judging: a View and the settings -> findings and metrics (no I/O) ==========


def judge(report: Report, view: View, s: NovaServicesProbe.Settings) -> None:
    _judge_zones(view, report)
    _judge_cells(view, report)
    current = [svc for svc in view.services if svc.binary in CURRENT_BINARIES]
    _judge_obsolete(view, report)
    old = too_old_computes(current)
    # A row that stops the control plane is judged as that, not also as maintenance/outage.
    blocking = {id(svc) for svc in old} if _runs_nova_34(current) else set()
    _judge_services([svc for svc in current if id(svc) not in blocking], report, peers=current)
    too_old = _judge_versions(current, old, report)
    _judge_stuck(view, current, report, s.max_listed_servers)
    _export(view, current, too_old, report)


def _judge_zones(view: View, report: Report) -> None:
    if view.zones_denied:
        report.warning("availability zones", f"zone labels left empty: {view.zones_denied}",
                       "GRANT SELECT ON nova_api.aggregate_hosts and nova_api.aggregate_metadata to the "
                       "healthd account (deploy/mysql/grants.sql)")


def _judge_cells(view: View, report: Report) -> None:
    for label, why in sorted(view.unreadable.items()):
        report.warning(
            f"cell {label}",
            f"the services of cell {label} could not be read, they are not judged: {why}",
            f"check healthd's access to cell {label}'s database (backends.databases.cells.{label}, "
            "nova_api.cell_mappings.database_connection; SELECT on its services table, "
            "deploy/mysql/grants.sql)",
        )


def _since(svc: Svc) -> str:
    return f" (last heartbeat {int(svc.heartbeat_age)} s ago)" if svc.heartbeat_age is not None else ""


def _where(svc: Svc) -> str:
    parts = [f"zone {svc.zone}" if svc.zone else "", f"cell {svc.cell}" if svc.cell else ""]
    inner = ", ".join(p for p in parts if p)
    return f" ({inner})" if inner else ""


def _row(svc: Svc) -> str:
    """How nova's tables and API name the row: its id in the cell database, its uuid."""
    parts = [f"id {svc.row_id}" if svc.row_id else "", f"uuid {svc.uuid}" if svc.uuid else ""]
    return ", ".join(p for p in parts if p)


def _delete(svc: Svc) -> str:
    if svc.uuid:
        return DELETE.format(uuid=svc.uuid)
    return (f"openstack compute service delete <id of {svc.binary} on {svc.host} from "
            "`openstack compute service list`>")


def _order(svc: Svc) -> tuple[str, str, str]:
    return (svc.binary, svc.host, svc.cell)


def _judge_obsolete(view: View, report: Report) -> None:
    for svc in sorted((s for s in view.services if s.binary not in CURRENT_BINARIES), key=_order):
        row = _row(svc)
        report.info(
            f"host {svc.host}",
            f"{svc.binary} on {svc.host}{_where(svc)}{f' [{row}]' if row else ''}: {NOVA_RELEASE} no "
            f"longer has a {svc.binary} (its console_scripts and nova/cmd run only nova-compute, "
            "nova-conductor, nova-scheduler and the API services); the row is a leftover of an older "
            "release, not an outage.",
            f"delete the row: {_delete(svc)}",
        )


def _pool(svc: Svc) -> tuple[str, str]:
    """Copies that stand in for each other: the conductors of one cell (cell0's are the
    super-conductor of the API level; each cell needs its own for its computes, nova's cells v2
    layout), the schedulers of the whole deployment (API level)."""
    return (svc.binary, svc.cell if svc.binary == CONDUCTOR else "")


def _judge_services(services: list[Svc], report: Report, peers: list[Svc] | None = None) -> None:
    """Each service's state; ``peers`` (default: the same list) are the copies that stand in."""
    up_in_pool: dict[tuple[str, str], int] = defaultdict(int)
    for svc in services if peers is None else peers:
        if svc.up:
            up_in_pool[_pool(svc)] += 1
            if _pool(svc)[1]:  # a copy whose cell is unknown counts every copy of the binary
                up_in_pool[(svc.binary, "")] += 1
    for svc in sorted(services, key=_order):
        if svc.binary == COMPUTE and svc.in_cell0:
            _compute_in_cell0(svc, services, report)
        elif svc.up is None:
            report.warning(
                f"host {svc.host}",
                f"{svc.binary} on {svc.host}: nova cannot tell its state (its cell database "
                "is unreachable from nova-api).",
                "check the cell's database connection in nova_api.cell_mappings and the DB server",
            )
        elif svc.forced_down:
            _forced_down(svc, report)
        elif svc.auto_disabled:
            _auto_disabled(svc, report)
        elif not svc.up and not svc.enabled:
            _disabled_down(svc, report)
        elif not svc.up:
            _enabled_down(svc, report, up_in_pool[_pool(svc)])


def _enabled_down(svc: Svc, report: Report, peers_up: int) -> None:
    restart = RESTART.format(host=svc.host, unit=svc.binary, binary=svc.binary)
    row = f" [{_row(svc)}]" if svc.row_id or svc.uuid else ""
    if svc.binary == COMPUTE:
        report.critical(
            f"host {svc.host}",
            f"nova-compute on {svc.host}{_where(svc)} is down but enabled{_since(svc)}: servers "
            "booted onto this host hang in BUILD/scheduling and its servers cannot be managed.",
            f"{restart}; if the host is gone for good: openstack compute service set --disable "
            f'--disable-reason "decommissioned" {svc.host} nova-compute',
        )
        return
    severity = Severity.WARNING if peers_up else Severity.CRITICAL
    if svc.binary == CONDUCTOR and svc.cell:
        scope = ("in cell0 (the super-conductor of the API level)" if svc.in_cell0
                 else f"in cell {svc.cell}")
        others = (f"{peers_up} other nova-conductor up {scope}" if peers_up else
                  f"no nova-conductor is up {scope}: " + (
                      "new builds, resizes and migrations hang" if svc.in_cell0 else
                      f"the computes of cell {svc.cell} cannot reach its database (their heartbeats "
                      "stop, builds and server actions there hang)"))
    else:
        others = (f"{peers_up} other {svc.binary} up" if peers_up
                  else f"no {svc.binary} is up: new builds hang")
    report.finding(
        severity,
        f"host {svc.host}",
        f"{svc.binary} on {svc.host}{_where(svc)}{row} is down{_since(svc)}; {others}.",
        f"{restart}; if the host is retired: {_delete(svc)}",
    )


def _disabled_down(svc: Svc, report: Report) -> None:
    reason = f'disabled with reason "{svc.disabled_reason}"' if svc.disabled_reason else "disabled, no reason"
    severity = Severity.INFO if svc.disabled_reason else Severity.WARNING
    report.finding(
        severity,
        f"host {svc.host}",
        f"{svc.binary} on {svc.host}{_where(svc)} is down and {reason}: the scheduler skips it, "
        "so this looks like maintenance rather than an outage.",
        f"when the work is done: start {svc.binary} on {svc.host}, then openstack compute service set "
        f"--enable {svc.host} {svc.binary}; if retired, delete the service",
    )


def _auto_disabled(svc: Svc, report: Report) -> None:
    """nova/virt/libvirt/driver.py _set_host_enabled: the compute lost its hypervisor connection
    and disabled itself; it re-enables itself once the connection is back. Not maintenance."""
    why = svc.disabled_reason[len(AUTO_DISABLED):] or "no reason given"
    hypervisor = (f"on {svc.host}: check libvirtd/virtqemud (systemctl status libvirtd virtqemud, "
                  "journalctl) and nova-compute's log; nova-compute enables the service again by itself "
                  "once its libvirt connection is back (do not enable it by hand before)")
    if svc.up:
        report.warning(
            f"host {svc.host}",
            f"nova-compute on {svc.host}{_where(svc)} was disabled by nova itself, not by an operator "
            f'("{svc.disabled_reason}": {why}): its hypervisor connection is lost, the scheduler skips '
            "the host and its servers cannot be managed.",
            hypervisor,
        )
        return
    report.critical(
        f"host {svc.host}",
        f"nova-compute on {svc.host}{_where(svc)} is down{_since(svc)}, and was disabled by nova itself "
        f'before ("{svc.disabled_reason}"): not maintenance; servers booted onto this host hang in '
        "BUILD/scheduling and its servers cannot be managed.",
        f"{RESTART.format(host=svc.host, unit=COMPUTE, binary=COMPUTE)}; then {hypervisor}",
    )


def _forced_down(svc: Svc, report: Report) -> None:
    report.warning(
        f"host {svc.host}",
        f"{svc.binary} on {svc.host}{_where(svc)} is forced down by an operator (host fenced): "
        "nova treats it as down whatever its heartbeat says.",
        f"evacuate its servers (openstack server evacuate); once the host is repaired: "
        f"openstack compute service set --up {svc.host} {svc.binary}",
    )


def _also_elsewhere(svc: Svc, services: list[Svc]) -> bool:
    return any(o is not svc and o.binary == svc.binary and o.host == svc.host for o in services)


def _remap_note(svc: Svc, services: list[Svc]) -> str:
    """nova/api/openstack/compute/services.py delete of a nova-compute also destroys
    HostMapping.get_by_host(host) and takes the host out of its aggregates, whichever row of the
    host it was: when the host has another compute row, map it again."""
    if not _also_elsewhere(svc, services):
        return ""
    return (f"; {svc.host} has another nova-compute row, and nova's service delete also removes the "
            f"host mapping and aggregate memberships of {svc.host}: map it again at once with "
            "nova-manage cell_v2 discover_hosts --by-service --verbose and re-add it to its aggregates")


def _compute_in_cell0(svc: Svc, services: list[Svc], report: Report) -> None:
    """nova-compute never touches a database itself (nova/cmd/compute.py sets
    DISABLE_DB_ACCESS and sends every object call to a conductor): its row is in cell0 because the
    conductor that answered it on its transport_url writes to cell0's database. discover_hosts
    never maps cell0 hosts (nova/objects/host_mapping.py) and the scheduler leaves cell0 out
    (nova/scheduler/host_manager.py refresh_cells_caches), so the host takes no server."""
    usable = bool(svc.up) and svc.enabled
    row = _row(svc)
    state = "up and enabled" if usable else (
        "down" if not svc.up else "disabled")
    report.finding(
        Severity.CRITICAL if usable else Severity.WARNING,
        f"host {svc.host}",
        f"nova-compute on {svc.host} registered in cell0{f' [{row}]' if row else ''} ({state}): cell0 "
        "only holds servers that failed to schedule; discover_hosts skips it and the scheduler never "
        "reads it, so this host never gets a server. The nova-conductor that serves it writes to "
        "cell0's database: the compute's transport_url reaches the super-conductor (API-level queue), "
        "or a conductor on its queue has [database] connection = cell0's database.",
        f"point nova-compute on {svc.host} at its cell's message queue (transport_url of the cell in "
        "`nova-manage cell_v2 list_cells --verbose`), or set that cell conductor's [database] connection "
        f"to the cell's database; then stop nova-compute on {svc.host}, delete the cell0 row "
        f"({_delete(svc)}), start it again and run nova-manage cell_v2 discover_hosts --verbose"
        f"{_remap_note(svc, services)}",
    )


def too_old_computes(services: list[Svc]) -> list[Svc]:
    """The nova-compute rows that make nova-status upgrade check fail "Older than N-1 computes"
    (nova/cmd/status.py _check_old_computes -> nova/utils.py raise_if_old_compute), from the rows
    it reads: nova/db/main/api.py service_get_minimum_version takes MIN(version) of the
    nova-compute rows with deleted = 0 and forced_down = 0 per cell (disabled or not), and
    nova/objects/service.py get_minimum_version_all_cells leaves out a cell whose minimum is 0
    or NULL; the check fails below SERVICE_VERSION_ALIASES[OLDEST_SUPPORTED_SERVICE_VERSION]."""
    computes = [s for s in services if s.binary == COMPUTE and s.version is not None and not s.forced_down]
    cell_min: dict[str, int] = {}
    for svc in computes:
        cell_min[svc.cell] = min(cell_min.get(svc.cell, svc.version or 0), svc.version or 0)
    return sorted((s for s in computes if cell_min[s.cell] and (s.version or 0) < OLDEST_SUPPORTED_VERSION),
                  key=lambda s: (s.version or 0, s.host))


def _judge_versions(services: list[Svc], old: list[Svc], report: Report) -> int:
    """Report too_old_computes as nova-status does. With such a row nova-api
    (nova/api/openstack/wsgi_app.py _setup_service), nova-conductor and the nova-computes of that
    cell (nova/service.py Service.create) refuse to start; returns how many rows block."""
    if not old:
        return 0
    level = min(s.version or 0 for s in old)
    nova_says = (f"Current Nova version does not support computes older than {OLDEST_SUPPORTED_RELEASE} "
                 f"but the minimum compute service level in your system is {level} and the oldest "
                 f"supported service level is {OLDEST_SUPPORTED_VERSION}.")
    if not _runs_nova_34(services):
        report.info(
            "nova-compute service versions",
            f"the services here run a release older than {NOVA_RELEASE}; an upgrade to it would fail: "
            f"{len(old)} nova-compute row(s) are older than {OLDEST_SUPPORTED_RELEASE} (service version "
            f"{OLDEST_SUPPORTED_VERSION}): " + ", ".join(f"{s.host} ({_row(s)}, version {s.version})"
                                                         for s in old[:10])
            + (f" and {len(old) - 10} more" if len(old) > 10 else "")
            + f'. nova-status upgrade check of {NOVA_RELEASE} would say "{nova_says}"',
            "upgrade those computes first, or delete the rows of retired hosts "
            f"({DELETE.format(uuid='<uuid>')})",
        )
        return 0
    for svc in old:
        state = "disabled" if not svc.enabled else "enabled"
        stopped = (f"nova-api, nova-conductor and the nova-computes of cell {svc.cell}" if svc.cell
                   else "nova-api and nova-conductor")
        report.critical(
            f"host {svc.host}",
            f"nova-compute row of {svc.host}{_where(svc)} [{_row(svc)}, {state}] has service version "
            f"{svc.version}, older than {NOVA_RELEASE} accepts ({OLDEST_SUPPORTED_VERSION}, "
            f"{OLDEST_SUPPORTED_RELEASE}): {stopped} refuse to start while it exists. nova-status "
            "upgrade check, \"Older than N-1 computes\": "
            f'Failure, "{nova_says}"',
            f"if {svc.host} is retired: {_delete(svc)} (nova also removes its compute nodes and "
            f"resource provider){_remap_note(svc, services)}; if it still runs, upgrade its "
            "nova-compute. Only during a fast-forward upgrade: [workarounds] "
            "disable_compute_service_check_for_ffu = true lets the services start",
        )
    return len(old)


def _runs_nova_34(services: list[Svc]) -> bool:
    """Whether the control plane runs nova 34 or newer (whose check is the one above): the version
    a service writes is its code's SERVICE_VERSION (nova/objects/service.py Service._from_db_object /
    create), so the newest conductor or scheduler row tells the release; computes if none."""
    control = [s.version for s in services if s.binary != COMPUTE and s.version is not None]
    versions = control or [s.version for s in services if s.version is not None]
    return bool(versions) and max(v or 0 for v in versions) >= SERVICE_VERSION


def _judge_stuck(view: View, services: list[Svc], report: Report, cap: int) -> None:
    by_target: dict[str, list[Stuck]] = defaultdict(list)
    for st in view.stuck:
        by_target[st.host or st.forced_host].append(st)
    for target, items in sorted(by_target.items()):
        items.sort(key=lambda x: -x.age)
        listed = ", ".join(i.uuid for i in items[:cap])
        if len(items) > cap:
            listed += f" and {len(items) - cap} more"
        report.warning(
            f"host {target}" if target else "servers not yet on a host",
            f"{len(items)} server(s) stuck in BUILD for over {int(items[-1].age)} s: {listed}. "
            f"Likely cause: {_cause(items[0], services)}.",
            "fix the service first (see its finding); then delete the stuck servers and boot them "
            "again (openstack server delete <uuid>), or openstack server set --state error <uuid> "
            "to keep the record",
        )


def _cause(st: Stuck, services: list[Svc]) -> str:
    target = st.host or st.forced_host
    verb = "forced onto" if st.forced_host and not st.host else "on"
    if target:
        mine = [s for s in services if s.binary == COMPUTE and s.host == target and not s.in_cell0]
        if any(s.up is False for s in mine):
            return f"{verb} {target} whose nova-compute is down"
        return f"{verb} {target}, whose nova-compute reports up: look for the uuids in its log"
    causes = [
        f"{s.binary} on {s.host}{f' (cell {s.cell})' if s.cell and s.binary == CONDUCTOR else ''} is down"
        for s in sorted(services, key=_order)
        if s.binary != COMPUTE and s.up is False
    ]
    down = sorted({s.host for s in services if s.binary == COMPUTE and s.up is False})
    if len(down) == 1:
        causes.append(f"probably forced onto {down[0]} whose nova-compute is down")
    elif down:
        causes.append("probably forced onto a host whose nova-compute is down: " + ", ".join(down))
    return "; ".join(causes) or "never reached a compute: check the nova-scheduler and nova-conductor logs"


# -- metrics ---------------------------------------------------------------------


def _badness(svc: Svc) -> int:
    """Which copy a (binary, host, zone) series shows when the host runs the binary in several
    cells: the one an alert must see (down while enabled, then fenced, then disabled and down)."""
    if svc.up is False and svc.enabled and not svc.forced_down:
        return 3
    if svc.forced_down:
        return 2
    return 1 if svc.up is False else 0


def _export(view: View, services: list[Svc], too_old: int, report: Report) -> None:
    worst: dict[tuple[str, str, str], Svc] = {}
    for svc in services:
        key = (svc.binary, svc.host, svc.zone)
        if key not in worst or _badness(svc) > _badness(worst[key]):
            worst[key] = svc
    for (binary, host, zone), svc in worst.items():
        labels = {"binary": binary, "host": host, "zone": zone}
        if svc.up is not None:
            report.metric("healthd_nova_services_up", 1 if svc.up else 0, **labels)
        report.metric("healthd_nova_services_enabled", 1 if svc.enabled else 0, **labels)
        report.metric("healthd_nova_services_forced_down", 1 if svc.forced_down else 0, **labels)
    for svc in services:
        if svc.heartbeat_age is not None:
            report.metric(
                "healthd_nova_services_heartbeat_age_seconds",
                max(0.0, svc.heartbeat_age),
                cell=svc.cell,
                binary=svc.binary,
                host=svc.host,
            )
    conductors: dict[str, int] = {}  # per cell, as _pool judges them; "" = cell unknown (API)
    for svc in services:
        if svc.binary == CONDUCTOR:
            conductors[svc.cell] = conductors.get(svc.cell, 0) + (1 if svc.up else 0)
    for cell, count in sorted(conductors.items()):
        report.metric("healthd_nova_services_conductors_up", count, cell=cell)
    problems = {
        "obsolete_service": sum(1 for s in view.services if s.binary not in CURRENT_BINARIES),
        "auto_disabled": sum(1 for s in services if s.binary == COMPUTE and s.auto_disabled),
    }
    if view.cell0_read:
        problems["compute_in_cell0"] = sum(1 for s in services if s.binary == COMPUTE and s.in_cell0)
    if view.cells_read:  # the versions come from the cell databases only
        problems["too_old_compute"] = too_old
    for kind, count in sorted(problems.items()):
        report.metric("healthd_nova_services_problems", count, kind=kind)
    per_cell: dict[str, int] = dict.fromkeys(view.stuck_cells, 0)
    for st in view.stuck:
        per_cell[st.cell] = per_cell.get(st.cell, 0) + 1
    for cell, count in sorted(per_cell.items()):
        report.metric("healthd_nova_services_stuck_instances", count, cell=cell)
    down = sum(1 for s in services if s.up is False)
    summary = f"{len(services)} services, {down} down, {len(view.stuck)} stuck build(s)"
    extra = [f"{problems[k]} {k.replace('_', ' ')}" for k in sorted(problems) if problems[k]]
    if view.unreadable:
        extra.append(f"cell(s) not read: {', '.join(sorted(view.unreadable))}")
    report.summary = summary + (f" ({'; '.join(extra)})" if extra else "")
