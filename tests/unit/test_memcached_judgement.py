"""memcached judgement on plain data: Polls (what each server said) in, findings and metrics out.

No memcached is started: tests/test_memcached_probe.py drives real servers to their limit;
these cover every rule with the `stats` values such servers report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from checks.memcached import (
    M_CURR,
    M_LISTEN,
    M_MAX,
    M_RATIO,
    M_REJECTED,
    M_UP,
    M_UPTIME,
    MemcachedProbe,
    Poll,
    judge,
    report_config_files,
    server_sources,
)
from healthd.model import Report, Severity, Status
from healthd.openstack import oslo_ini
from tests.helpers.probes import ProbeRun

SERVER = "10.0.0.5:11211"
CONFIGURED = {SERVER: ["backends.memcached.servers", "/etc/nova/nova.conf [cache] memcache_servers"]}


def answered(curr: int = 10, maxconns: int | None = 1024, reserved: int = 20, listen: int = 0,
             rejected: int = 0, uptime: int = 3600, server: str = SERVER) -> Poll:
    stats = {"curr_connections": str(curr), "reserved_fds": str(reserved), "listen_disabled_num": str(listen),
             "rejected_connections": str(rejected), "uptime": str(uptime), "version": "1.6.21"}
    settings = {"maxconns": str(maxconns)} if maxconns is not None else {}
    return Poll(server, stats, settings)


def judged(*polls: Poll, counters: dict[str, dict[str, Any]] | None = None,
           sources: dict[str, list[str]] | None = None, now: float | None = None,
           **settings: Any) -> ProbeRun:
    report = Report(MemcachedProbe.name, MemcachedProbe.metrics)
    sources = sources if sources is not None else {p.server: CONFIGURED.get(p.server, ["x"]) for p in polls}
    judge(report, {p.server: p for p in polls}, sources, {} if counters is None else counters,
          MemcachedProbe.Settings(**settings), now)
    return ProbeRun(report.result(0, 0))


def test_healthy_server_is_ok_with_every_metric() -> None:
    run = judged(answered(curr=10, reserved=20, listen=2, rejected=3, uptime=99))
    assert run.status is Status.OK and run.findings == []
    assert run.value(M_UP, server=SERVER) == 1
    assert run.value(M_CURR, server=SERVER) == 10
    assert run.value(M_MAX, server=SERVER) == 1024
    assert run.value(M_RATIO, server=SERVER) == pytest.approx(30 / 1024)
    assert run.value(M_LISTEN, server=SERVER) == 2
    assert run.value(M_REJECTED, server=SERVER) == 3
    assert run.value(M_UPTIME, server=SERVER) == 99
    assert run.summary == "1 of 1 memcached server(s) answering"


# -- usage against the limit -----------------------------------------------------------


@pytest.mark.parametrize("curr,severity", [
    (59, None),  # (59 + 20) / 100 = 0.79
    (61, Severity.WARNING),  # 0.81
    (74, Severity.WARNING),  # 0.94
    (75, Severity.CRITICAL),  # 0.95: the threshold itself is critical
    (90, Severity.CRITICAL),
])
def test_usage_ratio_counts_reserved_descriptors(curr: int, severity: Severity | None) -> None:
    run = judged(answered(curr=curr, maxconns=100, reserved=20))
    if severity is None:
        assert run.findings == [] and run.status is Status.OK
        return
    [finding] = run.findings
    assert finding.severity is severity and finding.subject == f"memcached {SERVER}"
    ratio = (curr + 20) / 100
    threshold = "95%" if severity is Severity.CRITICAL else "80%"
    assert finding.message.startswith(
        f"{curr} client connections + 20 reserved descriptors of maxconns 100 ({ratio:.0%}, "
        f"threshold {threshold}): near its connection limit")
    assert "MAXCONN in /etc/sysconfig/memcached" in finding.remediation
    assert "ss -tn state established '( sport = :11211 )'" in finding.remediation
    assert finding.remediation.startswith("On 10.0.0.5, look for a connection leak first")


def test_warning_ratio_itself_warns() -> None:
    [finding] = judged(answered(curr=60, maxconns=100, reserved=20)).findings
    assert finding.severity is Severity.WARNING and "(80%, threshold 80%)" in finding.message


def test_thresholds_come_from_the_settings() -> None:
    poll = answered(curr=40, maxconns=100, reserved=10)  # 0.50
    assert judged(poll).findings == []
    assert judged(poll, warning_ratio=0.5, critical_ratio=0.9).status is Status.WARNING
    assert judged(poll, warning_ratio=0.3, critical_ratio=0.5).status is Status.CRITICAL


@pytest.mark.parametrize("maxconns", [None, 0])
def test_without_a_limit_there_is_no_ratio(maxconns: int | None) -> None:
    run = judged(answered(curr=5000, maxconns=maxconns))
    assert run.status is Status.OK
    assert run.value(M_RATIO, server=SERVER) is None and run.value(M_MAX, server=SERVER) is None
    assert run.value(M_CURR, server=SERVER) == 5000


def test_unparsable_numbers_are_left_out() -> None:
    poll = answered()
    poll.stats["curr_connections"] = "lots"
    assert poll.number("curr_connections") is None and poll.number("maxconns", "settings") == 1024
    run = judged(poll)
    assert run.value(M_CURR, server=SERVER) is None and run.value(M_RATIO, server=SERVER) is None


# -- refusals between runs ---------------------------------------------------------------


def test_first_sight_is_only_a_baseline() -> None:
    counters: dict[str, dict[str, Any]] = {}
    assert judged(answered(rejected=50, listen=7), counters=counters).findings == []
    assert counters[SERVER] == {"uptime": 3600, "listen": 7, "rejected": 50,
                                "ratio": pytest.approx(30 / 1024)}


def test_new_rejected_connections_are_critical() -> None:
    counters: dict[str, dict[str, Any]] = {}
    judged(answered(rejected=5, uptime=100), counters=counters)
    run = judged(answered(rejected=8, uptime=130), counters=counters)
    assert run.status is Status.CRITICAL
    [finding] = run.findings
    assert finding.message == ("since the previous check it refused 3 connection(s) (rejected_connections "
                               "5 -> 8): clients were turned away at the connection limit")
    assert "MAXCONN" in finding.remediation
    assert judged(answered(rejected=8, uptime=160), counters=counters).findings == []  # nothing new


def test_listener_disabled_again_is_critical() -> None:
    counters: dict[str, dict[str, Any]] = {}
    judged(answered(listen=1, uptime=100), counters=counters)
    [finding] = judged(answered(listen=2, uptime=130), counters=counters).findings
    assert finding.severity is Severity.CRITICAL
    assert ("since the previous check it stopped accepting connections 1 time(s) at its limit "
            "(listen_disabled_num 1 -> 2)") in finding.message


def test_both_kinds_of_refusal_in_one_finding() -> None:
    counters: dict[str, dict[str, Any]] = {}
    judged(answered(listen=1, rejected=0, uptime=100), counters=counters)
    [finding] = judged(answered(listen=3, rejected=4, uptime=130), counters=counters).findings
    assert "refused 4 connection(s) (rejected_connections 0 -> 4) and stopped accepting connections " \
        "2 time(s) at its limit (listen_disabled_num 1 -> 3)" in finding.message


@pytest.mark.parametrize("after", [
    {"uptime": 20, "listen": 3, "rejected": 7},  # the uptime went back: restarted, its counters are new
    {"uptime": 5000, "listen": 1, "rejected": 7},  # a counter went back
    {"uptime": 5000, "listen": 3, "rejected": 2},
])
def test_a_restart_starts_a_new_baseline_and_its_counts_are_news(after: dict[str, int]) -> None:
    """Everything the new process counted happened after the previous check (it started after it)."""
    counters: dict[str, dict[str, Any]] = {}
    judged(answered(rejected=5, listen=3, uptime=1000), counters=counters)
    run = judged(answered(**after), counters=counters)
    restart, refusals = run.findings
    assert restart.severity is Severity.INFO
    assert restart.message.startswith(f"restarted since the previous check (up {after['uptime']} s)")
    assert refusals.severity is Severity.CRITICAL
    assert refusals.message.startswith(
        f"since the previous check it refused {after['rejected']} connection(s) (rejected_connections 0 -> "
        f"{after['rejected']}) and stopped accepting connections {after['listen']} time(s)")
    assert counters[SERVER]["rejected"] == after["rejected"]
    again = answered(rejected=after["rejected"] + 2, listen=after["listen"], uptime=6000)
    [finding] = judged(again, counters=counters).findings
    assert finding.message.startswith(
        f"since the previous check it refused 2 connection(s) (rejected_connections {after['rejected']} -> ")


def test_a_restart_between_distant_runs_is_told_by_the_elapsed_time() -> None:
    """Uptime 100 s at the first run; 1000 s later the uptime is 500: above the previous reading,
    yet the process started 500 s ago, after that run. Its counters are its own."""
    counters: dict[str, dict[str, Any]] = {}
    judged(answered(rejected=50, listen=4, uptime=100), counters=counters, now=10_000.0)
    run = judged(answered(rejected=51, listen=4, uptime=500), counters=counters, now=11_000.0)
    restart, refusals = run.findings
    assert restart.severity is Severity.INFO
    assert "restarted since the previous check (up 500 s)" in restart.message
    assert "refused 51 connection(s) (rejected_connections 0 -> 51)" in refusals.message
    assert "stopped accepting connections 4 time(s)" in refusals.message


@pytest.mark.parametrize("uptime,restarted", [
    (1100, False),  # 100 + 1000 s elapsed: the same process
    (1097, False),  # memcached's clock ticks once a second; the poll itself takes time
    (1090, True),
    (3, True),
])
def test_uptime_against_elapsed_time(uptime: int, restarted: bool) -> None:
    counters: dict[str, dict[str, Any]] = {}
    judged(answered(uptime=100), counters=counters, now=10_000.0)
    run = judged(answered(uptime=uptime), counters=counters, now=11_000.0)
    assert bool(run.about("restarted since the previous check")) is restarted
    assert counters[SERVER]["at"] == 11_000.0


def test_refusals_while_the_server_did_not_answer_are_news_at_the_next_answer() -> None:
    counters: dict[str, dict[str, Any]] = {}
    judged(answered(rejected=5, uptime=100), counters=counters)
    judged(Poll(SERVER, failure="limit"), counters=counters)  # no new baseline from a failed poll
    [finding] = judged(answered(rejected=40, uptime=160), counters=counters).findings
    assert "refused 35 connection(s) (rejected_connections 5 -> 40)" in finding.message


def test_counters_are_kept_per_server() -> None:
    other = "10.0.0.6:11211"
    counters: dict[str, dict[str, Any]] = {}
    judged(answered(rejected=5), answered(rejected=100, server=other), counters=counters)
    run = judged(answered(rejected=5), answered(rejected=101, server=other), counters=counters)
    assert [f.subject for f in run.findings] == [f"memcached {other}"]


# -- servers that did not answer -------------------------------------------------------------

WHERE = "; configured in backends.memcached.servers, /etc/nova/nova.conf [cache] memcache_servers"


@pytest.mark.parametrize("failure,message,fix", [
    ("limit", "connection limit reached: it refused healthd's connection with 'ERROR Too many open "
              "connections'",
     "If few clients are connected, the process is hung: restart memcached on 10.0.0.5"),
    ("no_answer", "connection limit reached / not answering: the TCP connection was accepted",
     "restart memcached on 10.0.0.5"),
    ("connect_timeout", "connection limit reached / not answering: no TCP connection before the timeout",
     "If nothing is connected, check that 10.0.0.5 is up and 11211/tcp is open from here"),
    ("closed", "it accepted the connection and closed it without answering", "restart memcached on 10.0.0.5"),
])
def test_a_server_at_its_limit_or_silent_is_critical(failure: str, message: str, fix: str) -> None:
    run = judged(Poll(SERVER, failure=failure))
    assert run.status is Status.CRITICAL
    [finding] = run.findings
    assert finding.subject == f"memcached {SERVER}"
    assert finding.message.startswith(message) and finding.message.endswith(WHERE)
    assert "look for a connection leak first" in finding.remediation and fix in finding.remediation
    assert ("check that 10.0.0.5 is up" in finding.remediation) == (failure == "connect_timeout")
    assert run.value(M_UP, server=SERVER) == 0
    assert run.values(M_RATIO) == [] and run.values(M_CURR) == []
    assert run.summary == "0 of 1 memcached server(s) answering"


def test_the_last_usage_is_quoted_when_a_server_stops_answering() -> None:
    counters: dict[str, dict[str, Any]] = {}
    judged(answered(curr=850, maxconns=1000, reserved=20), counters=counters)
    [finding] = judged(Poll(SERVER, failure="no_answer"), counters=counters).findings
    assert "(at the previous check it used 87% of its limit)" + WHERE in finding.message


@pytest.mark.parametrize("failure,detail,message,fix", [
    ("refused", "", "connection refused: memcached is not running or not listening on this port",
     "on 10.0.0.5: systemctl status memcached; check the listen address and port "
     "(ss -ltnp | grep ':11211 ')"),
    ("resolve", "no such host", "the host name does not resolve (no such host)",
     "fix the host name in the configuration or in DNS / /etc/hosts"),
    ("deadline", "", "no result before the probe's deadline", "raise checks.memcached.timeout"),
    ("error", "`stats settings` not supported", "cannot read stats (`stats settings` not supported)",
     "check memcached on 10.0.0.5 (systemctl status memcached)"),
])
def test_other_failures_are_critical_with_their_own_fix(failure: str, detail: str, message: str,
                                                        fix: str) -> None:
    counters = {SERVER: {"ratio": 0.9}}
    [finding] = judged(Poll(SERVER, failure=failure, detail=detail), counters=counters).findings
    assert finding.severity is Severity.CRITICAL
    assert finding.message == message + WHERE  # no "previous check" note: not a limit symptom
    assert fix in finding.remediation
    assert "connection leak" not in finding.remediation


def test_ipv6_server_fix_names_host_and_port() -> None:
    server = "[fd00::5]:11212"
    [finding] = judged(Poll(server, failure="refused"), sources={server: ["x"]}).findings
    assert "on [fd00::5]: systemctl status memcached" in finding.remediation
    assert "grep ':11212 '" in finding.remediation


def test_summary_counts_the_answering_servers() -> None:
    run = judged(answered(), Poll("10.0.0.6:11211", failure="refused"))
    assert run.summary == "1 of 2 memcached server(s) answering"
    assert run.value(M_UP, server="10.0.0.6:11211") == 0 and run.value(M_UP, server=SERVER) == 1


# -- which servers, from where ---------------------------------------------------------------


def conf(tmp_path: Path, name: str, text: str) -> oslo_ini.ConfigFile:
    path = tmp_path / name
    path.write_text(text)
    return oslo_ini.read(str(path))


def test_servers_are_normalized_deduplicated_and_keep_where_they_came_from(tmp_path: Path) -> None:
    nova = conf(tmp_path, "nova.conf", "[cache]\nenabled = true\nbackend = oslo_cache.memcache_pool\n"
                "memcache_servers = 10.0.0.5:11211,10.0.0.7\n"
                "[keystone_authtoken]\nmemcached_servers = inet:10.0.0.5:11211\n")
    broken = oslo_ini.ConfigFile(str(tmp_path / "glance.conf"), error="permission denied")
    got = server_sources(["inet:10.0.0.6", "10.0.0.5:11211", "unix:/run/mc.sock"], [nova, broken])
    assert got == {
        "10.0.0.6:11211": ["backends.memcached.servers"],
        "10.0.0.5:11211": ["backends.memcached.servers", f"{nova.path} [cache] memcache_servers",
                           f"{nova.path} [keystone_authtoken] memcached_servers"],
        "10.0.0.7:11211": [f"{nova.path} [cache] memcache_servers"],
    }
    assert list(got) == ["10.0.0.6:11211", "10.0.0.5:11211", "10.0.0.7:11211"]  # first seen first


@pytest.mark.parametrize("cache", [
    "memcache_servers = 10.0.0.9:11211\n",  # oslo_cache/_opts.py: enabled defaults to False
    "enabled = false\nbackend = oslo_cache.memcache_pool\nmemcache_servers = 10.0.0.9:11211\n",
    "enabled = true\nbackend = dogpile.cache.redis\nmemcache_servers = 10.0.0.9:11211\n",
    "enabled = true\nbackend = oslo_cache.memcache_pool\ntls_enabled = true\n"
    "memcache_servers = 10.0.0.9:11211\n",  # TLS: healthd cannot speak `stats` to it
])
def test_lists_nothing_uses_are_not_polled(tmp_path: Path, cache: str) -> None:
    report = Report(MemcachedProbe.name, MemcachedProbe.metrics)
    assert server_sources([], [conf(tmp_path, "nova.conf", "[cache]\n" + cache)], report) == {}
    assert report.findings == []


def test_the_deprecated_authtoken_name_is_read(tmp_path: Path) -> None:
    cf = conf(tmp_path, "nova.conf", "[keystone_authtoken]\nmemcache_servers = 10.0.0.5:11211\n")
    where = f"{cf.path} [keystone_authtoken] memcache_servers"
    assert server_sources([], [cf]) == {"10.0.0.5:11211": [where]}


@pytest.mark.parametrize("backend,entry,fix", [
    ("oslo_cache.memcache_pool", "[::1]:11211", "write it as inet6:[::1]:11211"),
    ("dogpile.cache.memcached", "::1", "write it as inet6:[::1]:11211"),
    ("dogpile.cache.pymemcache", "inet6:[::1]:11211", "write it as [::1]:11211"),
])
def test_an_entry_its_library_cannot_parse_is_critical_and_the_server_still_polled(
        tmp_path: Path, backend: str, entry: str, fix: str) -> None:
    """healthd reaches [::1]:11211 in every form; the service's client library only in its own."""
    cf = conf(tmp_path, "nova.conf", f"[cache]\nenabled = true\nbackend = {backend}\n"
              f"memcache_servers = {entry}\n")
    report = Report(MemcachedProbe.name, MemcachedProbe.metrics)
    assert server_sources([], [cf], report) == {"[::1]:11211": [f"{cf.path} [cache] memcache_servers"]}
    [finding] = report.findings
    assert finding.severity is Severity.CRITICAL
    assert finding.subject == f"{cf.path} [cache] memcache_servers"
    assert f"entry {entry!r}" in finding.message and "never reaches this server, even if it answers" \
        in finding.message
    assert finding.remediation.startswith(fix)


