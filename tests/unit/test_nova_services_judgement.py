"""nova_services judgement on plain data: a View in, findings and metrics out (no database, no API).

The real-backend tests (tests/test_nova_services_probe.py) write rows the way nova does;
these cover every branch of the rules with the data those rows turn into.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from checks.nova_services import (
    COMPUTE,
    CONDUCTOR,
    UNSCHEDULED,
    NovaServicesProbe,
    Stuck,
    Svc,
    View,
    judge,
    merge_db_service,
    service_from_api,
    spec_forced_host,
    stuck_from_api,
    zone_rule,
    zones_from_rows,
)
from healthd.model import Report, Severity, Status
from healthd.openstack.cells import CELL0_UUID, Cell
from tests.helpers.probes import ProbeRun

UP = "healthd_nova_services_up"
ENABLED = "healthd_nova_services_enabled"
FORCED = "healthd_nova_services_forced_down"
HEARTBEAT = "healthd_nova_services_heartbeat_age_seconds"
STUCK = "healthd_nova_services_stuck_instances"
CONDUCTORS = "healthd_nova_services_conductors_up"
PROBLEMS = "healthd_nova_services_problems"
CELL0 = Cell(CELL0_UUID, "cell0")
CELL1 = Cell("c1c1c1c1-0000-4000-8000-000000000001", "cell1")


def svc(binary: str = COMPUTE, host: str = "compute1", **kw: Any) -> Svc:
    zone = "nova" if binary == COMPUTE else "internal"
    return Svc(binary=binary, host=host, **{"zone": zone, "cell": "cell1", "heartbeat_age": 5.0, **kw})


def view(*services: Svc, stuck: tuple[Stuck, ...] = (), cells: tuple[str, ...] = ("cell1",)) -> View:
    return View(services=list(services), stuck=list(stuck), stuck_cells=set(cells))


def healthy(*extra: Svc) -> list[Svc]:
    base = [svc(host="compute1"), svc(host="compute2"), svc("nova-conductor", "ctl1"),
            svc("nova-scheduler", "ctl1")]
    replaced = {(s.binary, s.host) for s in extra}
    return [s for s in base if (s.binary, s.host) not in replaced] + list(extra)


def judged(v: View, **settings: Any) -> ProbeRun:
    report = Report(NovaServicesProbe.name, NovaServicesProbe.metrics)
    judge(report, v, NovaServicesProbe.Settings(**settings))
    return ProbeRun(report.result(0, 0))


def labels(binary: str, host: str) -> dict[str, str]:
    return {"binary": binary, "host": host, "zone": "nova" if binary == COMPUTE else "internal"}


# -- services ---------------------------------------------------------------------


def test_healthy_deployment_is_ok_with_metrics() -> None:
    run = judged(view(*healthy()))
    assert run.status is Status.OK and run.findings == []
    for host in ("compute1", "compute2"):
        assert run.value(UP, **labels(COMPUTE, host)) == 1
        assert run.value(ENABLED, **labels(COMPUTE, host)) == 1
        assert run.value(FORCED, **labels(COMPUTE, host)) == 0
        assert run.value(HEARTBEAT, cell="cell1", binary=COMPUTE, host=host) == 5.0
    assert run.value(UP, **labels("nova-conductor", "ctl1")) == 1
    assert run.value(STUCK, cell="cell1") == 0
    assert run.summary == "4 services, 0 down, 0 stuck build(s)"


def test_compute_down_but_enabled_is_critical() -> None:
    run = judged(view(*healthy(svc(host="compute2", up=False, heartbeat_age=600.4))))
    assert run.status is Status.CRITICAL
    [finding] = run.findings
    assert finding.severity is Severity.CRITICAL and finding.subject == "host compute2"
    assert finding.message.startswith(
        "nova-compute on compute2 (zone nova, cell cell1) is down but enabled (last heartbeat 600 s ago)")
    assert "servers booted onto this host hang in BUILD" in finding.message
    assert "on compute2: systemctl restart nova-compute" in finding.remediation
    assert '--disable-reason "decommissioned" compute2 nova-compute' in finding.remediation
    assert run.value(UP, **labels(COMPUTE, "compute2")) == 0
    assert run.value(UP, **labels(COMPUTE, "compute1")) == 1
    assert run.summary == "4 services, 1 down, 0 stuck build(s)"


def test_a_down_compute_is_critical_even_when_other_computes_are_up() -> None:
    computes = [svc(host=f"compute{i}") for i in range(5)] + [svc(host="compute9", up=False)]
    [finding] = judged(view(*computes)).findings
    assert finding.severity is Severity.CRITICAL


def test_without_a_heartbeat_age_or_a_place_the_message_leaves_them_out() -> None:
    """The API source knows neither the cell nor the heartbeat age."""
    down = Svc(COMPUTE, "compute2", zone="", up=False)
    [finding] = judged(view(down)).findings
    assert finding.message.startswith("nova-compute on compute2 is down but enabled: servers")


@pytest.mark.parametrize("reason,severity,status", [
    ("kernel upgrade TICKET-42", Severity.INFO, Status.OK),
    ("", Severity.WARNING, Status.WARNING),
])
def test_down_and_disabled_is_maintenance(reason: str, severity: Severity, status: Status) -> None:
    run = judged(view(*healthy(svc(host="compute2", up=False, enabled=False, disabled_reason=reason))))
    assert run.status is status
    [finding] = run.findings
    assert finding.severity is severity
    said = f'disabled with reason "{reason}"' if reason else "disabled, no reason"
    assert f"nova-compute on compute2 (zone nova, cell cell1) is down and {said}" in finding.message
    assert "looks like maintenance" in finding.message
    assert "openstack compute service set --enable compute2 nova-compute" in finding.remediation
    assert run.value(ENABLED, **labels(COMPUTE, "compute2")) == 0
    assert run.value(UP, **labels(COMPUTE, "compute2")) == 0


def test_disabled_but_up_is_no_finding() -> None:
    run = judged(view(*healthy(svc(host="compute2", enabled=False, disabled_reason="drain"))))
    assert run.status is Status.OK and run.findings == []
    assert run.value(ENABLED, **labels(COMPUTE, "compute2")) == 0


@pytest.mark.parametrize("enabled", [True, False])
def test_forced_down_is_a_warning_whatever_else(enabled: bool) -> None:
    fenced = svc(host="compute2", up=False, forced_down=True, enabled=enabled)
    run = judged(view(*healthy(fenced)))
    assert run.status is Status.WARNING
    [finding] = run.findings
    assert finding.severity is Severity.WARNING
    assert "nova-compute on compute2 (zone nova, cell cell1) is forced down by an operator" in finding.message
    assert "openstack compute service set --up compute2 nova-compute" in finding.remediation
    assert run.value(FORCED, **labels(COMPUTE, "compute2")) == 1


def test_state_nova_cannot_tell_is_a_warning_without_an_up_sample() -> None:
    run = judged(view(*healthy(svc(host="compute2", up=None, heartbeat_age=None))))
    assert run.status is Status.WARNING
    [finding] = run.findings
    assert finding.subject == "host compute2" and "nova cannot tell its state" in finding.message
    assert run.value(UP, **labels(COMPUTE, "compute2")) is None
    assert run.value(ENABLED, **labels(COMPUTE, "compute2")) == 1
    assert run.summary == "4 services, 0 down, 0 stuck build(s)"  # unknown is not counted down


@pytest.mark.parametrize("binary,consequence", [
    ("nova-conductor", "no nova-conductor is up in cell cell1: the computes of cell cell1 cannot reach its "
                       "database (their heartbeats stop, builds and server actions there hang)."),
    ("nova-scheduler", "no nova-scheduler is up: new builds hang."),
])
def test_only_copy_of_a_control_service_down_is_critical(binary: str, consequence: str) -> None:
    run = judged(view(*healthy(svc(binary, "ctl1", up=False, heartbeat_age=300.0))))
    assert run.status is Status.CRITICAL
    [finding] = run.findings
    assert finding.message == (f"{binary} on ctl1 (zone internal, cell cell1) is down (last heartbeat "
                               f"300 s ago); {consequence}")
    assert f"systemctl restart {binary}" in finding.remediation
    assert f"openstack compute service delete <id of {binary} on ctl1" in finding.remediation


@pytest.mark.parametrize("binary", ["nova-conductor", "nova-scheduler"])
def test_one_of_several_copies_down_is_a_warning(binary: str) -> None:
    run = judged(view(*healthy(svc(binary, "ctl2"), svc(binary, "ctl3"), svc(binary, "ctl1", up=False))))
    assert run.status is Status.WARNING
    [finding] = run.findings
    assert finding.subject == "host ctl1"
    assert f"; 2 other {binary} up{' in cell cell1' if binary == CONDUCTOR else ''}." in finding.message


def test_all_copies_down_each_is_critical() -> None:
    conductors = [svc("nova-conductor", h, up=False) for h in ("ctl1", "ctl2")]
    run = judged(view(*healthy(*conductors)))
    assert [f.severity for f in run.findings] == [Severity.CRITICAL, Severity.CRITICAL]
    assert all("no nova-conductor is up" in f.message for f in run.findings)


def test_a_control_copy_in_an_unknown_state_is_not_counted_up() -> None:
    unknown, down = svc("nova-conductor", "ctl2", up=None), svc("nova-conductor", "ctl1", up=False)
    run = judged(view(*healthy(unknown, down)))
    [down] = run.about("is down")
    assert down.severity is Severity.CRITICAL


def test_findings_come_sorted_by_binary_then_host() -> None:
    down = (svc(host="c2", up=False), svc(host="c1", up=False), svc("nova-conductor", "a", up=False))
    run = judged(view(*down))
    assert [f.subject for f in run.findings] == ["host c1", "host c2", "host a"]


def test_zone_labels_left_empty_without_the_grant_is_a_warning() -> None:
    v = view(svc(zone=""))
    v.zones, v.zones_denied = None, "database nova_api: access denied (SELECT on aggregate_hosts)"
    run = judged(v)
    assert run.status is Status.WARNING
    [finding] = run.findings
    assert finding.subject == "availability zones"
    assert finding.message == ("zone labels left empty: database nova_api: access denied "
                               "(SELECT on aggregate_hosts)")
    assert "GRANT SELECT ON nova_api.aggregate_hosts" in finding.remediation
    assert run.value(UP, binary=COMPUTE, host="compute1", zone="") == 1


def test_negative_heartbeat_age_is_exported_as_zero() -> None:
    run = judged(view(svc(heartbeat_age=-2.5)))
    assert run.value(HEARTBEAT, cell="cell1", binary=COMPUTE, host="compute1") == 0


# -- stuck builds -------------------------------------------------------------------


def stuck(uuid: str, age: float = 1200.0, host: str = "", forced: str = "", cell: str = "cell1") -> Stuck:
    return Stuck(uuid, host, cell, age, "scheduling", forced)


def stuck_findings(run: ProbeRun) -> list[Any]:
    return [f for f in run.findings if "stuck in BUILD" in f.message]


def test_build_forced_onto_a_dead_compute_names_it() -> None:
    services = healthy(svc(host="compute2", up=False))
    run = judged(view(*services, stuck=(stuck("u1", forced="compute2"),)))
    [finding] = stuck_findings(run)
    assert finding.severity is Severity.WARNING and finding.subject == "host compute2"
    assert finding.message == ("1 server(s) stuck in BUILD for over 1200 s: u1. Likely cause: "
                               "forced onto compute2 whose nova-compute is down.")
    assert "openstack server delete <uuid>" in finding.remediation
    assert run.value(STUCK, cell="cell1") == 1
    assert run.summary == "4 services, 1 down, 1 stuck build(s)"


def test_build_forced_onto_a_live_compute_points_at_its_log() -> None:
    [finding] = stuck_findings(judged(view(*healthy(), stuck=(stuck("u1", forced="compute2"),))))
    assert ("Likely cause: forced onto compute2, whose nova-compute reports up: look for the uuids "
            "in its log.") in finding.message


def test_build_on_a_host_whose_compute_died_says_on() -> None:
    services = healthy(svc(host="compute1", up=False))
    [finding] = stuck_findings(judged(view(*services, stuck=(stuck("u1", host="compute1", forced="x"),))))
    assert finding.subject == "host compute1"  # instance.host wins over the request's forced host
    assert "Likely cause: on compute1 whose nova-compute is down." in finding.message


def test_build_forced_onto_an_unknown_host() -> None:
    [finding] = stuck_findings(judged(view(*healthy(), stuck=(stuck("u1", forced="gone"),))))
    assert finding.subject == "host gone"
    assert "forced onto gone, whose nova-compute reports up" in finding.message


def test_unscheduled_build_names_the_dead_control_services() -> None:
    services = healthy(svc("nova-scheduler", "ctl1", up=False), svc("nova-conductor", "ctl1", up=False))
    run = judged(view(*services, stuck=(stuck("u1", cell=UNSCHEDULED),), cells=("cell1", UNSCHEDULED)))
    [finding] = stuck_findings(run)
    assert finding.subject == "servers not yet on a host"
    assert finding.message.endswith(
        "Likely cause: nova-conductor on ctl1 (cell cell1) is down; nova-scheduler on ctl1 is down.")
    assert run.value(STUCK, cell=UNSCHEDULED) == 1 and run.value(STUCK, cell="cell1") == 0


def test_unscheduled_build_without_any_dead_service_points_at_the_logs() -> None:
    [finding] = stuck_findings(judged(view(*healthy(), stuck=(stuck("u1", cell=UNSCHEDULED),))))
    assert finding.message.endswith(
        "Likely cause: never reached a compute: check the nova-scheduler and nova-conductor logs.")


def test_unscheduled_build_with_one_dead_compute_guesses_it() -> None:
    services = healthy(svc(host="compute2", up=False))
    [finding] = stuck_findings(judged(view(*services, stuck=(stuck("u1"),))))
    assert finding.message.endswith("Likely cause: probably forced onto compute2 whose nova-compute is down.")


def test_unscheduled_build_with_several_dead_computes_lists_them() -> None:
    services = healthy(svc(host="compute2", up=False), svc(host="compute1", up=False))
    [finding] = stuck_findings(judged(view(*services, stuck=(stuck("u1"),))))
    assert finding.message.endswith(
        "Likely cause: probably forced onto a host whose nova-compute is down: compute1, compute2.")


def test_stuck_list_is_capped_oldest_first_and_counted() -> None:
    builds = tuple(stuck(f"u{age}", age=float(age), forced="compute2") for age in (700, 1500, 900, 1100))
    run = judged(view(*healthy(svc(host="compute2", up=False)), stuck=builds), max_listed_servers=2)
    [finding] = stuck_findings(run)
    assert finding.message.startswith("4 server(s) stuck in BUILD for over 700 s: u1500, u1100 and 2 more.")
    assert run.value(STUCK, cell="cell1") == 4


def test_stuck_builds_are_grouped_per_host_and_counted_per_cell() -> None:
    builds = (stuck("a", forced="compute1"), stuck("b", forced="compute2", cell="cell2"),
              stuck("c", forced="compute2", cell="cell2"))
    run = judged(view(*healthy(), stuck=builds, cells=("cell1", "cell2")))
    assert [f.subject for f in stuck_findings(run)] == ["host compute1", "host compute2"]
    assert run.value(STUCK, cell="cell1") == 1 and run.value(STUCK, cell="cell2") == 2


def test_without_stuck_build_checks_no_stuck_metric() -> None:
    run = judged(view(*healthy(), cells=()))
    assert run.values(STUCK) == []


# -- rows and API objects -> plain data (nova's semantics) --------------------------


def row(age: float | None = 5.0, **kw: Any) -> dict[str, Any]:
    return {"binary": COMPUTE, "host": "compute1", "disabled": 0, "disabled_reason": None, "forced_down": 0,
            "age": age, **kw}


def from_db(r: dict[str, Any], down_time: float = 60.0, merge: bool = False,
            into: View | None = None, cell: Cell = CELL1) -> View:
    v = into or View()
    merge_db_service(v, cell, r, down_time, merge, zone_rule({}, "nova", "internal"))
    return v


def only(v: View, binary: str = COMPUTE, host: str = "compute1") -> Svc:
    [got] = [s for s in v.services if (s.binary, s.host) == (binary, host)]
    return got


@pytest.mark.parametrize("age,up", [
    (59.9, True), (60.0, True), (60.3, False),  # nova: abs(elapsed) <= service_down_time, a float
    (-30.0, True), (-90.0, False),  # a heartbeat from the future (clock skew) counts by its size
    (None, False),
])
def test_heartbeat_age_against_service_down_time(age: float | None, up: bool) -> None:
    got = only(from_db(row(age)))
    assert got.up is up
    assert got.heartbeat_age == age


def test_forced_down_row_is_down_with_a_fresh_heartbeat() -> None:
    got = only(from_db(row(1.0, forced_down=1)))
    assert got.up is False and got.forced_down


def test_db_row_fields() -> None:
    got = only(from_db(row(disabled=1, disabled_reason="rma")))
    assert (got.enabled, got.disabled_reason, got.cell, got.zone) == (False, "rma", "cell1", "nova")


@pytest.mark.parametrize("binary", ["nova-osapi_compute", "nova-metadata"])
def test_api_services_never_heartbeat_and_are_left_out(binary: str) -> None:
    assert from_db(row(None, binary=binary)).services == []


def test_with_source_both_the_api_verdict_stands_and_the_db_adds_cell_age_and_version() -> None:
    v = View(services=[Svc(COMPUTE, "compute1", zone="az1", up=True, uuid="u-1")])
    from_db(row(900.0, disabled=1, uuid="u-1", id=7, version=74), merge=True, into=v)
    got = only(v)
    assert (got.up, got.enabled, got.zone, got.cell, got.heartbeat_age) == (True, True, "az1", "cell1", 900.0)
    assert (got.row_id, got.uuid, got.version, got.in_cell0) == ("7", "u-1", 74, False)
    from_db(row(900.0, host="compute9"), merge=True, into=v)  # not in the API's list: the DB's verdict
    assert only(v, host="compute9").up is False


def test_with_source_both_rows_of_one_host_in_two_cells_find_their_own_api_entry() -> None:
    """os-services lists both conductors of ctl1 (one per cell) with their uuids as ids (2.53+)."""
    v = View(services=[Svc(CONDUCTOR, "ctl1", up=True, uuid="u-0"),
                       Svc(CONDUCTOR, "ctl1", up=False, uuid="u-1")])
    from_db(row(900.0, binary=CONDUCTOR, host="ctl1", uuid="u-1", id=3), merge=True, into=v)
    from_db(row(1.0, binary=CONDUCTOR, host="ctl1", uuid="u-0", id=3), merge=True, into=v, cell=CELL0)
    cells = {s.uuid: (s.cell, s.in_cell0, s.up) for s in v.services}
    assert cells == {"u-0": ("cell0", True, True), "u-1": ("cell1", False, False)}


def test_with_source_both_a_down_cell_entry_without_id_is_matched_by_binary_and_host() -> None:
    v = View(services=[Svc(COMPUTE, "compute1", up=None)])
    from_db(row(3.0, uuid="u-1", id=4), merge=True, into=v)
    assert len(v.services) == 1 and (only(v).cell, only(v).uuid, only(v).up) == ("cell1", "u-1", None)


def test_with_source_db_a_service_is_cell_binary_and_host() -> None:
    """One nova-conductor per cell on the same controller: two services, none hides the other."""
    v = from_db(row(5.0, binary=CONDUCTOR, host="ctl1"), cell=CELL0)
    from_db(row(900.0, binary=CONDUCTOR, host="ctl1"), into=v)
    assert sorted((s.cell, s.up) for s in v.services) == [("cell0", True), ("cell1", False)]


def test_zones_as_nova_labels_them() -> None:
    zones = zones_from_rows([{"host": "c2", "value": "az-gpu"}, {"host": "c2", "value": "az-east"},
                             {"host": "c3", "value": "az-east"}])
    assert zones == {"c2": "az-east,az-gpu", "c3": "az-east"}
    zone_of = zone_rule(zones, "nova", "internal")
    assert zone_of(COMPUTE, "c2") == "az-east,az-gpu"
    assert zone_of(COMPUTE, "c1") == "nova"  # in no AZ aggregate: default_availability_zone
    assert zone_of("nova-conductor", "c2") == "internal"  # internal_service_availability_zone
    assert zone_rule(None, "nova", "internal")(COMPUTE, "c2") == ""


@pytest.mark.parametrize("spec,host", [
    ('{"nova_object.data": {"force_hosts": ["compute2"]}}', "compute2"),
    ('{"nova_object.data": {"force_hosts": ["a", "b"]}}', ""),  # several: no single target
    ('{"nova_object.data": {"force_hosts": null}}', ""),
    ('{"nova_object.data": {}}', ""),
    ("[1, 2]", ""),
    ("not json", ""),
    (None, ""),
])
def test_forced_host_from_the_request_spec(spec: str | None, host: str) -> None:
    assert spec_forced_host(spec) == host


def api_service(**kw: Any) -> SimpleNamespace:
    fields = {"binary": COMPUTE, "host": "compute1", "availability_zone": "nova", "status": "enabled",
              "state": "up", "is_forced_down": False, "disabled_reason": None, **kw}
    return SimpleNamespace(**fields)


def test_api_service_fields() -> None:
    got = service_from_api(api_service(status="disabled", state="down", is_forced_down=True,
                                       disabled_reason="fenced"))
    assert got == Svc(COMPUTE, "compute1", zone="nova", enabled=False, up=False, forced_down=True,
                      disabled_reason="fenced")
    assert service_from_api(api_service()).up is True  # type: ignore[union-attr]


def test_api_service_in_an_unreachable_cell_has_no_state() -> None:
    got = service_from_api(api_service(status="UNKNOWN", state=None, availability_zone=None))
    assert got is not None and got.up is None and got.enabled and got.zone == ""


def test_api_service_rows_of_nova_api_are_left_out() -> None:
    assert service_from_api(api_service(binary="nova-osapi_compute")) is None


def test_builds_from_the_api_are_stuck_by_creation_time() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    def server(uuid: str, created: str | None, host: str | None = None) -> SimpleNamespace:
        return SimpleNamespace(id=uuid, created_at=created, compute_host=host, task_state="spawning")

    servers = [server("old", "2024-05-01T11:40:00Z", "compute1"), server("young", "2024-05-01T11:55:00Z"),
               server("naive", "2024-05-01T11:00:00"), server("none", None), server("bad", "yesterday")]
    got = stuck_from_api(servers, now, threshold=600)
    assert [(s.uuid, s.host, s.age, s.cell, s.task_state) for s in got] == [
        ("old", "compute1", 1200.0, "", "spawning"), ("naive", "", 3600.0, "", "spawning")]
    assert stuck_from_api(servers, now + timedelta(minutes=10), threshold=600)[1].uuid == "young"


# -- rows of binaries nova 34 no longer runs ------------------------------------------


@pytest.mark.parametrize("binary", ["nova-consoleauth", "nova-cert", "nova-network", "nova-console",
                                    "nova-xvpvncproxy", "nova-cells"])
def test_a_row_of_a_binary_nova_no_longer_runs_is_info_with_the_cleanup(binary: str) -> None:
    """An upgrade from an old release leaves these rows: nova-api lists them "down" forever."""
    left = svc(binary, "ctl1", up=False, heartbeat_age=9e6, row_id="12", uuid="0bs0-uuid", zone="internal")
    run = judged(view(*healthy(), left))
    assert run.status is Status.OK
    [finding] = run.findings
    assert finding.severity is Severity.INFO and finding.subject == "host ctl1"
    assert finding.message.startswith(f"{binary} on ctl1 (zone internal, cell cell1) [id 12, uuid "
                                      f"0bs0-uuid]: nova 34 no longer has a {binary}")
    assert "not an outage" in finding.message
    assert finding.remediation == ("delete the row: openstack --os-compute-api-version 2.53 compute service "
                                   "delete 0bs0-uuid")
    # No up/enabled series: NovaServiceDown / NovaServiceAllDown must not page for it.
    assert run.value(UP, binary=binary, host="ctl1", zone="internal") is None
    assert run.value(ENABLED, binary=binary, host="ctl1", zone="internal") is None
    assert run.value(PROBLEMS, kind="obsolete_service") == 1
    assert run.summary == "4 services, 0 down, 0 stuck build(s) (1 obsolete service)"


def test_obsolete_row_from_the_api_names_its_uuid() -> None:
    left = Svc("nova-consoleauth", "ctl1", zone="internal", up=False, uuid="abc-123")
    [finding] = judged(view(*healthy(), left)).findings
    assert "[uuid abc-123]" in finding.message and finding.remediation.endswith("delete abc-123")


# -- a service is (cell, binary, host) -----------------------------------------------


def two_conductors(cell0_up: bool, cell1_up: bool) -> list[Svc]:
    """The superconductor layout on one controller: the super-conductor in cell0, the cell's own
    conductor in cell1, and the scheduler in cell0 (devstack, kolla-ansible)."""
    return [svc(host="compute1"), svc(host="compute2"),
            svc(CONDUCTOR, "ctl1", cell="cell0", in_cell0=True, up=cell0_up, uuid="c0"),
            svc(CONDUCTOR, "ctl1", cell="cell1", up=cell1_up, uuid="c1"),
            svc("nova-scheduler", "ctl1", cell="cell0", in_cell0=True)]


def test_superconductor_layout_is_healthy() -> None:
    run = judged(view(*two_conductors(True, True)))
    assert run.status is Status.OK and run.findings == []
    assert run.value(CONDUCTORS, cell="cell0") == 1 and run.value(CONDUCTORS, cell="cell1") == 1
    assert run.value(UP, binary=CONDUCTOR, host="ctl1", zone="internal") == 1
    assert run.value(HEARTBEAT, cell="cell0", binary=CONDUCTOR, host="ctl1") == 5.0
    assert run.value(HEARTBEAT, cell="cell1", binary=CONDUCTOR, host="ctl1") == 5.0


def test_the_cell_conductor_down_is_not_hidden_by_the_super_conductor_on_the_same_host() -> None:
    run = judged(view(*two_conductors(cell0_up=True, cell1_up=False)))
    assert run.status is Status.CRITICAL
    [finding] = run.findings
    assert finding.subject == "host ctl1"
    assert finding.message == (
        "nova-conductor on ctl1 (zone internal, cell cell1) [uuid c1] is down (last heartbeat 5 s ago); "
        "no nova-conductor is up in cell cell1: the computes of cell cell1 cannot reach its database (their "
        "heartbeats stop, builds and server actions there hang).")
    assert finding.remediation.endswith("compute service delete c1")
    # Same (binary, host, zone) in two cells: the series shows the worst copy, the cells are apart.
    assert run.value(UP, binary=CONDUCTOR, host="ctl1", zone="internal") == 0
    assert run.value(CONDUCTORS, cell="cell0") == 1 and run.value(CONDUCTORS, cell="cell1") == 0


def test_the_super_conductor_down_is_critical_though_the_cell_conductor_is_up() -> None:
    run = judged(view(*two_conductors(cell0_up=False, cell1_up=True)))
    [finding] = run.findings
    assert finding.severity is Severity.CRITICAL
    assert ("no nova-conductor is up in cell0 (the super-conductor of the API level): new builds, resizes "
            "and migrations hang.") in finding.message
    assert run.value(UP, binary=CONDUCTOR, host="ctl1", zone="internal") == 0


def test_a_conductor_of_another_cell_does_not_stand_in() -> None:
    services = healthy(svc(CONDUCTOR, "ctl1", up=False), svc(CONDUCTOR, "ctl2", cell="cell2"))
    [finding] = judged(view(*services)).findings
    assert finding.severity is Severity.CRITICAL
    assert "no nova-conductor is up in cell cell1" in finding.message


def test_one_of_two_conductors_of_a_cell_down_is_a_warning_per_cell() -> None:
    services = healthy(svc(CONDUCTOR, "ctl1", up=False), svc(CONDUCTOR, "ctl2"),
                       svc(CONDUCTOR, "ctl1", cell="cell2", uuid="x"))
    [finding] = judged(view(*services)).findings
    assert finding.severity is Severity.WARNING
    assert "1 other nova-conductor up in cell cell1" in finding.message


def test_with_the_api_source_two_conductors_of_one_host_are_two_services() -> None:
    """os-services gives no cell: the conductors are one pool, but neither hides the other."""
    services = [Svc(COMPUTE, "compute1", zone="nova"),
                Svc(CONDUCTOR, "ctl1", zone="internal", uuid="u-0"),
                Svc(CONDUCTOR, "ctl1", zone="internal", up=False, uuid="u-1")]
    run = judged(view(*services))
    [finding] = run.findings
    assert finding.severity is Severity.WARNING
    assert finding.message.startswith("nova-conductor on ctl1 (zone internal) [uuid u-1] is down; "
                                      "1 other nova-conductor up.")
    assert run.value(UP, binary=CONDUCTOR, host="ctl1", zone="internal") == 0
    assert run.values(CONDUCTORS) == [({"cell": ""}, 1)]  # no cells known: one pool


def test_a_conductor_whose_cell_is_unknown_counts_every_conductor_up() -> None:
    services = healthy(Svc(CONDUCTOR, "ctl9", zone="internal", up=False))  # e.g. its cell unreadable
    [finding] = judged(view(*services)).findings
    assert finding.severity is Severity.WARNING and "1 other nova-conductor up." in finding.message


@pytest.mark.parametrize("copies,shown", [
    ({"up": True}, (0, 0, 0)),
    ({"up": False, "enabled": False}, (0, 0, 0)),
    ({"up": False, "forced_down": True}, (0, 1, 1)),
    ({"up": False}, (0, 1, 0)),
])
def test_a_series_shows_the_worst_copy_of_the_host(copies: dict[str, Any], shown: tuple[int, ...]) -> None:
    """The copy an alert must see: down while enabled, then fenced, then disabled and down."""
    others = [svc(CONDUCTOR, "ctl1", cell="cell0", in_cell0=True, up=False, enabled=False),
              svc(CONDUCTOR, "ctl1", cell="cell2", **copies)]
    run = judged(view(*healthy(), *others))
    labels = {"binary": CONDUCTOR, "host": "ctl1", "zone": "internal"}
    got = tuple(run.value(name, **labels) for name in (UP, ENABLED, FORCED))
    assert got == shown


# -- a nova-compute in cell0 ------------------------------------------------------------


def test_a_compute_registered_in_cell0_is_critical_naming_the_host_and_the_fix() -> None:
    lost = svc(host="compute9", cell="cell0", in_cell0=True, row_id="3", uuid="c9")
    v = view(*two_conductors(True, True), lost)
    v.cell0_read = True
    run = judged(v)
    assert run.status is Status.CRITICAL
    [finding] = run.findings
    assert finding.subject == "host compute9"
    assert finding.message.startswith("nova-compute on compute9 registered in cell0 [id 3, uuid c9] (up and "
                                      "enabled): cell0 only holds servers that failed to schedule")
    assert "[database] connection = cell0's database" in finding.message
    assert "point nova-compute on compute9 at its cell's message queue" in finding.remediation
    assert "compute service delete c9" in finding.remediation
    assert "discover_hosts" in finding.remediation and "map it again" not in finding.remediation
    assert run.value(PROBLEMS, kind="compute_in_cell0") == 1


def test_a_down_compute_in_cell0_is_a_warning_and_a_twin_in_its_cell_is_mapped_again() -> None:
    lost = svc(host="compute1", cell="cell0", in_cell0=True, up=False, uuid="c9")
    v = view(*healthy(), lost)
    v.cell0_read = True
    run = judged(v)
    [finding] = run.findings
    assert finding.severity is Severity.WARNING and "(down)" in finding.message
    assert "map it again at once with nova-manage cell_v2 discover_hosts --by-service" in finding.remediation


def test_cell0_not_read_gives_no_cell0_metric() -> None:
    assert judged(view(*healthy())).value(PROBLEMS, kind="compute_in_cell0") is None


# -- compute rows older than nova 34 accepts (nova-status upgrade check) --------------


def db_view(*services: Svc) -> View:
    v = view(*services)
    v.cells_read, v.cell0_read = ["cell0", "cell1"], True
    return v


def current(*extra: Svc) -> list[Svc]:
    """A nova 34 control plane: every service writes SERVICE_VERSION 74."""
    base = [dataclasses.replace(s, version=74, row_id="1", uuid=f"u-{s.host}") for s in healthy()]
    return base + list(extra)


@pytest.mark.parametrize("enabled", [True, False])
def test_an_old_compute_row_stops_the_control_plane_disabled_or_not(enabled: bool) -> None:
    old = svc(host="old1", version=52, row_id="9", uuid="o-1", up=False, heartbeat_age=9e7,
              enabled=enabled, disabled_reason="" if enabled else "decommissioned")
    run = judged(db_view(*current(old)))
    assert run.status is Status.CRITICAL
    [finding] = run.findings  # not also "down and disabled: maintenance"
    assert finding.severity is Severity.CRITICAL and finding.subject == "host old1"
    state = "enabled" if enabled else "disabled"
    assert finding.message == (
        f"nova-compute row of old1 (zone nova, cell cell1) [id 9, uuid o-1, {state}] has service version 52, "
        "older than nova 34 accepts (72, Gazpacho): nova-api, nova-conductor and the nova-computes of "
        "cell cell1 refuse to start while it exists. nova-status upgrade check, \"Older than N-1 computes\": "
        "Failure, \"Current Nova version does not support computes older than Gazpacho but the minimum "
        "compute service level in your system is 52 and the oldest supported service level is 72.\"")
    assert finding.remediation.startswith(
        "if old1 is retired: openstack --os-compute-api-version 2.53 compute service delete o-1 (nova also "
        "removes its compute nodes and resource provider); if it still runs, upgrade its nova-compute.")
    assert run.value(PROBLEMS, kind="too_old_compute") == 1


def test_compute_rows_at_the_oldest_supported_version_pass() -> None:
    run = judged(db_view(*current(svc(host="c72", version=72, uuid="x"))))
    assert run.status is Status.OK and run.findings == []
    assert run.value(PROBLEMS, kind="too_old_compute") == 0


@pytest.mark.parametrize("row,why", [
    ({"forced_down": True, "up": False}, "forced_down rows are left out of nova's minimum"),
    ({"version": 0}, "a cell whose minimum is 0 is left out (get_minimum_version_all_cells)"),
])
def test_rows_nova_leaves_out_of_the_minimum_are_no_blocker(row: dict[str, Any], why: str) -> None:
    old = svc(host="old1", **{"version": 52, "uuid": "o", **row})
    run = judged(db_view(*current(old)))
    assert not run.about("has service version"), why


def test_a_zero_version_row_hides_its_cells_old_rows_as_in_nova() -> None:
    rows = (svc(host="zero", version=0, uuid="z"), svc(host="old1", version=52, uuid="o"))
    assert not judged(db_view(*current(*rows))).about("has service version")
    # ... but not those of another cell
    run = judged(db_view(*current(svc(host="zero", version=0, uuid="z"),
                                  svc(host="old2", version=60, uuid="o2", cell="cell2"))))
    [finding] = run.about("has service version")
    assert finding.subject == "host old2" and "service level in your system is 60" in finding.message


def test_an_older_control_plane_gets_one_info_for_the_upgrade() -> None:
    services = [dataclasses.replace(s, version=70, uuid=f"u-{s.host}") for s in healthy()]
    services.append(svc(host="old1", version=61, row_id="4", uuid="o-1"))
    run = judged(db_view(*services))
    assert run.status is Status.OK
    [finding] = run.findings
    assert finding.severity is Severity.INFO and finding.subject == "nova-compute service versions"
    assert "an upgrade to it would fail" in finding.message
    assert "old1 (id 4, uuid o-1, version 61)" in finding.message
    assert run.value(PROBLEMS, kind="too_old_compute") == 0


def test_api_source_has_no_versions_and_no_version_metric() -> None:
    run = judged(view(*healthy()))
    assert run.value(PROBLEMS, kind="too_old_compute") is None


# -- a compute nova disabled itself ------------------------------------------------------


def test_a_compute_nova_disabled_itself_is_not_maintenance() -> None:
    """nova/virt/libvirt/driver.py _set_host_enabled: "AUTO: " + the reason, when libvirt goes away."""
    reason = "AUTO: Connection to libvirt lost: 1"
    run = judged(view(*healthy(svc(host="compute2", enabled=False, disabled_reason=reason))))
    assert run.status is Status.WARNING
    [finding] = run.findings
    assert finding.subject == "host compute2"
    assert "was disabled by nova itself, not by an operator" in finding.message
    assert "Connection to libvirt lost: 1" in finding.message
    assert "check libvirtd/virtqemud" in finding.remediation
    assert "do not enable it by hand" in finding.remediation
    assert run.value(PROBLEMS, kind="auto_disabled") == 1


def test_a_down_compute_nova_had_disabled_is_an_outage() -> None:
    reason = "AUTO: Connection to libvirt lost: 0"
    down = svc(host="compute2", up=False, enabled=False, disabled_reason=reason)
    [finding] = judged(view(*healthy(down))).findings
    assert finding.severity is Severity.CRITICAL and "not maintenance" in finding.message
    assert "systemctl restart nova-compute" in finding.remediation


def test_an_operator_reason_is_still_maintenance() -> None:
    run = judged(view(*healthy(svc(host="compute2", enabled=False, disabled_reason="AUTOMATION ticket 7"))))
    assert run.findings == [] and run.value(PROBLEMS, kind="auto_disabled") == 0


# -- cells that could not be read ----------------------------------------------------------


def test_an_unreadable_cell_is_named_and_the_rest_is_judged() -> None:
    v = view(*healthy(svc(host="compute2", up=False)))
    v.unreadable = {"cell2": "database cell cell2 at nova@db2:3306/nova_cell2: cannot connect"}
    run = judged(v)
    assert run.status is Status.CRITICAL  # compute2's outage is still reported
    [cell] = run.about("could not be read")
    assert cell.severity is Severity.WARNING and cell.subject == "cell cell2"
    assert "cannot connect" in cell.message and "backends.databases.cells.cell2" in cell.remediation
    assert run.summary.endswith("(cell(s) not read: cell2)")


def test_api_ids_are_kept_only_when_they_are_uuids() -> None:
    """From 2.53 os-services gives the uuid; an older integer id is a row id of some cell."""
    uid = "389b3808-4612-49a2-aa7c-15a9a18c2423"
    assert service_from_api(api_service(id=uid)).uuid == uid  # type: ignore[union-attr]
    assert service_from_api(api_service(id=7)).uuid == ""  # type: ignore[union-attr]
