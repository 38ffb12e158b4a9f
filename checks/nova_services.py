"""Nova services that stopped reporting, and the builds stuck behind them.

Every nova-compute, nova-conductor and nova-scheduler writes a heartbeat into
its cell's `services` table (report_count, last_seen_up) every
report_interval. Nova calls a service down when the last heartbeat is older
than `service_down_time`, or when an operator forced it down after fencing.

A down service is not always visible to users: the scheduler skips down
computes. But a server booted onto a chosen host (`--availability-zone
nova:HOST`) bypasses the filters: the build is cast to a compute that is not
listening, and the server sits in vm_state `building` / task_state
`scheduling` forever. With the conductor or scheduler down, every new build
hangs that way.

The probe separates a service an operator disabled for maintenance (status
disabled, usually with a reason: at most a WARNING) from one that died while
enabled (CRITICAL for a nova-compute; for the other binaries CRITICAL when no
copy of the binary is up). It lists builds stuck longer than
`stuck_build_seconds` with the likely cause.

Sources: the compute API (`GET /os-services`, one call, and `GET
/servers/detail?all_tenants&status=BUILD`, one paginated call), and/or each
cell database (one `services` and one `instances` query per cell, plus one
`build_requests` and one availability-zone query on nova_api). `source: both`
takes the state from the API and adds the heartbeat age from the databases.
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
from healthd.openstack.cells import cell_db, cells
from healthd.probe import BackendUnavailable, Context, Probe, ProbeSettings

COMPUTE = "nova-compute"
# The API services write a row but never heartbeat; nova's os-services API hides them too
# (nova/api/openstack/compute/services.py _get_services).
API_BINARIES = ("nova-osapi_compute", "nova-metadata")
UNSCHEDULED = "(none)"  # cell label of builds still in nova_api.build_requests

# Debian/Ubuntu unit names; RDO prefixes them with "openstack-".
RESTART = (
    "on {host}: systemctl restart {unit} (check `journalctl -u {unit}` / /var/log/nova/{binary}.log "
    "and its connection to RabbitMQ and the database)"
)


@dataclass
class Svc:
    binary: str
    host: str
    zone: str = ""
    cell: str = ""
    enabled: bool = True
    up: bool | None = True  # None: nova could not tell (down cell)
    forced_down: bool = False
    disabled_reason: str = ""
    heartbeat_age: float | None = None  # seconds, DB source only


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
    services: dict[tuple[str, str], Svc] = field(default_factory=dict)  # (binary, host)
    stuck: list[Stuck] = field(default_factory=list)
    stuck_cells: set[str] = field(default_factory=set)  # cells looked at (metric 0 when clean)
    zones: dict[str, str] | None = field(default_factory=dict)  # host -> AZ (DB); None: unreadable
    zones_denied: str = ""  # why the zones could not be read (the grant is missing)


class NovaServicesProbe(Probe):
    name = "nova_services"
    description = "Nova services down (vs disabled for maintenance) and builds stuck behind them."
    default_interval = 60.0
    default_timeout = 30.0
    requires = ("openstack",)  # "cells" with source: db or both
    privileges = (
        "Nova: os_compute_api:os-services:list and os_compute_api:servers:detail:get_all_tenants "
        "default to admin; grant them to a reader role in nova's policy.yaml for least privilege. "
        "With source: db or both: SELECT on nova_api.cell_mappings, build_requests, request_specs, "
        "aggregate_hosts and aggregate_metadata, and on services and instances in every cell database."
    )
    metrics = (
        MetricSpec(
            "healthd_nova_services_up",
            "1 if nova considers the service up (recent heartbeat, not forced down), else 0.",
            ("binary", "host", "zone"),
        ),
        MetricSpec(
            "healthd_nova_services_enabled",
            "1 if the service is enabled, 0 if an operator disabled it.",
            ("binary", "host", "zone"),
        ),
        MetricSpec(
            "healthd_nova_services_forced_down",
            "1 if an operator forced the service down (fenced host).",
            ("binary", "host", "zone"),
        ),
        MetricSpec(
            "healthd_nova_services_heartbeat_age_seconds",
            "Seconds since the service's last heartbeat (last_seen_up), from the cell database.",
            ("cell", "binary", "host"),
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
            600.0, gt=0, description="a server in BUILD for longer than this is stuck"
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
            view.services[(svc.binary, svc.host)] = svc


def _load_api_stuck(ctx: Context, view: View, threshold: float) -> None:
    conn = ctx.openstack()
    now = datetime.now(UTC)
    with ctx.api_call("compute server list (status BUILD, all projects)"):
        servers = list(conn.compute.servers(details=True, all_projects=True, status="BUILD"))
    view.stuck_cells.add("")
    view.stuck.extend(stuck_from_api(servers, now, threshold))


def service_from_api(r: Any) -> Svc | None:
    """One os-services entry (openstacksdk Service) as a Svc; None for the API services."""
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
    )


def stuck_from_api(servers: list[Any], now: datetime, threshold: float) -> list[Stuck]:
    """The servers in BUILD for longer than threshold seconds at ``now``."""
    stuck = []
    for srv in servers:
        # Not `updated`: nova renders a NULL updated_at as the current time (utils.isotime(None)),
        # and a build that never reached a compute has none. BUILD lasts from creation on.
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
# service_down_time 8 while nova already says down.
SERVICES_SQL = (
    "SELECT host, `binary`, disabled, disabled_reason, forced_down, "
    "TIMESTAMPDIFF(MICROSECOND, COALESCE(last_seen_up, created_at), UTC_TIMESTAMP(6)) / 1e6 AS age "
    "FROM services WHERE deleted = 0"
)
# vm_state building / task_state scheduling untouched for longer than the threshold.
INSTANCES_SQL = (
    "SELECT uuid, host, task_state, "
    "TIMESTAMPDIFF(SECOND, COALESCE(updated_at, created_at), UTC_TIMESTAMP()) AS age "
    "FROM instances WHERE deleted = 0 AND (vm_state = 'building' OR task_state = 'scheduling') "
    "AND COALESCE(updated_at, created_at) < UTC_TIMESTAMP() - INTERVAL %s SECOND"
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
    all_cells = cells(ctx)
    if not all_cells:
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
    for cell in all_cells:
        with cell_db(ctx, cell) as db:
            services = db.query(SERVICES_SQL)
            instances = db.query(INSTANCES_SQL, (threshold,)) if s.check_stuck_builds else []
        for row in services:
            merge_db_service(view, cell.label, row, s.service_down_time, merge, zone_of)
        for row in instances:
            view.stuck.append(
                Stuck(row["uuid"], row["host"] or "", cell.label, float(row["age"]), row["task_state"] or "")
            )
        if s.check_stuck_builds:
            view.stuck_cells.add(cell.label)
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


def merge_db_service(view: View, cell: str, row: dict[str, Any], down_time: float, merge: bool,
                     zone_of: Callable[[str, str], str]) -> None:
    """Add one SERVICES_SQL row to the view; with merge, to the API's entry for it."""
    if row["binary"] in API_BINARIES:
        return
    age = float(row["age"]) if row["age"] is not None else None
    key = (row["binary"], row["host"])
    known = view.services.get(key)
    if merge and known is not None:  # the API's verdict stands; the DB adds where and how old
        known.cell, known.heartbeat_age = cell, age
        return
    forced = bool(row["forced_down"])
    view.services[key] = Svc(
        binary=row["binary"],
        host=row["host"],
        zone=zone_of(row["binary"], row["host"]),
        cell=cell,
        enabled=not row["disabled"],
        # nova/servicegroup/api.py service_is_up: forced_down first, then the driver's is_up
        # (nova/servicegroup/drivers/db.py: abs(elapsed) <= service_down_time).
        up=not forced and age is not None and abs(age) <= down_time,
        forced_down=forced,
        disabled_reason=row["disabled_reason"] or "",
        heartbeat_age=age,
    )


