"""service_config: do the services' config files point at live, agreeing RabbitMQ and memcached servers?

Failure mode: a service's config file names the wrong message broker or cache
servers: a typo, a decommissioned controller, a node deployed with an older
server list, a user without permissions in its vhost, a server written in a form
the service's client library cannot parse. Nothing fails at start; the service
just talks to nothing, or to a different set of servers than its peers. For the
python-memcached clients (oslo_cache.memcache_pool, dogpile.cache.memcached,
keystonemiddleware) the list order decides which server holds a key, so two
nodes that list the same servers in a different order store a token on one
server and look for it on another. That is how a console or a token check fails
"with a certain probability", depending on which node serves the request.

For every file in ``files`` (globs allowed) the probe loads the file with
oslo.config (healthd/openstack/oslo_ini.py) and takes what the libraries use:
``transport_url`` ([DEFAULT], and [oslo_messaging_notifications] when
notifications are on), ``[cache]`` when oslo.cache uses it (``enabled`` and a
memcached ``backend``), ``[keystone_authtoken] memcached_servers``. Each distinct
endpoint is checked once per run, however many files name it: the name resolves,
TCP connects, and the protocol answers (an AMQP login with the configured user,
vhost and TLS settings, then whether that user has the permissions oslo.messaging
needs there; memcached ``version``). Files of the same service (nova.conf with
other nova files, not with keystone.conf) that list different servers for the
same option are reported, naming both files and both lists. Passwords are
registered as secrets before anything is logged and never appear in findings or
labels.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field
from pymemcache.exceptions import MemcacheError, MemcacheUnknownCommandError

from healthd.errors import (
    AccessDenied,
    AuthFailed,
    BackendUnavailable,
    Refused,
    TimedOut,
    TlsFailed,
    TlsUntrusted,
)
from healthd.model import MetricSpec, MetricType, Report, Severity
from healthd.openstack import oslo_ini
from healthd.openstack.messaging import AmqpTls, Permissions, TlsFileError, check_permissions
from healthd.probe import Context, Probe, ProbeSettings
from healthd.redact import describe_error

M_FILE = "healthd_service_config_file_readable"
M_ENDPOINT = "healthd_service_config_endpoint_up"
M_CONSISTENT = "healthd_service_config_consistent"
M_VARIANTS = "healthd_service_config_distinct_values"
M_FINGERPRINT = "healthd_service_config_fingerprint_info"

PERMISSIONS_STATE = "service_config_permissions"
CELLS_SQL = "SELECT uuid, name, transport_url FROM cell_mappings ORDER BY id"


@dataclass(frozen=True)
class Target:
    """One thing to check, once per run. Credentials are part of an AMQP target
    (two users on the same broker are two checks) but never shown."""

    kind: str  # "rabbit", "memcached" or "transport" (another driver: TCP only)
    host: str
    port: int
    user: str = ""
    password: str = ""
    vhost: str = ""
    tls: AmqpTls | None = None  # with the CA and client files of the file's [oslo_messaging_rabbit]
    login: bool = True  # rabbit: PLAIN/AMQPLAIN login (EXTERNAL: TCP and TLS only)
    exchange: str = ""  # rabbit: the control exchange whose permissions are checked
    credentials_written: bool = True  # rabbit: False = kombu's guest/guest for a host without them
    family: str = "any"  # memcached: "inet" (python-memcached's IPv4-only form), "inet6", "any"
    protocol: bool = True  # memcached: False behind TLS/SASL, where healthd checks TCP only

    @property
    def endpoint(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __repr__(self) -> str:  # keep the password out of any accidental log line
        return f"Target({self.kind} {self.endpoint} user={self.user} vhost={self.vhost})"


@dataclass(frozen=True)
class Use:
    """Where a target is configured: file, section, option, and the value as shown."""

    path: str
    section: str
    option: str
    shown: str  # redacted URL or server list
    siblings: tuple[Target, ...]  # the other hosts of the same option (a cluster)
    in_use: bool = True
    unused: str = ""  # why nothing uses it now (caching off, notifications off)

    @property
    def place(self) -> str:
        return f"{self.path} [{self.section}] {self.option}"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str = ""
    fix: str = ""
    note: str = ""  # said as INFO even when ok (e.g. permissions not checked)


@dataclass(frozen=True)
class Value:
    """One file's value of an option, for comparing files of the same service."""

    key: object  # what must be equal
    shown: str
    order_matters: bool = False
    library: str = ""
    identity: frozenset[str] | None = None  # transport_url: brokers and vhost, to find its cell


