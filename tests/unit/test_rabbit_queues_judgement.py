"""rabbit_queues: the judgement on plain data (no broker, no database)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from checks.rabbit_queues import (
    Broker,
    QueueState,
    RabbitQueuesProbe,
    Svc,
    View,
    _read_files,
    _services,
    _topics,
    judge,
)
from healthd.model import Report, Severity
from healthd.openstack import oslo_ini
from healthd.openstack.cells import Cell

S = RabbitQueuesProbe.Settings


def broker(cells: list[str] | None = None, api: bool = True) -> Broker:
    return Broker("10.0.0.5:5672/nova", ("10.0.0.5:5672",), "nova", "openstack",
                  cells=cells if cells is not None else ["cell1"], api=api)


def run(view: View, state: dict[str, Any] | None = None, **settings: Any) -> Report:
    report = Report("rabbit_queues", RabbitQueuesProbe.metrics)
    judge(view, S(**settings), report, state if state is not None else {})
    return report


def value(report: Report, name: str, **labels: str) -> float | None:
    for s in report.samples:
        if s.name == name and dict(s.labels) == labels:
            return s.value
    return None


def add(b: Broker, name: str, kind: str, state: QueueState, *svcs: Svc, host: str = "",
        always: bool = False) -> None:
    want = b.want(name, kind, host)
    want.consumers.extend(svcs)
    want.always_needed = always
    b.states[name] = state


CTL = Svc("cell1", "nova-conductor", "ctl1")
SCH = Svc("cell1", "nova-scheduler", "ctl1")
CMP = Svc("cell1", "nova-compute", "cmp1")


def healthy(b: Broker) -> None:
    add(b, "conductor", "conductor", QueueState(True, 0, 2), CTL, always=True)
    add(b, "scheduler", "scheduler", QueueState(True, 0, 2), SCH, always=True)
    add(b, "compute", "compute", QueueState(True, 0, 1), CMP)
    add(b, "compute.cmp1", "compute_host", QueueState(True, 0, 1), CMP, host="cmp1")


def test_healthy_is_ok_with_metrics() -> None:
    b = broker()
    healthy(b)
    report = run(View([b]))
    assert report.status().name == "OK" and not report.findings
    labels = {"broker": "10.0.0.5:5672/nova", "cell": "cell1,api", "kind": "conductor", "queue": "conductor"}
    assert value(report, "healthd_rabbit_queues_consumers", **labels) == 2
    assert value(report, "healthd_rabbit_queues_problems", kind="no_consumer") == 0


def test_conductor_without_consumer_is_critical_with_service_and_host() -> None:
    b = broker(["cell1"], api=False)
    healthy(b)
    b.states["conductor"] = QueueState(True, 7, 0)
    report = run(View([b]))
    [f] = [f for f in report.findings if f.severity is Severity.CRITICAL]
    assert "nova-conductor has no consumer on cell1's broker" in f.message
    assert "builds stay in scheduling" in f.message and "7 message(s)" in f.message
    assert "on ctl1: systemctl restart nova-conductor" in f.remediation


def test_missing_fixed_queue_with_service_up_means_another_vhost() -> None:
    b = broker()
    healthy(b)
    b.states["scheduler"] = QueueState(False)
    report = run(View([b]))
    [f] = [f for f in report.findings if f.severity is Severity.CRITICAL]
    assert "another broker or vhost" in f.message
    assert value(report, "healthd_rabbit_queues_problems", kind="missing") == 1


def test_compute_host_rules() -> None:
    b = broker()
    healthy(b)
    down = Svc("cell1", "nova-compute", "cmp2", up=False, age=900)
    off = Svc("cell1", "nova-compute", "cmp3", enabled=False)
    gone = Svc("cell1", "nova-compute", "cmp4", deleted=True, up=False, age=9e5)
    upmissing = Svc("cell1", "nova-compute", "cmp5")
    add(b, "compute.cmp2", "compute_host", QueueState(True, 3, 0), down, host="cmp2")
    add(b, "compute.cmp3", "compute_host", QueueState(True, 0, 0), off, host="cmp3")
    add(b, "compute.cmp4", "compute_host", QueueState(True, 1, 0), gone, host="cmp4")
    add(b, "compute.cmp5", "compute_host", QueueState(False), upmissing, host="cmp5")
    # a down compute whose queue is gone (broker restarted): nothing to say
    add(b, "compute.cmp6", "compute_host", QueueState(False),
        Svc("cell1", "nova-compute", "cmp6", up=False), host="cmp6")
    report = run(View([b]))
    by = {f.subject.split()[1]: f for f in report.findings}
    assert by["compute.cmp2"].severity is Severity.INFO and "down (last heartbeat 900 s ago)" in \
        by["compute.cmp2"].message
    assert by["compute.cmp3"].severity is Severity.INFO
    assert by["compute.cmp4"].severity is Severity.INFO and "delete_queue -p nova compute.cmp4" in \
        by["compute.cmp4"].remediation
    assert by["compute.cmp5"].severity is Severity.CRITICAL
    assert "compute.cmp6" not in by
    assert value(report, "healthd_rabbit_queues_problems", kind="stale_compute_queue") == 3


def test_shared_compute_queue_needs_a_compute_that_is_up() -> None:
    b = broker()
    add(b, "compute", "compute", QueueState(True, 4, 0), Svc("cell1", "nova-compute", "cmp1", up=False))
    assert not run(View([b])).findings  # every compute down: nova_services says so
    b.wants["compute"].consumers.append(CMP)
    [f] = run(View([b])).findings
    assert f.severity is Severity.CRITICAL and "nova-compute has no consumer" in f.message


def test_piling_by_threshold_and_by_growth() -> None:
    b = broker()
    healthy(b)
    b.states["conductor"] = QueueState(True, 150, 2)
    report = run(View([b]))
    [f] = report.findings
    assert f.severity is Severity.WARNING and "150 message(s) pile up" in f.message
    state: dict[str, Any] = {}
    statuses = []
    for n in (5, 12, 20, 30, 31):
        b.states["conductor"] = QueueState(True, n, 2)
        statuses.append(bool(run(View([b]), state, growth_runs=3, growth_min_messages=10).findings))
    assert statuses == [False, False, False, True, True]
    b.states["conductor"] = QueueState(True, 31, 2)  # stopped growing: below the threshold, fine
    assert not run(View([b]), state, growth_runs=3).findings


def test_notifications_without_consumer() -> None:
    b = broker()
    healthy(b)
    want = b.want("notifications.info", "notifications")
    want.files.append("/etc/nova/nova.conf")
    b.states["notifications.info"] = QueueState(True, 10, 0)
    state: dict[str, Any] = {}
    assert not run(View([b]), state).findings  # first sight, below the size threshold
    b.states["notifications.info"] = QueueState(True, 12, 0)
    [f] = run(View([b]), state).findings
    assert f.severity is Severity.WARNING and "driver = noop" in f.remediation
    assert "max-length" in f.remediation
    b.states["notifications.info"] = QueueState(True, 5000, 0)
    assert run(View([b]), {}).findings  # big enough on its own
    b.states["notifications.info"] = QueueState(True, 0, 0)
    assert not run(View([b]), {}).findings
    b.states["notifications.info"] = QueueState(True, 5000, 1)  # a consumer that cannot keep up
    [f] = run(View([b]), {}).findings
    assert "too slow" in f.message


def test_broker_error_is_a_warning_and_metric() -> None:
    b = broker()
    healthy(b)
    b.error = "AMQP 10.0.0.5:5672: connection refused"
    report = run(View([b]))
    [f] = report.findings
    assert f.severity is Severity.WARNING and "not checked" in f.message
    assert value(report, "healthd_rabbit_queues_broker_up", broker="10.0.0.5:5672/nova") == 0


def test_series_cap_keeps_problems_first() -> None:
    b = broker()
    healthy(b)
    for i in range(50):
        add(b, f"compute.h{i}", "compute_host", QueueState(True, 0, 1),
            Svc("cell1", "nova-compute", f"h{i}"), host=f"h{i}")
    b.states["compute.h42"] = QueueState(True, 3, 0)
    report = run(View([b]), max_queue_series=5)
    queues = {dict(s.labels)["queue"] for s in report.samples if s.name == "healthd_rabbit_queues_consumers"}
    assert "compute.h42" in queues and len(queues) == 3 + 5
    assert value(report, "healthd_rabbit_queues_series_dropped") == 46


def test_services_rows_follow_nova_is_up() -> None:
    cell = Cell("u1", "cell1")
    rows = [
        {"host": "a", "binary": "nova-compute", "disabled": 0, "forced_down": 0, "deleted": 0, "age": 59.5},
        {"host": "b", "binary": "nova-compute", "disabled": 0, "forced_down": 0, "deleted": 0, "age": 60.5},
        {"host": "c", "binary": "nova-compute", "disabled": 0, "forced_down": 1, "deleted": 0, "age": 1},
        {"host": "a", "binary": "nova-compute", "disabled": 0, "forced_down": 0, "deleted": 7, "age": 1e6},
        {"host": "d", "binary": "nova-compute", "disabled": 0, "forced_down": 0, "deleted": 9, "age": 1e6},
    ]
    svcs = {s.host: s for s in _services(cell, rows, 60)}
    assert svcs["a"].up and not svcs["a"].deleted  # the live row wins over the deleted one
    assert not svcs["b"].up and not svcs["c"].up and svcs["c"].forced_down
    assert svcs["d"].deleted


def test_topics_follow_nova_notification_format(tmp_path: Path) -> None:
    conf = tmp_path / "nova.conf"
    conf.write_text("[oslo_messaging_notifications]\ndriver = messagingv2\n")
    assert _topics(oslo_ini.read(str(conf))) == ["notifications"]
    conf.write_text("[oslo_messaging_notifications]\ndriver = messagingv2\ntopics = a,b\n"
                    "[notifications]\nnotification_format = both\nversioned_notifications_topics = v\n")
    assert _topics(oslo_ini.read(str(conf))) == ["a", "b", "v"]
    conf.write_text("[notifications]\nnotification_format = versioned\n")
    assert _topics(oslo_ini.read(str(conf))) == ["versioned_notifications"]


def test_files_api_level_and_notification_transport(tmp_path: Path) -> None:
    api = tmp_path / "nova.conf"
    api.write_text("[DEFAULT]\ntransport_url = rabbit://nova:Secr3tCanary@10.0.0.5:5672/nova\n"
                   "service_down_time = 120\n[api_database]\nconnection = mysql+pymysql://x@y/z\n"
                   "[oslo_messaging_notifications]\ndriver = messagingv2\n"
                   "transport_url = rabbit://n:p@10.0.0.9:5672/notify\n")
    compute = tmp_path / "nova-compute.conf"
    compute.write_text("[DEFAULT]\ntransport_url = rabbit://nova:Secr3tCanary@10.0.0.6:5672/cell1\n")
    view = View()
    found = _read_files([str(tmp_path / "*.conf")], view)
    assert [u.vhost for u, _ in found.api_urls] == ["nova"]  # the compute file is no API level
    assert found.down_time == 120
    [(url, _tls, topics, path)] = found.notifications
    assert url.vhost == "notify" and topics == ["notifications"] and path == str(api)


def test_compute_findings_are_capped() -> None:
    b = broker()
    healthy(b)
    for i in range(30):
        add(b, f"compute.h{i}", "compute_host", QueueState(True, 0, 0),
            Svc("cell1", "nova-compute", f"h{i}"), host=f"h{i}")
    report = run(View([b]), max_findings=10)
    critical = [f for f in report.findings if f.severity is Severity.CRITICAL]
    assert len(critical) == 11 and critical[-1].subject == "20 more compute queues (no_consumer)"
    assert value(report, "healthd_rabbit_queues_problems", kind="no_consumer") == 30
