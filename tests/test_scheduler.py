"""The scheduler isolates probes: a hung one, a crashing one, a backend that comes and goes."""

from __future__ import annotations

import threading
import time

import pytest
from healthd_testprobes import BoomProbe, EchoProbe, MemcachedPingProbe, SleepProbe

from healthd.config import BackendsConfig, MemcachedConfig, SchedulerConfig
from healthd.connections import Backends
from healthd.model import Status
from healthd.scheduler import Scheduler, execute, run_once
from healthd.store import ResultStore


def wait_for(predicate, timeout: float = 10.0, step: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


@pytest.fixture
def backends():
    return Backends(BackendsConfig())


def test_not_run_yet_is_unknown_not_absent(backends):
    store = ResultStore()
    Scheduler({"t_echo": EchoProbe()}, backends, store, SchedulerConfig())
    result = store.snapshot().results["t_echo"]
    assert result.status is Status.UNKNOWN
    assert result.summary == "not run yet"


def test_hung_probe_is_unknown_after_timeout_while_others_keep_schedule(backends):
    store = ResultStore()
    echo = EchoProbe(EchoProbe.Settings(interval=0.2))
    sleeper = SleepProbe(SleepProbe.Settings(seconds=3.0, timeout=0.5, interval=0.2))
    # One worker only: an abandoned run must give its slot back or echo would starve.
    scheduler = Scheduler({"t_echo": echo, "t_sleep": sleeper}, backends, store, SchedulerConfig(workers=1))
    scheduler.start(first_run_delay=0)
    try:
        timed_out = wait_for(lambda: (r := store.snapshot().results["t_sleep"]).started_at and r)
        assert timed_out.status is Status.UNKNOWN
        assert timed_out.summary == "timed out after 0.5 s"
        first_echo = store.snapshot().results["t_echo"].started_at
        # While the sleeper's abandoned thread is still blocked, echo runs again and again.
        wait_for(lambda: store.snapshot().results["t_echo"].started_at > first_echo + 0.5)
        assert store.snapshot().results["t_echo"].status is Status.OK
        sleeping = [t for t in threading.enumerate() if t.name == "probe-t_sleep"]
        assert len(sleeping) == 1, "a probe must never overlap itself"
        assert scheduler.alive()
    finally:
        scheduler.stop()


def test_exception_is_unknown_with_reason_and_no_secret(backends, caplog):
    state: dict = {}
    result = execute(BoomProbe(), backends, state)
    assert result.status is Status.UNKNOWN and not result.completed
    assert result.summary.startswith("probe crashed: RuntimeError: boom")
    assert "canary-s3cret" not in result.summary
    execute(BoomProbe(), backends, state)
    crashed = [r for r in caplog.records if "probe crashed" in r.getMessage()]
    assert len(crashed) == 1, "the same error is logged once, not on every run"


def test_backend_down_then_back(memcached_server):
    server, stop, start = memcached_server
    probe = MemcachedPingProbe()
    memcached = MemcachedConfig(servers=[server], timeout=1, connect_timeout=1)
    backends = Backends(BackendsConfig(memcached=memcached))
    assert execute(probe, backends).status is Status.OK
    stop()
    down = execute(probe, backends)
    assert down.status is Status.UNKNOWN
    assert server in down.summary and not down.samples
    start()
    back = execute(probe, backends)
    assert back.status is Status.OK
    assert back.samples[0].labels == (("server", server),)


def test_run_once_returns_every_probe_with_isolation(backends):
    probes = {
        "t_echo": EchoProbe(EchoProbe.Settings(critical_message="disk is full")),
        "t_boom": BoomProbe(),
        "t_sleep": SleepProbe(SleepProbe.Settings(seconds=2, timeout=0.3)),
    }
    t0 = time.monotonic()
    results = run_once(probes, backends)
    assert time.monotonic() - t0 < 2, "run_once must not wait for an abandoned run"
    assert results["t_echo"].status is Status.CRITICAL
    assert results["t_echo"].findings[0].message == "disk is full"
    assert results["t_boom"].status is Status.UNKNOWN
    assert results["t_sleep"].summary == "timed out after 0.3 s"


def test_reload_while_a_probe_runs_waits_for_it_then_runs_again(backends):
    store = ResultStore()
    earlier = set(threading.enumerate())  # abandoned sleepers of other tests may still be alive

    def runs() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "probe-t_sleep" and t not in earlier]

    sleeper = SleepProbe(SleepProbe.Settings(seconds=1.0, timeout=5, interval=0.2))
    scheduler = Scheduler({"t_sleep": sleeper}, backends, store, SchedulerConfig())
    scheduler.start(first_run_delay=0)
    try:
        wait_for(runs)
        fast = SleepProbe(SleepProbe.Settings(seconds=0.0, timeout=5, interval=0.2))
        scheduler.reload({"t_sleep": fast}, backends, SchedulerConfig())
        time.sleep(0.3)
        assert len(runs()) == 1, "a probe must not overlap its run from before the reload"
        # Once the old run has ended, the new settings run: and keep running.
        first = wait_for(lambda: store.snapshot().results["t_sleep"].started_at)
        wait_for(lambda: store.snapshot().results["t_sleep"].started_at > first)
        assert store.snapshot().results["t_sleep"].duration < 0.5
    finally:
        scheduler.stop()