@dataclass
class Plan:
    """What the files ask for: every target with the places that name it, and every option's
    value per file, grouped by service (a key to compare, and the text shown)."""

    uses: dict[Target, list[Use]] = field(default_factory=dict)
    # (service, scope, section, option) -> path -> value; scope: "" or "cell NAME" for nova
    values: dict[tuple[str, str, str, str], dict[str, Value]] = field(default_factory=dict)
    cells_known: bool = False  # nova_api.cell_mappings was read (nova's RPC brokers per cell)

    def use(self, target: Target, use: Use) -> None:
        self.uses.setdefault(target, []).append(use)

    def value(self, group: tuple[str, str, str, str], path: str, value: Value) -> None:
        self.values.setdefault(group, {})[path] = value


@dataclass(frozen=True)
class CellBroker:
    """A cell's transport_url from nova_api.cell_mappings: the brokers its nova services use."""

    label: str
    identity: frozenset[str]


class ServiceConfigProbe(Probe):
    name = "service_config"
    description = "RabbitMQ and memcached servers named in service config files: reachable and consistent."
    default_interval = 300.0
    default_timeout = 30.0
    requires = ()
    privileges = (
        "Read access to the listed config files (they hold passwords: run healthd as a user in the "
        "services' groups or grant read ACLs, e.g. setfacl -m u:healthd:r /etc/nova/nova.conf); TCP "
        "access to the brokers and memcached servers. The AMQP check logs in with the service's own "
        "credentials; the permission check then asks RabbitMQ about the service's names with "
        "operations that change nothing (exchange.declare with an invalid argument, basic.get and "
        "unbinds of names that do not exist), once per permissions_interval. Optional: SELECT on "
        "nova_api.cell_mappings (backends.databases.nova_api) to tell the cells' brokers apart."
    )
    metrics = (
        MetricSpec(M_FILE, "1 if the config file could be read and parsed, else 0.", ("file",)),
        MetricSpec(M_ENDPOINT, "1 if an endpoint named in a config option in use resolves, connects, "
                   "answers its protocol and lets the configured user in with the permissions the "
                   "service needs, else 0.", ("file", "section", "option", "kind", "endpoint")),
        MetricSpec(M_CONSISTENT, "1 if, for every service, its files that set the option list the same "
                   "servers (in the same order where the client library depends on it), else 0.",
                   ("section", "option")),
        MetricSpec(M_VARIANTS, "Largest number of different server lists one service's files give "
                   "for the option.", ("section", "option")),
        MetricSpec(M_FINGERPRINT, "One series per distinct value this node's files of a service give an "
                   "option that names servers: a short hash of the normalised value (servers, order "
                   "where it matters, client library, vhost; never credentials). Nodes of one service "
                   "whose fingerprints differ disagree (alert OpenStackServiceConfigNodesDisagree).",
                   ("service", "scope", "section", "option", "fingerprint"), MetricType.INFO),
    )

    class Settings(ProbeSettings):
        files: list[str] = Field(
            default_factory=list,
            description="oslo.config INI files to read, globs allowed (e.g. /etc/nova/nova.conf, "
            "/etc/*/*.conf)",
        )
        max_parallel: int = Field(8, ge=1, le=64, description="endpoints checked at once")
        check_permissions: bool = Field(
            True, description="check that each RabbitMQ user has the configure/write/read permissions "
            "oslo.messaging needs in its vhost")
        permissions_interval: float = Field(
            3600.0, ge=0, description="seconds a granted permission check is trusted before it is "
            "asked again (RabbitMQ logs each check as channel errors); refusals are asked every run")

    def run(self, ctx: Context, report: Report) -> None:
        s = self.settings
        if not s.files:
            raise BackendUnavailable("no service config files configured (checks.service_config.files)")
        missing, files = oslo_ini.read_all(s.files)
        configs = report_files(report, missing, files)
        if not configs:
            raise BackendUnavailable(
                f"none of the service config files could be read ({len(report.findings)} problem(s): "
                + "; ".join(f"{f.subject}: {f.message}" for f in report.findings) + ")"
            )
        cells = start_reading_cells(ctx, configs)
        plan = collect(report, configs)
        cache = ctx.state.setdefault(PERMISSIONS_STATE, {})
        outcomes = ctx.map_parallel(
            lambda t: check_target(ctx, t, s, cache), list(plan.uses), s.max_parallel,
            on_deadline=lambda t: Outcome(False, "no answer before the probe's deadline",
                                          "raise checks.service_config.timeout or check the network path"),
        )
        rescope(plan, finish_reading_cells(ctx, report, cells))
        judge(report, plan, outcomes, len(configs))


