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
from dataclasses import dataclass

from pydantic import Field
from pymemcache.exceptions import MemcacheError, MemcacheUnknownCommandError

from checks import oslo_ini
from healthd.backends import AmqpTls, Backends
from healthd.model import MetricSpec, Report, Severity
from healthd.probe import BackendUnavailable, Context, Probe, ProbeSettings
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
        if not self.settings.files:
            raise BackendUnavailable("no service config files configured (checks.service_config.files)")
        configs = self._read_files(report)
        if not configs:
            raise BackendUnavailable(
                f"none of the service config files could be read ({len(report.findings)} problem(s): "
                + "; ".join(f"{f.subject}: {f.message}" for f in report.findings) + ")"
            )
        uses: dict[Target, list[Use]] = defaultdict(list)
        values: dict[tuple[str, str], dict[str, tuple[object, str]]] = defaultdict(dict)
        for cf in configs:
            self._collect(cf, report, uses, values)
        outcomes = self._check_all(ctx, list(uses))
        self._report_endpoints(report, uses, outcomes)
        disagreeing = self._report_consistency(report, values)
        down = sum(1 for o in outcomes.values() if not o.ok)
        report.summary = (
            f"{len(configs)} file(s), {len(uses)} endpoint(s) checked, {down} failing, "
            f"{disagreeing} option(s) disagree between files"
        )

    # -- reading ------------------------------------------------------------
    def _read_files(self, report: Report) -> list[oslo_ini.ConfigFile]:
        paths, missing = oslo_ini.expand(self.settings.files)
        for miss in missing:
            report.warning(f"files pattern {miss.pattern}", "matches no file, so nothing it was meant to "
                           "cover is checked", "fix checks.service_config.files in healthd.yaml")
        configs = []
        for path in paths:
            cf = oslo_ini.read(path)
            report.metric(M_FILE, 0 if cf.error else 1, file=path)
            if cf.error:
                fix = (f"grant read access to the healthd user: setfacl -m u:healthd:r {path}"
                       if cf.error == "permission denied"
                       else "fix the path in checks.service_config.files, or the file itself")
                report.warning(f"file {path}", f"cannot be checked: {cf.error}", fix)
            else:
                configs.append(cf)
        return configs

    def _collect(self, cf: oslo_ini.ConfigFile, report: Report, uses: dict[Target, list[Use]],
                 values: dict[tuple[str, str], dict[str, tuple[object, str]]]) -> None:
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
                uses[t].append(Use(cf.path, section, "transport_url", shown, targets))
            ident = sorted(url.identity())
            values[(section, "transport_url")][cf.path] = (frozenset(ident), ", ".join(ident))
        for section, option, servers in oslo_ini.memcache_server_lists(cf):
            targets = tuple(Target("memcached", *_split(s)) for s in servers)
            shown = ",".join(servers)
            for t in targets:
                uses[t].append(Use(cf.path, section, option, shown, targets))
            values[(section, option)][cf.path] = (tuple(servers), shown)

    # -- checking -----------------------------------------------------------
    def _check_all(self, ctx: Context, targets: list[Target]) -> dict[Target, Outcome]:
        return ctx.map_parallel(
            lambda t: check_target(ctx.backends, t, ctx), targets, self.settings.max_parallel,
            on_deadline=lambda t: Outcome(False, "no answer before the probe's deadline",
                                          "raise checks.service_config.timeout or check the network path"),
        )

    def _report_endpoints(self, report: Report, uses: dict[Target, list[Use]],
                          outcomes: dict[Target, Outcome]) -> None:
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

    def _report_consistency(self, report: Report,
                            values: dict[tuple[str, str], dict[str, tuple[object, str]]]) -> int:
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


def _split(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    return host.strip("[]"), int(port)


# -- one endpoint ----------------------------------------------------------------
def check_target(backends: Backends, target: Target, ctx: Context) -> Outcome:
    steps: list[Callable[[Backends, Target, Context], Outcome | None]] = [_resolve]
    if target.kind == "memcached":
        steps.append(_memcached_version)
    else:
        steps.append(_tcp)
        if target.kind == "rabbit":
            steps.append(_amqp)
    for step in steps:
        failed = step(backends, target, ctx)
        if failed is not None:
            return failed
    return Outcome(True)


def _resolve(backends: Backends, t: Target, ctx: Context) -> Outcome | None:
    try:
        socket.getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM)
    except (UnicodeError, ValueError):
        return Outcome(False, f"'{t.host}' is not a valid host name",
                       "correct the host name in the file (a typo such as a doubled dot)")
    except socket.gaierror as exc:
        return Outcome(False, f"host name {t.host} does not resolve ({describe_error(exc)})",
                       f"correct the host name, or add it to DNS or /etc/hosts (getent hosts {t.host})")
    return None


