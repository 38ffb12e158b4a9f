"""The shipped Prometheus alert rules: valid, unit-tested, and wired to real metrics.

An alert rule that names a metric the exporter does not export never fires
and nobody notices; a rule without a runbook or a severity wakes someone who
then does not know what to do. These tests run promtool itself (check rules
and the unit tests in deploy/prometheus/tests) and hold every rule to the
conventions on-call relies on. promtool comes with Debian's `prometheus`
package, installed by scripts/setup.sh: a missing promtool fails, it does not skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from healthd.docs import exported_metrics
from healthd.registry import discover

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "healthd-alerts.yml"
UNIT_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yml"))
RUNBOOK_BASE = "https://github.com/healthd/healthd/blob/main/docs/runbooks.md#"
# Series Prometheus itself adds; every other name must come from the exporter.
PROMETHEUS_SERIES = {"up"}
PROMQL_WORDS = {
    "and", "or", "unless", "on", "ignoring", "by", "without", "group_left", "group_right", "bool",
    "offset", "time", "absent", "increase", "rate", "max", "min", "sum", "count", "avg",
    "inf", "nan", "true", "false", "enabled",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: scripts/setup.sh installs Debian's prometheus package")
    return path


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside {...} and [...], not keywords."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    bare = re.sub(r"\b(?:on|ignoring|by|without|group_left|group_right)\s*\([^)]*\)", " ", bare)
    bare = re.sub(r"\b[a-zA-Z_]+\s*\(", "(", bare)  # function calls and aggregations
    words = re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare)
    return {w for w in words if w not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]", w)}


def test_promtool_check_rules() -> None:
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in yaml.safe_load(RULES.read_text())['groups'])}" \
        in done.stdout


def test_promtool_unit_tests() -> None:
    assert UNIT_TESTS, "no promtool unit tests in deploy/prometheus/tests"
    done = subprocess.run([promtool(), "test", "rules", *map(str, UNIT_TESTS)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(UNIT_TESTS), done.stdout


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    """Each alert appears in the unit tests both with expected alerts and with exp_alerts: []."""
    fired: set[str] = set()
    silent: set[str] = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - fired == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown silent"


def test_rules_use_only_exported_metrics() -> None:
    exported = set(exported_metrics(discover())) | PROMETHEUS_SERIES
    for rule in alert_rules():
        unknown = metric_names(rule["expr"]) - exported
        assert not unknown, f"{rule['alert']} uses metrics healthd does not export: {sorted(unknown)}"


def test_metric_name_parser_sees_names() -> None:
    expr = ('healthd_nova_services_up{binary="nova-compute"} == 0 and on (job, host) '
            "(healthd_nova_services_enabled == 1) "
            "or increase(healthd_memcached_listen_disabled_total[15m]) > 0")
    assert metric_names(expr) == {"healthd_nova_services_up", "healthd_nova_services_enabled",
                                  "healthd_memcached_listen_disabled_total"}


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_conventions(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert rule["labels"]["severity"] in ("critical", "warning")
    assert re.fullmatch(r"\d+[mh]", rule.get("for", "")), f"{name}: needs a for: duration against flapping"
    notes = rule["annotations"]
    assert notes["summary"] and notes["description"]
    assert notes["runbook_url"] == RUNBOOK_BASE + name.lower()


def test_per_object_alerts_name_the_object() -> None:
    """Alerts on per-object series put the object (host, service id, server, cell) in the summary."""
    for rule in alert_rules():
        expr = rule["expr"]
        summary = rule["annotations"]["summary"]
        for metric, label in (("healthd_nova_services_up", "host"), ("healthd_memcached_", "server"),
                              ("healthd_nova_services_forced_down", "host"),
                              ("healthd_catalog_service_info", "service_id"),
                              ("healthd_cell_mapping_host_unmapped", "host")):
            if metric in expr and "max by" not in expr:
                assert f"$labels.{label}" in summary, f"{rule['alert']}: summary lacks {label}"


def test_disabled_and_fenced_wait_longer_than_outages() -> None:
    durations = {r["alert"]: r["for"] for r in alert_rules()}

    def minutes(value: str) -> int:
        return int(value[:-1]) * (60 if value.endswith("h") else 1)

    outage = minutes(durations["NovaComputeDown"])
    assert minutes(durations["NovaServiceDisabledDown"]) >= 60 * outage
    assert minutes(durations["NovaServiceForcedDown"]) > outage
    assert all(minutes(v) >= 5 for k, v in durations.items() if k != "MemcachedRejectingConnections")