# == loading: the cells' brokers (optional, one statement) ==========================

CELLS_WAIT = 2.0  # seconds the run waits for cell_mappings after its endpoint checks


def start_reading_cells(ctx: Context, configs: list[oslo_ini.ConfigFile]) -> Future[Any] | None:
    """nova_api.cell_mappings.transport_url, read beside the endpoint checks when healthd can read
    nova_api and nova files are checked: each cell's services use their cell's broker
    (nova/objects/cell_mapping.py), so nova files are compared only with files on the same
    cell's broker. Optional: a slow nova_api costs the run at most CELLS_WAIT seconds."""
    if not ctx.has_db("nova_api") or not any(cf.service == "nova" for cf in configs):
        return None

    def read() -> list[dict[str, Any]]:
        with ctx.db("nova_api") as api:
            return api.query(CELLS_SQL)

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe-io")
    try:
        return pool.submit(read)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its query (cut by the deadline at the latest)


def finish_reading_cells(ctx: Context, report: Report,
                         pending: Future[Any] | None) -> list[CellBroker] | None:
    if pending is None:
        return None
    try:
        rows = pending.result(timeout=ctx.remaining(CELLS_WAIT))
    except BackendUnavailable as exc:
        reason = str(exc)
    except TimeoutError:
        reason = f"no answer within {CELLS_WAIT:.0f} s"
    else:
        return cell_brokers(rows)
    report.info("nova_api cell_mappings", f"not read ({reason}): a difference in nova's transport_url "
                "between files cannot be told from a second cell's broker and stays INFO",
                "check backends.databases.nova_api")
    return None


def cell_brokers(rows: list[dict[str, Any]]) -> list[CellBroker]:
    found = []
    for row in rows:
        try:
            url = oslo_ini.parse_transport_url(row.get("transport_url") or "")
        except oslo_ini.TransportError:
            continue  # cell0 has "none:///"; a broken cell URL is the cell_mapping check's business
        if url.hosts:
            found.append(CellBroker(f"cell {row.get('name') or row.get('uuid')}", url.identity()))
    return found


# == loading: what each target does: resolve, connect, speak its protocol (I/O) ======


def check_target(ctx: Context, target: Target, settings: ServiceConfigProbe.Settings | None = None,
                 cache: dict[Any, Any] | None = None) -> Outcome:
    steps: list[Callable[[Context, Target], Outcome | None]] = [_resolve]
    if target.kind == "memcached" and target.protocol:
        steps.append(_memcached_version)
    else:
        steps.append(_tcp)
        if target.kind == "rabbit" and target.login:
            steps.append(_amqp)
    for step in steps:
        failed = step(ctx, target)
        if failed is not None:
            return failed
    if target.kind == "rabbit" and target.login and (settings is None or settings.check_permissions):
        interval = settings.permissions_interval if settings else 0.0
        return _permissions(ctx, target, interval, {} if cache is None else cache)
    note = ""
    if target.kind == "rabbit" and not target.login:
        note = "the file logs in with EXTERNAL (client certificate): healthd checks TCP only"
    elif target.kind == "memcached" and not target.protocol:
        note = "TLS or SASL to this memcached: healthd checks that it resolves and connects, not the protocol"
    return Outcome(True, note=note)


