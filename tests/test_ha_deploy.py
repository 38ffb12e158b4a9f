"""Many regions and pairs for HA: the shipped Alertmanager config, the README's examples, the rules.

Two healthd replicas of one region must give one notification per fault. That
rests on three shipped things checked here with the real tools: the alert
rules drop the per-replica labels from every alert about the cloud (so both
replicas' alerts have one label set; deploy/prometheus/tests/replicas_test.yml
shows it with promtool, tests/e2e/test_alerting_ha.py with the real programs),
the example Alertmanager config groups by alert and region (amtool accepts
it), and the Prometheus configs the README shows are valid (promtool accepts
them with the shipped rules).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "healthd-alerts.yml"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
README = ROOT / "README.md"
SECTION = "## Many regions, and pairs for HA"
# Alerts about one daemon, or about the config files on its host: they keep instance.
# service_config and config_values judge the files of the host healthd runs on: per instance.
PER_INSTANCE_GROUPS = {"healthd-daemon", "healthd-service-config", "healthd-config-values"}
# An expression whose outermost step aggregates instance and replica away.
AGGREGATED = re.compile(
    r"^\s*(?:max|min|sum|count|avg)\s+"
    r"(?:without\s*\((?=[^)]*\binstance\b)(?=[^)]*\breplica\b)[^)]*\)"
    r"|by\s*\((?![^)]*\b(?:instance|replica)\b)[^)]*\))\s*\(")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: scripts/setup.sh installs Debian's prometheus and alertmanager")
    return path


def groups() -> list[dict[str, Any]]:
    return list(yaml.safe_load(RULES.read_text())["groups"])


def readme_section() -> str:
    text = README.read_text()
    assert SECTION in text, f"README lacks the section {SECTION!r}"
    body = text.split(SECTION, 1)[1]
    return body.split("\n## ", 1)[0]


def readme_yaml() -> list[dict[str, Any]]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", readme_section(), re.S)]


def test_cloud_alerts_drop_the_replica_labels() -> None:
    for group in groups():
        if group["name"] in PER_INSTANCE_GROUPS:
            continue
        for rule in group["rules"]:
            if "alert" in rule:
                assert AGGREGATED.match(rule["expr"]), \
                    f"{rule['alert']}: aggregate them away, e.g. max without (instance, replica) (...)"


def test_daemon_alerts_stay_per_instance() -> None:
    [daemon] = [g for g in groups() if g["name"] == "healthd-daemon"]
    for rule in daemon["rules"]:
        assert not AGGREGATED.match(rule["expr"]), rule["alert"]
        assert "without (instance" not in rule["expr"], rule["alert"]


def test_alertmanager_config_is_valid() -> None:
    done = subprocess.run([tool("amtool"), "check-config", str(ALERTMANAGER)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_alertmanager_groups_by_alert_and_region() -> None:
    cfg = yaml.safe_load(ALERTMANAGER.read_text())
    route = cfg["route"]
    assert route["group_by"] == ["alertname", "region"]
    for child in route.get("routes", []):
        assert child.get("group_by", route["group_by"]) == route["group_by"]
    # an inhibition never crosses regions
    assert all("region" in rule["equal"] for rule in cfg.get("inhibit_rules", []))
    # identical alerts from two replicas land in one group: amtool routes both the same way
    done = subprocess.run([tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                           "alertname=OpenStackCatalogDuplicateService", "region=region-one",
                           "severity=critical"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "oncall", done.stdout + done.stderr


def test_readme_prometheus_examples_are_valid(tmp_path: Path) -> None:
    """promtool accepts each scrape config the README shows, with the shipped rules loaded."""
    blocks = readme_yaml()
    scrapes = [b for b in blocks if "scrape_configs" in b]
    assert len(scrapes) == 2  # a region's Prometheus, and the global one
    [relabel] = [b for b in blocks if "alerting" in b]
    rules = tmp_path / "healthd-alerts.yml"
    shutil.copy(RULES, rules)
    for i, block in enumerate(scrapes):
        cfg = dict(block)
        if "rule_files" in cfg:
            cfg["rule_files"] = [str(rules)]
        cfg.update(relabel)
        path = tmp_path / f"prometheus-{i}.yml"
        path.write_text(yaml.safe_dump(cfg))
        done = subprocess.run([tool("promtool"), "check", "config", str(path)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    region = scrapes[0]["scrape_configs"][0]
    assert region["job_name"] == "healthd"
    labels = [t["labels"] for t in region["static_configs"]]
    assert len({lab["region"] for lab in labels}) == 1, "a pair shares its region label"
    assert len({lab["replica"] for lab in labels}) == len(labels), "each replica its own label"
    assert scrapes[1]["scrape_configs"][0]["honor_labels"] is True


def test_readme_shows_the_template_unit() -> None:
    section = readme_section()
    assert "deploy/systemd/healthd@.service" in section
    assert "systemctl enable --now healthd@region-one" in section
    assert "max without (instance, replica)" in section
    assert "deploy/alertmanager/alertmanager.yml" in section
