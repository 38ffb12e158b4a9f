"""cell_connections on real MariaDB (nova 34's schemas) and the local RabbitMQ.

Each test builds a deployment (nova_api with cell0 and cell1) under a unique prefix, a
MariaDB user for cell1 and a RabbitMQ vhost and user of its own, and drops them after.
healthd reads nova_api with only SELECT on cell_mappings (deploy/mysql/grants.sql); the
cells are logged in to with the credentials stored in the mapping, whose passwords are
canaries that must never appear in the result.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from checks.cell_connections import CellConnectionsProbe
from healthd.config import BackendsConfig
from healthd.connections import Backends
from healthd.model import Severity, Status
from tests.helpers.novadb import Deployment, NovaDB
from tests.helpers.probes import ProbeRun, run_probe
from tests.helpers.servers import RabbitAccount, SilentListener, free_port, rabbit_vhost


class Lab:
    def __init__(self, novadb: NovaDB, rabbit: RabbitAccount) -> None:
        self.novadb = novadb
        self.rabbit = rabbit
        self.dep = Deployment(novadb, with_placement=False)
        self.dep.add_cell0()
        self.cell1 = self.dep.add_cell("cell1")
        self.password = f"Canary-{uuid.uuid4().hex[:12]}"  # healthd's own
        # deploy/mysql/grants.sql: only SELECT on nova_api.cell_mappings
        self.user = novadb.create_user("probe", self.password,
                                       [f"SELECT ON `{self.dep.api}`.`cell_mappings`"])
        self.cell_password = f"CellCanary-{uuid.uuid4().hex[:12]}"
        self.cell_user = novadb.create_user("cell1", self.cell_password, [f"ALL ON `{self.cell1.db}`.*"])
        self.db_url = NovaDB.url(self.cell1.db, self.cell_user, self.cell_password)
        self.mq_url = f"rabbit://{rabbit.user}:{rabbit.password}@127.0.0.1:5672/{rabbit.vhost}"
        self.set(self.db_url, self.mq_url)
        self.secrets = [self.password, self.cell_password, rabbit.password]

    def set(self, db_url: str | None = None, mq_url: str | None = None) -> None:
        """What `nova-manage cell_v2 update_cell` writes."""
        if db_url is not None:
            self.novadb.exec(f"UPDATE `{self.dep.api}`.cell_mappings SET database_connection = %s "
                             "WHERE id = %s", (db_url, self.cell1.id))
        if mq_url is not None:
            self.novadb.exec(f"UPDATE `{self.dep.api}`.cell_mappings SET transport_url = %s WHERE id = %s",
                             (mq_url, self.cell1.id))

    def backends(self, port: int | None = None) -> Backends:
        url = NovaDB.url(self.dep.api, self.user, port=port) if port else NovaDB.url(self.dep.api, self.user)
        return Backends(BackendsConfig.model_validate(
            {"databases": {"nova_api": {"url": url, "password": self.password, "connect_timeout": 2}}}))

    def run(self, backends: Backends | None = None, **settings: Any) -> ProbeRun:
        result = run_probe(CellConnectionsProbe(CellConnectionsProbe.Settings(**settings)),
                           backends or self.backends())
        text = result.everything()
        for secret in self.secrets:  # the canaries
            assert secret not in text
        return result


@pytest.fixture
def lab(novadb: NovaDB) -> Iterator[Lab]:
    with rabbit_vhost("healthd-cellconn") as account:
        yield Lab(novadb, account)


def test_healthy_mappings_are_ok(lab: Lab) -> None:
    backends = lab.backends()
    result = lab.run(backends)
    # cell_mappings + one SELECT 1 per cell (cell0, cell1), whatever the number of hosts
    assert sum(backends.sql_statements.values()) == 3
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert result.findings == []
    assert result.value("healthd_cell_connections_cells") == 2
    assert result.value("healthd_cell_connections_database_up", cell="cell1") == 1
    assert result.value("healthd_cell_connections_database_up", cell="cell0") == 1
    assert result.value("healthd_cell_connections_transport_up", cell="cell1", endpoint="127.0.0.1:5672") == 1
    # cell0's none:/// is never connected to by nova: no series, no finding
    assert result.values("healthd_cell_connections_transport_up") == [
        ({"cell": "cell1", "endpoint": "127.0.0.1:5672"}, 1.0)]


def test_stale_database_password_is_critical_and_clears(lab: Lab) -> None:
    wrong = f"Rotated-{uuid.uuid4().hex[:12]}"
    lab.secrets.append(wrong)
    lab.set(db_url=NovaDB.url(lab.cell1.db, lab.cell_user, wrong))
    result = lab.run()
    assert result.status is Status.CRITICAL
    [finding] = result.about("cell cell1 database", Severity.CRITICAL)
    assert lab.cell1.uuid in finding.message and "127.0.0.1:3306" in finding.message
    assert "refused the stored credentials" in finding.message
    assert f"--cell_uuid {lab.cell1.uuid} --database_connection" in finding.remediation
    assert "restart nova-api" in finding.remediation
    assert result.value("healthd_cell_connections_database_up", cell="cell1") == 0
    assert result.value("healthd_cell_connections_transport_up", cell="cell1", endpoint="127.0.0.1:5672") == 1
    lab.set(db_url=lab.db_url)
    assert lab.run().status is Status.OK


def test_stale_broker_password_is_critical_and_clears(lab: Lab) -> None:
    wrong = f"Rotated-{uuid.uuid4().hex[:12]}"
    lab.secrets.append(wrong)
    lab.set(mq_url=f"rabbit://{lab.rabbit.user}:{wrong}@127.0.0.1:5672/{lab.rabbit.vhost}")
    result = lab.run()
    assert result.status is Status.CRITICAL
    [finding] = result.about("cell cell1 transport", Severity.CRITICAL)
    assert "127.0.0.1:5672" in finding.message and "refused the stored credentials" in finding.message
    assert f"--cell_uuid {lab.cell1.uuid} --transport-url 'rabbit://{lab.rabbit.user}:***@127.0.0.1:5672/"\
        in finding.remediation
    assert result.value("healthd_cell_connections_transport_up", cell="cell1", endpoint="127.0.0.1:5672") == 0
    lab.set(mq_url=lab.mq_url)
    assert lab.run().status is Status.OK


def test_wrong_vhost_and_moved_database(lab: Lab) -> None:
    port = free_port()
    lab.set(db_url=NovaDB.url(lab.cell1.db, lab.cell_user, lab.cell_password, port=port),
            mq_url=f"rabbit://{lab.rabbit.user}:{lab.rabbit.password}@127.0.0.1:5672/no-such-vhost")
    result = lab.run()
    assert result.status is Status.CRITICAL
    [db] = result.about("cell cell1 database", Severity.CRITICAL)
    assert f"127.0.0.1:{port}" in db.message and "nothing answers there" in db.message
    [mq] = result.about("cell cell1 transport", Severity.CRITICAL)
    assert "access was refused" in mq.message


def test_multi_host_transport_checks_each_broker(lab: Lab) -> None:
    port = free_port()
    user, password, vhost = lab.rabbit.user, lab.rabbit.password, lab.rabbit.vhost
    lab.set(mq_url=f"rabbit://{user}:{password}@127.0.0.1:5672,{user}:{password}@127.0.0.1:{port}/{vhost}")
    result = lab.run()
    assert result.value("healthd_cell_connections_transport_up", cell="cell1", endpoint="127.0.0.1:5672") == 1
    down = f"127.0.0.1:{port}"
    assert result.value("healthd_cell_connections_transport_up", cell="cell1", endpoint=down) == 0
    assert result.status is Status.WARNING  # oslo.messaging fails over to the host that works
    [finding] = result.about("cell cell1 transport", Severity.WARNING)
    assert f"127.0.0.1:{port}" in finding.message and "fails over" in finding.message


def test_templates_are_filled_from_nova_conf_or_left_info(lab: Lab, tmp_path: Path) -> None:
    # nova/objects/cell_mapping.py CellMapping._format_url: {username} etc. from nova's own URLs
    lab.set(db_url="{scheme}://{username}:{password}@{hostname}:{port}/" + lab.cell1.db + "?{query}",
            mq_url="{scheme}://{username}:{password}@{hostname}:{port}/" + lab.rabbit.vhost)
    result = lab.run()
    assert result.status is Status.OK
    assert {f.subject for f in result.findings} == {"cell cell1 database", "cell cell1 transport"}
    assert all(f.severity is Severity.INFO and "template" in f.message for f in result.findings)
    assert result.value("healthd_cell_connections_database_up", cell="cell1") is None
    conf = tmp_path / "nova.conf"
    conf.write_text(f"[DEFAULT]\ntransport_url = {lab.mq_url}\n[database]\nconnection = "
                    f"{NovaDB.url('nova', lab.cell_user, lab.cell_password)}\n")
    result = lab.run(nova_conf=str(conf))
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert result.findings == []
    assert result.value("healthd_cell_connections_database_up", cell="cell1") == 1
    assert result.value("healthd_cell_connections_transport_up", cell="cell1", endpoint="127.0.0.1:5672") == 1
    # nova's own password rotated in nova.conf but not ... the template follows nova.conf:
    conf.write_text(f"[DEFAULT]\ntransport_url = rabbit://{lab.rabbit.user}:wrong-pass@127.0.0.1:5672/\n"
                    f"[database]\nconnection = {NovaDB.url('nova', lab.cell_user, 'wrong-pass')}\n")
    result = lab.run(nova_conf=str(conf))
    assert result.status is Status.CRITICAL
    assert "wrong-pass" not in result.everything()


def test_ignored_cell_and_unknown_when_nova_api_is_down(lab: Lab) -> None:
    lab.set(db_url=NovaDB.url(lab.cell1.db, lab.cell_user, "Wrong-1234567"))
    result = lab.run(ignore_cells=["cell1"])
    assert result.status is Status.OK
    assert result.about("cell cell1 cell", Severity.INFO)
    result = lab.run(lab.backends(port=free_port()))
    assert result.status is Status.UNKNOWN
    assert "nova_api" in result.summary


def test_hung_database_and_broker_end_by_the_deadline(lab: Lab) -> None:
    """Peers that accept and never answer: the run ends by its timeout, the rest still judged."""
    with SilentListener() as db_peer, SilentListener() as mq_peer:
        lab.set(db_url=NovaDB.url(lab.cell1.db, lab.cell_user, lab.cell_password, port=db_peer.port),
                mq_url=f"rabbit://{lab.rabbit.user}:{lab.rabbit.password}@{mq_peer.server}/{lab.rabbit.vhost}")
        t0 = time.monotonic()
        result = lab.run(timeout=3)
        assert time.monotonic() - t0 < 3 + 2
    assert result.status in (Status.CRITICAL, Status.WARNING), result.summary
    assert result.about("cell cell1 database") and result.about("cell cell1 transport")
    assert result.value("healthd_cell_connections_database_up", cell="cell0") == 1
