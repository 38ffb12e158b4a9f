"""memcached: connection headroom, refused clients and servers that stopped answering.

Failure mode: OpenStack keeps keystone tokens, horizon sessions and nova's
cache in memcached, and every API worker holds connections to it. Once a
memcached reaches its connection limit (``-c``, 1024 by default) it turns new
clients away: with ``maxconns_fast`` (the default since 1.5) it answers
``ERROR Too many open connections`` and hangs up, otherwise it stops calling
accept() and new connections sit in the kernel backlog without an answer.
Services then wait on their cache: the dashboard lags, token validation slows,
nova API calls hang. memcached counts each such event (``rejected_connections``,
``listen_disabled_num``), so any increase between two runs means clients were
just turned away.

Per server, one connection per run: ``stats`` and ``stats settings``. The probe
exports usage against the limit, warns before the limit, and reports refusals
since the previous run. A restart (uptime below the time elapsed since the
previous run, or a counter going back) starts a new baseline, and what the new
process counted since is news. Servers come from ``backends.memcached.servers``
and, optionally, the service config files the cloud really uses, read as the
services read them (healthd/openstack/oslo_ini.py): only lists oslo.cache or
keystonemiddleware use, each entry parsed by the client library that reads it,
so an entry that library cannot parse is a finding even when healthd reaches
the server. They are polled a few at a time so one hung server cannot use up
the run's time.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, model_validator
from pymemcache.exceptions import (
    MemcacheError,
    MemcacheUnexpectedCloseError,
    MemcacheUnknownCommandError,
)

from healthd.connections import split_host_port
from healthd.errors import BackendUnavailable, Refused, TimedOut, Unresolvable
from healthd.model import MetricSpec, MetricType, Report, Severity
from healthd.openstack import oslo_ini
from healthd.probe import Context, Probe, ProbeSettings
from healthd.redact import describe_error

M_UP = "healthd_memcached_up"
M_CURR = "healthd_memcached_current_connections"
M_MAX = "healthd_memcached_max_connections"
M_RATIO = "healthd_memcached_connection_usage_ratio"
M_LISTEN = "healthd_memcached_listen_disabled_total"
M_REJECTED = "healthd_memcached_rejected_connections_total"
M_UPTIME = "healthd_memcached_uptime_seconds"

STATE_KEY = "memcached_counters"


@dataclass
class Poll:
    """What one server said (or why it said nothing)."""

    server: str
    stats: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    failure: str = ""  # "", refused, connect_timeout, resolve, limit, no_answer, closed, error, deadline
    detail: str = ""
    at: float | None = None  # time.monotonic() when `stats` answered: dates the uptime

    def number(self, key: str, source: str = "stats") -> int | None:
        table = self.stats if source == "stats" else self.settings
        try:
            return int(table[key])
        except (KeyError, ValueError):
            return None


class MemcachedProbe(Probe):
    name = "memcached"
    description = "memcached connection usage vs. its limit, refused clients, unreachable servers."
    default_interval = 30.0
    default_timeout = 15.0
    requires = ("memcached",)
    privileges = (
        "TCP access to each memcached port (no memcached credentials: memcached has no "
        "accounts unless SASL is on); read access to the files in config_files."
    )
    metrics = (
        MetricSpec(M_UP, "1 if the server answered `stats`, 0 if it is unreachable, refused or silent.",
                   ("server",)),
        MetricSpec(M_CURR, "Open client connections (curr_connections).", ("server",)),
        MetricSpec(M_MAX, "Connection limit (-c / maxconns from `stats settings`).", ("server",)),
        MetricSpec(M_RATIO, "(curr_connections + reserved_fds) / maxconns: share of the limit in use.",
                   ("server",)),
        MetricSpec(M_LISTEN, "Times the server hit its limit and stopped accepting (listen_disabled_num).",
                   ("server",), MetricType.COUNTER),
        MetricSpec(M_REJECTED, "Connections refused at the limit (rejected_connections).",
                   ("server",), MetricType.COUNTER),
        MetricSpec(M_UPTIME, "Seconds since the memcached process started.", ("server",)),
    )

    class Settings(ProbeSettings):
        warning_ratio: float = Field(0.80, gt=0, le=1, description="usage ratio that warns")
        critical_ratio: float = Field(0.95, gt=0, le=1, description="usage ratio that is critical")
        config_files: list[str] = Field(
            default_factory=list,
            description="service config files (globs allowed) whose [cache] memcache_servers (when "
            "oslo.cache uses it) and [keystone_authtoken] memcached_servers are checked too",
        )
        max_parallel: int = Field(4, ge=1, le=32, description="servers polled at once")

        @model_validator(mode="after")
        def _ordered(self) -> MemcachedProbe.Settings:
            if self.critical_ratio < self.warning_ratio:
                raise ValueError("critical_ratio must be >= warning_ratio")
            return self

    def run(self, ctx: Context, report: Report) -> None:
        s = self.settings
        missing, configs = read_config_files(s.config_files)
        report_config_files(report, missing, configs)
        sources = server_sources(ctx.memcached_servers(), configs, report)
        if not sources:
            raise BackendUnavailable(
                "no memcached servers configured (backends.memcached.servers or "
                "checks.memcached.config_files)"
            )
        polls = ctx.map_parallel(
            lambda server: poll(ctx, server), list(sources), s.max_parallel,
            on_deadline=lambda server: Poll(server, failure="deadline"),
        )
        judge(report, polls, sources, ctx.state.setdefault(STATE_KEY, {}), s, time.monotonic())


# == loading: which servers (config files), and what each one says (one connection) ==


def read_config_files(patterns: list[str]) -> tuple[list[oslo_ini.MissingPattern], list[oslo_ini.ConfigFile]]:
    """The service config files named by the patterns, parsed (or with the reason they are not)."""
    return oslo_ini.read_all(patterns)


def poll(ctx: Context, server: str) -> Poll:
    """One connection: connect, ``stats``, ``stats settings``, close."""
    result = Poll(server)
    try:
        with ctx.memcached(server) as client:
            try:
                result.stats = _text(client.stats())
                result.at = time.monotonic()
                result.settings = _text(client.stats("settings"))
            except MemcacheUnknownCommandError:
                # Every memcached knows `stats`; an ERROR reply is its at-the-limit rejection
                # ("ERROR Too many open connections", then it hangs up).
                result.failure = "limit" if not result.stats else "error"
                result.detail = "answered ERROR" if not result.stats else "`stats settings` not supported"
            except (TimeoutError, socket.timeout):  # noqa: UP041 - both names for older Pythons
                result.failure = "no_answer"
            except MemcacheUnexpectedCloseError:
                # Closed by the server, or by the deadline cutting a server that never answered.
                result.failure = "no_answer" if ctx.deadline.expired else "closed"
            except (OSError, MemcacheError) as exc:
                # The deadline shut the socket: the server did not answer in the check's time.
                result.failure = "no_answer" if ctx.deadline.expired else "error"
                result.detail = describe_error(exc)
    except Unresolvable:
        # The engine's message repeats "does not resolve"; the resolver's own reason is what counts.
        result.failure, result.detail = "resolve", _resolver_reason(server)
    except Refused:
        result.failure = "refused"
    except TimedOut:
        result.failure = "connect_timeout"
    except BackendUnavailable as exc:
        result.failure, result.detail = "error", str(exc)
    return result


def _resolver_reason(server: str) -> str:
    """Why the server's host name does not resolve, in the resolver's words (one lookup, only
    after the connection failed on it)."""
    host, port = split_host_port(server, 11211)
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return exc.strerror or describe_error(exc)
    except (OSError, UnicodeError, ValueError) as exc:
        return describe_error(exc)
    return "it resolved on a second try: the resolver is flapping"


def _text(table: dict[bytes, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
        for k, v in table.items()
    }


# == judging: plain data -> findings and metrics (no I/O) ===========================


def report_config_files(report: Report, missing: list[oslo_ini.MissingPattern],
                        configs: list[oslo_ini.ConfigFile]) -> None:
    """Patterns that match nothing and files that cannot be read: their servers go unchecked."""
    for miss in missing:
        report.warning(f"config_files pattern {miss.pattern}", "matches no file",
                       "fix checks.memcached.config_files in healthd.yaml")
    for cf in configs:
        if cf.fatal:
            report.critical(f"file {cf.path}", f"{cf.error}: a service loading this file does not start, "
                            "and the memcached servers it lists are not checked",
                            "fix the line, then restart the services that use the file")
        elif cf.error:
            report.warning(f"file {cf.path}", f"cannot read it ({cf.error}); the memcached servers it "
                           "lists are not checked",
                           f"let the healthd user read it (e.g. setfacl -m u:healthd:r {cf.path}) "
                           "or fix checks.memcached.config_files")


def server_sources(configured: list[str], configs: list[oslo_ini.ConfigFile],
                   report: Report | None = None) -> dict[str, list[str]]:
    """Normalized host:port -> where it was configured, in first-seen order.

    From the files, only lists a library uses (oslo_ini.memcache_lists: [cache] when oslo.cache
    is on with a memcached backend, [keystone_authtoken] when set) and servers healthd can speak
    plain memcached to (not behind TLS or SASL). Each entry is read by the list's own client
    library: one it cannot parse is a finding (when ``report`` is given) even if healthd could
    reach the server, which is then polled all the same."""
    servers: dict[str, list[str]] = {}
    for entry in configured:
        server = oslo_ini.normalize_server(entry)
        if server:
            servers.setdefault(server, []).append("backends.memcached.servers")
    for cf in configs:
        if cf.error:
            continue
        lists, problems = oslo_ini.memcache_lists(cf)
        if report is not None:
            for problem in problems:
                if problem.severity is not Severity.INFO:  # lists nothing uses are not this check's
                    report.finding(problem.severity, problem.subject, problem.message, problem.fix)
        for found in lists:
            if not found.in_use or not found.protocol:
                continue
            for entry in found.servers:
                key = entry.key or (oslo_ini.normalize_server(entry.entry) if entry.fault else None)
                if key and ":" in key and key.rpartition(":")[2].isdigit():
                    servers.setdefault(key, []).append(found.place)
    return servers


def judge(report: Report, polls: dict[str, Poll], sources: dict[str, list[str]],
          counters: dict[str, dict[str, Any]], s: MemcachedProbe.Settings, now: float | None = None) -> None:
    """Judge every server's poll. ``counters`` holds each server's counters from the previous
    run (ctx.state): it is read for the refusals since then, and updated for the next run.
    ``now`` (time.monotonic()) dates this run's readings, to tell a restart from the uptime."""
    for server in sources:
        _judge_server(report, polls[server], sources[server], counters, s, now)
    up = sum(1 for p in polls.values() if not p.failure)
    report.summary = f"{up} of {len(sources)} memcached server(s) answering"


