"""rabbit_queues: the RPC queues nova needs have consumers, and no queue piles up messages.

Nova talks to its services through RabbitMQ queues that oslo.messaging names after the
RPC target (oslo.messaging 18.3.1 amqpdriver.py AMQPDriverBase.listen: one queue ``topic``
shared by every server of the topic, one ``topic.server`` per server, and a fanout queue):

- ``conductor`` (nova/conductor/rpcapi.py RPC_TOPIC): build_instances /
  schedule_and_build_instances from nova-api, the computes' database proxy and heartbeats;
- ``scheduler`` (nova/scheduler/rpcapi.py RPC_TOPIC): select_destinations from the conductor;
- ``compute`` and ``compute.<host>`` (nova/compute/rpcapi.py RPC_TOPIC, server = the
  compute's CONF.host): every cast to one compute (build_and_run_instance, reboot, ...).

Which broker: nova-api, the schedulers and the super-conductor use their own
[DEFAULT] transport_url (nova/rpc.py init); calls to a cell go through the cell's
nova_api.cell_mappings.transport_url (nova/context.py set_target_cell creates
``mq_connection`` from it, nova/rpc.py ClientRouter.client uses it), where that cell's
conductors and computes listen. A mapping starting with "none" (cell0's "none:///") makes
nova use the caller's own transport. The API level is recognised by its config file: the
services that reach nova_api have an [api_database] connection, cell conductors and
computes have none (nova's cells v2 layout docs, "Service layout").

A queue with no consumer keeps what is sent to it: topic queues are neither auto-delete nor
exclusive (impl_rabbit.py declare_topic_consumer: queue_auto_delete = amqp_auto_delete,
default False), so ``compute.<gone host>`` stays with 0 consumers until the broker restarts,
and a cast to a conductor that is stopped waits there (the build stays in scheduling).

Notifications: with [oslo_messaging_notifications] driver messaging / messagingv2 the
publisher itself declares a queue named after the routing key ``<topic>.<priority>``
(impl_rabbit.py Connection._publish_and_creates_default_queue, "to not miss notification in
case of nobody consumes them yet"; notify/messaging.py MessagingDriver.notify), so with no
consumer (no ceilometer) ``notifications.info`` grows without bound. Nova's topics: the
oslo ``topics`` (default ``notifications``) for the unversioned format, nova's
[notifications] versioned_notifications_topics for the versioned one (nova/rpc.py init,
nova/conf/notifications.py notification_format, default unversioned).

How: passive queue.declare (returns the ready message count and the consumer count; needs
no configure/write/read permission, only access to the vhost: RabbitMQ access-control
table). One AMQP connection per (broker, vhost, user); a missing queue closes the channel
with 404 (a new channel is opened), another connection's exclusive queue gives 405.
Queue names come from nova's ``services`` tables: one statement on nova_api
(cell_mappings) and one per cell; one declare per queue, in batches under the deadline.
Reply (``reply_<hex>``) and fanout (``<topic>_fanout_<hex>``) queues are not looked at:
they expire on their own (rabbit_transient_queues_ttl, default 1800 s).
"""

from __future__ import annotations

import contextlib
import ssl
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from healthd.errors import BackendUnavailable
from healthd.model import MetricSpec, Report, Severity
from healthd.openstack import oslo_ini
from healthd.openstack.cells import CELL0_UUID, Cell, cell_db, format_url, register_url_secrets
from healthd.probe import Context, Probe, ProbeSettings
from healthd.redact import describe_error, register_secret

COMPUTE = "nova-compute"
CONDUCTOR = "nova-conductor"
SCHEDULER = "nova-scheduler"
# nova/conductor/rpcapi.py, nova/scheduler/rpcapi.py, nova/compute/rpcapi.py RPC_TOPIC (nova 34)
CONDUCTOR_TOPIC, SCHEDULER_TOPIC, COMPUTE_TOPIC = "conductor", "scheduler", "compute"
# nova/compute/rpcapi.py RPC_TOPIC_ALT, nova/service.py Service.start: nova 34 computes run a
# second RPC server on "compute-alt" that stays up during a graceful shutdown, after the
# "compute" server stopped (Service.stop). Looked at only for a compute.<host> without consumer.
COMPUTE_ALT_TOPIC = "compute-alt"
# oslo.messaging setup.cfg oslo.messaging.notify.drivers: the two that publish to the broker.
MESSAGING_NOTIFY_DRIVERS = frozenset({"messaging", "messagingv2"})
# notify/notifier.py Notifier.audit/debug/info/warn/error/critical/sample, lower-cased by
# notify/messaging.py MessagingDriver.notify into the routing key "<topic>.<priority>".
PRIORITIES = ("audit", "critical", "debug", "error", "info", "sample", "warn")

