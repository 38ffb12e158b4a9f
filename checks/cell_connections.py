"""cell_connections: the cells' database and broker URLs, as nova_api.cell_mappings stores them.

nova-api, nova-scheduler, the conductors and nova-metadata do not use their own
[database] connection / [DEFAULT] transport_url to reach a cell: they read
cell_mappings.database_connection and transport_url and connect with those
(nova/context.py set_target_cell, which caches the connections per process in
CELL_CACHE). After a password rotation, a database or broker move, or a typo in
`nova-manage cell_v2 update_cell`, the mapping goes stale: every service's own
config is right, the services report up, and builds and server listings of that
cell hang or fail with nothing logged centrally.

Per cell the probe logs in exactly as nova would:

- database: a read-only session with the mapping's own credentials and ``SELECT 1``;
- transport: an AMQP handshake (login, open the vhost) on each broker host of the URL.

Templates: nova fills ``{username}``, ``{password}``, ``{hostname}``, ... in a stored URL from
the reading service's own [database] connection / [DEFAULT] transport_url
(nova/objects/cell_mapping.py CellMapping._format_url, format_db_url, format_mq_url, called
by _from_db_object). With ``nova_conf`` set the probe fills them the same way; without it a
template is INFO, never a page. A transport_url starting with "none" (cell0's "none:///",
written by nova/cmd/manage.py CellV2Commands._map_cell0) makes nova skip the cell's own
transport and use the caller's default (nova/context.py set_target_cell
``if not cell_mapping.transport_url.startswith('none')``, nova/rpc.py ClientRouter.client).

Statements: one on nova_api, then one ``SELECT 1`` per cell database and one handshake per
broker host, in parallel under the run's deadline; never one per compute host.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from pydantic import Field

from healthd.dburl import parse_db_url
from healthd.errors import (
    AccessDenied,
    AuthFailed,
    BackendUnavailable,
    NotConfigured,
    Refused,
    TimedOut,
    TlsFailed,
    Unresolvable,
)
from healthd.model import MetricSpec, Report, Severity
from healthd.openstack import oslo_ini
from healthd.openstack.cells import CELL0_UUID, format_url, register_url_secrets
from healthd.probe import Context, Probe, ProbeSettings
from healthd.redact import describe_error

CELLS_SQL = "SELECT uuid, name, transport_url, database_connection, disabled FROM cell_mappings ORDER BY id"

# nova/cmd/manage.py CellV2Commands.update_cell: an option left out is not kept but taken from the
# running nova-manage's nova.conf (_validate_transport_url / _validate_database_connection).
BOTH = (" (pass the other URL too, as it is now: update_cell fills a missing --transport-url / "
        "--database_connection from the nova.conf it reads)")
RESTART = ("then restart nova-api, nova-scheduler, nova-metadata and every nova-conductor (they cache "
           "the cell's connections, nova/context.py CELL_CACHE)")
# Every URL's password shows as *** (healthd.redact masks any "://user:...@"): the fix says so.
UPDATE_DB = ("nova-manage cell_v2 update_cell --cell_uuid {uuid} --database_connection "
             "'mysql+pymysql://{user}:***@{where}/{database}'")
UPDATE_MQ = "nova-manage cell_v2 update_cell --cell_uuid {uuid} --transport-url 'rabbit://{hosts}/{vhost}'"

# What each typed error means for a URL nova uses as stored.
KIND_OF = (
    (AuthFailed, "auth"),
    (AccessDenied, "denied"),
    (Unresolvable, "unreachable"),
    (Refused, "unreachable"),
    (TimedOut, "unreachable"),
    (TlsFailed, "tls"),
)


class CellConnectionsProbe(Probe):
    name = "cell_connections"
    description = ("Each cell's database_connection and transport_url in nova_api.cell_mappings "
                   "accept their stored credentials.")
    default_interval = 300.0
    default_timeout = 30.0
    requires = ("db:nova_api",)
    privileges = (
        "SELECT on nova_api.cell_mappings; the cells' databases and brokers are logged in to with "
        "the credentials stored in each mapping (read-only session, SELECT 1; AMQP login and vhost open)"
    )
    metrics = (
        MetricSpec("healthd_cell_connections_cells", "Cells in nova_api.cell_mappings, cell0 included."),
        MetricSpec("healthd_cell_connections_database_up",
                   "1 if the cell's mapped database_connection accepted its credentials (SELECT 1), "
                   "0 if not; absent when not checked.", ("cell",)),
        MetricSpec("healthd_cell_connections_transport_up",
                   "1 if the broker host of the cell's mapped transport_url accepted its login on the "
                   "vhost, 0 if not; absent when not checked.", ("cell", "endpoint")),
    )

    class Settings(ProbeSettings):
        nova_conf: str | None = Field(
            None, description="nova.conf of a conductor/API node, only to fill templated mappings "
            "({username}, {password}, ...) as nova does; without it a template is INFO, not checked")
        ignore_cells: list[str] = Field(
            default_factory=list, description="cell names or uuids not checked (e.g. unreachable from "
            "healthd's host by design)")
        amqp_tls: bool = Field(
            False, description="the cells' brokers speak TLS ([oslo_messaging_rabbit] ssl)")
        amqp_ca_file: str | None = Field(
            None, description="CA bundle to verify the brokers' TLS certificates")
        max_parallel: int = Field(8, ge=1, description="connection checks run at once")

    settings: Settings

    def run(self, ctx: Context, report: Report) -> None:
        judge(load(ctx, self.settings), report)


# -- plain data ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One login attempt: error None means it worked."""

    target: str  # "database" or "transport"
    endpoint: str  # host:port (never the password)
    user: str = ""
    where: str = ""  # database name or vhost
    kind: str = ""  # "", auth, denied, unreachable, tls, protocol, invalid, deadline
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class CellConnections:
    uuid: str
    name: str
    disabled: bool = False
    outcomes: list[Outcome] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (target, why it was not checked)

    @property
    def label(self) -> str:
        return self.name or self.uuid

    @property
    def is_cell0(self) -> bool:
        return self.uuid == CELL0_UUID


