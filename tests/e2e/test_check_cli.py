"""`healthd check` on the lab: all OK when healthy, and every fault the lab can
inject caught by its check, with the exit code of the worst (Nagios style)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.e2e

# check -> what its finding must name while every fault is injected
EXPECTED = {
    "catalog": "openstack service delete",
    "cell_mapping": "lab-compute3",
    "memcached": "127.0.0.1:",
    "service_config": "nova-bad.conf",
    "nova_services": "lab-compute2",
    "disk_overcommit": "lab-compute1",
}


def healthd_check(config: str, fmt: str = "json") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "healthd.cli", "--config", config, "check", "--format", fmt],
                          capture_output=True, text=True, timeout=180)


def statuses(proc: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    return {c["check"]: c for c in json.loads(proc.stdout)["checks"]}


def test_healthy_lab_is_all_ok(lab):
    proc = healthd_check(lab["healthd_yaml"])
    checks = statuses(proc)
    assert set(EXPECTED) <= set(checks)
    bad = {n: (c["status"], c["summary"], c["findings"]) for n, c in checks.items() if c["status"] != "OK"}
    assert not bad, bad
    assert proc.returncode == 0


def test_every_fault_is_caught_and_clears(lab, lab_api):
    try:
        lab_api.inject("all")  # inside: a fault that fails to inject still gets the others reverted
        end = time.monotonic() + 90
        while True:
            proc = healthd_check(lab["healthd_yaml"])
            checks = statuses(proc)
            missed = {n for n in EXPECTED if checks[n]["status"] not in ("WARNING", "CRITICAL")}
            if not missed or time.monotonic() > end:
                break
            time.sleep(3)
        assert not missed, {n: checks[n] for n in missed}
        for name, needle in EXPECTED.items():
            text = json.dumps(checks[name]["findings"])
            assert needle in text, (name, checks[name])
            assert all(f["remediation"] for f in checks[name]["findings"] if f["severity"] != "info")
        assert proc.returncode == 2
        table = healthd_check(lab["healthd_yaml"], "table").stdout
        for name in EXPECTED:
            assert f"] {name}: " in table, f"{name} finding missing from the table"
        assert "Fix: " in table
    finally:
        lab_api.revert("all")
    proc = healthd_check(lab["healthd_yaml"])
    still = {n: c["findings"] for n, c in statuses(proc).items() if c["status"] != "OK"}
    assert not still and proc.returncode == 0, still