def _resolve(ctx: Context, t: Target) -> Outcome | None:
    family = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}.get(t.family, socket.AF_UNSPEC)
    try:
        socket.getaddrinfo(t.host, t.port, family, socket.SOCK_STREAM)
    except (UnicodeError, ValueError):
        return Outcome(False, f"'{t.host}' is not a valid host name",
                       "correct the host name in the file (a typo such as a doubled dot)")
    except socket.gaierror as exc:
        if family != socket.AF_UNSPEC and _resolves(t.host, t.port):
            return _wrong_family(t)
        return Outcome(False, f"host name {t.host} does not resolve ({describe_error(exc)})",
                       f"correct the host name, or add it to DNS or /etc/hosts (getent hosts {t.host})")
    return None


def _resolves(host: str, port: int) -> bool:
    try:
        socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        return False
    return True


def _wrong_family(t: Target) -> Outcome:
    # python-memcached memcache.py _Host: an entry without "inet6:" is AF_INET, with it AF_INET6.
    if t.family == "inet":
        return Outcome(False, f"{t.host} has no IPv4 address, and python-memcached connects over IPv4 "
                       "(AF_INET) unless the entry says inet6:",
                       f"write the entry as inet6:[{t.host}]:{t.port}")
    return Outcome(False, f"{t.host} has no IPv6 address, and the entry's inet6: prefix makes "
                   "python-memcached connect over IPv6 only", f"write the entry as {t.host}:{t.port}")


def _tcp(ctx: Context, t: Target) -> Outcome | None:
    try:
        ctx.tcp_connect(t.host, t.port)
    except BackendUnavailable as exc:
        return _connect_failure(t, exc)
    return None


def _connect_failure(t: Target, exc: BackendUnavailable) -> Outcome:
    service = {"rabbit": "rabbitmq-server", "memcached": "memcached"}.get(t.kind, "the broker")
    if isinstance(exc, Refused):
        return Outcome(False, "connection refused: nothing listens on this port",
                       f"is this the right host and port? On {t.host}: systemctl status {service}; "
                       f"ss -ltnp | grep ':{t.port} '. If the node was decommissioned, remove it from "
                       "the file")
    if isinstance(exc, TimedOut):
        return Outcome(False, "no TCP connection before the timeout (host down, or traffic dropped)",
                       f"check that {t.host} is up and {t.port}/tcp is open from this host; if the node "
                       "was decommissioned, remove it from the file")
    return Outcome(False, f"cannot connect ({exc})", f"check the network path to {t.endpoint}")


def _amqp(ctx: Context, t: Target) -> Outcome | None:
    try:
        tls = t.tls.context() if t.tls else None
    except TlsFileError as exc:
        return _tls_file_failure(exc)
    try:
        ctx.amqp_handshake(t.host, t.port, t.user, t.password, t.vhost, tls)
    except AuthFailed:
        return _auth_failure(t)
    except AccessDenied:
        if not t.credentials_written:
            return Outcome(False, f"access to vhost {t.vhost!r} refused for user {t.user}: the URL gives "
                           "this host no USER:PASSWORD@ of its own, so oslo.messaging (kombu) logs in there "
                           "as guest/guest", "write the service's user and password before this host in "
                           "transport_url too, then restart the service")
        return Outcome(False, f"access to vhost {t.vhost!r} refused",
                       f"rabbitmqctl list_permissions -p {t.vhost}; grant it: rabbitmqctl "
                       f"set_permissions -p {t.vhost} {t.user} '.*' '.*' '.*'")
    except TlsFailed as exc:
        return _tls_failure(t, exc)
    except BackendUnavailable as exc:
        return Outcome(False, f"no AMQP answer: {exc}",
                       f"is {t.endpoint} a RabbitMQ listener{' with TLS' if t.tls else ''}? "
                       f"Check rabbitmq-diagnostics listeners on {t.host}"
                       + ("" if t.tls else "; a TLS-only port needs [oslo_messaging_rabbit] ssl = true"))
    return None