def _judge_server(report: Report, p: Poll, sources: list[str], counters: dict[str, dict[str, Any]],
                  s: MemcachedProbe.Settings, now: float | None) -> None:
    report.metric(M_UP, 0 if p.failure else 1, server=p.server)
    if p.failure:
        _report_failure(report, p, sources, counters.get(p.server, {}))
        return
    curr, maxconns = p.number("curr_connections"), p.number("maxconns", "settings")
    reserved = p.number("reserved_fds") or 0
    listen, rejected = p.number("listen_disabled_num"), p.number("rejected_connections")
    uptime = p.number("uptime")
    if curr is not None:
        report.metric(M_CURR, curr, server=p.server)
    if maxconns:
        report.metric(M_MAX, maxconns, server=p.server)
    if uptime is not None:
        report.metric(M_UPTIME, uptime, server=p.server)
    if listen is not None:
        report.metric(M_LISTEN, listen, server=p.server)
    if rejected is not None:
        report.metric(M_REJECTED, rejected, server=p.server)
    if curr is not None and maxconns:
        ratio = (curr + reserved) / maxconns
        report.metric(M_RATIO, ratio, server=p.server)
        _judge_ratio(report, p.server, curr, reserved, maxconns, ratio, s)
    _judge_refusals(report, p.server, counters, uptime, listen, rejected, p.at if p.at is not None else now)
    if curr is not None and maxconns:
        counters[p.server]["ratio"] = ratio  # quoted if the server stops answering