def test_a_file_oslo_config_cannot_parse_is_critical(tmp_path: Path) -> None:
    path = tmp_path / "nova.conf"
    path.write_text("memcache_servers = 10.0.0.5:11211\n")
    report = Report(MemcachedProbe.name, MemcachedProbe.metrics)
    report_config_files(report, [], [oslo_ini.read(str(path))])
    [finding] = report.findings
    assert finding.severity is Severity.CRITICAL and finding.subject == f"file {path}"
    assert "a service loading this file does not start" in finding.message


def test_a_name_that_does_not_resolve_is_said_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's Unresolvable already says 'does not resolve': the finding quotes the
    resolver's own reason instead of that message."""
    import contextlib
    import socket

    from checks import memcached as probe_module
    from healthd.errors import Unresolvable

    class Ctx:
        deadline = None

        @contextlib.contextmanager
        def memcached(self, server: str) -> Any:
            raise Unresolvable(f"memcached {server}: cannot connect: host name does not resolve (x)")
            yield

    def no_such_host(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(probe_module.socket, "getaddrinfo", no_such_host)
    p = probe_module.poll(Ctx(), "mc.invalid:11211")  # type: ignore[arg-type]
    assert (p.failure, p.detail) == ("resolve", "Name or service not known")
    [finding] = judged(p, sources={"mc.invalid:11211": ["x"]}).findings
    assert finding.message == "the host name does not resolve (Name or service not known); configured in x"
    assert finding.message.count("resolve") == 1


def test_unmatched_patterns_and_unreadable_files_warn() -> None:
    report = Report(MemcachedProbe.name, MemcachedProbe.metrics)
    report_config_files(report, [oslo_ini.MissingPattern("/etc/nova/*.conf", True)],
                        [oslo_ini.ConfigFile("/etc/keystone/keystone.conf", error="permission denied"),
                         oslo_ini.ConfigFile("/etc/nova/nova.conf")])
    run = ProbeRun(report.result(0, 0))
    assert run.status is Status.WARNING
    pattern, unreadable = run.findings
    assert (pattern.subject, pattern.message) == ("config_files pattern /etc/nova/*.conf", "matches no file")
    assert unreadable.subject == "file /etc/keystone/keystone.conf"
    assert unreadable.message.startswith("cannot read it (permission denied); the memcached servers")
    assert "setfacl -m u:healthd:r /etc/keystone/keystone.conf" in unreadable.remediation