CELLS_SQL = "SELECT uuid, name, transport_url, database_connection FROM cell_mappings ORDER BY id"
# nova/servicegroup/api.py service_is_up: forced_down first, then
# nova/servicegroup/drivers/db.py DbDriver.is_up: last_seen_up or created_at against utcnow(),
# abs(elapsed) <= service_down_time (the database's clock, as checks/nova_services.py reads it).
# Deleted rows too (deleted != 0, nova/db/main/api.py service_destroy): their compute.<host>
# queue outlives them.
SERVICES_SQL = (
    "SELECT host, `binary`, disabled, forced_down, deleted, "
    "TIMESTAMPDIFF(MICROSECOND, COALESCE(last_seen_up, created_at), UTC_TIMESTAMP(6)) / 1e6 AS age "
    "FROM services WHERE `binary` IN ('nova-compute', 'nova-conductor', 'nova-scheduler')"
)
RESTART = "on {host}: systemctl restart {unit} (then `journalctl -u {unit}`: its broker connection)"
PROBLEM_KINDS = ("no_consumer", "missing", "piling", "notifications_piling", "stale_compute_queue",
                 "not_checked")


class RabbitQueuesProbe(Probe):
    name = "rabbit_queues"
    description = ("nova's RPC queues (conductor, scheduler, compute.<host>) have consumers on each "
                   "cell's broker; no queue, notifications included, piles up messages.")
    default_interval = 60.0
    default_timeout = 30.0
    requires = ("db:nova_api",)
    privileges = (
        "RabbitMQ: a user with permissions '^$' '^$' '^$' on each vhost (passive declares need only "
        "access to the vhost), or the services' own users from the URLs. MySQL: SELECT on "
        "nova_api.cell_mappings and on services in every cell database (cell0 included)."
    )
    metrics = (
        MetricSpec("healthd_rabbit_queues_broker_up",
                   "1 if healthd logged in to the broker's vhost and declared its queues, 0 if not.",
                   ("broker",)),
        MetricSpec("healthd_rabbit_queues_consumers",
                   "Consumers of the queue (passive declare). Fixed queues always, compute.<host> and "
                   "notification queues up to max_queue_series (problems first).",
                   ("broker", "cell", "kind", "queue")),
        MetricSpec("healthd_rabbit_queues_messages",
                   "Messages ready in the queue (passive declare), same series as _consumers.",
                   ("broker", "cell", "kind", "queue")),
        MetricSpec("healthd_rabbit_queues_problems",
                   "Queues by problem: no_consumer and missing (a queue nova needs: critical), piling "
                   "(RPC messages pile up), notifications_piling, stale_compute_queue (a down, disabled "
                   "or deleted compute's queue: info), not_checked.", ("kind",)),
        MetricSpec("healthd_rabbit_queues_declares", "Passive declares done in the run (the cost)."),
        MetricSpec("healthd_rabbit_queues_series_dropped",
                   "Queue series not exported because of max_queue_series."),
    )

    class Settings(ProbeSettings):
        files: list[str] = Field(
            default_factory=list, description="service config files (globs allowed) whose transport "
            "URLs and notification settings are checked: the nova.conf of a controller (its "
            "[api_database] marks the API-level broker) and any others that send notifications")
        service_down_time: float | None = Field(
            None, gt=0, description="seconds without heartbeat before nova calls a service down; "
            "default: [DEFAULT] service_down_time of the API-level nova.conf in files, else 60")
        user: str | None = Field(
            None, description="log in to every broker as this user (a monitoring user with '^$' '^$' "
            "'^$' on each vhost) instead of the user of each transport URL")
        password_file: str | None = Field(None, description="file holding that user's password")
        ready_warning: int = Field(100, ge=1, description="ready messages in an RPC queue with "
                                   "consumers that make a WARNING")
        growth_min_messages: int = Field(10, ge=1, description="a queue whose ready count grew for "
                                         "growth_runs runs in a row is WARNING once it holds this many")
        growth_runs: int = Field(3, ge=1, description="consecutive runs of growth for that WARNING")
        notification_warning_messages: int = Field(
            1000, ge=1, description="messages in a notification queue that make a WARNING (also "
            "when it has consumers); without consumers, growth alone does")
        notification_priorities: list[str] = Field(
            default_factory=lambda: list(PRIORITIES), description="<topic>.<priority> queues looked at")
        check_deleted_computes: bool = Field(True, description="also look at compute.<host> of "
                                             "deleted nova-compute rows (INFO when the queue stays)")
        ignore_cells: list[str] = Field(default_factory=list, description="cell names or uuids skipped")
        declare_batch: int = Field(500, ge=1, description="declares between two deadline checks")
        max_queue_series: int = Field(200, ge=0, description="compute.<host> and notification "
                                      "series exported at most (problems first)")
        max_findings: int = Field(50, ge=1, description="compute.<host> findings listed one by one "
                                  "per severity and problem kind; the rest in one finding")
        max_parallel: int = Field(4, ge=1, description="cell databases and brokers read at once")

    settings: Settings

    def run(self, ctx: Context, report: Report) -> None:
        view = load(ctx, self.settings)
        judge(view, self.settings, report, ctx.state)


# == plain data =========================================================================


