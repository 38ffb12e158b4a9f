"""From a fault in the lab to an alert in Alertmanager, with the real programs.

The chain on-call depends on: healthd probes the lab cloud and exports
metrics; Prometheus scrapes healthd and evaluates deploy/prometheus/healthd-alerts.yml;
Alertmanager receives the alert. Every link is the real program, private to
this test (own ports on 127.0.0.1, own data directories, killed at the end):
the healthd daemon from the venv, Debian's prometheus and
prometheus-alertmanager. The shipped rules are loaded with their `for:`
durations shortened (the expressions are exactly the shipped ones) and the
probes run every 2 s, so the round trip takes seconds.

The fault is the lab's `duplicate-service` (a second, empty `network`
service created through the Keystone API); the alert must reach
Alertmanager's /api/v2/alerts carrying the service id, and leave it after
the revert.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from healthd.registry import discover

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "healthd-alerts.yml"
HEALTHD = REPO / ".venv" / "bin" / "healthd"
PROBES = ("catalog", "nova_services")  # what this test needs; the others are switched off
ALERT = "OpenStackCatalogDuplicateService"
# Direct connections only: a proxy from the environment must never see loopback traffic.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with _HTTP.open(url, timeout=timeout) as resp:
        return bytes(resp.read())


def wait_for(what: str, probe: Callable[[], Any], timeout: float, procs: list[Proc]) -> Any:
    """Poll until probe() returns something truthy; fail with the logs of the processes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.popen.poll() is not None:
                pytest.fail(f"{p.name} exited with {p.popen.returncode}:\n{p.log_tail()}")
        try:
            value = probe()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.5)
    logs = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in procs)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{logs}")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


def start(name: str, argv: list[str], tmp: Path) -> Proc:
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    return Proc(name, popen, log)


# -- configuration of the three programs ------------------------------------------


def healthd_config(lab_yaml: Path, port: int) -> dict[str, Any]:
    """The lab's backends, our port, fast intervals, and only the probes this test needs."""
    lab_cfg = yaml.safe_load(lab_yaml.read_text())
    # The project's own probes only: the test plugins on this process's path are not the daemon's.
    shipped = [name for name, cls in discover().items() if cls.__module__.startswith("checks.")]
    checks: dict[str, Any] = {name: {"enabled": False} for name in shipped if name not in PROBES}
    checks.update({name: {"interval": 2} for name in PROBES})
    return {
        "server": {"listen_address": "127.0.0.1", "port": port},
        "logging": {"format": "plain", "level": "INFO"},
        "backends": lab_cfg["backends"],
        "checks": checks,
    }


def fast_rules(target: Path) -> None:
    """The shipped rules with every `for:` cut to 3 s (expressions untouched)."""
    text = re.sub(r"(?m)^(\s+for:) \S+$", r"\1 3s", RULES.read_text())
    target.write_text(text)


def prometheus_config(healthd_port: int, am_port: int, rules: Path) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": "healthd",
                            "static_configs": [{"targets": [f"127.0.0.1:{healthd_port}"]}]}],
    }


ALERTMANAGER_CONFIG = {
    "route": {"receiver": "null", "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
    "receivers": [{"name": "null"}],
}


@dataclass
class Stack:
    healthd: str
    prometheus: str
    alertmanager: str
    procs: list[Proc]

    def am_alerts(self, name: str) -> list[dict[str, Any]]:
        data = json.loads(http_get(f"{self.alertmanager}/api/v2/alerts"))
        return [a for a in data if a["labels"].get("alertname") == name]

    def prom_query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?query={urllib.request.quote(expr)}"
        return list(json.loads(http_get(url))["data"]["result"])


@pytest.fixture
def stack(lab: dict[str, Any], tmp_path: Path) -> Iterator[Stack]:
    for tool in ("prometheus", "prometheus-alertmanager"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not installed: scripts/setup.sh installs it")
    hd_port, prom_port, am_port = free_port(), free_port(), free_port()
    (tmp_path / "healthd.yaml").write_text(yaml.safe_dump(healthd_config(Path(lab["healthd_yaml"]), hd_port)))
    fast_rules(tmp_path / "rules.yml")
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(prometheus_config(hd_port, am_port, tmp_path / "rules.yml")))
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(ALERTMANAGER_CONFIG))
    procs: list[Proc] = []
    try:
        procs.append(start("alertmanager", [
            "prometheus-alertmanager", f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'am-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ], tmp_path))
        procs.append(start("healthd", [
            str(HEALTHD), "--config", str(tmp_path / "healthd.yaml"),
            "run", "--listen", f"127.0.0.1:{hd_port}",
        ], tmp_path))
        procs.append(start("prometheus", [
            "prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}", f"--web.listen-address=127.0.0.1:{prom_port}",
            "--rules.alert.resend-delay=1s",
        ], tmp_path))
        s = Stack(f"http://127.0.0.1:{hd_port}", f"http://127.0.0.1:{prom_port}",
                  f"http://127.0.0.1:{am_port}", procs)
        wait_for("alertmanager ready", lambda: http_get(f"{s.alertmanager}/-/ready"), 30, procs)
        wait_for("prometheus ready", lambda: http_get(f"{s.prometheus}/-/ready"), 30, procs)
        wait_for("healthd scraped by prometheus",
                 lambda: s.prom_query('up{job="healthd"} == 1'), 30, procs)
        yield s
    finally:
        for p in reversed(procs):
            p.stop()


def catalog_ran_ok(s: Stack) -> bool:
    """The catalog check completed at least once (its per-service series exist)."""
    return bool(s.prom_query('healthd_check_up{check="catalog"} == 1')) and bool(
        s.prom_query("healthd_catalog_service_info"))


def for_service(alerts: list[dict[str, Any]], service_id: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"].get("service_id") == service_id]


def test_duplicate_service_alert_reaches_alertmanager_and_resolves(
        stack: Stack, lab_api: Any, lab: dict[str, Any]) -> None:
    procs = stack.procs
    wait_for("a completed catalog run in prometheus", lambda: catalog_ran_ok(stack), 60, procs)
    already = "duplicate-service" in (lab_api.load_state() or {}).get("faults", {})
    if not already:
        # Healthy lab: the rule has been evaluated on real data and nothing reached Alertmanager.
        time.sleep(5)
        assert stack.am_alerts(ALERT) == []
    info = lab_api.inject("duplicate-service")
    try:
        dirty = info["service_id"]
        alerts = wait_for(f"{ALERT} for service {dirty} in alertmanager",
                          lambda: for_service(stack.am_alerts(ALERT), dirty), 90, procs)
        [alert] = alerts
        assert alert["labels"]["severity"] == "critical"
        assert alert["labels"]["type"] == "network"
        assert alert["labels"]["job"] == "healthd"
        assert alert["status"]["state"] == "active"
        assert dirty in alert["annotations"]["summary"]
        assert f"openstack service delete {dirty}" in alert["annotations"]["description"]
        assert alert["annotations"]["runbook_url"].endswith("#" + ALERT.lower())
        # The kept service (with endpoints) is not alerted on.
        assert all(a["labels"]["service_id"] == dirty for a in stack.am_alerts(ALERT))
    finally:
        lab_api.revert("duplicate-service")
    wait_for(f"{ALERT} for {dirty} to resolve in alertmanager",
             lambda: not for_service(stack.am_alerts(ALERT), dirty), 90, procs)
    assert stack.prom_query('healthd_catalog_duplicate_services{type="network"} > 0') == []
