"""memcached probe against real, private memcached processes (no mocks)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from checks import memcached as memcached_module
from checks.memcached import M_LISTEN, M_MAX, M_RATIO, M_REJECTED, M_UP, M_UPTIME, MemcachedProbe
from healthd.model import Severity, Status
from tests.helpers.probes import make_backends, run_probe
from tests.helpers.servers import (
    Memcached,
    SilentListener,
    close_all,
    free_port,
    hold_memcached_connections,
)

# Short client timeouts keep the failure cases quick.
MC_TIMEOUTS = {"connect_timeout": 1.0, "timeout": 2.0}


def backends(*servers: str) -> Any:
    return make_backends(memcached={"servers": list(servers), **MC_TIMEOUTS})


def probe(**settings: Any) -> MemcachedProbe:
    return MemcachedProbe(MemcachedProbe.Settings(timeout=10, **settings))


def wait_until_answering(mc: Memcached) -> dict[str, str]:
    for _ in range(100):
        try:
            return mc.stats()
        except OSError:
            time.sleep(0.05)
    raise AssertionError("memcached did not answer again")


def test_healthy_server_is_ok_with_usage_metrics() -> None:
    with Memcached() as mc:
        run = run_probe(probe(), backends(mc.server))
    assert run.status is Status.OK, run.findings
    assert run.findings == []
    assert run.value(M_UP, server=mc.server) == 1
    assert run.value(M_MAX, server=mc.server) == 1024
    ratio = run.value(M_RATIO, server=mc.server)
    assert ratio is not None and 0 < ratio < 0.1
    assert run.value(M_REJECTED, server=mc.server) == 0
    assert "1 of 1" in run.summary


def test_saturation_warns_then_reports_new_refusals_and_clears() -> None:
    state: dict[str, Any] = {}
    with Memcached("-c", "64", "-t", "1") as mc:
        b, p = backends(mc.server), probe()
        held = hold_memcached_connections(mc.port)
        try:
            held.pop().close()  # leave one slot: the probe gets in and sees the usage
            assert int(wait_until_answering(mc)["rejected_connections"]) >= 1

            first = run_probe(p, b, state)  # baseline for the counters
            assert first.status is Status.WARNING, first.findings
            ratio = first.value(M_RATIO, server=mc.server)
            assert ratio is not None and 0.8 <= ratio < 0.95
            [finding] = first.findings
            assert finding.subject == f"memcached {mc.server}"
            assert "connection limit" in finding.message
            assert "MAXCONN" in finding.remediation and "/etc/memcached.conf" in finding.remediation

            held += hold_memcached_connections(mc.port)  # more clients turned away
            held.pop().close()
            second = run_probe(p, b, state)
            assert second.status is Status.CRITICAL
            assert second.about("refused", Severity.CRITICAL), second.findings

            held += hold_memcached_connections(mc.port)  # completely full: the probe is refused too
            full = run_probe(p, b, state)
            assert full.status is Status.CRITICAL
            assert full.value(M_UP, server=mc.server) == 0
            assert full.about("connection limit reached", Severity.CRITICAL), full.findings
        finally:
            close_all(held)
        wait_until_answering(mc)

        after = run_probe(p, b, state)  # the refusals since the last good run are still news
        assert after.about("refused", Severity.CRITICAL)
        clear = run_probe(p, b, state)
        assert clear.status is Status.OK, clear.findings
        assert clear.value(M_RATIO, server=mc.server) < 0.8  # type: ignore[operator]


def test_listener_disabled_at_limit_is_not_answering_then_counted() -> None:
    state: dict[str, Any] = {}
    with Memcached("-c", "64", "-t", "1", "-o", "no_maxconns_fast") as mc:
        b, p = backends(mc.server), probe()
        assert run_probe(p, b, state).status is Status.OK
        held = hold_memcached_connections(mc.port)
        try:
            hung = run_probe(p, b, state)
        finally:
            close_all(held)
        assert hung.status is Status.CRITICAL
        assert hung.value(M_UP, server=mc.server) == 0
        [finding] = hung.findings
        assert "connection limit reached / not answering" in finding.message
        assert "MAXCONN" in finding.remediation
        assert hung.result.duration < p.timeout  # bounded by the client timeouts, not hung

        stats = wait_until_answering(mc)
        assert int(stats["listen_disabled_num"]) >= 1
        counted = run_probe(p, b, state)
        assert counted.status is Status.CRITICAL
        assert counted.about("listen_disabled_num", Severity.CRITICAL), counted.findings
        assert counted.value(M_LISTEN, server=mc.server) >= 1  # type: ignore[operator]
        assert run_probe(p, b, state).status is Status.OK


def test_stopped_server_is_down_and_clears_after_restart() -> None:
    state: dict[str, Any] = {}
    mc = Memcached().start()
    b, p = backends(mc.server), probe()
    try:
        assert run_probe(p, b, state).status is Status.OK
        mc.stop()
        down = run_probe(p, b, state)
        assert down.status is Status.CRITICAL  # a finding, not UNKNOWN: the probe completed
        assert down.result.completed
        assert down.value(M_UP, server=mc.server) == 0
        [finding] = down.findings
        assert finding.subject == f"memcached {mc.server}"
        assert "connection refused" in finding.message
        assert "systemctl status memcached" in finding.remediation
        mc = Memcached(port=mc.port).start()  # a restart: counters begin again, no false refusals
        again = run_probe(p, b, state)
        assert again.status is Status.OK, again.findings
        assert again.value(M_UP, server=mc.server) == 1
    finally:
        mc.stop()


def test_nothing_listening_on_port() -> None:
    server = f"127.0.0.1:{free_port()}"
    run = run_probe(probe(), backends(server))
    assert run.status is Status.CRITICAL
    assert run.value(M_UP, server=server) == 0


def test_hung_peer_is_reported_within_the_timeout_and_others_still_checked() -> None:
    with SilentListener() as hung, Memcached() as mc:
        p = probe()
        run = run_probe(p, backends(hung.server, mc.server))
    assert run.status is Status.CRITICAL
    assert run.result.duration < p.timeout
    assert run.value(M_UP, server=hung.server) == 0
    assert run.value(M_UP, server=mc.server) == 1
    [finding] = run.findings
    assert finding.subject == f"memcached {hung.server}"
    assert "not answering" in finding.message


def test_no_servers_is_unknown() -> None:
    run = run_probe(probe(), backends())
    assert run.status is Status.UNKNOWN
    assert "no memcached servers configured" in run.summary
    assert not run.result.completed


def test_servers_from_service_config_files_are_deduplicated(tmp_path: Path) -> None:
    with Memcached() as mc:
        conf = tmp_path / "nova.conf"
        conf.write_text(
            "[DEFAULT]\ndebug = true\n"
            f"[cache]\nenabled = true\nbackend = oslo_cache.memcache_pool\nmemcache_servers = {mc.server}\n"
            f"[keystone_authtoken]\nmemcached_servers = inet:{mc.server}\n"
        )
        run = run_probe(probe(config_files=[str(tmp_path / "*.conf")]), backends(mc.server))
    assert run.status is Status.OK, run.findings
    assert [labels for labels, _ in run.values(M_UP)] == [{"server": mc.server}]


def test_config_files_alone_are_enough_and_unreadable_ones_are_reported(tmp_path: Path) -> None:
    down = f"127.0.0.1:{free_port()}"
    conf = tmp_path / "keystone.conf"
    conf.write_text(f"[cache]\nenabled = true\nbackend = dogpile.cache.pymemcache\n"
                    f"memcache_servers = {down}\n")
    missing = tmp_path / "absent.conf"
    run = run_probe(probe(config_files=[str(conf), str(missing)]), backends())
    assert run.status is Status.CRITICAL
    assert run.value(M_UP, server=down) == 0
    [unreachable] = run.about(f"memcached {down}")
    assert str(conf) in unreachable.message  # says where the server is configured
    assert run.about(str(missing), Severity.WARNING)


@pytest.mark.parametrize("warning,critical", [(0.9, 0.5)])
def test_thresholds_must_be_ordered(warning: float, critical: float) -> None:
    with pytest.raises(ValueError):
        MemcachedProbe.Settings(warning_ratio=warning, critical_ratio=critical)


def test_cache_lists_nothing_uses_are_not_polled(tmp_path: Path) -> None:
    """oslo_cache/_opts.py: [cache] enabled defaults to False; a dead server there harms nobody."""
    with Memcached() as mc:
        down = f"127.0.0.1:{free_port()}"
        conf = tmp_path / "nova.conf"
        conf.write_text(f"[cache]\nbackend = oslo_cache.memcache_pool\nmemcache_servers = {down}\n")
        run = run_probe(probe(config_files=[str(conf)]), backends(mc.server))
    assert run.status is Status.OK, run.findings
    assert [labels for labels, _ in run.values(M_UP)] == [{"server": mc.server}]


@pytest.mark.parametrize("backend,entry,fix", [
    ("oslo_cache.memcache_pool", "[::1]:{port}", "write it as inet6:[::1]:{port}"),
    ("dogpile.cache.pymemcache", "inet6:[::1]:{port}", "write it as [::1]:{port}"),
])
def test_a_form_the_services_library_cannot_parse_is_critical_though_the_server_answers(
        tmp_path: Path, backend: str, entry: str, fix: str) -> None:
    with Memcached("-l", "::1") as mc6:
        written = entry.format(port=mc6.port)
        conf = tmp_path / "nova.conf"
        conf.write_text(f"[cache]\nenabled = true\nbackend = {backend}\nmemcache_servers = {written}\n")
        run = run_probe(probe(config_files=[str(conf)]), backends())
        assert run.value(M_UP, server=f"[::1]:{mc6.port}") == 1  # healthd reaches it...
        assert run.status is Status.CRITICAL  # ...the service's client library does not
        [finding] = run.findings
        assert finding.subject == f"{conf} [cache] memcache_servers"
        assert f"entry {written!r}" in finding.message and "even if it answers" in finding.message
        assert finding.remediation.startswith(fix.format(port=mc6.port))

        right = fix.format(port=mc6.port).removeprefix("write it as ")
        conf.write_text(f"[cache]\nenabled = true\nbackend = {backend}\nmemcache_servers = {right}\n")
        fixed = run_probe(probe(config_files=[str(conf)]), backends())
        assert fixed.status is Status.OK, fixed.findings


def test_a_restart_whose_uptime_exceeds_the_previous_reading_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs far apart: at the first run the process was up u0 s; it restarts, and at the next run
    its new uptime is above u0, so only the time elapsed between the runs shows the restart.
    A real restart; the clock between the two runs is moved on by 100 s."""
    state: dict[str, Any] = {}
    mc = Memcached().start()
    b, p = backends(mc.server), probe()
    try:
        while int(mc.stats()["uptime"]) < 1:
            time.sleep(0.2)
        first = run_probe(p, b, state)
        u0 = first.value(M_UPTIME, server=mc.server)
        assert first.status is Status.OK and u0 is not None
        mc.stop()
        mc = Memcached(port=mc.port).start()
        while int(mc.stats()["uptime"]) <= u0:
            time.sleep(0.2)
        real = time.monotonic
        monkeypatch.setattr(memcached_module.time, "monotonic", lambda: real() + 100.0)
        second = run_probe(p, b, state)
    finally:
        mc.stop()
    uptime = second.value(M_UPTIME, server=mc.server)
    assert uptime is not None and uptime > u0
    [restart] = second.about("restarted since the previous check", Severity.INFO)
    assert restart.subject == f"memcached {mc.server}"
    assert second.status is Status.OK