def _judge_ratio(report: Report, server: str, curr: int, reserved: int, maxconns: int,
                 ratio: float, s: MemcachedProbe.Settings) -> None:
    # memcached turns new clients away once curr_conns + reserved_fds >= maxconns - 1
    # (memcached.c drive_machine, conn_listening), hence the reserved descriptors in the ratio.
    if ratio < s.warning_ratio:
        return
    level = report.critical if ratio >= s.critical_ratio else report.warning
    limit = s.critical_ratio if ratio >= s.critical_ratio else s.warning_ratio
    level(
        f"memcached {server}",
        f"{curr} client connections + {reserved} reserved descriptors of maxconns {maxconns} "
        f"({ratio:.0%}, threshold {limit:.0%}): near its connection limit, after which new "
        "clients (nova, keystone token validation, horizon sessions) are refused",
        _limit_fix(server),
    )


# A restart shows as an uptime that began after the previous reading: uptime now below
# (uptime then + seconds elapsed) by more than memcached's clock granularity (its `uptime`
# ticks once a second, memcached.c clock_handler) and the rounding of both readings.
RESTART_SLACK = 3.0


def restarted_since(before: dict[str, Any], uptime: int | None, listen: int | None,
                    rejected: int | None, now: float | None) -> bool:
    """Whether the process was restarted since the reading in ``before``: its uptime began after
    that reading (a restart between two runs far apart leaves an uptime above the previous one),
    or a counter went back."""
    current = {"uptime": uptime, "listen": listen, "rejected": rejected}
    if any(current[k] is not None and k in before and current[k] < before[k]  # type: ignore[operator]
           for k in ("uptime", "listen", "rejected")):
        return True
    if uptime is None or now is None or "uptime" not in before or "at" not in before:
        return False
    elapsed = now - before["at"]
    return uptime < before["uptime"] + elapsed - RESTART_SLACK


