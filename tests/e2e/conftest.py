"""Fixtures for the end-to-end tests against the healthd-lab mini OpenStack.

``lab`` (session scope) brings the lab (lab/healthd-lab) up once per test
session and yields its state dict:

    lab["ports"]            {"keystone": ..., "nova_api": ..., "memcached": ...,
                             "memcached_sat": ..., "healthd": ..., ...}
    lab["paths"]            {"healthd_yaml", "clouds_yaml", "nova_conf",
                             "keystone_conf", "nova_bad_conf", "compute_confs",
                             "db_password_file", "lab_dir", "venv", ...}
    lab["healthd_yaml"]     shortcut for lab["paths"]["healthd_yaml"]
    lab["procs"], lab["faults"], lab["ids"] (image id, flavor ids)

HEALTHD_LAB_REUSE=1 reuses a lab that is already up (and leaves the lab up
at the end, so the next run reuses it too); otherwise the fixture starts a
fresh lab and tears it down (``down``) at the end of the session.
HEALTHD_LAB_DIR chooses where the lab lives (default <repo>/.lab).

``lab_api`` gives the lab's Python API (package lab/healthd_lab/), e.g.
``lab_api.inject("compute-down")`` / ``lab_api.revert("compute-down")``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB_SRC = str(REPO / "lab")
if LAB_SRC not in sys.path:
    sys.path.insert(0, LAB_SRC)

import healthd_lab  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "e2e: end-to-end tests against the loopback mini-cloud (lab/)")


@pytest.fixture(scope="session")
def lab_api():
    return healthd_lab


@pytest.fixture(scope="session")
def lab():
    reuse = os.environ.get("HEALTHD_LAB_REUSE") == "1"
    handle = healthd_lab.Lab()
    if not reuse and handle.state:
        handle.down()
        handle = healthd_lab.Lab()
    try:
        state = handle.up()
    except healthd_lab.LabError as exc:
        pytest.fail(f"healthd-lab up failed: {exc}", pytrace=False)
    state = dict(state)
    state["healthd_yaml"] = state["paths"]["healthd_yaml"]
    yield state
    if reuse:
        # leave it up for the next session, but without faults
        healthd_lab.Lab().revert("all")
    else:
        healthd_lab.Lab().down()
