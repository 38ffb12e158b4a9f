"""The nova_services probe against real nova_api / cell databases (nova 34 schemas).

Heartbeats are written as nova writes them: Service.create then the report loop
(nova/servicegroup/drivers/db.py DbDriver._report_state -> service.save() ->
nova/db/main/api.py service_update, which sets last_seen_up when report_count
grows). A nova-compute that stops simply stops bumping last_seen_up, so "the
process died N seconds ago" is a row whose last_seen_up is N seconds old.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest

from checks.nova_services import NovaServicesProbe
from healthd.config import BackendsConfig
from healthd.connections import Backends
from healthd.model import Severity, Status
from tests.helpers.novadb import Deployment, NovaDB, utcnow
from tests.helpers.probes import ProbeRun, make_backends, run_probe
from tests.helpers.servers import free_port

DOWN_TIME = 60
STUCK = 300


class Nova:
    def __init__(self, novadb: NovaDB) -> None:
        self.novadb = novadb
        self.dep = Deployment(novadb, with_placement=False)
        self.dep.add_cell0()
        self.cell = self.dep.add_cell("cell1")

    def control_service(self, binary: str, host: str = "ctl1") -> None:
        """nova-conductor / nova-scheduler start: nova/service.py Service.start ->
        objects.Service.create (topic = binary minus 'nova-'), then the report loop."""
        now = utcnow()
        self.novadb.insert(
            self.cell.db,
            "services",
            {
                "created_at": now - timedelta(hours=1),
                "updated_at": now,
                "host": host,
                "binary": binary,
                "topic": binary.removeprefix("nova-"),
                "report_count": 10,
                "disabled": 0,
                "deleted": 0,
                "last_seen_up": now,
                "forced_down": 0,
                "version": 74,
                "uuid": str(uuid.uuid4()),
            },
        )

    def api_service(self, host: str = "ctl1") -> None:
        """nova-api under WSGI registers nova-osapi_compute but never heartbeats
        (nova/api/openstack/wsgi_app.py _setup_service -> Service.create, no report loop)."""
        then = utcnow() - timedelta(days=3)
        self.novadb.insert(
            self.cell.db,
            "services",
            {
                "created_at": then,
                "updated_at": then,
                "host": host,
                "binary": "nova-osapi_compute",
                "topic": None,
                "report_count": 0,
                "disabled": 0,
                "deleted": 0,
                "forced_down": 0,
                "version": 74,
                "uuid": str(uuid.uuid4()),
            },
        )

    def stop(self, binary: str, host: str, seconds_ago: int = 600) -> None:
        """The process died seconds_ago: its last heartbeat is that old."""
        self.novadb.exec(
            f"UPDATE `{self.cell.db}`.services SET last_seen_up = %s, updated_at = %s "
            "WHERE `binary` = %s AND host = %s",
            (utcnow() - timedelta(seconds=seconds_ago),) * 2 + (binary, host),
        )

    def start(self, binary: str, host: str) -> None:
        """The restarted service's first report (service_update with a bigger report_count)."""
        self.novadb.exec(
            f"UPDATE `{self.cell.db}`.services SET last_seen_up = %s, updated_at = %s, "
            "report_count = report_count + 1 WHERE `binary` = %s AND host = %s",
            (utcnow(), utcnow(), binary, host),
        )

    def disable(self, host: str, reason: str | None) -> None:
        """`openstack compute service set --disable --disable-reason R HOST nova-compute`
        (nova/api/openstack/compute/services.py _update -> service.save())."""
        self.novadb.exec(
            f"UPDATE `{self.cell.db}`.services SET disabled = 1, disabled_reason = %s, updated_at = %s "
            "WHERE `binary` = 'nova-compute' AND host = %s",
            (reason, utcnow(), host),
        )

    def boot_forced(self, host: str, minutes_ago: int = 20) -> str:
        """`openstack server create --availability-zone nova:HOST`, cast to a dead compute.

        nova/compute/api.py _provision_instances: RequestSpec with force_hosts=[HOST],
        saved in nova_api.request_specs (spec = the serialized object). The conductor
        (schedule_and_build_instances) creates the instance in the cell with vm_state
        building / task_state scheduling, deletes the build request and casts
        build_and_run_instance; instance.host is only set by the compute's claim, so it
        stays NULL when nobody consumes the cast.
        """
        inst = str(uuid.uuid4())
        then = utcnow() - timedelta(minutes=minutes_ago)
        spec = {
            "nova_object.name": "RequestSpec",
            "nova_object.namespace": "nova",
            "nova_object.version": "1.14",
            "nova_object.data": {
                "instance_uuid": inst,
                "force_hosts": [host],
                "force_nodes": None,
                "availability_zone": "nova",
                "num_instances": 1,
            },
        }
        self.novadb.insert(
            self.dep.api,
            "request_specs",
            {
                "created_at": then,
                "instance_uuid": inst,
                "spec": json.dumps(spec),
            },
        )
        self.novadb.insert(
            self.cell.db,
            "instances",
            {
                "created_at": then,
                "updated_at": then,
                "uuid": inst,
                "project_id": "p1",
                "user_id": "u1",
                "vm_state": "building",
                "task_state": "scheduling",
                "power_state": 0,
                "host": None,
                "availability_zone": "nova",
                "deleted": 0,
                "display_name": "stuck",
            },
        )
        return inst

    def pending_build_request(self, minutes_ago: int = 20) -> str:
        """A build the conductor never scheduled: nova/compute/api.py _provision_instances ->
        BuildRequest.create (nova_api.build_requests), nothing picked it up."""
        inst = str(uuid.uuid4())
        self.novadb.insert(
            self.dep.api,
            "build_requests",
            {
                "created_at": utcnow() - timedelta(minutes=minutes_ago),
                "project_id": "p1",
                "instance_uuid": inst,
                "instance": "{}",
            },
        )
        return inst

    def delete_instance(self, inst: str) -> None:
        """`openstack server delete`: the instance row is soft-deleted (deleted = id)."""
        self.novadb.exec(
            f"UPDATE `{self.cell.db}`.instances SET deleted = id, deleted_at = %s, "
            "vm_state = 'deleted', task_state = NULL WHERE uuid = %s",
            (utcnow(), inst),
        )

    def config(self) -> dict[str, Any]:
        return self.dep.backends_config()


