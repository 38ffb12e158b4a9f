"""nova_services end to end on the loopback lab: real nova 34 services and heartbeats.

The fault is real (lab fault `compute-down`): the lab-compute2 nova-compute
process is stopped, its heartbeats stop, and after the lab's short
service_down_time nova itself calls it down. A server is then booted the way
the operator in the field did it, forced onto that host with
`--availability-zone nova:lab-compute2`, and hangs in BUILD/scheduling.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from checks.nova_services import NovaServicesProbe
from healthd.model import Severity, Status
from tests.helpers.probes import ProbeRun, lab_backends, run_probe
from tests.helpers.servers import free_port

pytestmark = pytest.mark.e2e

HOST = "lab-compute2"
STUCK = 5  # seconds: the lab is fast, the default (600) is for real clouds



def down_time(lab: dict[str, Any]) -> float:
    """The lab's nova.conf service_down_time: the DB source must judge like nova does."""
    conf = configparser.ConfigParser(interpolation=None)
    conf.read(lab["paths"]["nova_conf"])
    return float(conf["DEFAULT"].get("service_down_time", "60"))


def run(lab: dict[str, Any], source: str = "api", **settings: Any) -> ProbeRun:
    settings = {"service_down_time": down_time(lab), "stuck_build_seconds": STUCK, **settings}
    probe = NovaServicesProbe(NovaServicesProbe.Settings(source=source, **settings))
    return run_probe(probe, lab_backends(lab))