def _auth_failure(t: Target) -> Outcome:
    if not t.credentials_written:
        return Outcome(False, f"authentication refused for user {t.user}: the URL gives this host no "
                       "USER:PASSWORD@ of its own, so oslo.messaging (kombu) logs in there as guest/guest",
                       "write the service's user and password before this host in transport_url too, "
                       "then restart the service")
    return Outcome(False, f"authentication refused for user {t.user}",
                   f"the password in the file does not match RabbitMQ: check `rabbitmqctl "
                   f"list_users` on the broker and set the service's password in the file (or "
                   f"reset it with `rabbitmqctl change_password {t.user}`), then restart the service")


def _tls_failure(t: Target, exc: TlsFailed) -> Outcome:
    """The services verify the broker's certificate the same way (messaging.AmqpTls), so they
    fail too: name the file option that decides it."""
    tls = t.tls or AmqpTls()
    reason = str(exc).partition(": ")[2]  # without the "AMQP host:port" prefix: the subject says it
    if isinstance(exc, TlsUntrusted):
        hostname = ("; oslo.messaging verifies the host name when ssl_ca_file is set, so the "
                    f"certificate must name {t.host}") if tls.checks_hostname else ""
        return Outcome(False, f"{reason}; checked {tls.describe()}, as oslo.messaging does{hostname}, so "
                       "the services using this file cannot connect either",
                       f"openssl s_client -connect {t.endpoint} -showcerts "
                       f"{'-CAfile ' + tls.ca_file + ' -verify_hostname ' + t.host if tls.ca_file else ''}"
                       .rstrip()
                       + "; renew an expired broker certificate (with the host names the services use in "
                       "transport_url), or set [oslo_messaging_rabbit] ssl_ca_file to the CA that issued "
                       "it, then restart the services")
    return Outcome(False, reason,
                   "check the broker's TLS listener and certificate (openssl s_client -connect "
                   f"{t.endpoint}), then restart the services")


def _tls_file_failure(exc: TlsFileError) -> Outcome:
    if exc.permission_denied:
        return Outcome(False, f"TLS setup failed: {exc} (for healthd; the services may still read it)",
                       "let the healthd user read the TLS files named in [oslo_messaging_rabbit], e.g. "
                       "setfacl -m u:healthd:r FILE")
    return Outcome(False, f"TLS setup failed: {exc}",
                   "[oslo_messaging_rabbit] ssl_ca_file / ssl_cert_file / ssl_key_file must name PEM files "
                   "that exist on the service's hosts; fix the path or the file, then restart the services")


def _permissions(ctx: Context, t: Target, interval: float, cache: dict[Any, Any]) -> Outcome:
    # the password is part of what was checked, but the state keeps only a digest of it
    key = (t.host, t.port, t.user, hashlib.sha256(t.password.encode()).hexdigest(), t.vhost, t.exchange)
    seen = cache.get(key)
    if seen is not None and time.monotonic() - seen < interval:
        return Outcome(True)
    try:
        tls = t.tls.context() if t.tls else None
    except TlsFileError:
        return Outcome(True)  # the handshake loaded them a moment ago: nothing new to say
    try:
        with ctx.amqp(t.host, t.port, t.user, t.password, t.vhost, tls) as connection:
            found = check_permissions(connection, t.exchange, lambda: ctx.deadline.expired)
    except BackendUnavailable as exc:  # the handshake just before worked: only "not checked"
        found = Permissions(False, reason=str(exc))
    outcome = permission_outcome(t, found)
    if found.ok:
        cache[key] = time.monotonic()
    else:
        cache.pop(key, None)
    return outcome


def permission_outcome(t: Target, found: Permissions) -> Outcome:
    if not found.checked:
        return Outcome(True, note=f"permissions of user {t.user} in vhost {t.vhost!r} not checked: "
                       f"{found.reason}")
    if found.ok:
        return Outcome(True)
    refused = "; ".join(f"{perm} on {name}" for perm, name in found.denied)
    return Outcome(
        False,
        f"user {t.user} lacks the {'/'.join(found.missing)} permission in vhost {t.vhost!r} (RabbitMQ "
        f"refused: {refused}): oslo.messaging cannot declare, bind, publish to or consume its exchange "
        f"{t.exchange!r} and reply queues, so the service's RPC calls fail",
        f"rabbitmqctl list_permissions -p {t.vhost}; grant what devstack, kolla-ansible and "
        f"openstack-ansible grant: rabbitmqctl set_permissions -p {t.vhost} {t.user} '.*' '.*' '.*' "
        f"(or widen the refused pattern to cover {t.exchange!r} and reply_.*)",
    )