@pytest.fixture
def nova(novadb: NovaDB) -> Nova:
    n = Nova(novadb)
    n.control_service("nova-conductor")
    n.control_service("nova-scheduler")
    n.api_service()
    n.dep.add_compute(n.cell, "compute1")
    n.dep.add_compute(n.cell, "compute2")
    return n


def run(config: dict[str, Any], **settings: Any) -> ProbeRun:
    settings = {"source": "db", "service_down_time": DOWN_TIME, "stuck_build_seconds": STUCK, **settings}
    backends = Backends(BackendsConfig.model_validate(config))
    return run_probe(NovaServicesProbe(NovaServicesProbe.Settings(**settings)), backends)


def zone(binary: str) -> str:
    """nova's own labels: computes in no AZ aggregate are in "nova", the rest in "internal"."""
    return "nova" if binary == "nova-compute" else "internal"


def up(result: ProbeRun, host: str, binary: str = "nova-compute") -> float | None:
    return result.value("healthd_nova_services_up", binary=binary, host=host, zone=zone(binary))


def heartbeat(result: ProbeRun, host: str, binary: str = "nova-compute") -> float | None:
    return result.value("healthd_nova_services_heartbeat_age_seconds", cell="cell1", binary=binary, host=host)


def test_healthy_cell_is_ok(nova: Nova) -> None:
    result = run(nova.config())
    assert result.status is Status.OK, result.findings
    assert result.findings == []
    for host in ("compute1", "compute2"):
        assert up(result, host) == 1
        age = heartbeat(result, host)
        assert age is not None and age < DOWN_TIME
    # nova-api never heartbeats; like nova's os-services API the probe leaves it out.
    assert up(result, "ctl1", "nova-osapi_compute") is None
    assert up(result, "ctl1", "nova-conductor") == 1
    assert result.value("healthd_nova_services_stuck_instances", cell="cell1") == 0