@dataclass(frozen=True)
class Svc:
    cell: str
    binary: str
    host: str
    enabled: bool = True
    up: bool = True
    deleted: bool = False
    forced_down: bool = False
    age: float | None = None

    @property
    def state(self) -> str:
        if self.deleted:
            return "deleted"
        if self.forced_down:
            return "forced down"
        if not self.up:
            return f"down (last heartbeat {self.age:.0f} s ago)" if self.age is not None else "down"
        return "up" if self.enabled else "up but disabled"

    @property
    def serving(self) -> bool:
        """nova sends it work: enabled, not deleted, up (computes: the scheduler's filters)."""
        return self.enabled and self.up and not self.deleted


@dataclass(frozen=True)
class QueueState:
    exists: bool = False
    messages: int = 0
    consumers: int = 0
    locked: bool = False  # 405 RESOURCE_LOCKED: another connection's exclusive queue
    error: str = ""  # not checked, and why


@dataclass
class Want:
    """A queue name and who should consume it."""

    name: str
    kind: str  # conductor, scheduler, compute, compute_host, notifications
    host: str = ""
    consumers: list[Svc] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # notifications: the files that send there
    always_needed: bool = False


@dataclass
class Broker:
    key: str  # endpoints/vhost
    endpoints: tuple[str, ...]
    vhost: str
    user: str = field(default="")
    hosts: tuple[Any, ...] = field(default=(), repr=False)  # oslo_ini.BrokerHost
    tls: Any = field(default=None, repr=False)  # oslo_ini AmqpTls or None
    cells: list[str] = field(default_factory=list)  # cell labels whose mapping names it
    api: bool = False  # the [DEFAULT] transport_url of an API-level service
    wants: dict[str, Want] = field(default_factory=dict)
    states: dict[str, QueueState] = field(default_factory=dict)
    error: str = ""  # could not connect
    declares: int = 0

    @property
    def label(self) -> str:
        return f"{self.endpoints[0] if self.endpoints else '?'}/{self.vhost.lstrip('/') or '/'}"

    @property
    def cell_label(self) -> str:
        return ",".join(([*self.cells] + (["api"] if self.api else [])) or ["-"])

    @property
    def described(self) -> str:
        names = [f"{c}'s" for c in self.cells] + (["the API-level"] if self.api else [])
        who = " and ".join(names) if names else "a"
        return f"{who} broker ({self.label})"

    def want(self, name: str, kind: str, host: str = "") -> Want:
        if name not in self.wants:
            self.wants[name] = Want(name, kind, host)
        return self.wants[name]


@dataclass
class View:
    brokers: list[Broker] = field(default_factory=list)
    services: list[Svc] = field(default_factory=list)
    notes: list[tuple[str, str, str]] = field(default_factory=list)  # (subject, message, fix) INFO
    cells_read: list[Cell] = field(default_factory=list)


# == loading ============================================================================


def _broker_key(url: Any) -> str:
    return ",".join(sorted(h.endpoint for h in url.hosts)) + "/" + url.vhost


def _add_broker(brokers: dict[str, Broker], url: Any, tls: Any) -> Broker:
    key = _broker_key(url)
    if key not in brokers:
        brokers[key] = Broker(key, tuple(h.endpoint for h in url.hosts), url.vhost,
                              url.hosts[0].user if url.hosts else "", tuple(url.hosts), tls)
    return brokers[key]


@dataclass
class _Files:
    api_urls: list[Any] = field(default_factory=list)  # (TransportUrl, tls)
    api_raw: str | None = None  # the API-level [DEFAULT] transport_url as written (cell templates)
    api_tls: Any = None
    down_time: float | None = None
    # (url, tls, topics, path) of each file that sends notifications to a broker
    notifications: list[tuple[Any, Any, list[str], str]] = field(default_factory=list)


def _read_files(patterns: list[str], view: View) -> _Files:
    found = _Files()
    missing, files = oslo_ini.read_all(patterns)
    for miss in missing:
        view.notes.append((f"file {miss.pattern}", f"{miss.pattern} matches no file", "correct files"))
    for cf in files:
        if cf.conf is None:
            view.notes.append((f"file {cf.path}", f"{cf.path} not read: {cf.error}", "correct files"))
            continue
        transports, _problems = oslo_ini.transports(cf)  # problems are service_config's business
        rpc = next((t for t in transports if t.section == "DEFAULT"), None)
        notify = next((t for t in transports if t.section == "oslo_messaging_notifications"), None)
        rabbit = [t for t in (rpc, notify) if t is not None and t.url.driver in oslo_ini.RABBIT_DRIVERS]
        if cf.service == "nova" and cf.has("api_database", "connection") and rpc in rabbit:
            assert rpc is not None
            found.api_urls.append((rpc.url, rpc.tls))
            found.api_tls = found.api_tls or rpc.tls
            if found.api_raw is None:
                with contextlib.suppress(oslo_ini.OptionError):
                    found.api_raw = str(cf.value("DEFAULT", "transport_url") or "")
            if found.down_time is None and cf.get("DEFAULT", "service_down_time"):
                with contextlib.suppress(ValueError):
                    found.down_time = float(cf.get("DEFAULT", "service_down_time") or "")
        drivers = _drivers(cf)
        if not drivers & MESSAGING_NOTIFY_DRIVERS:
            continue
        # oslo_messaging get_notification_transport: [oslo_messaging_notifications] transport_url,
        # else [DEFAULT] transport_url.
        target = notify if notify is not None else rpc
        if target is None or target not in rabbit:
            continue
        found.notifications.append((target.url, target.tls, _topics(cf), cf.path))
    return found