def _memcached_version(ctx: Context, t: Target) -> Outcome | None:
    try:
        with ctx.memcached(t.endpoint) as client:  # "not listening" and "not answering" differ
            client.version()
    except BackendUnavailable as exc:
        return _connect_failure(t, exc)
    except MemcacheUnknownCommandError:
        return Outcome(False, "memcached refused the connection: connection limit reached "
                       "('ERROR Too many open connections')",
                       f"see the memcached check for {t.endpoint}; raise -c / MAXCONN after ruling "
                       "out a connection leak")
    except (OSError, MemcacheError) as exc:
        return Outcome(False, f"accepted the connection but did not answer `version` like memcached "
                       f"({describe_error(exc)}): connection limit reached, hung, or not a memcached port",
                       f"is {t.endpoint} really memcached? On {t.host}: systemctl status memcached")
    return None


# == judging the files: parsed files -> targets and values (no I/O) =================


def report_files(report: Report, missing: list[oslo_ini.MissingPattern],
                 files: list[oslo_ini.ConfigFile]) -> list[oslo_ini.ConfigFile]:
    """Report patterns that match nothing and files that cannot be used; the usable files."""
    for miss in missing:
        report.warning(f"files pattern {miss.pattern}", "matches no file, so nothing it was meant to "
                       "cover is checked", "fix checks.service_config.files in healthd.yaml")
    configs = []
    for cf in files:
        report.metric(M_FILE, 0 if cf.error else 1, file=cf.path)
        if not cf.error:
            configs.append(cf)
        elif cf.fatal:
            # oslo.config raises the same error when the service loads the file (cfg.ConfigOpts.__call__)
            report.critical(f"file {cf.path}", f"{cf.error}: a service loading this file does not start",
                            "fix the line (every option must be inside a [section], as name = value), "
                            "then restart the services that use the file")
        else:
            fix = (f"grant read access to the healthd user: setfacl -m u:healthd:r {cf.path}"
                   if cf.error == "permission denied"
                   else "fix the path in checks.service_config.files, or the file itself")
            report.warning(f"file {cf.path}", f"cannot be checked: {cf.error}", fix)
    return configs


def collect(report: Report, configs: list[oslo_ini.ConfigFile],
            cells: list[CellBroker] | None = None) -> Plan:
    """The targets and option values of the files; problems in them become findings."""
    plan = Plan()
    for cf in configs:
        _collect_transports(report, cf, plan)
        _collect_memcache(report, cf, plan)
    rescope(plan, cells)
    return plan


def rescope(plan: Plan, cells: list[CellBroker] | None) -> None:
    """Put each nova transport_url in the scope of the cell whose broker it names."""
    plan.cells_known = cells is not None
    if not cells:
        return
    values: dict[tuple[str, str, str, str], dict[str, Value]] = {}
    for (service, scope, section, option), by_file in plan.values.items():
        for path, value in by_file.items():
            where = _scope(service, value.identity, cells) if value.identity is not None else scope
            values.setdefault((service, where, section, option), {})[path] = value
    plan.values = values


def _report_problems(report: Report, problems: list[oslo_ini.Problem]) -> None:
    for p in problems:
        report.finding(p.severity, p.subject, p.message, p.fix)


def _collect_transports(report: Report, cf: oslo_ini.ConfigFile, plan: Plan) -> None:
    found, problems = oslo_ini.transports(cf)
    _report_problems(report, problems)
    for t in found:
        kind = "rabbit" if t.url.driver in oslo_ini.RABBIT_DRIVERS else "transport"
        targets = tuple(
            Target(kind, h.host, h.port, h.user, h.password, t.url.vhost, t.tls, t.login, t.exchange,
                   h.credentials_written) if kind == "rabbit" else Target(kind, h.host, h.port)
            for h in t.url.hosts
        )
        shown = t.url.redacted()
        for target in targets:
            plan.use(target, Use(cf.path, t.section, "transport_url", shown, targets, t.in_use, t.unused))
        if t.in_use:
            ident = t.url.identity()
            plan.value((cf.service, "", t.section, "transport_url"), cf.path,
                       Value(ident, ", ".join(sorted(ident)), identity=ident))


