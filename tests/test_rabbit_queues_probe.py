"""rabbit_queues on the local RabbitMQ and MariaDB (nova 34's schemas), with real consumers.

Each test has its own vhost with two users: the services' user (all permissions, as
oslo.messaging needs: it declares the queues and consumes them from pika threads, the way
an RPC server's listener does) and healthd's user with only '^$' '^$' '^$' (passive
declares need no permission, only the vhost). The nova databases are per-run copies of the
real schemas; healthd reads them with a MariaDB user that has only the grants
docs/probes/rabbit_queues.md lists. Passwords are canaries that must never show.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pika
import pytest

from checks.rabbit_queues import RabbitQueuesProbe
from healthd.config import BackendsConfig
from healthd.connections import Backends
from healthd.model import Severity, Status
from tests.helpers.hung import amqp_mute_after_open
from tests.helpers.novadb import Deployment, NovaDB
from tests.helpers.probes import ProbeRun, run_probe
from tests.helpers.servers import RabbitAccount, _rabbitmqctl, free_port, rabbit_vhost

HOST = "127.0.0.1"


class Consumer:
    """An RPC server's listener in miniature: declares its queue as oslo.messaging does
    (impl_rabbit.py declare_topic_consumer: not durable, not auto-delete, not exclusive) and
    consumes it in a thread. ``ack=False`` with prefetch 1 is a hung consumer: it holds one
    message and never takes another."""

    def __init__(self, params: pika.ConnectionParameters, queue: str, ack: bool = True) -> None:
        self.queue = queue
        self.conn = pika.BlockingConnection(params)
        self.channel = self.conn.channel()
        self.channel.queue_declare(queue, durable=False, auto_delete=False)
        if not ack:
            self.channel.basic_qos(prefetch_count=1)
        self.channel.basic_consume(queue, self._got, auto_ack=False)
        self.ack = ack
        self.thread = threading.Thread(target=self.channel.start_consuming, daemon=True)
        self.thread.start()

    def _got(self, channel: Any, method: Any, _props: Any, _body: bytes) -> None:
        if self.ack:
            channel.basic_ack(method.delivery_tag)

    def stop(self) -> None:
        self.conn.add_callback_threadsafe(self.channel.stop_consuming)
        self.thread.join(5)
        self.conn.close()


class Cloud:
    def __init__(self, novadb: NovaDB, monitor: RabbitAccount, tmp: Path) -> None:
        self.novadb, self.monitor, self.tmp = novadb, monitor, tmp
        self.vhost = monitor.vhost
        self.svc_user = f"{monitor.user}-svc"
        self.svc_password = f"SvcCanary{uuid.uuid4().hex[:12]}"
        _rabbitmqctl("add_user", self.svc_user, self.svc_password)
        _rabbitmqctl("set_permissions", "-p", self.vhost, self.svc_user, ".*", ".*", ".*")
        self.params = pika.ConnectionParameters(HOST, 5672, self.vhost,
                                                pika.PlainCredentials(self.svc_user, self.svc_password))
        self.mq_url = f"rabbit://{self.svc_user}:{self.svc_password}@{HOST}:5672/{self.vhost}"
        self.dep = Deployment(novadb, with_placement=False)
        self.dep.add_cell0()
        self.cell1 = self.dep.add_cell("cell1")
        novadb.exec(f"UPDATE `{self.dep.api}`.cell_mappings SET transport_url = %s WHERE id = %s",
                    (self.mq_url, self.cell1.id))
        self.db_password = f"DbCanary{uuid.uuid4().hex[:12]}"
        # docs/probes/rabbit_queues.md: SELECT on nova_api.cell_mappings and on each cell's services
        self.db_user = novadb.create_user("rq", self.db_password, [
            f"SELECT ON `{self.dep.api}`.`cell_mappings`",
            f"SELECT ON `{self.dep.cells['cell0'].db}`.`services`",
            f"SELECT ON `{self.cell1.db}`.`services`",
        ])
        for cell in (self.dep.cells["cell0"], self.cell1):  # healthd reads the cells as its own user
            novadb.exec(f"UPDATE `{self.dep.api}`.cell_mappings SET database_connection = %s WHERE id = %s",
                        (NovaDB.url(cell.db, self.db_user, self.db_password), cell.id))
        self.password_file = tmp / "rabbit-password"
        self.password_file.write_text(monitor.password)
        self.consumers: dict[str, Consumer] = {}
        self.secrets = [self.svc_password, self.db_password, monitor.password]

    def conf(self, extra: str = "") -> Path:
        path = self.tmp / "nova.conf"
        path.write_text(f"[DEFAULT]\ntransport_url = {self.mq_url}\nservice_down_time = 60\n"
                        f"[api_database]\nconnection = mysql+pymysql://nova:{self.db_password}@{HOST}/nova_api\n"
                        + extra)
        return path

    def service(self, binary: str, host: str, **kw: Any) -> dict[str, Any]:
        return self.dep.add_service(self.cell1, binary, host, **kw)

    def consume(self, queue: str, ack: bool = True) -> None:
        self.consumers[queue] = Consumer(self.params, queue, ack)

    def stop(self, queue: str) -> None:
        self.consumers.pop(queue).stop()

    def declare(self, queue: str) -> None:
        with pika.BlockingConnection(self.params) as conn:
            conn.channel().queue_declare(queue, durable=False, auto_delete=False)

    def publish(self, queue: str, count: int = 1) -> None:
        with pika.BlockingConnection(self.params) as conn:
            channel = conn.channel()
            for i in range(count):
                channel.basic_publish("", queue, f"msg {i}".encode())

    def healthy(self) -> None:
        """What a running cell looks like: conductor, scheduler, two computes consuming."""
        self.service("nova-conductor", "ctl1")
        self.service("nova-scheduler", "ctl1")
        self.service("nova-compute", "cmp1")
        self.service("nova-compute", "cmp2")
        for queue in ("conductor", "scheduler", "compute", "compute.cmp1", "compute.cmp2"):
            self.consume(queue)

    def backends(self, port: int | None = None) -> Backends:
        url = NovaDB.url(self.dep.api, self.db_user, port=port or 3306)
        return Backends(BackendsConfig.model_validate({
            "connect_timeout": 2,
            "databases": {"nova_api": {"url": url, "password": self.db_password, "connect_timeout": 2}}}))

    def run(self, backends: Backends | None = None, state: dict[str, Any] | None = None,
            conf: Path | None = None, **settings: Any) -> ProbeRun:
        settings = {"files": [str(conf or self.conf())], "user": self.monitor.user,
                    "password_file": str(self.password_file), **settings}
        result = run_probe(RabbitQueuesProbe(RabbitQueuesProbe.Settings(**settings)),
                           backends or self.backends(), state)
        text = result.everything()
        for secret in self.secrets:
            assert secret not in text
        return result

    def close(self) -> None:
        for consumer in list(self.consumers.values()):
            consumer.stop()
        _rabbitmqctl("delete_user", self.svc_user)


@pytest.fixture
def cloud(novadb: NovaDB, tmp_path: Path) -> Iterator[Cloud]:
    with rabbit_vhost("healthd-rq") as monitor:
        c = Cloud(novadb, monitor, tmp_path)
        try:
            yield c
        finally:
            c.close()


def test_healthy_cell_is_ok_with_least_privilege(cloud: Cloud) -> None:
    cloud.healthy()
    backends = cloud.backends()
    result = cloud.run(backends)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert not result.findings
    # nova_api.cell_mappings + services of cell0 and cell1: 3 statements whatever the hosts
    assert sum(backends.sql_statements.values()) == 3
    broker = f"{HOST}:5672/{cloud.vhost}"
    for kind, queue in (("conductor", "conductor"), ("scheduler", "scheduler"), ("compute", "compute"),
                        ("compute_host", "compute.cmp1"), ("compute_host", "compute.cmp2")):
        assert result.value("healthd_rabbit_queues_consumers", broker=broker, cell="cell1,api", kind=kind,
                            queue=queue) == 1, queue
    assert result.value("healthd_rabbit_queues_broker_up", broker=broker) == 1
    assert result.value("healthd_rabbit_queues_problems", kind="no_consumer") == 0
    assert result.value("healthd_rabbit_queues_declares") == 5
    # the same user cannot read or create anything: '^$' '^$' '^$' really is least privilege
    monitor = pika.BlockingConnection(pika.ConnectionParameters(
        HOST, 5672, cloud.vhost, pika.PlainCredentials(cloud.monitor.user, cloud.monitor.password)))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as denied:
            monitor.channel().basic_get("conductor")
        assert denied.value.reply_code == 403
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as denied:
            monitor.channel().queue_declare("healthd-made-this")
        assert denied.value.reply_code == 403
    finally:
        monitor.close()


def test_conductor_without_consumer_is_critical_and_clears(cloud: Cloud) -> None:
    cloud.healthy()
    cloud.stop("conductor")  # nova-conductor stopped: its row stays up for service_down_time
    cloud.publish("conductor", 3)  # nova-api's schedule_and_build_instances casts wait there
    result = cloud.run()
    assert result.status is Status.CRITICAL
    [finding] = result.about("conductor on", Severity.CRITICAL)
    assert finding.subject == f"queue conductor on {HOST}:5672/{cloud.vhost}"
    assert "nova-conductor has no consumer on cell1's and the API-level broker" in finding.message
    assert "3 message(s)" in finding.message and "builds stay in scheduling" in finding.message
    assert "ctl1 (cell1): up" in finding.message
    assert "systemctl restart nova-conductor" in finding.remediation
    labels = {"broker": f"{HOST}:5672/{cloud.vhost}", "cell": "cell1,api", "kind": "conductor",
              "queue": "conductor"}
    assert result.value("healthd_rabbit_queues_consumers", **labels) == 0
    assert result.value("healthd_rabbit_queues_messages", **labels) == 3
    assert result.value("healthd_rabbit_queues_problems", kind="no_consumer") == 1
    cloud.consume("conductor")  # restarted: it drains the queue
    time.sleep(0.5)
    result = cloud.run()
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]


def test_compute_queues_judged_with_the_services_table(cloud: Cloud) -> None:
    cloud.healthy()
    # a compute that is up but whose queue is not on this vhost: it listens elsewhere
    cloud.service("nova-compute", "cmp-elsewhere")
    # down, disabled, deleted computes whose queues stay on the broker with messages
    cloud.service("nova-compute", "cmp-down", silent=timedelta(minutes=10))
    cloud.service("nova-compute", "cmp-off", disabled=1, disabled_reason="maintenance")
    gone = cloud.service("nova-compute", "cmp-gone", silent=timedelta(days=3))
    cloud.dep.delete_service(cloud.cell1, gone["id"])
    for host in ("cmp-down", "cmp-off", "cmp-gone"):
        cloud.declare(f"compute.{host}")
        cloud.publish(f"compute.{host}", 2)
    # and one up compute whose consumer died (the scheduler still picks it)
    cloud.stop("compute.cmp2")
    result = cloud.run()
    assert result.status is Status.CRITICAL
    [missing] = result.about("compute.cmp-elsewhere", Severity.CRITICAL)
    assert "does not exist" in missing.message and "another broker or vhost" in missing.message
    [dead] = result.about("compute.cmp2", Severity.CRITICAL)
    assert "nova-compute has no consumer" in dead.message and "up and enabled" in dead.message
    assert "on cmp2: systemctl restart nova-compute" in dead.remediation
    infos = {f.subject.split()[1]: f for f in result.findings if f.severity is Severity.INFO}
    assert set(infos) == {"compute.cmp-down", "compute.cmp-off", "compute.cmp-gone"}
    assert "is down" in infos["compute.cmp-down"].message
    assert "up but disabled" in infos["compute.cmp-off"].message
    assert "is deleted" in infos["compute.cmp-gone"].message
    fix = infos["compute.cmp-gone"].remediation
    assert f"rabbitmqctl delete_queue -p {cloud.vhost} compute.cmp-gone" in fix
    assert result.value("healthd_rabbit_queues_problems", kind="stale_compute_queue") == 3
    assert result.value("healthd_rabbit_queues_problems", kind="missing") == 1
    assert result.value("healthd_rabbit_queues_problems", kind="no_consumer") == 1
    # the shared compute queue still has consumers (cmp1): no finding about it
    assert not result.about("queue compute on")


def test_graceful_shutdown_is_a_warning(cloud: Cloud) -> None:
    cloud.healthy()
    cloud.consume("compute-alt.cmp2")
    cloud.stop("compute.cmp2")  # nova 34 Service.stop: the compute server first, compute-alt later
    result = cloud.run()
    assert result.status is Status.OK  # no message waits: INFO only
    [note] = result.about("compute.cmp2", Severity.INFO)
    assert "graceful shutdown" in note.message
    cloud.publish("compute.cmp2", 1)
    result = cloud.run()
    assert result.status is Status.WARNING, [f.as_dict() for f in result.findings]
    [finding] = result.about("compute.cmp2", Severity.WARNING)
    assert "graceful shutdown" in finding.message


def test_hung_consumer_and_growth_are_warnings(cloud: Cloud) -> None:
    cloud.healthy()
    cloud.stop("scheduler")
    cloud.consume("scheduler", ack=False)  # holds one message, takes no other
    state: dict[str, Any] = {}
    sizes = []
    for _ in range(4):
        cloud.publish("scheduler", 4)
        time.sleep(0.3)
        result = cloud.run(state=state, growth_runs=3, growth_min_messages=5, ready_warning=1000)
        sizes.append(result.status)
    assert sizes[:2] == [Status.OK, Status.OK]
    assert sizes[-1] is Status.WARNING
    [finding] = result.about("scheduler on", Severity.WARNING)
    assert "pile up" in finding.message and "1 consumer(s)" in finding.message
    assert result.value("healthd_rabbit_queues_problems", kind="piling") == 1
    result = cloud.run(ready_warning=5)
    assert result.status is Status.WARNING


def test_notifications_nobody_reads_are_a_warning(cloud: Cloud) -> None:
    cloud.healthy()
    conf = cloud.conf("[oslo_messaging_notifications]\ndriver = messagingv2\n"
                      "[notifications]\nnotification_format = both\n")
    # the publisher declares notifications.info itself (impl_rabbit.py _publish_and_creates_default_queue)
    cloud.declare("notifications.info")
    cloud.declare("versioned_notifications.info")
    cloud.publish("notifications.info", 3)
    state: dict[str, Any] = {}
    first = cloud.run(state=state, conf=conf)
    assert first.status is Status.OK, [f.as_dict() for f in first.findings]
    # 7 priorities x 2 topics + the 5 RPC queues
    assert first.value("healthd_rabbit_queues_declares") == 19
    cloud.publish("notifications.info", 2)
    result = cloud.run(state=state, conf=conf)
    assert result.status is Status.WARNING
    [finding] = result.about("notifications.info", Severity.WARNING)
    assert "has no consumer and 5 message(s) and grows" in finding.message
    assert str(conf) in finding.message
    assert "driver = noop" in finding.remediation and "max-length" in finding.remediation
    assert result.value("healthd_rabbit_queues_problems", kind="notifications_piling") == 1
    # versioned_notifications.info is empty: nothing said
    assert not result.about("versioned_notifications.info")
    # without the driver, nothing is looked at
    result = cloud.run(conf=cloud.conf())
    assert not result.about("notifications.info")


def test_broker_down_or_hung_is_unknown_within_the_timeout(cloud: Cloud) -> None:
    cloud.healthy()
    port = free_port()
    dead = f"rabbit://{cloud.svc_user}:{cloud.svc_password}@{HOST}:{port}/{cloud.vhost}"
    cloud.novadb.exec(f"UPDATE `{cloud.dep.api}`.cell_mappings SET transport_url = %s WHERE id = %s",
                      (dead, cloud.cell1.id))
    conf = cloud.tmp / "dead.conf"
    conf.write_text(f"[DEFAULT]\ntransport_url = {dead}\n[api_database]\nconnection = x\n")
    result = cloud.run(conf=conf)
    assert result.status is Status.UNKNOWN
    assert f"{HOST}:{port}" in result.summary and "refused" in result.summary.lower()
    with amqp_mute_after_open() as hung:
        url = f"rabbit://{cloud.svc_user}:{cloud.svc_password}@{HOST}:{hung.port}/{cloud.vhost}"
        cloud.novadb.exec(f"UPDATE `{cloud.dep.api}`.cell_mappings SET transport_url = %s WHERE id = %s",
                          (url, cloud.cell1.id))
        conf.write_text(f"[DEFAULT]\ntransport_url = {url}\n[api_database]\nconnection = x\n")
        started = time.monotonic()
        result = cloud.run(conf=conf, timeout=4)
        assert time.monotonic() - started < 8
    assert result.status is Status.UNKNOWN, result.summary
    assert str(hung.port) in result.summary


def test_database_down_is_unknown(cloud: Cloud) -> None:
    result = cloud.run(cloud.backends(port=free_port()))
    assert result.status is Status.UNKNOWN
    assert "nova_api" in result.summary


def test_missing_vhost_permission_is_reported(cloud: Cloud) -> None:
    cloud.healthy()
    _rabbitmqctl("clear_permissions", "-p", cloud.vhost, cloud.monitor.user)
    result = cloud.run()
    assert result.status is Status.UNKNOWN
    assert "refused" in result.summary and cloud.monitor.user in result.summary