def test_compute_down_is_critical_then_clears(nova: Nova) -> None:
    nova.stop("nova-compute", "compute2")
    result = run(nova.config())
    assert result.status is Status.CRITICAL
    [finding] = result.findings
    assert finding.subject == "host compute2"
    assert "nova-compute on compute2" in finding.message and "down but enabled" in finding.message
    assert "systemctl restart nova-compute" in finding.remediation
    assert "openstack compute service set --disable" in finding.remediation
    assert up(result, "compute2") == 0
    assert up(result, "compute1") == 1
    age = heartbeat(result, "compute2")
    assert age is not None and age >= 600

    nova.start("nova-compute", "compute2")
    cleared = run(nova.config())
    assert cleared.status is Status.OK and cleared.findings == []
    assert up(cleared, "compute2") == 1


def test_service_down_time_setting_is_used(nova: Nova) -> None:
    nova.stop("nova-compute", "compute2", seconds_ago=30)
    assert run(nova.config()).status is Status.OK  # 30 s < 60 s
    short = run(nova.config(), service_down_time=10)
    assert short.status is Status.CRITICAL and short.findings[0].subject == "host compute2"


def test_a_fraction_of_a_second_past_down_time_is_down_as_in_nova(nova: Nova) -> None:
    """Nova's DbDriver.is_up compares utcnow() (microseconds) with last_seen_up (whole
    seconds): DOWN_TIME + 0.3 s is down. Rounding the age to whole seconds said "up" here,
    right when nova's own API had just turned the service down (seen in CI)."""
    while True:  # start early in a second, so the probe runs before the next one begins
        now = nova.novadb.query("SELECT UTC_TIMESTAMP(6) AS now")[0]["now"]
        if 0.3 <= now.microsecond / 1e6 <= 0.5:
            break
        time.sleep(0.05)
    heartbeat_at = now.replace(microsecond=0) - timedelta(seconds=DOWN_TIME)
    nova.novadb.exec(
        f"UPDATE `{nova.cell.db}`.services SET last_seen_up = %s WHERE host = 'compute2'", (heartbeat_at,)
    )
    result = run(nova.config())
    assert up(result, "compute2") == 0, heartbeat(result, "compute2")
    age = heartbeat(result, "compute2")
    assert age is not None and DOWN_TIME < age < DOWN_TIME + 5


def test_zones_come_from_aggregates_as_in_nova(nova: Nova) -> None:
    """`openstack aggregate create --zone az-east rack1; openstack aggregate add host rack1
    compute2`: nova reports compute2 in az-east; two AZ aggregates join with ','."""
    novadb, api = nova.novadb, nova.dep.api
    for name, az in (("rack1", "az-east"), ("gpu", "az-gpu")):
        now = utcnow()
        agg = novadb.insert(api, "aggregates", {"created_at": now, "uuid": str(uuid.uuid4()), "name": name})
        novadb.insert(api, "aggregate_metadata", {"created_at": now, "aggregate_id": agg,
                                                  "key": "availability_zone", "value": az})
        novadb.insert(api, "aggregate_hosts", {"created_at": now, "host": "compute2", "aggregate_id": agg})
        if name == "rack1":
            result = run(nova.config())
            assert result.value("healthd_nova_services_up", binary="nova-compute", host="compute2",
                                zone="az-east") == 1
    result = run(nova.config())
    assert result.value("healthd_nova_services_up", binary="nova-compute", host="compute2",
                        zone="az-east,az-gpu") == 1
    assert up(result, "compute1") == 1  # no aggregate: default_availability_zone
    assert up(result, "ctl1", "nova-conductor") == 1  # "internal"
    renamed = run(nova.config(), default_availability_zone="zone0", internal_service_availability_zone="ctl")
    up_metric = "healthd_nova_services_up"
    assert renamed.value(up_metric, binary="nova-compute", host="compute1", zone="zone0") == 1
    assert renamed.value(up_metric, binary="nova-conductor", host="ctl1", zone="ctl") == 1