def _scope(service: str, identity: frozenset[str], cells: list[CellBroker] | None) -> str:
    """nova files on a cell's broker are compared with that cell's files only."""
    if service != "nova" or not cells:
        return ""
    for cell in cells:
        if identity == cell.identity:
            return cell.label
    return ""


def _collect_memcache(report: Report, cf: oslo_ini.ConfigFile, plan: Plan) -> None:
    lists, problems = oslo_ini.memcache_lists(cf)
    _report_problems(report, problems)
    for found in lists:
        targets = tuple(Target("memcached", s.host, s.port, family=s.family, protocol=found.protocol)
                        for s in found.usable)
        shown = found.shown()
        for target in targets:
            plan.use(target, Use(cf.path, found.section, found.option, shown, targets, found.in_use,
                                 found.unused))
        if found.in_use:
            option = "memcached_servers" if found.section == "keystone_authtoken" else "memcache_servers"
            backend = (found.backend if found.backend == "keystonemiddleware"
                       else f"[cache] backend {found.backend}")
            plan.value((cf.service, "", found.section, option), cf.path,
                       Value(found.compare_key(), shown, found.order_matters,
                             f"{found.library} via {backend}"))


# == judging the outcomes: what each target did -> findings and metrics (no I/O) ====


def judge(report: Report, plan: Plan, outcomes: dict[Target, Outcome], files: int) -> None:
    _report_endpoints(report, plan.uses, outcomes)
    disagreeing = _report_consistency(report, plan.values, plan.cells_known)
    _report_fingerprints(report, plan.values, plan.cells_known)
    down = sum(1 for t, o in outcomes.items() if not o.ok and any(u.in_use for u in plan.uses.get(t, ())))
    report.summary = (
        f"{files} file(s), {len(plan.uses)} endpoint(s) checked, {down} failing, "
        f"{disagreeing} option(s) disagree between files of a service"
    )


def _report_endpoints(report: Report, uses: dict[Target, list[Use]], outcomes: dict[Target, Outcome]) -> None:
    for target, places in uses.items():
        outcome = outcomes[target]
        used = [u for u in places if u.in_use]
        for use in used:
            report.metric(M_ENDPOINT, 1 if outcome.ok else 0, file=use.path, section=use.section,
                          option=use.option, kind=target.kind, endpoint=target.endpoint)
        subject = f"{target.kind} {target.endpoint}"
        who = f" (user {target.user}, vhost {target.vhost})" if target.kind == "rabbit" else ""
        if outcome.note:
            report.info(subject, outcome.note + who)
        if outcome.ok:
            continue
        if not used:
            # A list nothing reads (caching off, notifications off): worth knowing, not paging.
            where = "; ".join(f"{u.place} = {u.shown} ({u.unused})" for u in places)
            report.info(subject, f"{outcome.message}{who}; listed in {where}: nothing uses it now, but it "
                        "fails once that is switched on", outcome.fix)
            continue
        # A broker cluster survives one dead node; a memcached missing from the ring
        # makes its share of keys fail for everyone.
        alone = target.kind == "memcached" or any(
            all(not outcomes[s].ok for s in use.siblings) for use in used)
        severity = Severity.CRITICAL if alone else Severity.WARNING
        where = "; ".join(f"{u.place} = {u.shown}" for u in used)
        report.finding(severity, subject, f"{outcome.message}{who}; configured in {where}", outcome.fix)