def _drivers(cf: oslo_ini.ConfigFile) -> set[str]:
    try:
        return {d.strip() for d in cf.value("oslo_messaging_notifications", "driver") or []}
    except oslo_ini.OptionError:
        return set()


def _topics(cf: oslo_ini.ConfigFile) -> list[str]:
    """The notification topics the file's service publishes to (nova/rpc.py init for nova)."""
    try:
        oslo_topics = [str(t) for t in cf.value("oslo_messaging_notifications", "topics") or []]
    except oslo_ini.OptionError:
        oslo_topics = ["notifications"]
    if cf.service != "nova":
        return oslo_topics
    fmt = (cf.get("notifications", "notification_format") or cf.get("DEFAULT", "notification_format")
           or "unversioned").strip()
    versioned = [t.strip() for t in (cf.get("notifications", "versioned_notifications_topics")
                                     or "versioned_notifications").split(",") if t.strip()]
    if fmt == "unversioned":
        return oslo_topics
    if fmt == "versioned":
        return versioned
    return oslo_topics + versioned


def load(ctx: Context, s: RabbitQueuesProbe.Settings) -> View:
    view = View()
    files = _read_files(s.files, view)
    down_time = s.service_down_time or files.down_time or 60.0
    brokers: dict[str, Broker] = {}
    for url, tls in files.api_urls:
        _add_broker(brokers, url, tls).api = True
    if s.files and not files.api_urls:
        view.notes.append(("broker api", "no file in files is the nova.conf of an API-level service "
                           "([api_database] connection and a rabbit [DEFAULT] transport_url): the "
                           "scheduler and super-conductor queues are not checked",
                           "add the nova.conf of a controller (nova-api / nova-scheduler) to files"))

    with ctx.db("nova_api") as api:
        rows = api.query(CELLS_SQL)
    for row in rows:
        _register(row["transport_url"] or "")
        _register(row["database_connection"] or "")
    cells = [Cell(r["uuid"], r["name"] or "", r["database_connection"] or "") for r in rows
             if r["uuid"] not in s.ignore_cells and (r["name"] or "") not in s.ignore_cells]
    cell_broker: dict[str, Broker | None] = {}  # uuid -> its broker; None: the caller's own
    for row in rows:
        cell = next((c for c in cells if c.uuid == row["uuid"]), None)
        if cell is None or cell.is_cell0:
            continue
        broker = _cell_broker(cell, row["transport_url"] or "", files, brokers, view)
        if broker is not False:
            cell_broker[cell.uuid] = broker or None

    def read(cell: Cell) -> list[dict[str, Any]] | str:
        try:
            with cell_db(ctx, cell) as db:
                return db.query(SERVICES_SQL)
        except BackendUnavailable as exc:
            return str(exc)

    results = ctx.map_parallel(read, cells, s.max_parallel, lambda c: "not read before the deadline")
    failures = []
    for cell in cells:
        got = results[cell]
        if isinstance(got, str):
            failures.append(got)
            view.notes.append((f"cell {cell.label}", f"cell {cell.label}: services not read ({got}); its "
                               "queues are not checked", "see the nova_services / cell_connections checks"))
            continue
        view.cells_read.append(cell)
        view.services.extend(_services(cell, got, down_time))
    if cells and len(failures) == len(cells):
        raise BackendUnavailable(f"no cell database could be read: {failures[0]}")

    _plan(view, brokers, cell_broker, files, s)
    view.brokers = list(brokers.values())
    login = _login(s)

    def declare(key: str) -> None:
        _declare_all(ctx, brokers[key], login, s.declare_batch)

    def late(key: str) -> None:
        brokers[key].error = brokers[key].error or "not checked before the deadline"

    ctx.map_parallel(declare, list(brokers), s.max_parallel, late)
    for broker in view.brokers:
        _second_pass_alt(ctx, broker, login, view)
    if view.brokers and all(b.error for b in view.brokers):
        raise BackendUnavailable(f"no broker could be read: {view.brokers[0].label}: {view.brokers[0].error}")
    return view


def _register(url: str) -> None:
    register_url_secrets(url)