def test_disabled_for_maintenance_is_not_an_outage(nova: Nova) -> None:
    nova.disable("compute2", "kernel upgrade TICKET-42")
    nova.stop("nova-compute", "compute2")
    result = run(nova.config())
    assert result.status is Status.OK
    [finding] = result.findings
    assert finding.severity is Severity.INFO and "kernel upgrade TICKET-42" in finding.message
    labels = {"binary": "nova-compute", "host": "compute2", "zone": "nova"}
    assert result.value("healthd_nova_services_enabled", **labels) == 0
    assert up(result, "compute2") == 0
    nova.disable("compute2", None)  # disabled without a reason: somebody should say why
    assert run(nova.config()).status is Status.WARNING


def test_forced_down_is_reported_as_such(nova: Nova) -> None:
    # `openstack compute service set --down compute2 nova-compute` (API 2.11 force-down).
    nova.novadb.exec(
        f"UPDATE `{nova.cell.db}`.services SET forced_down = 1 WHERE host = 'compute2' "
        "AND `binary` = 'nova-compute'"
    )
    result = run(nova.config())
    [finding] = result.findings
    assert finding.severity is Severity.WARNING and "forced down" in finding.message
    assert "openstack compute service set --up compute2 nova-compute" in finding.remediation
    assert (
        result.value("healthd_nova_services_forced_down", binary="nova-compute", host="compute2", zone="nova")
        == 1
    )
    assert up(result, "compute2") == 0


def test_one_of_two_conductors_down_is_warning_all_down_critical(nova: Nova) -> None:
    nova.control_service("nova-conductor", host="ctl2")
    nova.stop("nova-conductor", "ctl1")
    assert run(nova.config()).status is Status.WARNING
    nova.stop("nova-conductor", "ctl2")
    result = run(nova.config())
    assert result.status is Status.CRITICAL
    assert all("no nova-conductor is up" in f.message for f in result.findings)


def test_build_forced_onto_dead_compute_is_reported_with_cause(nova: Nova) -> None:
    nova.stop("nova-compute", "compute2")
    inst = nova.boot_forced("compute2")
    fresh = nova.boot_forced("compute2", minutes_ago=1)  # under the threshold: not stuck yet
    result = run(nova.config())
    stuck = [f for f in result.findings if "stuck in BUILD" in f.message]
    assert len(stuck) == 1
    assert inst in stuck[0].message and fresh not in stuck[0].message
    assert "forced onto compute2 whose nova-compute is down" in stuck[0].message
    assert result.value("healthd_nova_services_stuck_instances", cell="cell1") == 1

    nova.start("nova-compute", "compute2")
    nova.delete_instance(inst)
    nova.delete_instance(fresh)
    cleared = run(nova.config())
    assert cleared.status is Status.OK and cleared.findings == []
    assert cleared.value("healthd_nova_services_stuck_instances", cell="cell1") == 0


def test_unscheduled_build_names_the_dead_scheduler(nova: Nova) -> None:
    nova.stop("nova-scheduler", "ctl1")
    inst = nova.pending_build_request()
    result = run(nova.config())
    [stuck] = [f for f in result.findings if "stuck in BUILD" in f.message]
    assert inst in stuck.message and "nova-scheduler on ctl1 is down" in stuck.message
    assert result.value("healthd_nova_services_stuck_instances", cell="(none)") == 1


