"""service_config: do the services' config files point at live, agreeing RabbitMQ and memcached servers?

Failure mode: a service's config file names the wrong message broker or cache
servers: a typo, a decommissioned controller, a node deployed with an older
server list. Nothing fails at start; the service just talks to nothing, or to a
different set of servers than its peers. Memcache server lists are order
sensitive: clients hash each key onto a position in the list, so two nodes
that list the same servers in a different order store a token on one server
and look for it on another. That is how a console or a token check fails "with
a certain probability", depending on which node serves the request.

For every file in ``files`` (globs allowed) the probe reads ``transport_url``
([DEFAULT] and [oslo_messaging_notifications]), ``[cache] memcache_servers``
(when memcached caching is in use) and ``[keystone_authtoken] memcached_servers``.
Each distinct endpoint is checked once per run, however many files name it:
the name resolves, TCP connects, and the protocol answers (an AMQP handshake
with the configured user and vhost; memcached ``version``). Files that list
different servers for the same option are reported, naming both files and
both lists. Passwords are registered as secrets before anything is logged and
never appear in findings or labels.
"""

from __future__ import annotations

import socket
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

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
from healthd.model import MetricSpec, Report, Severity
from healthd.openstack import oslo_ini
from healthd.openstack.messaging import AmqpTls, TlsFileError
from healthd.probe import Context, Probe, ProbeSettings
from healthd.redact import describe_error

M_FILE = "healthd_service_config_file_readable"
M_ENDPOINT = "healthd_service_config_endpoint_up"
M_CONSISTENT = "healthd_service_config_consistent"
M_VARIANTS = "healthd_service_config_distinct_values"

RABBIT_SCHEMES = frozenset({"rabbit", "amqp"})  # oslo.messaging's rabbit driver accepts both


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

    @property
    def place(self) -> str:
        return f"{self.path} [{self.section}] {self.option}"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str = ""
    fix: str = ""


@dataclass
class Plan:
    """What the files ask for: every target with the places that name it, and every option's
    value per file (a key to compare, and the text shown)."""

    uses: dict[Target, list[Use]] = field(default_factory=dict)
    values: dict[tuple[str, str], dict[str, tuple[object, str]]] = field(default_factory=dict)

    def use(self, target: Target, use: Use) -> None:
        self.uses.setdefault(target, []).append(use)

    def value(self, section: str, option: str, path: str, key: object, shown: str) -> None:
        self.values.setdefault((section, option), {})[path] = (key, shown)


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
        "credentials and only opens the vhost."
    )
    metrics = (
        MetricSpec(M_FILE, "1 if the config file could be read and parsed, else 0.", ("file",)),
        MetricSpec(M_ENDPOINT, "1 if an endpoint named in a config option resolves, connects and "
                   "answers its protocol, else 0.", ("file", "section", "option", "kind", "endpoint")),
        MetricSpec(M_CONSISTENT, "1 if every file that sets the option lists the same servers "
                   "(memcache lists in the same order), else 0.", ("section", "option")),
        MetricSpec(M_VARIANTS, "Number of different server lists the files give for the option.",
                   ("section", "option")),
    )

    class Settings(ProbeSettings):
        files: list[str] = Field(
            default_factory=list,
            description="oslo.config INI files to read, globs allowed (e.g. /etc/nova/nova.conf, "
            "/etc/*/*.conf)",
        )
        max_parallel: int = Field(8, ge=1, le=64, description="endpoints checked at once")

    def run(self, ctx: Context, report: Report) -> None:
        s = self.settings
        if not s.files:
            raise BackendUnavailable("no service config files configured (checks.service_config.files)")
        missing, files = read_files(s.files)
        configs = report_files(report, missing, files)
        if not configs:
            raise BackendUnavailable(
                f"none of the service config files could be read ({len(report.findings)} problem(s): "
                + "; ".join(f"{f.subject}: {f.message}" for f in report.findings) + ")"
            )
        plan = collect(report, configs)
        outcomes = ctx.map_parallel(
            lambda t: check_target(ctx, t), list(plan.uses), s.max_parallel,
            on_deadline=lambda t: Outcome(False, "no answer before the probe's deadline",
                                          "raise checks.service_config.timeout or check the network path"),
        )
        judge(report, plan, outcomes, len(configs))