def _tcp(backends: Backends, t: Target, ctx: Context) -> Outcome | None:
    try:
        backends.tcp_connect(t.host, t.port, ctx)
    except OSError as exc:
        return _tcp_failure(t, exc)
    return None


def _tcp_failure(t: Target, exc: BaseException) -> Outcome:
    service = {"rabbit": "rabbitmq-server", "memcached": "memcached"}.get(t.kind, "the broker")
    if isinstance(exc, ConnectionRefusedError):
        return Outcome(False, "connection refused: nothing listens on this port",
                       f"is this the right host and port? On {t.host}: systemctl status {service}; "
                       f"ss -ltnp | grep ':{t.port} '. If the node was decommissioned, remove it from "
                       "the file")
    if isinstance(exc, TimeoutError):
        return Outcome(False, "no TCP connection before the timeout (host down, or traffic dropped)",
                       f"check that {t.host} is up and {t.port}/tcp is open from this host; if the node "
                       "was decommissioned, remove it from the file")
    return Outcome(False, f"cannot connect ({describe_error(exc)})",
                   f"check the network path to {t.endpoint}")


def _amqp(backends: Backends, t: Target, ctx: Context) -> Outcome | None:
    try:
        backends.amqp_handshake(t.host, t.port, t.user, t.password, t.vhost, t.tls, ctx)
    except BackendUnavailable as exc:
        text = str(exc)
        if "authentication refused" in text:
            return Outcome(False, f"authentication refused for user {t.user}",
                           f"the password in the file does not match RabbitMQ: check `rabbitmqctl "
                           f"list_users` on the broker and set the service's password in the file (or "
                           f"reset it with `rabbitmqctl change_password {t.user}`), then restart the service")
        if "vhost" in text and "refused" in text:
            return Outcome(False, f"access to vhost {t.vhost!r} refused",
                           f"rabbitmqctl list_permissions -p {t.vhost}; grant it: rabbitmqctl "
                           f"set_permissions -p {t.vhost} {t.user} '.*' '.*' '.*'")
        if t.tls and "TLS" in text:
            return _tls_failure(t, text.partition(": ")[2])
        return Outcome(False, f"no AMQP answer: {text}",
                       f"is {t.endpoint} a RabbitMQ listener{' with TLS' if t.tls else ''}? "
                       f"Check rabbitmq-diagnostics listeners on {t.host}"
                       + ("" if t.tls else "; a TLS-only port needs [oslo_messaging_rabbit] ssl = true"))
    return None


def _tls_failure(t: Target, reason: str) -> Outcome:
    """The services verify the broker's certificate the same way (chain, not host name), so
    they fail too: name the file option that decides it."""
    tls = t.tls or AmqpTls()
    trust = f"ssl_ca_file {tls.ca_file}" if tls.ca_file else "the system CA store (ssl_ca_file is unset)"
    if "not trusted" in reason:
        return Outcome(False, f"{reason}; checked against {trust}, as oslo.messaging does, so the "
                       "services using this file cannot connect either",
                       f"openssl s_client -connect {t.endpoint} -showcerts "
                       f"{'-CAfile ' + tls.ca_file if tls.ca_file else ''}".rstrip()
                       + "; renew an expired broker certificate, or set [oslo_messaging_rabbit] "
                       "ssl_ca_file to the CA that issued it, then restart the services")
    if "Permission denied" in reason:
        return Outcome(False, f"{reason} (for healthd; the services may still read it)",
                       "let the healthd user read the TLS files named in [oslo_messaging_rabbit], e.g. "
                       "setfacl -m u:healthd:r FILE")
    return Outcome(False, reason,
                   "[oslo_messaging_rabbit] ssl_ca_file / ssl_cert_file / ssl_key_file must name PEM files "
                   "that exist on the service's hosts; fix the path or the file, then restart the services")


def _memcached_version(backends: Backends, t: Target, ctx: Context) -> Outcome | None:
    client = backends.memcached(t.endpoint, ctx)
    try:
        client._connect()  # connect first: "not listening" and "not answering" need different fixes
    except OSError as exc:
        return _tcp_failure(t, exc)
    try:
        client.version()
    except MemcacheUnknownCommandError:
        return Outcome(False, "memcached refused the connection: connection limit reached "
                       "('ERROR Too many open connections')",
                       f"see the memcached check for {t.endpoint}; raise -c / MAXCONN after ruling "
                       "out a connection leak")
    except (OSError, MemcacheError) as exc:
        return Outcome(False, f"accepted the connection but did not answer `version` like memcached "
                       f"({describe_error(exc)}): connection limit reached, hung, or not a memcached port",
                       f"is {t.endpoint} really memcached? On {t.host}: systemctl status memcached")
    finally:
        client.close()
    return None