def test_stuck_list_is_capped_but_counted(nova: Nova) -> None:
    nova.stop("nova-compute", "compute2")
    for _ in range(4):
        nova.boot_forced("compute2")
    result = run(nova.config(), max_listed_servers=2)
    [stuck] = [f for f in result.findings if "stuck in BUILD" in f.message]
    assert "and 2 more" in stuck.message
    assert result.value("healthd_nova_services_stuck_instances", cell="cell1") == 4


def test_password_never_leaves_the_probe(nova: Nova) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    api, cell = nova.dep.api, nova.cell.db
    user = nova.novadb.create_user(
        "novasvc",
        canary,
        [
            f"SELECT ON `{api}`.`cell_mappings`",
            f"SELECT ON `{api}`.`build_requests`",
            f"SELECT ON `{api}`.`request_specs`",
            f"SELECT ON `{api}`.`aggregate_hosts`",
            f"SELECT ON `{api}`.`aggregate_metadata`",
            f"SELECT ON `{cell}`.`services`",
            f"SELECT ON `{cell}`.`instances`",
        ],
    )
    nova.stop("nova-compute", "compute2")
    nova.boot_forced("compute2")
    cfg = {
        "databases": {
            "nova_api": {"url": NovaDB.url(api, user=user), "password": canary},
            "cells": {"cell1": {"url": NovaDB.url(cell, user=user), "password": canary}},
        }
    }
    result = run(cfg)
    assert result.status is Status.CRITICAL, result.summary  # the grants above are enough
    cfg["databases"]["cells"]["cell1"]["password"] = canary + "x"
    wrong = run(cfg)
    assert wrong.status is Status.UNKNOWN and "access denied" in wrong.summary
    for r in (result, wrong):
        assert canary not in r.everything() + json.dumps(r.result.as_dict())


def test_nova_api_database_down_is_unknown() -> None:
    cfg = {"databases": {"nova_api": {"url": f"mysql+pymysql://root@127.0.0.1:{free_port()}/nova_api"}}}
    result = run(cfg)
    assert result.status is Status.UNKNOWN and "database nova_api" in result.summary
    assert "cannot connect" in result.summary


def test_cell_database_down_is_unknown(nova: Nova) -> None:
    port = free_port()
    result = run(nova.dep.backends_config(cell1={"url": f"mysql+pymysql://root@127.0.0.1:{port}/x"}))
    assert result.status is Status.UNKNOWN and "database cells.cell1 at" in result.summary


def test_api_source_without_cloud_is_unknown() -> None:
    result = run_probe(NovaServicesProbe(), make_backends())
    assert result.status is Status.UNKNOWN and "no OpenStack cloud configured" in result.summary


# -- issue 12: cells, old rows, rows nova itself wrote ------------------------------------


def findings_about(result: ProbeRun, text: str) -> list[Any]:
    return result.about(text)


def test_superconductor_in_cell0_each_conductor_judged_in_its_cell(nova: Nova) -> None:
    """The superconductor layout (devstack, kolla-ansible): the super-conductor and a scheduler
    register in cell0's database, the cell conductor in cell1's, on the same controller."""
    cell0 = nova.dep.cells["cell0"]
    nova.dep.add_service(cell0, "nova-conductor", "ctl1")
    nova.dep.add_service(cell0, "nova-scheduler", "ctl1")
    healthy = run(nova.config())
    assert healthy.status is Status.OK, healthy.findings
    assert healthy.value("healthd_nova_services_conductors_up", cell="cell0") == 1
    assert healthy.value("healthd_nova_services_conductors_up", cell="cell1") == 1
    for cell in ("cell0", "cell1"):
        age = healthy.value("healthd_nova_services_heartbeat_age_seconds", cell=cell, binary="nova-conductor",
                            host="ctl1")
        assert age is not None and age < DOWN_TIME
    assert healthy.value("healthd_nova_services_problems", kind="compute_in_cell0") == 0

    nova.stop("nova-conductor", "ctl1")  # the cell1 conductor only: the one in cell0 still reports
    result = run(nova.config())
    assert result.status is Status.CRITICAL
    [finding] = findings_about(result, "nova-conductor on ctl1")
    assert "(zone internal, cell cell1)" in finding.message
    assert "no nova-conductor is up in cell cell1" in finding.message
    assert up(result, "ctl1", "nova-conductor") == 0  # the (binary, host, zone) series: worst copy
    assert result.value("healthd_nova_services_conductors_up", cell="cell1") == 0
    assert result.value("healthd_nova_services_conductors_up", cell="cell0") == 1

    nova.start("nova-conductor", "ctl1")
    assert run(nova.config()).status is Status.OK
    nova.novadb.exec(f"UPDATE `{cell0.db}`.services SET last_seen_up = %s WHERE `binary` = 'nova-conductor'",
                     (utcnow() - timedelta(minutes=10),))
    result = run(nova.config())
    [finding] = findings_about(result, "nova-conductor on ctl1")
    assert finding.severity is Severity.CRITICAL and "(zone internal, cell cell0)" in finding.message
    assert "in cell0 (the super-conductor of the API level)" in finding.message