def _report_consistency(report: Report, values: dict[tuple[str, str, str, str], dict[str, Value]],
                        cells_known: bool = True) -> int:
    """Compare the files of each service (and, for nova, of each cell's broker) option by option.
    The metrics stay per (section, option): 0 if any service disagrees, and the largest number
    of variants one service has.

    nova's transport_url differs between cells by design (devstack's default superconductor
    layout: nova.conf on "/", nova_cell1.conf on "nova_cell1"): without cell_mappings a
    difference there cannot be told from a stray file, so it is INFO and left out of the metrics."""
    disagreeing = 0
    worst: dict[tuple[str, str], int] = {}
    for (service, scope, section, option), by_file in sorted(values.items()):
        groups: dict[object, list[str]] = defaultdict(list)
        sample: dict[object, Value] = {}
        for path, value in by_file.items():
            groups[value.key].append(path)
            sample[value.key] = value
        unsure = service == "nova" and option == "transport_url" and not cells_known
        worst[(section, option)] = max(worst.get((section, option), 0), 1 if unsure else len(groups))
        if len(groups) < 2:
            continue
        disagreeing += 0 if unsure else 1
        who = f"{service} ({scope})" if scope else service
        ranked = sorted(groups, key=lambda k: (-len(groups[k]), groups[k][0]))
        main = ranked[0]
        for other in ranked[1:]:  # every minority list against the most common one
            a, b = sample[main], sample[other]
            report.finding(
                Severity.INFO if unsure else Severity.WARNING,
                f"{who}: [{section}] {option}",
                f"{who} files disagree: {', '.join(groups[main])} list [{a.shown}]{_lib(a, b)} but "
                f"{', '.join(groups[other])} list [{b.shown}]{_lib(b, a)}" + _why(option, a, b)
                + ("; each nova cell may have its own broker, which healthd tells apart only when it reads "
                   "nova_api.cell_mappings (backends.databases.nova_api)" if unsure else ""),
                "make the option identical in every " + who + " file (same servers"
                + (", same order" if a.order_matters or b.order_matters else "")
                + (", same backend" if a.library != b.library else "")
                + ") from one inventory, then restart the affected services",
            )
    for (section, option), variants in worst.items():
        report.metric(M_CONSISTENT, 1 if variants < 2 else 0, section=section, option=option)
        report.metric(M_VARIANTS, variants, section=section, option=option)
    return disagreeing


def _report_fingerprints(report: Report, values: dict[tuple[str, str, str, str], dict[str, Value]],
                         cells_known: bool) -> None:
    """What this node's files say, as fingerprints Prometheus compares across nodes.

    The value itself never leaves the node (it names the infrastructure; the credentials are
    not in it at all). nova's transport_url is left out when the cells' brokers are unknown:
    a compute on cell1's broker and a controller on the super-conductor's would look like a
    disagreement (the same reason the local comparison only notes it)."""
    for (service, scope, section, option), by_file in sorted(values.items()):
        if service == "nova" and option == "transport_url" and not cells_known:
            continue
        for digest in sorted({fingerprint(value) for value in by_file.values()}):
            report.metric(M_FINGERPRINT, 1, service=service, scope=scope, section=section, option=option,
                          fingerprint=digest)


def fingerprint(value: Value) -> str:
    """12 hex digits of SHA-256 over the value's comparison key, canonically ordered."""

    def canonical(item: object) -> object:
        if isinstance(item, frozenset | set):
            return sorted(canonical(i) for i in item)
        if isinstance(item, tuple | list):
            return [canonical(i) for i in item]
        return item if isinstance(item, str | int | float | bool) or item is None else str(item)

    text = json.dumps(canonical(value.key), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _lib(value: Value, other: Value) -> str:
    return f" ({value.library})" if value.library and value.library != other.library else ""


def _why(option: str, a: Value, b: Value) -> str:
    if option == "transport_url":
        return (": services of this kind on these nodes use different brokers or vhosts and may not hear "
                "each other")
    if a.library != b.library:
        return ("; the client libraries place keys differently, so nodes look for cached tokens and "
                "sessions on other servers than the ones that stored them")
    if a.order_matters:
        return (f"; order matters: {a.library.partition(' via ')[0]} maps each key to a position in the "
                "list (a hash of the key modulo the number of servers), so nodes with different lists "
                "look for cached tokens and sessions on different servers and miss (intermittent "
                "failures depending on which node answers)")
    return (f"; {a.library.partition(' via ')[0]} hashes each key onto the servers by name (rendezvous "
            "hashing: the order does not matter, the names do), so nodes with different servers store "
            "and look up keys in different places")
