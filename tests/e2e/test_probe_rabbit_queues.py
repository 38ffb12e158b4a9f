"""rabbit_queues end to end on the loopback lab: nova 34 and oslo.messaging 18.3.1, for real.

The lab runs one vhost for the API level and cell1 (devstack's single-broker layout):
nova-conductor, nova-scheduler and two nova-computes consume conductor, scheduler,
compute and compute.<host>. Faults (lab/healthd_lab/faults_queues.py):

- `conductor-stopped`: nova-conductor stopped (SIGTERM) while the computes run, then a server
  created through the API: nova-api's cast waits in `conductor` with 0 consumers, the server
  stays in BUILD / scheduling. The revert starts the conductor and deletes the server.
- `notifications-unread`: `driver = messagingv2` (format both) in nova.conf, the controller's
  services restarted, a server created and deleted: (versioned_)notifications.info grow with
  no consumer.
"""

from __future__ import annotations

from typing import Any

import pytest

from checks.rabbit_queues import RabbitQueuesProbe
from healthd.model import Severity, Status
from tests.helpers.probes import ProbeRun, lab_backends, run_probe

pytestmark = pytest.mark.e2e


def run(lab: dict[str, Any], state: dict[str, Any] | None = None, **settings: Any) -> ProbeRun:
    files = [lab["paths"]["nova_conf"].rsplit("/", 1)[0] + "/*.conf"]  # controller and computes
    return run_probe(RabbitQueuesProbe(RabbitQueuesProbe.Settings(files=files, **settings)),
                     lab_backends(lab), state)


def consumers(result: ProbeRun, queue: str) -> float | None:
    return next((v for labels, v in result.values("healthd_rabbit_queues_consumers")
                 if labels["queue"] == queue), None)


def test_healthy_lab_is_ok(lab: dict[str, Any]) -> None:
    result = run(lab)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    for queue in ("conductor", "scheduler", "compute", "compute.lab-compute1", "compute.lab-compute2"):
        assert (consumers(result, queue) or 0) >= 1, queue
    assert result.value("healthd_rabbit_queues_problems", kind="no_consumer") == 0


def test_conductor_stopped_is_critical_and_clears(lab: dict[str, Any], lab_api: Any) -> None:
    info = lab_api.inject("conductor-stopped")
    try:
        result = run(lab)
        assert result.status is Status.CRITICAL
        [finding] = result.about("queue conductor on", Severity.CRITICAL)
        assert "nova-conductor has no consumer on cell1's and the API-level broker" in finding.message
        assert "builds stay in scheduling" in finding.message
        assert "systemctl restart nova-conductor" in finding.remediation
        assert consumers(result, "conductor") == 0
        waiting = next(v for labels, v in result.values("healthd_rabbit_queues_messages")
                       if labels["queue"] == "conductor")
        assert waiting >= 1
        # nova agrees: the server is still in BUILD, never scheduled
        _, data = lab_api.Lab().api("compute", "GET", f"/servers/{info['server']}")
        assert data["server"]["status"] == "BUILD"
        assert data["server"]["OS-EXT-STS:task_state"] == "scheduling"
    finally:
        lab_api.revert("conductor-stopped")
    result = run(lab)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert (consumers(result, "conductor") or 0) >= 1


def test_unread_notifications_warn_and_clear(lab: dict[str, Any], lab_api: Any) -> None:
    info = lab_api.inject("notifications-unread")
    try:
        result = run(lab, notification_warning_messages=1)
        assert result.status is Status.WARNING, [f.as_dict() for f in result.findings]
        warned = {f.subject.split()[1]: f for f in result.findings if f.severity is Severity.WARNING}
        assert set(info["queues"]) <= set(warned), (info, warned)
        for finding in warned.values():
            assert "has no consumer" in finding.message and "nova.conf" in finding.message
            assert "driver = noop" in finding.remediation
        assert result.value("healthd_rabbit_queues_problems", kind="notifications_piling") == len(warned)
    finally:
        lab_api.revert("notifications-unread")
    result = run(lab, notification_warning_messages=1)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