# == judging: a View and the settings -> findings and metrics (no I/O) ==========


def judge(report: Report, view: View, s: NovaServicesProbe.Settings) -> None:
    _judge_zones(view, report)
    _judge_services(view, report)
    _judge_stuck(view, report, s.max_listed_servers)
    _export(view, report)


def _judge_zones(view: View, report: Report) -> None:
    if view.zones_denied:
        report.warning("availability zones", f"zone labels left empty: {view.zones_denied}",
                       "GRANT SELECT ON nova_api.aggregate_hosts and nova_api.aggregate_metadata to the "
                       "healthd account (deploy/mysql/grants.sql)")


def _since(svc: Svc) -> str:
    return f" (last heartbeat {int(svc.heartbeat_age)} s ago)" if svc.heartbeat_age is not None else ""


def _where(svc: Svc) -> str:
    parts = [f"zone {svc.zone}" if svc.zone else "", f"cell {svc.cell}" if svc.cell else ""]
    inner = ", ".join(p for p in parts if p)
    return f" ({inner})" if inner else ""


def _judge_services(view: View, report: Report) -> None:
    up_by_binary: dict[str, int] = defaultdict(int)
    for svc in view.services.values():
        if svc.up:
            up_by_binary[svc.binary] += 1
    for svc in sorted(view.services.values(), key=lambda x: (x.binary, x.host)):
        if svc.up is None:
            report.warning(
                f"host {svc.host}",
                f"{svc.binary} on {svc.host}: nova cannot tell its state (its cell database "
                "is unreachable from nova-api).",
                "check the cell's database connection in nova_api.cell_mappings and the DB server",
            )
        elif svc.forced_down:
            _forced_down(svc, report)
        elif not svc.up and not svc.enabled:
            _disabled_down(svc, report)
        elif not svc.up:
            _enabled_down(svc, report, up_by_binary[svc.binary])


