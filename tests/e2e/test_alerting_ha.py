"""Two healthd replicas of one region, one fault, one notification, with the real programs.

A region watched by a pair of healthd daemons (HA) must not page twice for
one fault. The chain: two `healthd run` processes from the venv on the same
lab cloud, each on its own port; Debian's prometheus scraping both in job
`healthd` with the same `region` label and a `replica` label of their own (the
scrape config the README shows), evaluating the shipped
deploy/prometheus/healthd-alerts.yml (expressions untouched, `for:` cut to
3 s); Debian's prometheus-alertmanager running the shipped
deploy/alertmanager/alertmanager.yml (its route, grouping and inhibitions;
only the receiver URL and the waiting times are changed) and sending to a
webhook receiver, a loopback HTTP server in this test.

The fault is the lab's `duplicate-service`. Both replicas see it (Prometheus
holds the rule's per-replica expression for both instances), yet
Alertmanager's /api/v2/alerts holds exactly one alert for it, without
`instance` or `replica`, and the webhook gets one notification group: one
firing notification, and after the revert the resolved one of the same group.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_alerting import (
    HEALTHD,
    Proc,
    fast_rules,
    free_port,
    healthd_config,
    http_get,
    start,
    wait_for,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
ALERT = "OpenStackCatalogDuplicateService"
REGION = "lab"
REPLICAS = ("a", "b")
# The rule's expression per replica, before the aggregation drops instance and replica.
PER_REPLICA = ('healthd_catalog_service_info{enabled="true"}'
               " and on (job, instance, service_id) (healthd_catalog_service_endpoints == 0)"
               " and on (job, instance, type) (healthd_catalog_duplicate_services > 0)")


class Webhook:
    """Alertmanager's webhook receiver: records every notification it is sent."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook._lock:
                    hook.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def about(self, service_id: str) -> list[dict[str, Any]]:
        """Notifications that carry an alert for the service, in arrival order."""
        with self._lock:
            return [n for n in self.notifications
                    if any(a["labels"].get("service_id") == service_id for a in n["alerts"])]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """The shipped config with the receiver pointed at the test's webhook and seconds for minutes."""
    cfg = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for receiver in cfg["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url

    def fast(route: dict[str, Any]) -> None:
        for key, value in (("group_wait", "1s"), ("group_interval", "1s"), ("repeat_interval", "1h")):
            if key in route:
                route[key] = value
        for child in route.get("routes", []):
            fast(child)

    fast(cfg["route"])
    return cfg


def prometheus_config(ports: dict[str, int], am_port: int, rules: Path) -> dict[str, Any]:
    """One job, both replicas: the same region label, each its own replica label."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{
            "job_name": "healthd",
            "static_configs": [{"targets": [f"127.0.0.1:{port}"],
                                "labels": {"region": REGION, "replica": replica}}
                               for replica, port in ports.items()],
        }],
    }


@dataclass
class Pair:
    prometheus: str
    alertmanager: str
    webhook: Webhook
    procs: list[Proc] = field(default_factory=list)

    def am_alerts(self, service_id: str) -> list[dict[str, Any]]:
        data = json.loads(http_get(f"{self.alertmanager}/api/v2/alerts"))
        return [a for a in data if a["labels"].get("alertname") == ALERT
                and a["labels"].get("service_id") == service_id]

    def prom_query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?query={urllib.parse.quote(expr)}"
        return list(json.loads(http_get(url))["data"]["result"])


@pytest.fixture
def pair(lab: dict[str, Any], tmp_path: Path) -> Iterator[Pair]:
    for tool in ("prometheus", "prometheus-alertmanager"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not installed: scripts/setup.sh installs it")
    ports = {replica: free_port() for replica in REPLICAS}
    prom_port, am_port = free_port(), free_port()
    for replica, port in ports.items():
        cfg = healthd_config(Path(lab["healthd_yaml"]), port)
        cfg["checks"]["nova_services"] = {"enabled": False}  # the catalog is all this test needs
        (tmp_path / f"healthd-{replica}.yaml").write_text(yaml.safe_dump(cfg))
    fast_rules(tmp_path / "rules.yml")
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(prometheus_config(ports, am_port, tmp_path / "rules.yml")))
    webhook = Webhook()
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config(webhook.url)))
    p = Pair(f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}", webhook)
    try:
        p.procs.append(start("alertmanager", [
            "prometheus-alertmanager", f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'am-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ], tmp_path))
        for replica, port in ports.items():
            p.procs.append(start(f"healthd-{replica}", [
                str(HEALTHD), "--config", str(tmp_path / f"healthd-{replica}.yaml"),
                "run", "--listen", f"127.0.0.1:{port}",
            ], tmp_path))
        p.procs.append(start("prometheus", [
            "prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}", f"--web.listen-address=127.0.0.1:{prom_port}",
            "--rules.alert.resend-delay=1s",
        ], tmp_path))
        wait_for("alertmanager ready", lambda: http_get(f"{p.alertmanager}/-/ready"), 30, p.procs)
        wait_for("prometheus ready", lambda: http_get(f"{p.prometheus}/-/ready"), 30, p.procs)
        wait_for("both healthd replicas scraped",
                 lambda: len(p.prom_query(f'up{{job="healthd", region="{REGION}"}} == 1')) == 2,
                 30, p.procs)
        yield p
    finally:
        for proc in reversed(p.procs):
            proc.stop()
        webhook.close()


def both_replicas(p: Pair, expr: str) -> bool:
    """expr has series from both replicas (told apart by instance and replica)."""
    return {r["metric"].get("replica") for r in p.prom_query(expr)} == set(REPLICAS)


def test_two_replicas_one_fault_one_notification(pair: Pair, lab_api: Any) -> None:
    procs = pair.procs
    wait_for("a completed catalog run of both replicas in prometheus",
             lambda: both_replicas(pair, 'healthd_check_up{check="catalog"} == 1')
             and both_replicas(pair, "healthd_catalog_service_info"), 60, procs)
    if "duplicate-service" in (lab_api.load_state() or {}).get("faults", {}):
        pytest.fail("the lab already has the duplicate-service fault: revert it first")
    time.sleep(3)  # the rule has been evaluated on the healthy lab: nothing sent for it
    assert [n for n in pair.webhook.notifications if n["groupLabels"].get("alertname") == ALERT] == []
    info = lab_api.inject("duplicate-service")
    dirty = info["service_id"]
    try:
        # Both replicas see the fault: without the aggregation these were two alerts.
        wait_for(f"both replicas to see duplicate service {dirty}",
                 lambda: both_replicas(pair, f'{PER_REPLICA} and {{service_id="{dirty}"}}'), 90, procs)
        wait_for(f"{ALERT} for {dirty} in alertmanager", lambda: pair.am_alerts(dirty), 60, procs)
        wait_for("the webhook's notification", lambda: pair.webhook.about(dirty), 30, procs)
        # Let Prometheus resend (every 1 s) and Alertmanager regroup (every 1 s) a few times:
        # a second label set or a second group would show up now.
        time.sleep(8)
        assert both_replicas(pair, f'{PER_REPLICA} and {{service_id="{dirty}"}}')

        [alert] = pair.am_alerts(dirty)
        assert alert["status"]["state"] == "active"
        labels = alert["labels"]
        assert labels["region"] == REGION and labels["severity"] == "critical"
        assert "instance" not in labels and "replica" not in labels
        assert dirty in alert["annotations"]["summary"]
        assert f"openstack service delete {dirty}" in alert["annotations"]["description"]

        firing = pair.prom_query(f'ALERTS{{alertname="{ALERT}", alertstate="firing", service_id="{dirty}"}}')
        assert len(firing) == 1, firing

        [note] = pair.webhook.about(dirty)
        assert note["status"] == "firing"
        assert note["groupLabels"] == {"alertname": ALERT, "region": REGION}
        assert [a["labels"]["service_id"] for a in note["alerts"]] == [dirty]
        group = note["groupKey"]
    finally:
        lab_api.revert("duplicate-service")
    wait_for(f"{ALERT} for {dirty} to resolve in alertmanager",
             lambda: not pair.am_alerts(dirty), 90, procs)
    resolved = wait_for("the resolved notification",
                        lambda: [n for n in pair.webhook.about(dirty) if n["status"] == "resolved"],
                        30, procs)
    time.sleep(3)
    # One group from start to end: the firing notification, then its resolution.
    notes = pair.webhook.about(dirty)
    assert [n["status"] for n in notes] == ["firing", "resolved"], notes
    assert {n["groupKey"] for n in notes} == {group}
    assert resolved[0]["alerts"][0]["labels"]["service_id"] == dirty