def test_compute_registered_in_cell0_is_critical_and_clears_after_the_cleanup(nova: Nova) -> None:
    """A nova-compute whose conductor writes to cell0 (its transport_url reaches the super-conductor)."""
    cell0 = nova.dep.cells["cell0"]
    row = nova.dep.add_service(cell0, "nova-compute", "compute9")
    result = run(nova.config())
    assert result.status is Status.CRITICAL
    [finding] = findings_about(result, "compute9")
    assert finding.subject == "host compute9"
    assert f"registered in cell0 [id {row['id']}, uuid {row['uuid']}] (up and enabled)" in finding.message
    assert f"compute service delete {row['uuid']}" in finding.remediation
    assert result.value("healthd_nova_services_problems", kind="compute_in_cell0") == 1
    nova.dep.delete_service(cell0, row["id"])
    cleared = run(nova.config())
    assert cleared.status is Status.OK and cleared.findings == []
    assert cleared.value("healthd_nova_services_problems", kind="compute_in_cell0") == 0


def test_old_compute_row_blocks_the_upgrade_disabled_or_not_until_deleted(nova: Nova) -> None:
    """A Victoria compute (SERVICE_VERSION_ALIASES['Victoria'] = 52) retired with `openstack compute
    service set --disable` instead of a delete: its row stays, non-deleted."""
    row = nova.dep.add_service(nova.cell, "nova-compute", "old-compute", version=52,
                               silent=timedelta(days=400), age=timedelta(days=1500), disabled=1,
                               disabled_reason="decommissioned")
    result = run(nova.config())
    assert result.status is Status.CRITICAL
    [finding] = result.findings  # the blocker, not also "down and disabled: maintenance"
    assert finding.subject == "host old-compute"
    assert f"[id {row['id']}, uuid {row['uuid']}, disabled] has service version 52" in finding.message
    assert "nova-api, nova-conductor and the nova-computes of cell cell1 refuse to start" in finding.message
    assert "minimum compute service level in your system is 52" in finding.message
    assert f"compute service delete {row['uuid']}" in finding.remediation
    assert result.value("healthd_nova_services_problems", kind="too_old_compute") == 1
    # the down + disabled row alone would be maintenance (INFO); the version makes it a blocker
    nova.dep.delete_service(nova.cell, row["id"])
    cleared = run(nova.config())
    assert cleared.status is Status.OK and cleared.findings == []
    assert cleared.value("healthd_nova_services_problems", kind="too_old_compute") == 0


def test_forced_down_old_row_is_no_blocker_as_in_nova(nova: Nova) -> None:
    nova.dep.add_service(nova.cell, "nova-compute", "old-compute", version=52, silent=timedelta(days=400),
                         forced_down=1)
    result = run(nova.config())
    assert not findings_about(result, "has service version")
    assert result.value("healthd_nova_services_problems", kind="too_old_compute") == 0