def wait_for(check: Callable[[], ProbeRun | None], what: str, timeout: float = 120) -> ProbeRun:
    """Poll until the lab converges (heartbeats and builds take their time); not a timing test."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(1)


def ok_or_none(result: ProbeRun) -> ProbeRun | None:
    return result if result.status is Status.OK else None


def up(result: ProbeRun, host: str, zone: str = "nova") -> float | None:
    return result.value("healthd_nova_services_up", binary="nova-compute", host=host, zone=zone)


@pytest.mark.parametrize("source", ["api", "db", "both"])
def test_healthy_lab_is_ok(lab: dict[str, Any], source: str) -> None:
    result = run(lab, source)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert result.findings == []
    assert up(result, "lab-compute1") == 1 and up(result, HOST) == 1


def test_db_source_labels_services_like_the_api(lab: dict[str, Any], lab_api: Any) -> None:
    """Same series whichever source, also for a host in an AZ aggregate: alerts and dashboards
    keyed on zone keep working when an operator switches source."""
    handle = lab_api.Lab()

    def series(source: str) -> set[tuple[tuple[str, str], ...]]:
        return {s.labels for s in run(lab, source).result.samples if s.name == "healthd_nova_services_up"}

    # `openstack aggregate create --zone az-e2e e2e-rack; openstack aggregate add host ...`
    _, created = handle.api("compute", "POST", "/os-aggregates",
                            {"aggregate": {"name": "healthd-e2e-rack", "availability_zone": "az-e2e"}})
    aggregate = created["aggregate"]["id"]
    try:
        handle.api("compute", "POST", f"/os-aggregates/{aggregate}/action", {"add_host": {"host": HOST}})
        api, db = series("api"), series("db")
        assert api == db, (api, db)
        zones = {dict(labels)["host"]: dict(labels)["zone"] for labels in api}
        assert zones[HOST] == "az-e2e" and zones["lab-compute1"] == "nova"
        assert "internal" in zones.values()  # conductor and scheduler
    finally:
        handle.api("compute", "POST", f"/os-aggregates/{aggregate}/action", {"remove_host": {"host": HOST}},
                   ok=None)
        handle.api("compute", "DELETE", f"/os-aggregates/{aggregate}", ok=None)


def test_compute_down_then_stuck_build_then_clears(lab: dict[str, Any], lab_api: Any) -> None:
    handle = lab_api.Lab()
    server = None
    lab_api.inject("compute-down")  # stops nova-compute on lab-compute2, waits for nova's "down"
    try:
        for source in ("api", "db", "both"):
            result = run(lab, source)
            assert result.status is Status.CRITICAL, (source, result.summary)
            [finding] = result.about(f"nova-compute on {HOST}", Severity.CRITICAL)
            assert finding.subject == f"host {HOST}"
            assert "systemctl restart nova-compute" in finding.remediation
            assert up(result, HOST) == 0
            assert up(result, "lab-compute1") == 1

        # `openstack server create --availability-zone nova:lab-compute2`: forced past the filters.
        server = handle.boot_server("healthd-e2e-stuck", host=HOST)

        def stuck(source: str) -> ProbeRun | None:
            result = run(lab, source)
            return result if result.about(server) else None

        result = wait_for(lambda: stuck("both"), "the forced build to be reported stuck")
        [finding] = result.about(server)
        assert f"forced onto {HOST} whose nova-compute is down" in finding.message
        assert result.value("healthd_nova_services_stuck_instances", cell="cell1") == 1
        # The API source cannot see the request spec; it names the only down compute.
        api = wait_for(lambda: stuck("api"), "the API source to see the stuck build")
        [finding] = api.about(server)
        assert f"probably forced onto {HOST} whose nova-compute is down" in finding.message
        assert api.value("healthd_nova_services_stuck_instances", cell="") == 1
    finally:
        if server:
            handle.delete_server(server)
            handle.wait_server(server, "DELETED")
        lab_api.revert("compute-down")  # restarts it and waits for a fresh heartbeat

    for source in ("api", "db"):
        cleared = wait_for(lambda s=source: ok_or_none(run(lab, s)), f"{source} to clear")
        assert cleared.findings == []
        assert up(cleared, HOST) == 1
        assert (
            cleared.value("healthd_nova_services_stuck_instances", cell="cell1" if source == "db" else "")
            == 0
        )


def test_compute_api_unreachable_is_unknown(lab: dict[str, Any], tmp_path: Path) -> None:
    clouds = yaml.safe_load(Path(lab["paths"]["clouds_yaml"]).read_text())
    clouds["clouds"]["healthd-lab"]["auth"]["auth_url"] = f"http://127.0.0.1:{free_port()}/v3"
    path = tmp_path / "clouds.yaml"
    path.write_text(yaml.safe_dump(clouds))
    probe = NovaServicesProbe(NovaServicesProbe.Settings(source="api"))
    result = run_probe(probe, lab_backends(lab, clouds_yaml=path))
    assert result.status is Status.UNKNOWN
    assert result.summary.startswith("compute service list (os-services):"), result.summary


# -- issue 12: a second conductor whose database is cell0, a compute in cell0, an old row ---------

CONTROLLER = "lab-controller"


def conductor_up(result: ProbeRun) -> float | None:
    return result.value("healthd_nova_services_up", binary="nova-conductor", host=CONTROLLER, zone="internal")


def test_second_conductor_in_cell0_is_its_own_service(lab: dict[str, Any], lab_api: Any) -> None:
    """Two nova-conductors on lab-controller, one per cell (the super-conductor's [database] is
    cell0's): healthy as it is, and when the cell0 one dies it is reported, not hidden by the
    cell1 one on the same host."""
    info = lab_api.inject("cell0-conductor")
    try:
        for source in ("api", "db", "both"):
            result = run(lab, source)
            assert result.status is Status.OK, (source, [f.as_dict() for f in result.findings])
            assert conductor_up(result) == 1
        db = run(lab, "db")
        for cell in ("cell0", "cell1"):
            assert db.value("healthd_nova_services_conductors_up", cell=cell) == 1
            assert db.value("healthd_nova_services_heartbeat_age_seconds", cell=cell, binary="nova-conductor",
                            host=CONTROLLER) is not None

        lab_api.Lab().stop(info["proc"], forget=False)  # the cell0 conductor dies; cell1's runs on

        def dead(source: str) -> ProbeRun | None:
            result = run(lab, source)
            return result if result.about(f"nova-conductor on {CONTROLLER}") else None

        result = wait_for(lambda: dead("db"), "nova to call the cell0 conductor down")
        [finding] = result.about(f"nova-conductor on {CONTROLLER}")
        assert finding.severity is Severity.CRITICAL and "(zone internal, cell cell0)" in finding.message
        assert "no nova-conductor is up in cell0 (the super-conductor of the API level)" in finding.message
        assert f"compute service delete {info['service_uuid']}" in finding.remediation
        assert result.value("healthd_nova_services_conductors_up", cell="cell0") == 0
        assert result.value("healthd_nova_services_conductors_up", cell="cell1") == 1
        assert conductor_up(result) == 0
        both = run(lab, "both")
        [finding] = both.about(f"nova-conductor on {CONTROLLER}")
        assert finding.severity is Severity.CRITICAL and "cell cell0" in finding.message
        # os-services has no cell: one pool, but the dead copy is still seen, by its uuid
        api = run(lab, "api")
        [finding] = api.about(f"nova-conductor on {CONTROLLER}")
        assert finding.severity is Severity.WARNING
        assert f"[uuid {info['service_uuid']}] is down" in finding.message
        assert "1 other nova-conductor up" in finding.message
        assert conductor_up(api) == 0
    finally:
        lab_api.revert("cell0-conductor")  # stops it and deletes its row through the compute API
    for source in ("api", "db"):
        cleared = wait_for(lambda s=source: ok_or_none(run(lab, s)), f"{source} to clear")
        assert conductor_up(cleared) == 1


def test_compute_registered_in_cell0_is_found_and_clears(lab: dict[str, Any], lab_api: Any) -> None:
    """lab-compute0's transport_url is the cell0 conductor's queue: that conductor writes its
    service and compute node into cell0, which discover_hosts skips."""
    info = lab_api.inject("cell0-compute")
    host = info["host"]
    try:
        handle = lab_api.Lab()
        handle.nova_manage("cell_v2", "discover_hosts", "--verbose")  # nova itself: cell0 is skipped
        assert host not in handle.host_mappings()
        for source in ("db", "both"):
            result = run(lab, source)
            assert result.status is Status.CRITICAL, source
            [finding] = result.about(f"nova-compute on {host} registered in cell0")
            assert finding.subject == f"host {host}" and finding.severity is Severity.CRITICAL
            assert f"uuid {info['service_uuid']}" in finding.message
            assert f"point nova-compute on {host} at its cell's message queue" in finding.remediation
            assert f"compute service delete {info['service_uuid']}" in finding.remediation
            assert result.value("healthd_nova_services_problems", kind="compute_in_cell0") == 1
        # os-services says neither cell nor database: the API source cannot tell (docs say so)
        assert not run(lab, "api").about("registered in cell0")
    finally:
        lab_api.revert("cell0-compute")  # service delete through the API, as the finding says
    cleared = wait_for(lambda: ok_or_none(run(lab, "db")), "db to clear")
    assert cleared.value("healthd_nova_services_problems", kind="compute_in_cell0") == 0


def nova_status(lab: dict[str, Any]) -> tuple[int, str]:
    """`nova-status upgrade check` of the lab's nova 34 with the controller's nova.conf."""
    conf = Path(lab["paths"]["nova_conf"])
    binary = Path(lab["paths"]["venv"]) / "bin" / "nova-status"
    done = subprocess.run([str(binary), "--config-file", str(conf), "upgrade", "check"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OS_NOVA_CONFIG_DIR": str(conf.parent)})
    return done.returncode, " ".join(done.stdout.replace("|", " ").split())


def test_old_compute_row_is_reported_as_nova_status_does(lab: dict[str, Any], lab_api: Any) -> None:
    info = lab_api.inject("old-compute-row")  # Victoria's version 52, disabled, silent for 400 days
    try:
        code, said = nova_status(lab)
        assert code == 2, said  # nova's own verdict: Failure
        nova_text = ("Current Nova version does not support computes older than Gazpacho but the minimum "
                     "compute service level in your system is 52 and the oldest supported service level "
                     "is 72.")
        assert f"Check: Older than N-1 computes Result: Failure Details: {nova_text}" in said
        for source in ("db", "both"):
            result = run(lab, source)
            assert result.status is Status.CRITICAL, source
            [finding] = result.about(info["host"])
            assert finding.subject == f"host {info['host']}" and finding.severity is Severity.CRITICAL
            assert (f"[id {info['service_id']}, uuid {info['service_uuid']}, disabled] has service version 52"
                    in finding.message)
            assert nova_text in finding.message
            assert f"compute service delete {info['service_uuid']}" in finding.remediation
            assert result.value("healthd_nova_services_problems", kind="too_old_compute") == 1
        # os-services has no version: the API source sees a disabled, down compute (maintenance)
        [api] = run(lab, "api").about(info["host"])
        assert api.severity is Severity.INFO
    finally:
        lab_api.revert("old-compute-row")  # DELETE /os-services/{uuid}: the cleanup the finding gives
    code, said = nova_status(lab)
    assert "Check: Older than N-1 computes Result: Success" in said, said
    cleared = run(lab, "db")
    assert cleared.status is Status.OK, [f.as_dict() for f in cleared.findings]
    assert cleared.value("healthd_nova_services_problems", kind="too_old_compute") == 0
