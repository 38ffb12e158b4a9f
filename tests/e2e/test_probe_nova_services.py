"""nova_services end to end on the loopback lab: real nova 34 services and heartbeats.

The fault is real (lab fault `compute-down`): the lab-compute2 nova-compute
process is stopped, its heartbeats stop, and after the lab's short
service_down_time nova itself calls it down. A server is then booted the way
the operator in the field did it, forced onto that host with
`--availability-zone nova:lab-compute2`, and hangs in BUILD/scheduling.
"""

from __future__ import annotations

import configparser
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
