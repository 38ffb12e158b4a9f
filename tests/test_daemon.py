"""The daemon as a process: serving, SIGHUP with a bad file, SIGTERM, secrets, sd_notify."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import subprocess_env

CANARY = "canary-Pw-0f-the-DB-9931"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def config_text(port: int, echo_value: float = 1.0) -> str:
    return f"""
server: {{listen_address: 127.0.0.1, port: {port}}}
backends:
  databases:
    nova_api:
      url: "mysql+pymysql://nova@127.0.0.1:{free_port()}/nova_api"
      password: "{CANARY}"
checks:
  t_echo:
    interval: 0.3
    value: {echo_value}
    critical_message: "cannot log in with password {CANARY}"
  t_sleep: {{enabled: false}}
  t_mcping: {{enabled: false}}
"""


class Daemon:
    def __init__(self, tmp_path: Path, text: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.config = tmp_path / "healthd.yaml"
        self.config.write_text(text)
        self.stderr = tmp_path / "stderr.log"
        self.port = int(text.split("port: ")[1].split("}")[0])
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "healthd.cli", "--config", str(self.config), *args, "run"],
            stderr=self.stderr.open("w"), stdout=subprocess.DEVNULL, env=env or subprocess_env(),
        )

    def wait_until(self, predicate, timeout: float = 20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"daemon exited: {self.stderr.read_text()}"
            try:
                value = predicate()
            except OSError:
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"condition not met; daemon log:\n{self.stderr.read_text()}")

    def checks(self) -> dict:
        return json.loads(fetch(self.base + "/checks")[1])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)


@pytest.fixture
def daemon(tmp_path):
    started: list[Daemon] = []

    def start(text: str, *args: str, **kw) -> Daemon:
        d = Daemon(tmp_path, text, *args, **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def echo_status(d: Daemon) -> str | None:
    for check in d.checks()["checks"]:
        if check["check"] == "t_echo" and check["last_run"]:
            return check["status"]
    return None


def test_serves_reloads_and_stops_cleanly(daemon, tmp_path):
    d = daemon(config_text(free_port()))
    assert d.wait_until(lambda: echo_status(d)) == "CRITICAL"
    code, body = fetch(d.base + "/metrics")
    assert code == 200
    assert 'healthd_t_echo_value{item="a"} 1.0' in body
    assert 'healthd_check_status{check="t_boom"} 3.0' in body
    assert fetch(d.base + "/healthz")[0] == 200

    # A bad config on SIGHUP is refused and the old one keeps running.
    d.config.write_text(d.config.read_text().replace("value: 1.0", "valeu: 2"))
    d.proc.send_signal(signal.SIGHUP)
    d.wait_until(lambda: "reload refused" in d.stderr.read_text())
    assert "checks.t_echo.valeu: unknown key" in d.stderr.read_text()
    assert fetch(d.base + "/healthz")[0] == 200

    # A good one is applied.
    d.config.write_text(config_text(d.port, echo_value=7))
    d.proc.send_signal(signal.SIGHUP)
    d.wait_until(lambda: 'healthd_t_echo_value{item="a"} 7.0' in fetch(d.base + "/metrics")[1])

    t0 = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - t0 < 5


def test_canary_password_never_leaks(daemon):
    d = daemon(config_text(free_port()), "--log-level", "DEBUG")
    d.wait_until(lambda: echo_status(d))
    d.wait_until(lambda: any(c["check"] == "t_boom" and c["last_run"] for c in d.checks()["checks"]))
    metrics, checks = fetch(d.base + "/metrics")[1], fetch(d.base + "/checks")[1]
    d.stop()
    log = d.stderr.read_text()
    assert "probe crashed" in checks and "cannot log in with password ***" in checks
    for where, text in (("metrics", metrics), ("/checks", checks), ("log", log)):
        assert CANARY not in text, f"canary leaked into {where}"
        assert "canary-s3cret" not in text, f"URL password leaked into {where}"


def test_sd_notify_ready_and_watchdog(daemon, tmp_path):
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(10)
    env = subprocess_env(NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="600000")
    d = daemon(config_text(free_port()), env=env)
    messages = []
    while not any("WATCHDOG=1" in m for m in messages) or not any("READY=1" in m for m in messages):
        messages.append(sock.recv(4096).decode())
    assert d.stop() == 0
    sock.settimeout(0.5)
    while "STOPPING=1" not in messages[-1]:
        messages.append(sock.recv(4096).decode())  # times out if STOPPING=1 never came
    sock.close()


def test_healthz_503_when_the_loop_stalls():
    from healthd.config import BackendsConfig, SchedulerConfig
    from healthd.connections import Backends
    from healthd.scheduler import Scheduler
    from healthd.store import ResultStore

    stalled = Scheduler({}, Backends(BackendsConfig()), ResultStore(), SchedulerConfig(stall_seconds=0.2))
    stalled.start()
    assert stalled.alive()
    stalled._lock.acquire()  # the loop blocks on its lock, as a deadlock would
    try:
        time.sleep(1.2)
        assert not stalled.alive()
    finally:
        stalled._lock.release()
        stalled.stop()


def test_listen_override_and_config_env(daemon, tmp_path):
    port = free_port()
    text = config_text(free_port())
    env = subprocess_env(HEALTHD_CONFIG=str(tmp_path / "healthd.yaml"))
    cfg = tmp_path / "healthd.yaml"
    cfg.write_text(text)
    proc = subprocess.Popen([sys.executable, "-m", "healthd.cli", "run", "--listen", f"127.0.0.1:{port}"],
                            env=env, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                if fetch(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("daemon did not listen on the --listen address")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert os.path.exists(cfg)