RESOLVE_SCRIPT = """
import json
from checks.memcached import MemcachedProbe
from healthd.connections import Backends
from healthd.config import BackendsConfig
from healthd.scheduler import execute
config = BackendsConfig(memcached={"servers": ["nonexistent-cache.invalid:11211"], "connect_timeout": 2})
result = execute(MemcachedProbe(MemcachedProbe.Settings(timeout=10)), Backends(config))
print(json.dumps({"status": result.status.name, "findings": [f.as_dict() for f in result.findings]}))
"""


def test_a_name_that_does_not_resolve_is_said_once() -> None:
    """In a network namespace of its own: the lookup fails locally, no DNS packet leaves."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) missing: a real DNS lookup would leave the machine")
    try:
        out = subprocess.run(["unshare", "-n", sys.executable, "-c", RESOLVE_SCRIPT],
                             capture_output=True, text=True, timeout=60, check=True)
    except subprocess.CalledProcessError as exc:
        if "Traceback" in exc.stderr:
            raise AssertionError(exc.stderr) from None
        pytest.skip(f"cannot create a network namespace here: {exc.stderr.strip()[:200]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    [finding] = result["findings"]
    assert finding["message"].startswith("the host name does not resolve (")
    assert finding["message"].count("resolve") == 1, finding["message"]