# -- loading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    cell: str  # uuid
    target: str
    index: int  # broker host index (0 for the database)


def load(ctx: Context, settings: CellConnectionsProbe.Settings) -> list[CellConnections]:
    with ctx.db("nova_api") as api:
        rows = api.query(CELLS_SQL)
    for row in rows:  # every password is registered before anything is said
        for key in ("database_connection", "transport_url"):
            register_url_secrets(row[key] or "")
    defaults = _nova_defaults(settings.nova_conf)
    tls = _tls(settings)
    cells: list[CellConnections] = []
    plans: dict[_Task, Any] = {}
    for row in rows:
        cell = CellConnections(row["uuid"], row["name"] or "", bool(row["disabled"]))
        cells.append(cell)
        if cell.uuid in settings.ignore_cells or (cell.name and cell.name in settings.ignore_cells):
            cell.notes.append(("cell", "listed in ignore_cells"))
            continue
        _plan_database(cell, row["database_connection"] or "", defaults, plans)
        _plan_transport(cell, row["transport_url"] or "", defaults, plans)

    def attempt(task: _Task) -> Outcome:
        return _attempt(ctx, plans[task], tls)

    def late(task: _Task) -> Outcome:
        plan = plans[task]
        return Outcome(task.target, plan["endpoint"], plan["user"], plan["where"], "deadline",
                       "not checked before the run's deadline")

    results = ctx.map_parallel(attempt, list(plans), settings.max_parallel, late)
    by_uuid = {c.uuid: c for c in cells}
    for task in plans:  # plan order: database first, then the broker hosts in URL order
        by_uuid[task.cell].outcomes.append(results[task])
    return cells


def _nova_defaults(path: str | None) -> dict[str, str | None]:
    """[database] connection and [DEFAULT] transport_url of nova.conf, as nova's templates use them."""
    if not path:
        return {}
    cf = oslo_ini.read(path)
    found: dict[str, str | None] = {"error": cf.error}
    for key, section, option in (("database", "database", "connection"),
                                 ("transport", "DEFAULT", "transport_url")):
        try:
            value = cf.value(section, option) if cf.conf is not None else None
        except oslo_ini.OptionError:  # an option healthd's oslo.config does not register: as written
            value = cf.get(section, option)
        found[key] = str(value) if value else None
        register_url_secrets(found[key] or "")
    return found


def _fill(cell: CellConnections, target: str, url: str, default_key: str, option: str,
          defaults: dict[str, str | None]) -> str | None:
    """The URL nova uses: templates filled as format_db_url/format_mq_url do, None if unknown."""
    if "{" not in url:
        return url
    if not defaults:
        cell.notes.append((target, "the mapping is a template that nova fills from its own "
                                   f"{option}; set nova_conf so healthd can fill it too"))
        return None
    default = defaults.get(default_key)
    if not default:
        why = (f"nova.conf: {defaults['error']}" if defaults.get("error")
               else f"{option} is not set in nova_conf")
        cell.notes.append((target, f"the mapping is a template and {why} (nova logs \"Cell mapping ... "
                                   f"is a template, but {option} is not set\" and uses it unfilled)"))
        return None
    try:
        return format_url(url, default)
    except (KeyError, IndexError, ValueError):
        # nova logs "Failed to parse ... to format cell mapping" and uses the template as is
        cell.notes.append((target, f"the template cannot be filled from {option} (nova uses it unfilled)"))
        return None