def _judge_refusals(report: Report, server: str, counters: dict[str, dict[str, Any]],
                    uptime: int | None, listen: int | None, rejected: int | None,
                    now: float | None = None) -> None:
    reading = {"uptime": uptime, "listen": listen, "rejected": rejected}
    before = counters.get(server)
    counters[server] = {k: v for k, v in reading.items() if v is not None}
    if now is not None:
        counters[server]["at"] = now
    if before is None:
        return  # first sight of this server: baseline only
    if restarted_since(before, uptime, listen, rejected, now):
        # The new process started after the previous check: all it counted is news.
        before = {"listen": 0, "rejected": 0}
        report.info(f"memcached {server}", f"restarted since the previous check (up {uptime} s): the "
                    "tokens and sessions it cached are gone, clients rebuild them")
    events = []
    new_rejected = (rejected or 0) - before.get("rejected", rejected or 0)
    new_listen = (listen or 0) - before.get("listen", listen or 0)
    if new_rejected > 0:
        events.append(f"refused {new_rejected} connection(s) (rejected_connections "
                      f"{before['rejected']} -> {rejected})")
    if new_listen > 0:
        events.append(f"stopped accepting connections {new_listen} time(s) at its limit "
                      f"(listen_disabled_num {before['listen']} -> {listen})")
    if events:
        report.critical(
            f"memcached {server}",
            "since the previous check it " + " and ".join(events)
            + ": clients were turned away at the connection limit",
            _limit_fix(server),
        )


def _report_failure(report: Report, p: Poll, sources: list[str], last: dict[str, float]) -> None:
    where = "; configured in " + ", ".join(sources)
    host, _, port = p.server.rpartition(":")
    subject = f"memcached {p.server}"
    if p.failure in ("limit", "no_answer", "connect_timeout", "closed"):
        seen = f" (at the previous check it used {last['ratio']:.0%} of its limit)" \
            if "ratio" in last else ""
        what = {
            "limit": "connection limit reached: it refused healthd's connection with "
                     "'ERROR Too many open connections', and refuses other new clients the same way",
            "no_answer": "connection limit reached / not answering: the TCP connection was accepted "
                         "(by the kernel backlog) but `stats` got no reply before the timeout; a "
                         "memcached at its connection limit stops accepting connections, or the "
                         "process is hung",
            "connect_timeout": "connection limit reached / not answering: no TCP connection before the "
                               "timeout; a memcached at its connection limit stops accepting and "
                               "shrinks its accept queue, so new connections are dropped; otherwise "
                               "the host is down or a firewall drops the traffic",
            "closed": "it accepted the connection and closed it without answering (connection limit "
                      "reached, or not a memcached on this port)",
        }[p.failure]
        fix = _limit_fix(p.server) + f". If few clients are connected, the process is hung: restart " \
            f"memcached on {host}"
        if p.failure == "connect_timeout":
            fix += f". If nothing is connected, check that {host} is up and {port}/tcp is open from here"
        report.critical(subject, what + seen + where, fix)
        return
    what, fix = {
        "refused": ("connection refused: memcached is not running or not listening on this port",
                    f"on {host}: systemctl status memcached; check the listen address and port "
                    f"(ss -ltnp | grep ':{port} ') and start it"),
        "resolve": (f"the host name does not resolve ({p.detail})" if p.detail
                    else "the host name does not resolve",
                    "fix the host name in the configuration or in DNS / /etc/hosts"),
        "deadline": ("no result before the probe's deadline",
                     "raise checks.memcached.timeout or check the network path to the server"),
    }.get(p.failure, (f"cannot read stats ({p.detail})",
                      f"check memcached on {host} (systemctl status memcached)"))
    report.critical(subject, what + where, fix)


def _limit_fix(server: str) -> str:
    host, _, port = server.rpartition(":")
    return (
        f"On {host}, look for a connection leak first: "
        f"ss -tn state established '( sport = :{port} )' | awk 'NR>1 {{print $4}}' | "
        "sed 's/:[0-9]*$//' | sort | uniq -c | sort -rn | head (connections per client host); "
        "restart the service that holds far more than its share. If the load is real, raise the "
        "limit: MAXCONN in /etc/sysconfig/memcached (RHEL) or -c in /etc/memcached.conf "
        "(Debian/Ubuntu), e.g. 8192, then restart memcached (its cached tokens and sessions are lost)"
    )