# == loading: the files, then every target they name (I/O) =========================


def read_files(patterns: list[str]) -> tuple[list[oslo_ini.MissingPattern], list[oslo_ini.ConfigFile]]:
    paths, missing = oslo_ini.expand(patterns)
    return missing, [oslo_ini.read(path) for path in paths]


# -- what each target does: resolve, connect, speak its protocol --------------------


def check_target(ctx: Context, target: Target) -> Outcome:
    steps: list[Callable[[Context, Target], Outcome | None]] = [_resolve]
    if target.kind == "memcached":
        steps.append(_memcached_version)
    else:
        steps.append(_tcp)
        if target.kind == "rabbit":
            steps.append(_amqp)
    for step in steps:
        failed = step(ctx, target)
        if failed is not None:
            return failed
    return Outcome(True)


def _resolve(ctx: Context, t: Target) -> Outcome | None:
    try:
        socket.getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM)
    except (UnicodeError, ValueError):
        return Outcome(False, f"'{t.host}' is not a valid host name",
                       "correct the host name in the file (a typo such as a doubled dot)")
    except socket.gaierror as exc:
        return Outcome(False, f"host name {t.host} does not resolve ({describe_error(exc)})",
                       f"correct the host name, or add it to DNS or /etc/hosts (getent hosts {t.host})")
    return None


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
        return Outcome(False, f"authentication refused for user {t.user}",
                       f"the password in the file does not match RabbitMQ: check `rabbitmqctl "
                       f"list_users` on the broker and set the service's password in the file (or "
                       f"reset it with `rabbitmqctl change_password {t.user}`), then restart the service")
    except AccessDenied:
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


def _tls_failure(t: Target, exc: TlsFailed) -> Outcome:
    """The services verify the broker's certificate the same way (chain, not host name), so
    they fail too: name the file option that decides it."""
    tls = t.tls or AmqpTls()
    trust = f"ssl_ca_file {tls.ca_file}" if tls.ca_file else "the system CA store (ssl_ca_file is unset)"
    reason = str(exc).partition(": ")[2]  # without the "AMQP host:port" prefix: the subject says it
    if isinstance(exc, TlsUntrusted):
        return Outcome(False, f"{reason}; checked against {trust}, as oslo.messaging does, so the "
                       "services using this file cannot connect either",
                       f"openssl s_client -connect {t.endpoint} -showcerts "
                       f"{'-CAfile ' + tls.ca_file if tls.ca_file else ''}".rstrip()
                       + "; renew an expired broker certificate, or set [oslo_messaging_rabbit] "
                       "ssl_ca_file to the CA that issued it, then restart the services")
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
        if cf.error:
            fix = (f"grant read access to the healthd user: setfacl -m u:healthd:r {cf.path}"
                   if cf.error == "permission denied"
                   else "fix the path in checks.service_config.files, or the file itself")
            report.warning(f"file {cf.path}", f"cannot be checked: {cf.error}", fix)
        else:
            configs.append(cf)
    return configs


def collect(report: Report, configs: list[oslo_ini.ConfigFile]) -> Plan:
    """The targets and option values of the files; an unparsable transport_url is a finding."""
    plan = Plan()
    for cf in configs:
        _collect_file(report, cf, plan)
    return plan