def _cell_broker(cell: Cell, stored: str, files: _Files, brokers: dict[str, Broker],
                 view: View) -> Broker | bool | None:
    """The broker a cell's conductors and computes listen on, as nova-api reaches it: None for
    the caller's own transport, False when it cannot be known."""
    if not stored or stored.startswith("none"):
        # nova/context.py set_target_cell: no transport of its own, the caller's [DEFAULT] one.
        return None
    url_text = stored
    if "{" in stored:
        try:
            url_text = format_url(stored, files.api_raw or "") if files.api_raw else ""
        except (KeyError, IndexError, ValueError):
            url_text = ""
        if not url_text:
            view.notes.append((f"cell {cell.label}", f"cell {cell.label}: transport_url is a template nova "
                               "fills from its own [DEFAULT] transport_url, which no API-level file in files "
                               "gives: its queues are not checked",
                               "add the controller's nova.conf to files"))
            return False
    try:
        url = oslo_ini.parse_transport_url(url_text)
    except oslo_ini.TransportError as exc:
        view.notes.append((f"cell {cell.label}", f"cell {cell.label}: transport_url cannot be parsed ({exc})",
                           "see the cell_connections check"))
        return False
    if url.driver not in oslo_ini.RABBIT_DRIVERS or not url.hosts:
        view.notes.append((f"cell {cell.label}", f"cell {cell.label}: {url.scheme} broker not checked",
                           "nothing to do unless this is unexpected"))
        return False
    # nova/rpc.py create_transport: the cell's URL with the service's own [oslo_messaging_rabbit].
    broker = _add_broker(brokers, url, files.api_tls)
    broker.cells.append(cell.label)
    return broker


def _services(cell: Cell, rows: list[dict[str, Any]], down_time: float) -> list[Svc]:
    live = {(r["binary"], r["host"]) for r in rows if not r["deleted"]}
    out: list[Svc] = []
    seen_deleted: set[tuple[str, str]] = set()
    for r in rows:
        key = (r["binary"], r["host"])
        if r["deleted"] and (key in live or key in seen_deleted):
            continue
        if r["deleted"]:
            seen_deleted.add(key)
        age = float(r["age"]) if r.get("age") is not None else None
        forced = bool(r["forced_down"])
        out.append(Svc(cell.label, r["binary"], r["host"] or "", enabled=not r["disabled"],
                       up=not forced and age is not None and abs(age) <= down_time,
                       deleted=bool(r["deleted"]), forced_down=forced, age=age))
    return out


def _plan(view: View, brokers: dict[str, Broker], cell_broker: dict[str, Broker | None], files: _Files,
          s: RabbitQueuesProbe.Settings) -> None:
    api_brokers = [b for b in brokers.values() if b.api]
    by_cell: dict[str, list[Svc]] = defaultdict(list)
    for svc in view.services:
        by_cell[svc.cell].append(svc)
    # Each cell's conductors and computes listen on the cell's broker; cell0 (the super-conductor
    # of the superconductor layout) and cells mapped to "none:///" on the API level's.
    for cell in view.cells_read:
        if not cell.is_cell0 and cell.uuid not in cell_broker:
            continue  # its broker is unknown (a note says why)
        own = cell_broker.get(cell.uuid)
        targets = [own] if own is not None else api_brokers
        for broker in targets:
            for svc in by_cell[cell.label]:
                if svc.binary == CONDUCTOR and not svc.deleted:
                    broker.want(CONDUCTOR_TOPIC, "conductor").consumers.append(svc)
                elif svc.binary == COMPUTE:
                    if svc.deleted and not s.check_deleted_computes:
                        continue
                    broker.want(f"{COMPUTE_TOPIC}.{svc.host}", "compute_host", svc.host).consumers.append(svc)
                    if not svc.deleted:
                        broker.want(COMPUTE_TOPIC, "compute").consumers.append(svc)
            if not cell.is_cell0:  # nova-api and the computes of the cell call its conductor
                broker.want(CONDUCTOR_TOPIC, "conductor").always_needed = True
    # The API level: the schedulers (wherever they registered) and the (super-)conductor.
    for broker in api_brokers:
        broker.want(CONDUCTOR_TOPIC, "conductor").always_needed = True
        sched = broker.want(SCHEDULER_TOPIC, "scheduler")
        sched.always_needed = True
        sched.consumers.extend(svc for svc in view.services if svc.binary == SCHEDULER and not svc.deleted)
        cond = broker.wants[CONDUCTOR_TOPIC]
        if not cond.consumers:  # no super-conductor row found: any conductor may be the one
            cond.consumers.extend(svc for svc in view.services if svc.binary == CONDUCTOR and not svc.deleted)
    for url, tls, topics, path in files.notifications:
        broker = _add_broker(brokers, url, tls)
        for topic in topics:
            for priority in s.notification_priorities:
                want = broker.want(f"{topic}.{priority}", "notifications")
                if path not in want.files:
                    want.files.append(path)