def _enabled_down(svc: Svc, report: Report, peers_up: int) -> None:
    restart = RESTART.format(host=svc.host, unit=svc.binary, binary=svc.binary)
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
    others = f"{peers_up} other {svc.binary} up" if peers_up else f"no {svc.binary} is up: new builds hang"
    report.finding(
        severity,
        f"host {svc.host}",
        f"{svc.binary} on {svc.host}{_where(svc)} is down{_since(svc)}; {others}.",
        f"{restart}; if the host is retired: openstack compute service delete <id of {svc.binary} "
        f"on {svc.host} from `openstack compute service list`>",
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


def _forced_down(svc: Svc, report: Report) -> None:
    report.warning(
        f"host {svc.host}",
        f"{svc.binary} on {svc.host}{_where(svc)} is forced down by an operator (host fenced): "
        "nova treats it as down whatever its heartbeat says.",
        f"evacuate its servers (openstack server evacuate); once the host is repaired: "
        f"openstack compute service set --up {svc.host} {svc.binary}",
    )


def _judge_stuck(view: View, report: Report, cap: int) -> None:
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
            f"Likely cause: {_cause(items[0], view)}.",
            "fix the service first (see its finding); then delete the stuck servers and boot them "
            "again (openstack server delete <uuid>), or openstack server set --state error <uuid> "
            "to keep the record",
        )


def _cause(st: Stuck, view: View) -> str:
    target = st.host or st.forced_host
    svc = view.services.get((COMPUTE, target)) if target else None
    verb = "forced onto" if st.forced_host and not st.host else "on"
    if svc is not None and svc.up is False:
        return f"{verb} {target} whose nova-compute is down"
    if target:
        return f"{verb} {target}, whose nova-compute reports up: look for the uuids in its log"
    causes = [
        f"{s.binary} on {s.host} is down"
        for s in sorted(view.services.values(), key=lambda x: (x.binary, x.host))
        if s.binary != COMPUTE and s.up is False
    ]
    down = sorted(s.host for s in view.services.values() if s.binary == COMPUTE and s.up is False)
    if len(down) == 1:
        causes.append(f"probably forced onto {down[0]} whose nova-compute is down")
    elif down:
        causes.append("probably forced onto a host whose nova-compute is down: " + ", ".join(down))
    return "; ".join(causes) or "never reached a compute: check the nova-scheduler and nova-conductor logs"


# -- metrics ---------------------------------------------------------------------


def _export(view: View, report: Report) -> None:
    for svc in view.services.values():
        labels = {"binary": svc.binary, "host": svc.host, "zone": svc.zone}
        if svc.up is not None:
            report.metric("healthd_nova_services_up", 1 if svc.up else 0, **labels)
        report.metric("healthd_nova_services_enabled", 1 if svc.enabled else 0, **labels)
        report.metric("healthd_nova_services_forced_down", 1 if svc.forced_down else 0, **labels)
        if svc.heartbeat_age is not None:
            report.metric(
                "healthd_nova_services_heartbeat_age_seconds",
                max(0.0, svc.heartbeat_age),
                cell=svc.cell,
                binary=svc.binary,
                host=svc.host,
            )
    per_cell: dict[str, int] = dict.fromkeys(view.stuck_cells, 0)
    for st in view.stuck:
        per_cell[st.cell] = per_cell.get(st.cell, 0) + 1
    for cell, count in sorted(per_cell.items()):
        report.metric("healthd_nova_services_stuck_instances", count, cell=cell)
    down = sum(1 for s in view.services.values() if s.up is False)
    report.summary = f"{len(view.services)} services, {down} down, {len(view.stuck)} stuck build(s)"