def test_row_of_a_binary_nova_no_longer_runs_is_info(nova: Nova) -> None:
    """nova-consoleauth was removed in Train; an upgraded cloud keeps its row, 'down' for ever."""
    row = nova.dep.add_service(nova.cell, "nova-consoleauth", "ctl1", version=35, silent=timedelta(days=900))
    result = run(nova.config())
    assert result.status is Status.OK
    [finding] = result.findings
    assert finding.severity is Severity.INFO and "nova-consoleauth on ctl1" in finding.message
    assert finding.remediation.endswith(f"compute service delete {row['uuid']}")
    assert up(result, "ctl1", "nova-consoleauth") is None
    assert result.value("healthd_nova_services_problems", kind="obsolete_service") == 1


def test_compute_nova_disabled_itself_is_not_maintenance(nova: Nova) -> None:
    """nova/virt/libvirt/driver.py _set_host_enabled(False, 'Connection to libvirt lost: 1')."""
    nova.disable("compute2", "AUTO: Connection to libvirt lost: 1")
    result = run(nova.config())
    assert result.status is Status.WARNING
    [finding] = result.findings
    assert "disabled by nova itself" in finding.message
    assert result.value("healthd_nova_services_problems", kind="auto_disabled") == 1


def test_stuck_build_age_counts_from_creation_like_the_api(nova: Nova) -> None:
    """A build the compute touched recently (updated_at) is still stuck by its creation time, as
    nova's instance_build_timeout counts it and as the API source sees it."""
    inst = nova.boot_forced("compute2", minutes_ago=20)
    nova.novadb.exec(f"UPDATE `{nova.cell.db}`.instances SET updated_at = %s, task_state = 'spawning' "
                     "WHERE uuid = %s", (utcnow(), inst))
    fresh = nova.boot_forced("compute2", minutes_ago=1)
    result = run(nova.config())
    [stuck] = [f for f in result.findings if "stuck in BUILD" in f.message]
    assert inst in stuck.message and fresh not in stuck.message


def test_one_unreachable_cell_is_named_the_others_are_judged(nova: Nova) -> None:
    nova.dep.add_cell("cell2")
    nova.stop("nova-compute", "compute2")
    port = free_port()
    result = run(nova.dep.backends_config(cell2={"url": f"mysql+pymysql://root@127.0.0.1:{port}/x"}))
    assert result.status is Status.CRITICAL  # compute2 in cell1 is still judged
    assert findings_about(result, "nova-compute on compute2")
    [cell] = findings_about(result, "could not be read")
    assert cell.subject == "cell cell2" and "cannot connect" in cell.message
    assert "cell(s) not read: cell2" in result.summary


def test_without_the_cell0_grant_cell0_is_named_not_unknown(nova: Nova) -> None:
    api, cell = nova.dep.api, nova.cell.db
    user = nova.novadb.create_user("nocell0", "pw", [
        f"SELECT ON `{api}`.`cell_mappings`", f"SELECT ON `{api}`.`build_requests`",
        f"SELECT ON `{api}`.`request_specs`", f"SELECT ON `{api}`.`aggregate_hosts`",
        f"SELECT ON `{api}`.`aggregate_metadata`", f"SELECT ON `{cell}`.`services`",
        f"SELECT ON `{cell}`.`instances`",
    ])
    cfg = {"databases": {
        "nova_api": {"url": NovaDB.url(api, user=user), "password": "pw"},
        "cells": {name: {"url": NovaDB.url(c.db, user=user), "password": "pw"}
                  for name, c in nova.dep.cells.items()},
    }}
    result = run(cfg)
    assert result.status is Status.WARNING
    [finding] = result.findings
    assert finding.subject == "cell cell0" and "access denied" in finding.message
    assert up(result, "compute1") == 1
    assert result.value("healthd_nova_services_problems", kind="compute_in_cell0") is None
