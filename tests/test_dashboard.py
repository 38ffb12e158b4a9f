"""deploy/grafana/healthd.json: import-ready, and every query is valid PromQL on real metrics.

A dashboard panel whose query names a metric that does not exist shows "No
data", which reads as "nothing wrong". Every expression is parsed by promtool
(as a recording rule, after substituting Grafana's variables) and its metric
names are compared with what the exporter really exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from healthd.docs import exported_metrics
from healthd.registry import discover
from tests.test_alert_rules import PROMETHEUS_SERIES, metric_names

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "healthd.json"
# What Grafana puts in place of its variables before the query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$instance": ".*",
    "${instance}": ".*", "$datasource": "prometheus",
}
AREAS = ("Overview", "Keystone catalog", "Nova cells", "memcached", "Service configuration",
         "Nova services", "Compute disk", "Flavors and images", "API backends",
         "Databases and brokers", "Config values")


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in board["panels"]:
        yield p
        yield from p.get("panels", [])  # collapsed rows keep their panels inside


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels(board) for t in p.get("targets", [])]


def substitute(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def test_import_ready() -> None:
    board = dashboard()
    assert board["title"] == "healthd"
    assert board["uid"]
    [ds_input] = board["__inputs"]
    assert ds_input["type"] == "datasource" and ds_input["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_every_panel_uses_the_datasource_variable() -> None:
    for p in panels(dashboard()):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for target in p["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", p["title"]


def test_rows_cover_every_area() -> None:
    rows = [p["title"] for p in dashboard()["panels"] if p["type"] == "row"]
    assert rows == list(AREAS)


def test_overview_status_mappings() -> None:
    status = [p for p in panels(dashboard()) if any(
        re.fullmatch(r"healthd_check_status\{[^}]*\}", t["expr"]) for t in p.get("targets", []))]
    assert {p["type"] for p in status} >= {"stat", "state-timeline"}
    for p in status:
        options = p["fieldConfig"]["defaults"]["mappings"][0]["options"]
        assert {k: (v["text"], v["color"]) for k, v in options.items()} == {
            "0": ("OK", "green"), "1": ("WARNING", "yellow"),
            "2": ("CRITICAL", "red"), "3": ("UNKNOWN", "grey")}
    exprs = [e for _, e in queries(dashboard())]
    assert any("time() - healthd_check_last_run_timestamp_seconds" in e for e in exprs)


def test_every_query_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: scripts/setup.sh installs Debian's prometheus package")
    rules = [{"record": f"dashboard:query_{i}", "expr": substitute(expr)}
             for i, (_, expr) in enumerate(queries(dashboard()))]
    assert len(rules) > 20
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_rejects_a_bad_query(tmp_path: Path) -> None:
    """The parse check above has teeth: a broken expression fails it."""
    promtool = shutil.which("promtool")
    assert promtool
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [
        {"record": "dashboard:bad", "expr": "sum by (host healthd_check_status"}]}]}))
    assert subprocess.run([promtool, "check", "rules", str(path)], capture_output=True).returncode != 0


def test_queries_use_only_exported_metrics() -> None:
    exported = set(exported_metrics(discover())) | PROMETHEUS_SERIES
    for title, expr in queries(dashboard()):
        unknown = metric_names(substitute(expr)) - exported
        assert not unknown, f"panel {title!r} queries metrics healthd does not export: {sorted(unknown)}"


def test_every_probe_has_a_panel() -> None:
    """Each probe's metrics appear somewhere on the dashboard."""
    used = set().union(*(metric_names(substitute(e)) for _, e in queries(dashboard())))
    shipped = {name for name, cls in discover().items() if cls.__module__.startswith("checks.")}
    for probe in shipped:
        assert any(m.startswith(f"healthd_{probe}_") for m in used), probe
