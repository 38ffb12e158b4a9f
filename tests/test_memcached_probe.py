"""memcached probe against real, private memcached processes (no mocks)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from checks.memcached import M_LISTEN, M_MAX, M_RATIO, M_REJECTED, M_UP, MemcachedProbe
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
    conf.write_text(f"[cache]\nmemcache_servers = {down}\n")
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