def _plan_database(cell: CellConnections, stored: str, defaults: dict[str, str | None],
                   plans: dict[_Task, Any]) -> None:
    url = _fill(cell, "database", stored, "database", "[database] connection", defaults)
    if url is None:
        return
    task = _Task(cell.uuid, "database", 0)
    scheme = urlsplit(url).scheme
    if url and scheme and not scheme.startswith("mysql"):
        cell.notes.append(("database", f"{scheme.split('+')[0]} databases are not checked (MySQL only)"))
        return
    try:
        target = parse_db_url(url)
    except ValueError as exc:
        plans[task] = {"kind": "database", "endpoint": "", "user": "", "where": "",
                       "invalid": f"{exc}" if url else "it is empty"}
        return
    where = target.unix_socket or f"{target.host}:{target.port}"
    plans[task] = {"kind": "database", "url": url, "endpoint": where, "user": target.user,
                   "where": target.database, "label": cell.label}


def _plan_transport(cell: CellConnections, stored: str, defaults: dict[str, str | None],
                    plans: dict[_Task, Any]) -> None:
    # nova/context.py set_target_cell: a URL starting with "none" is never connected to; calls
    # for the cell go through the caller's own [DEFAULT] transport_url (nova/rpc.py ClientRouter).
    if stored.startswith("none"):
        if not cell.is_cell0:
            cell.notes.append(("transport", "transport_url is none:///: nova sends this cell's RPC "
                                            "through each service's own [DEFAULT] transport_url"))
        return
    url = _fill(cell, "transport", stored, "transport", "[DEFAULT] transport_url", defaults)
    if url is None:
        return
    try:
        parsed = oslo_ini.parse_transport_url(url)
    except oslo_ini.TransportError as exc:
        plans[_Task(cell.uuid, "transport", 0)] = {"kind": "transport", "endpoint": "", "user": "",
                                                   "where": "", "invalid": str(exc)}
        return
    if parsed.driver not in ("rabbit", "amqp") or parsed.scheme.startswith("amqp"):
        cell.notes.append(("transport", f"{parsed.scheme} brokers are not checked (RabbitMQ only)"))
        return
    if not parsed.hosts:
        plans[_Task(cell.uuid, "transport", 0)] = {"kind": "transport", "endpoint": "", "user": "",
                                                   "where": parsed.vhost,
                                                   "invalid": "it names no broker host"}
        return
    for index, host in enumerate(parsed.hosts):
        plans[_Task(cell.uuid, "transport", index)] = {
            "kind": "transport", "host": host, "endpoint": host.endpoint, "user": host.user,
            "where": parsed.vhost, "label": cell.label}


def _tls(settings: CellConnectionsProbe.Settings) -> ssl.SSLContext | None:
    if not settings.amqp_tls:
        return None
    return ssl.create_default_context(cafile=settings.amqp_ca_file)


def _attempt(ctx: Context, plan: dict[str, Any], tls: ssl.SSLContext | None) -> Outcome:
    if "invalid" in plan:
        return Outcome(plan["kind"], "", "", plan["where"], "invalid", plan["invalid"])
    outcome = Outcome(plan["kind"], plan["endpoint"], plan["user"], plan["where"])
    try:
        if plan["kind"] == "database":
            with ctx.db_at(plan["url"], f"cell {plan['label']}") as db:
                db.query("SELECT 1")
        else:
            host = plan["host"]
            ctx.amqp_handshake(host.host, host.port, host.user, host.password, plan["where"], tls)
    except BackendUnavailable as exc:
        kind = next((k for cls, k in KIND_OF if isinstance(exc, cls)), "protocol")
        if isinstance(exc, NotConfigured):
            kind = "invalid"
        return Outcome(outcome.target, outcome.endpoint, outcome.user, outcome.where, kind,
                       describe_error(exc))
    return outcome


# -- judging: plain data in, findings and metrics out --------------------------------------

