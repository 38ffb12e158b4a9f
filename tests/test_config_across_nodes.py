"""Config files compared across nodes through Prometheus, with the real programs.

Two healthd daemons stand for two nodes of one service: each runs only service_config over
its own copy of nova.conf, whose [cache] lists private memcached servers. Debian's
prometheus scrapes both (one `region` label, as the README's scrape config sets it) and
evaluates the shipped rules with their `for:` cut to 2 s (expressions untouched). The
copies first disagree (OpenStackServiceConfigNodesDisagree fires, naming the service and
option), then agree again (it clears). No value of the option reaches Prometheus: only
fingerprints.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.servers import Memcached, free_port
from tests.helpers.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "deploy" / "prometheus" / "healthd-alerts.yml"
ALERT = "OpenStackServiceConfigNodesDisagree"
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, no proxy


def get_json(url: str) -> Any:
    with _HTTP.open(url, timeout=5) as resp:
        return json.load(resp)


def cache_conf(path: Path, servers: list[str]) -> None:
    path.write_text("[cache]\nenabled = true\nbackend = oslo_cache.memcache_pool\n"
                    f"memcache_servers = {','.join(servers)}\n")


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.prometheus = ""

    def start(self, name: str, argv: list[str]) -> None:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            self.procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp))
        self.logs.append(log)

    def alerts(self) -> list[dict[str, Any]]:
        data = get_json(f"{self.prometheus}/api/v1/alerts")["data"]["alerts"]
        return [a for a in data if a["labels"]["alertname"] == ALERT and a["state"] == "firing"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?query={urllib.parse.quote(expr)}"
        return list(get_json(url)["data"]["result"])

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@pytest.fixture
def memcacheds() -> Iterator[list[str]]:
    with Memcached() as one, Memcached() as two:
        yield [one.server, two.server]


@pytest.fixture
def two_nodes(tmp_path: Path, memcacheds: list[str]) -> Iterator[tuple[Stack, list[Path]]]:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus not installed: scripts/setup.sh installs it")
    stack = Stack(tmp_path)
    confs, targets = [], []
    try:
        for node, servers in (("node-a", memcacheds[:1]), ("node-b", memcacheds)):
            (tmp_path / node).mkdir()
            conf = tmp_path / node / "nova.conf"
            cache_conf(conf, servers)
            port = free_port()
            config = {"server": {"listen_address": "127.0.0.1", "port": port},
                      "checks": {"service_config": {"files": [str(conf)], "interval": 2, "timeout": 5}}}
            config["checks"].update({name: {"enabled": False} for name in (
                "catalog", "cell_mapping", "memcached", "nova_services", "disk_overcommit")})
            (tmp_path / f"{node}.yaml").write_text(yaml.safe_dump(config))
            argv = [sys.executable, "-m", "healthd.cli", "--config", str(tmp_path / f"{node}.yaml"), "run"]
            stack.start(node, argv)
            confs.append(conf)
            targets.append(f"127.0.0.1:{port}")
        rules = tmp_path / "rules.yml"
        rules.write_text(re.sub(r"(?m)^(\s+for:) \S+$", r"\1 2s", RULES.read_text()))
        prom_port = free_port()
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "healthd", "static_configs": [
                {"targets": targets, "labels": {"region": "one"}}]}],
        }))
        stack.start("prometheus", [
            "prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}", f"--web.listen-address=127.0.0.1:{prom_port}"])
        stack.prometheus = f"http://127.0.0.1:{prom_port}"
        wait_for("both nodes scraped", lambda: len(stack.query('up{job="healthd"} == 1')) == 2, 60,
                 stack.logs)
        yield stack, confs
    finally:
        stack.stop()


def test_nodes_that_disagree_raise_one_alert_until_their_files_agree(
        two_nodes: tuple[Stack, list[Path]], memcacheds: list[str]) -> None:
    stack, (_, conf_b) = two_nodes
    series = ('healthd_service_config_fingerprint_info'
              '{service="nova",section="cache",option="memcache_servers"}')
    found = wait_for("a fingerprint from each node", lambda: (r := stack.query(series)) and len(
        {s["metric"]["fingerprint"] for s in r}) == 2 and r, 60, stack.logs)
    assert len({s["metric"]["instance"] for s in found}) == 2
    for s in found:  # only a hash: no server of the list is in any label
        assert not any(server in value for server in memcacheds for value in s["metric"].values())
    [alert] = wait_for(f"{ALERT} firing", stack.alerts, 60, stack.logs)
    assert alert["labels"]["service"] == "nova" and alert["labels"]["region"] == "one"
    assert (alert["labels"]["section"], alert["labels"]["option"]) == ("cache", "memcache_servers")
    assert "instance" not in alert["labels"]  # one alert for the service, not one per node
    cache_conf(conf_b, memcacheds[:1])  # node b renders the same list as node a
    wait_for(f"{ALERT} cleared", lambda: not stack.alerts(), 60, stack.logs)