def _login(s: RabbitQueuesProbe.Settings) -> tuple[str, str] | None:
    if not s.user:
        return None
    password = ""
    if s.password_file:
        try:
            password = Path(s.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise BackendUnavailable(f"password_file {s.password_file}: {exc.strerror or exc}") from None
    register_secret(password)
    return s.user, password


def _tls(tls: Any) -> ssl.SSLContext | None:
    return tls.context() if tls is not None else None


def _declare_all(ctx: Context, broker: Broker, login: tuple[str, str] | None, batch: int) -> None:
    """One connection (the URL's hosts in order until one accepts), passive declares only."""
    import pika.exceptions

    names = list(broker.wants)
    try:
        tls = _tls(broker.tls)
    except (ValueError, OSError) as exc:
        broker.error = describe_error(exc)
        return
    errors: list[str] = []
    for host in broker.hosts:
        user, password = login or (host.user, host.password)
        broker.user = user
        try:
            with ctx.amqp(host.host, host.port, user, password, broker.vhost, tls) as conn:
                _declare(ctx, conn, broker, names, batch, pika.exceptions)
            broker.error = ""
            return
        except BackendUnavailable as exc:
            errors.append(str(exc))
        except (pika.exceptions.AMQPError, OSError) as exc:
            # the connection died mid-way (broker stopped, deadline reached): what is declared stays
            errors.append(f"AMQP {host.endpoint}: connection lost ({describe_error(exc)})")
            if broker.states:
                broker.error = errors[-1]
                return
    broker.error = "; ".join(errors) or "no broker host"


def _declare(ctx: Context, conn: Any, broker: Broker, names: list[str], batch: int, exc_mod: Any) -> None:
    channel = conn.channel()
    for index, name in enumerate(names):
        if index % batch == 0 and ctx.deadline.expired:
            for rest in names[index:]:
                broker.states[rest] = QueueState(error="not checked before the deadline")
            return
        broker.declares += 1
        try:
            ok = channel.queue_declare(name, passive=True)
        except exc_mod.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                broker.states[name] = QueueState(exists=False)
            elif exc.reply_code == 405:
                broker.states[name] = QueueState(exists=True, locked=True)
            else:
                broker.states[name] = QueueState(error=f"{exc.reply_code} {exc.reply_text}")
            channel = conn.channel()
            continue
        broker.states[name] = QueueState(True, int(ok.method.message_count), int(ok.method.consumer_count))
    with contextlib.suppress(Exception):
        channel.close()


def _second_pass_alt(ctx: Context, broker: Broker, login: tuple[str, str] | None, view: View) -> None:
    """compute.<host> without consumer for a compute nova calls up: is it shutting down gracefully
    (nova 34 keeps consuming compute-alt.<host> until graceful_shutdown_timeout)?"""
    if broker.error:
        return
    alt: list[str] = []
    for want in broker.wants.values():
        state = broker.states.get(want.name)
        if want.kind == "compute_host" and state and state.exists and state.consumers == 0 \
                and any(svc.serving for svc in want.consumers):
            alt.append(f"{COMPUTE_ALT_TOPIC}.{want.host}")
    if not alt:
        return
    probe = Broker(broker.key, broker.endpoints, broker.vhost, hosts=broker.hosts, tls=broker.tls)
    for name in alt:
        probe.want(name, "compute_alt")
    _declare_all(ctx, probe, login, 500)
    broker.declares += probe.declares
    for name, state in probe.states.items():
        broker.states[name] = state


# == judging ============================================================================


def judge(view: View, s: RabbitQueuesProbe.Settings, report: Report, state: dict[str, Any]) -> None:
    problems: dict[str, int] = dict.fromkeys(PROBLEM_KINDS, 0)
    history: dict[str, Any] = state.setdefault("queues", {})
    new_history: dict[str, Any] = {}
    series: list[tuple[int, Broker, Want, QueueState]] = []
    shown: dict[tuple[Severity, str], list[int]] = {}  # (severity, kind) -> [listed, left out]
    declares = 0
    for subject, message, fix in view.notes:
        report.info(subject, message, fix)
    for broker in view.brokers:
        declares += broker.declares
        report.metric("healthd_rabbit_queues_broker_up", 0 if broker.error else 1, broker=broker.label)
        if broker.error:
            problems["not_checked"] += len(broker.wants)
            report.warning(f"broker {broker.label}", f"queues on {broker.described} not checked: "
                           f"{broker.error}", "check the broker and the vhost permissions of "
                           f"{broker.user or 'the user'} (the other checks say whether nova reaches it)")
            continue
        for want in broker.wants.values():
            qs = broker.states.get(want.name)
            if qs is None:
                continue
            if qs.error:
                problems["not_checked"] += 1
                report.info(f"queue {want.name} on {broker.label}", f"queue {want.name} on "
                            f"{broker.described} not checked: {qs.error}", "")
                continue
            key = f"{broker.key}|{want.name}"
            prev = history.get(key)
            streak = 0
            if qs.exists and prev is not None and qs.messages > prev[0]:
                streak = prev[1] + 1
            if qs.exists:
                new_history[key] = (qs.messages, streak)
            scratch = Report(report.check, ())
            kind = _judge_queue(broker, want, qs, streak, s, scratch)
            for finding in scratch.findings:
                tally = shown.setdefault((finding.severity, kind or "other"), [0, 0])
                if want.kind == "compute_host" and tally[0] >= s.max_findings:
                    tally[1] += 1  # compute queues beyond max_findings: counted in one finding
                    continue
                tally[0] += 1
                report.findings.append(finding)
            if kind:
                problems[kind] += 1
            if qs.exists and not qs.locked:
                rank = 0 if kind else (1 if want.kind in ("conductor", "scheduler", "compute") else 2)
                series.append((rank, broker, want, qs))
    state["queues"] = new_history
    for (severity, kind), (_listed, more) in shown.items():
        if more:
            report.finding(severity, f"{more} more compute queues ({kind})",
                           f"{more} more compute.<host> queues with the same problem ({kind}) are not listed "
                           f"one by one (max_findings {s.max_findings}); a higher max_findings lists them",
                           "see the findings above")
    fixed = [x for x in series if x[2].kind in ("conductor", "scheduler", "compute")]
    other = sorted((x for x in series if x[2].kind not in ("conductor", "scheduler", "compute")),
                   key=lambda x: (x[0], -x[3].messages, x[2].name))
    for _rank, broker, want, qs in fixed + other[:s.max_queue_series]:
        labels = {"broker": broker.label, "cell": broker.cell_label, "kind": want.kind, "queue": want.name}
        report.metric("healthd_rabbit_queues_consumers", qs.consumers, **labels)
        report.metric("healthd_rabbit_queues_messages", qs.messages, **labels)
    report.metric("healthd_rabbit_queues_series_dropped", max(0, len(other) - s.max_queue_series))
    for kind, count in problems.items():
        report.metric("healthd_rabbit_queues_problems", count, kind=kind)
    report.metric("healthd_rabbit_queues_declares", declares)
    queues = sum(len(b.wants) for b in view.brokers)
    bad = problems["no_consumer"] + problems["missing"]
    report.summary = (f"{len(view.brokers)} broker(s), {queues} queues, {bad} needed queue(s) without "
                      f"consumer, {problems['piling'] + problems['notifications_piling']} piling up")
    if not any(b.api for b in view.brokers):
        report.summary += " (no API-level nova.conf in files: scheduler queue not checked)"



def _who(svcs: list[Svc]) -> str:
    shown = [f"{svc.host} ({svc.cell}): {svc.state}" for svc in svcs[:5]]
    more = f" and {len(svcs) - 5} more" if len(svcs) > 5 else ""
    return "; ".join(shown) + more if shown else "none registered in the services tables read"


EFFECT = {
    "conductor": "builds stay in scheduling (nova-api casts schedule_and_build_instances to it), and "
                 "computes on this broker cannot report or reach the database",
    "scheduler": "the conductor's select_destinations call times out: every build fails with "
                 "NoValidHost / MessagingTimeout after rpc_response_timeout",
    "compute": "casts to any compute of the cell wait in the queue",
}
BINARY = {"conductor": CONDUCTOR, "scheduler": SCHEDULER, "compute": COMPUTE, "compute_host": COMPUTE}


def _judge_queue(broker: Broker, want: Want, qs: QueueState, streak: int, s: RabbitQueuesProbe.Settings,
                 report: Report) -> str:
    """One queue: the problem kind counted for it ("" if none)."""
    subject = f"queue {want.name} on {broker.label}"
    vhost = broker.vhost
    if qs.locked:
        report.info(subject, f"{want.name} on {broker.described} is another connection's exclusive queue "
                    "(405 RESOURCE_LOCKED): nova never declares its RPC queues exclusive", "")
        return ""
    if want.kind == "notifications":
        return _judge_notifications(broker, want, qs, streak, s, report)
    if want.kind == "compute_alt":
        return ""
    binary = BINARY[want.kind]
    if want.kind == "compute_host":
        svc = want.consumers[0] if want.consumers else None
        if svc is not None and svc.serving:
            if not qs.exists:
                report.critical(subject, f"nova-compute on {want.host} ({svc.cell}) is up and enabled, but "
                                f"{want.name} does not exist on {broker.described}: it listens on another "
                                "broker or vhost than the one nova sends to, so casts to it (builds, "
                                "reboots, deletes) are dropped unrouted",
                                f"on {want.host}: make nova.conf [DEFAULT] transport_url the cell's "
                                "(nova-manage cell_v2 list_cells --verbose), then systemctl restart "
                                "nova-compute")
                return "missing"
            if qs.consumers == 0:
                alt = broker.states.get(f"{COMPUTE_ALT_TOPIC}.{want.host}")
                if alt is not None and alt.exists and alt.consumers > 0:
                    # nothing waits yet: INFO; casts already wait for the restart: WARNING
                    report.finding(Severity.WARNING if qs.messages else Severity.INFO, subject,
                                   f"nova-compute on {want.host} stopped consuming {want.name} but "
                                   f"still consumes {COMPUTE_ALT_TOPIC}.{want.host}: a graceful shutdown is "
                                   f"in progress; {qs.messages} message(s) wait for its restart",
                                   f"on {want.host}: make sure nova-compute is started again")
                    return "piling" if qs.messages else ""
                report.critical(subject, f"nova-compute has no consumer on {broker.described}: {want.name} "
                                f"has 0 consumers and {qs.messages} message(s) while nova calls the service "
                                f"on {want.host} ({svc.cell}) up and enabled (the scheduler picks it): "
                                "builds sent there stay in spawning/scheduling",
                                RESTART.format(host=want.host, unit="nova-compute"))
                return "no_consumer"
            return _judge_piling(broker, want, qs, streak, s, report)
        # a compute nova does not send work to (disabled, down, forced down, deleted)
        if qs.exists and qs.consumers == 0:
            state = svc.state if svc is not None else "unknown"
            deleted = svc is not None and svc.deleted
            fix = (f"rabbitmqctl delete_queue -p {vhost} {want.name} (the service is deleted)" if deleted
                   else f"nothing while the host is out of service; the {qs.messages} message(s) are "
                        "delivered when nova-compute starts again (or purge them: rabbitmqctl "
                        f"purge_queue -p {vhost} {want.name})")
            report.info(subject, f"{want.name} on {broker.described} has no consumer and {qs.messages} "
                        f"message(s): nova-compute on {want.host} is {state}, so nova sends it no new "
                        "work (a queue outlives its consumer until the broker restarts)", fix)
            return "stale_compute_queue"
        return _judge_piling(broker, want, qs, streak, s, report) if qs.exists else ""
    # conductor, scheduler, shared compute
    serving = [svc for svc in want.consumers if svc.up and not svc.deleted]
    needed = want.always_needed or any(svc.serving for svc in want.consumers)
    if not needed:
        return ""
    if want.kind == "compute" and not any(svc.serving for svc in want.consumers):
        return ""  # no compute is up: nova_services says so; the scheduler picks none
    cells = broker.described
    if not qs.exists:
        why = ("a service that is up listens on another broker or vhost than the one nova sends to"
               if serving else "nothing has consumed it since the broker started")
        report.critical(subject, f"{binary} has no queue {want.name} on {cells}: {why}; "
                        f"{EFFECT[want.kind]}. {binary}: {_who(want.consumers)}",
                        _fix(binary, want.consumers, broker))
        return "missing"
    if qs.consumers == 0:
        hint = (" nova still calls some of them up: a hung process keeps its heartbeat thread but not its "
                "RPC consumer, or it listens on another vhost" if serving else "")
        report.critical(subject, f"{binary} has no consumer on {cells}: {want.name} has 0 consumers and "
                        f"{qs.messages} message(s) waiting; {EFFECT[want.kind]}. {binary}: "
                        f"{_who(want.consumers)}.{hint}", _fix(binary, want.consumers, broker))
        return "no_consumer"
    return _judge_piling(broker, want, qs, streak, s, report)


def _fix(binary: str, svcs: list[Svc], broker: Broker) -> str:
    hosts = sorted({svc.host for svc in svcs if not svc.deleted}) or ["each controller"]
    return "; ".join(RESTART.format(host=h, unit=binary) for h in hosts[:3]) + (
        f"; check its [DEFAULT] transport_url names {broker.label}")


def _judge_piling(broker: Broker, want: Want, qs: QueueState, streak: int, s: RabbitQueuesProbe.Settings,
                  report: Report) -> str:
    growing = streak >= s.growth_runs and qs.messages >= s.growth_min_messages
    if qs.messages < s.ready_warning and not growing:
        return ""
    why = (f"grew {streak} runs in a row" if growing else f"is at or above ready_warning {s.ready_warning}")
    report.warning(f"queue {want.name} on {broker.label}",
                   f"{qs.messages} message(s) pile up in {want.name} on {broker.described} with "
                   f"{qs.consumers} consumer(s) ({why}): its consumers are hung or too slow (oslo.messaging "
                   "takes RPC messages as they come, so ready messages mean nobody is taking them)",
                   f"find the stuck {BINARY.get(want.kind, 'service')} (its log; a process whose threads "
                   "hang keeps its AMQP heartbeat) and restart it")
    return "piling"


def _judge_notifications(broker: Broker, want: Want, qs: QueueState, streak: int,
                         s: RabbitQueuesProbe.Settings, report: Report) -> str:
    if not qs.exists or qs.messages == 0:
        return ""
    grew = streak >= 1
    big = qs.messages >= s.notification_warning_messages
    if qs.consumers == 0 and (grew or big):
        files = ", ".join(want.files[:3])
        report.warning(f"queue {want.name} on {broker.label}",
                       f"{want.name} on {broker.described} has no consumer and {qs.messages} message(s)"
                       f"{' and grows' if grew else ''}: the services of {files} send notifications "
                       "([oslo_messaging_notifications] driver) that nobody reads, and the publisher "
                       "declares the queue itself, so it grows until the broker runs out of memory or disk",
                       "if nothing needs notifications: [oslo_messaging_notifications] driver = noop in "
                       f"{files} and restart the services, then rabbitmqctl purge_queue -p {broker.vhost} "
                       f"{want.name}; else start the consumer (ceilometer) or cap the queue: rabbitmqctl "
                       f"set_policy -p {broker.vhost} notifications-limit '^(versioned_)?notifications\\.' "
                       "'{\"max-length\":10000,\"message-ttl\":600000}' --apply-to queues")
        return "notifications_piling"
    if qs.consumers > 0 and (big or (streak >= s.growth_runs and qs.messages >= s.growth_min_messages)):
        report.warning(f"queue {want.name} on {broker.label}",
                       f"{qs.messages} notification(s) pile up in {want.name} on {broker.described} with "
                       f"{qs.consumers} consumer(s): the consumer (ceilometer?) is too slow or stuck",
                       "check the notification consumer's log and restart it")
        return "notifications_piling"
    return ""


__all__ = ["CELL0_UUID", "RabbitQueuesProbe", "judge", "load"]