SEVERITY = {"auth": Severity.CRITICAL, "denied": Severity.CRITICAL, "unreachable": Severity.CRITICAL,
            "invalid": Severity.CRITICAL, "protocol": Severity.WARNING, "tls": Severity.WARNING,
            "deadline": Severity.WARNING}

WHY = {
    "auth": "the server refused the stored credentials (a password rotated or a user changed without "
            "updating the mapping)",
    "denied": "the login worked but access was refused (database grants / vhost permissions of that user)",
    "unreachable": "nothing answers there from healthd's host (moved, down, or a stale host name)",
    "invalid": "nova cannot use the stored URL either",
    "protocol": "the server did not complete the handshake",
    "tls": "the TLS handshake failed from healthd's host (check amqp_tls / amqp_ca_file before the mapping)",
    "deadline": "the check did not finish before the run's deadline",
}


def judge(cells: list[CellConnections], report: Report) -> None:
    report.metric("healthd_cell_connections_cells", len(cells))
    checked = failing = 0
    for cell in cells:
        for outcome in cell.outcomes:
            if outcome.kind == "deadline":
                pass
            elif outcome.target == "database":
                report.metric("healthd_cell_connections_database_up", int(outcome.ok), cell=cell.label)
            elif outcome.endpoint:
                report.metric("healthd_cell_connections_transport_up", int(outcome.ok), cell=cell.label,
                              endpoint=outcome.endpoint)
            checked += 1
            if not outcome.ok:
                failing += 1
                # oslo.messaging's rabbit driver fails over between the URL's hosts
                # (impl_rabbit.py Connection.ensure_connection cycles through them): one host that
                # does not answer while another accepts the login is lost redundancy, not an outage.
                others_ok = outcome.target == "transport" and any(
                    o.ok for o in cell.outcomes if o.target == "transport")
                _finding(cell, outcome, report, degraded=others_ok and outcome.kind == "unreachable")
        for target, why in cell.notes:
            report.finding(Severity.INFO, f"cell {cell.label} {target}",
                           f"cell {cell.label} ({cell.uuid}): {target} not checked: {why}",
                           "nothing to do unless this is unexpected")
    report.summary = (f"{len(cells)} cells, {checked} mapped connections checked, {failing} failing"
                      if cells else "nova_api.cell_mappings is empty")


def _finding(cell: CellConnections, outcome: Outcome, report: Report, degraded: bool = False) -> None:
    subject = f"cell {cell.label} {outcome.target}"
    where = f" at {outcome.endpoint}" if outcome.endpoint else ""
    who = f" as {outcome.user}" if outcome.user else ""
    what = ("database_connection" if outcome.target == "database" else "transport_url")
    disabled = " The cell is disabled, but nova-api still reads its instances." if cell.disabled else ""
    effect = ("nova-api, the schedulers and the conductors cannot read or write this cell's database: "
              "server lists miss its instances and builds there fail"
              if outcome.target == "database" else
              "the API and super-conductor cannot send RPC to this cell (builds, reboots, migrations hang)")
    message = (f"cell {cell.label} ({cell.uuid}): nova_api.cell_mappings.{what}{where}{who} "
               f"fails: {WHY[outcome.kind]} ({outcome.error}). Until it is fixed, {effect}.{disabled}")
    if outcome.target == "database":
        fix = UPDATE_DB.format(uuid=cell.uuid, user=outcome.user or "USER",
                               where=outcome.endpoint or "HOST:3306", database=outcome.where or "DATABASE")
    else:
        vhost = "" if outcome.where in ("", "/") else quote(outcome.where, safe="")
        endpoints = [o.endpoint for o in cell.outcomes if o.target == "transport" and o.endpoint]
        user = outcome.user or "USER"
        hosts = ",".join(f"{user}:***@{e}" for e in endpoints or ["HOST:5672"])
        fix = UPDATE_MQ.format(uuid=cell.uuid, hosts=hosts, vhost=vhost)
    fix += BOTH
    if outcome.kind in ("auth", "unreachable", "invalid"):
        remedy = (f"on a controller, with the current location and credentials (*** = the current "
                  f"password): {fix}; {RESTART}")
    elif outcome.kind == "denied":
        remedy = (f"grant {outcome.user} access to {outcome.where} (or point the mapping at the right "
                  f"user: {fix}; {RESTART})")
    else:
        remedy = f"check the {outcome.target} server{where} from a controller; if it moved: {fix}; {RESTART}"
    severity = SEVERITY[outcome.kind]
    if degraded:
        severity = Severity.WARNING
        message += " Another broker host of the URL accepts the login, so nova fails over to it."
    report.finding(severity, subject, message, remedy)