def _collect_file(report: Report, cf: oslo_ini.ConfigFile, plan: Plan) -> None:
    tls_default = oslo_ini.rabbit_tls_default(cf)
    tls_files = AmqpTls(*oslo_ini.rabbit_tls_files(cf))
    for section in oslo_ini.TRANSPORT_SECTIONS:
        raw = cf.get(section, "transport_url")
        if not raw:
            continue
        try:
            url = oslo_ini.parse_transport_url(raw, tls_default)
        except ValueError as exc:
            report.critical(f"{cf.path} [{section}] transport_url",
                            f"cannot be parsed: {exc}; the service cannot reach its message broker",
                            "write it as rabbit://USER:PASSWORD@HOST:5672,USER:PASSWORD@HOST2:5672/VHOST")
            continue
        kind = "rabbit" if url.scheme in RABBIT_SCHEMES else "transport"
        tls = tls_files if url.tls else None
        targets = tuple(Target(kind, h.host, h.port, h.user, h.password, url.vhost, tls)
                        for h in url.hosts)
        shown = url.redacted()
        for t in targets:
            plan.use(t, Use(cf.path, section, "transport_url", shown, targets))
        ident = sorted(url.identity())
        plan.value(section, "transport_url", cf.path, frozenset(ident), ", ".join(ident))
    for section, option, servers in oslo_ini.memcache_server_lists(cf):
        shown = ",".join(servers)
        valid = []
        for server in servers:
            try:
                valid.append(_split(server))
            except ValueError:
                report.critical(f"{cf.path} [{section}] {option}",
                                f"entry {server!r} is not HOST:PORT with a numeric port; the service cannot "
                                "use this memcached", "write each server as HOST:PORT, e.g. 10.0.0.5:11211")
        targets = tuple(Target("memcached", host, port) for host, port in valid)
        for t in targets:
            plan.use(t, Use(cf.path, section, option, shown, targets))
        plan.value(section, option, cf.path, tuple(servers), shown)


def _split(server: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); ValueError for a port that is not a number."""
    host, _, port = server.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(server)
    return host.strip("[]"), int(port)


# == judging the outcomes: what each target did -> findings and metrics (no I/O) ====


def judge(report: Report, plan: Plan, outcomes: dict[Target, Outcome], files: int) -> None:
    _report_endpoints(report, plan.uses, outcomes)
    disagreeing = _report_consistency(report, plan.values)
    down = sum(1 for o in outcomes.values() if not o.ok)
    report.summary = (
        f"{files} file(s), {len(plan.uses)} endpoint(s) checked, {down} failing, "
        f"{disagreeing} option(s) disagree between files"
    )


def _report_endpoints(report: Report, uses: dict[Target, list[Use]], outcomes: dict[Target, Outcome]) -> None:
    for target, places in uses.items():
        outcome = outcomes[target]
        for use in places:
            report.metric(M_ENDPOINT, 1 if outcome.ok else 0, file=use.path, section=use.section,
                          option=use.option, kind=target.kind, endpoint=target.endpoint)
        if outcome.ok:
            continue
        # A broker cluster survives one dead node; a memcached missing from the ring
        # makes its share of keys fail for everyone.
        alone = any(
            all(not outcomes[s].ok for s in use.siblings) for use in places
        ) or target.kind == "memcached"
        severity = Severity.CRITICAL if alone else Severity.WARNING
        where = "; ".join(f"{u.place} = {u.shown}" for u in places)
        who = f" (user {target.user}, vhost {target.vhost})" if target.kind == "rabbit" else ""
        report.finding(severity, f"{target.kind} {target.endpoint}",
                       f"{outcome.message}{who}; configured in {where}", outcome.fix)


def _report_consistency(report: Report, values: dict[tuple[str, str], dict[str, tuple[object, str]]]) -> int:
    disagreeing = 0
    for (section, option), by_file in sorted(values.items()):
        groups: dict[object, list[str]] = defaultdict(list)
        shown: dict[object, str] = {}
        for path, (key, text) in by_file.items():
            groups[key].append(path)
            shown[key] = text
        report.metric(M_CONSISTENT, 1 if len(groups) == 1 else 0, section=section, option=option)
        report.metric(M_VARIANTS, len(groups), section=section, option=option)
        if len(groups) < 2:
            continue
        disagreeing += 1
        # Compare every minority list with the most common one.
        ranked = sorted(groups, key=lambda k: (-len(groups[k]), groups[k][0]))
        main = ranked[0]
        for other in ranked[1:]:
            report.warning(
                f"[{section}] {option}",
                f"files disagree: {', '.join(groups[main])} list [{shown[main]}] but "
                f"{', '.join(groups[other])} list [{shown[other]}]" + _why(option),
                "make the option identical in every file (same servers"
                + (", same order" if option != "transport_url" else "")
                + ") from one inventory, then restart the affected services",
            )
    return disagreeing


def _why(option: str) -> str:
    if option == "transport_url":
        return ": services on these nodes use different brokers or vhosts and may not hear each other"
    return ("; order matters: memcache clients map each key to a position in the list, so nodes with "
            "different lists look for cached tokens and sessions on different servers and miss "
            "(intermittent failures depending on which node answers)")
