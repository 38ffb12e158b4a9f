"""checks.cell_connections' judgement and nova's template filling, on plain data (no server)."""

from __future__ import annotations

from checks.cell_connections import CellConnections, CellConnectionsProbe, Outcome, format_url, judge
from healthd.model import Report, Result, Severity, Status
from healthd.openstack.cells import CELL0_UUID

C1 = "c1c1c1c1-0000-4000-8000-000000000001"


def judged(*cells: CellConnections) -> Result:
    report = Report(CellConnectionsProbe.name, CellConnectionsProbe.metrics)
    judge(list(cells), report)
    return report.result(0, 0)


def db(kind: str = "", error: str | None = None) -> Outcome:
    return Outcome("database", "10.0.0.5:3306", "nova", "nova_cell1", kind, error)


def mq(endpoint: str = "10.0.0.6:5672", kind: str = "", error: str | None = None) -> Outcome:
    return Outcome("transport", endpoint, "nova", "/", kind, error)


def value(result: Result, name: str, **labels: str) -> float | None:
    for s in result.samples:
        if s.name == name and dict(s.labels) == labels:
            return s.value
    return None


def test_healthy_cells_are_ok() -> None:
    cell0 = CellConnections(CELL0_UUID, "cell0", outcomes=[db()])
    cell1 = CellConnections(C1, "cell1", outcomes=[db(), mq()])
    result = judged(cell0, cell1)
    assert result.status is Status.OK and result.findings == ()
    assert value(result, "healthd_cell_connections_cells") == 2
    assert value(result, "healthd_cell_connections_database_up", cell="cell1") == 1
    assert value(result, "healthd_cell_connections_transport_up", cell="cell1", endpoint="10.0.0.6:5672") == 1
    assert "2 cells, 3 mapped connections checked, 0 failing" in result.summary


def test_stale_password_is_critical_with_the_fix() -> None:
    result = judged(CellConnections(C1, "cell1", outcomes=[db("auth", "AuthFailed: denied"), mq()]))
    assert result.status is Status.CRITICAL
    [finding] = result.findings
    assert finding.subject == "cell cell1 database"
    assert C1 in finding.message and "10.0.0.5:3306" in finding.message
    assert (f"nova-manage cell_v2 update_cell --cell_uuid {C1} --database_connection "
            "'mysql+pymysql://nova:***@10.0.0.5:3306/nova_cell1'") in finding.remediation
    assert "nova-conductor" in finding.remediation and "nova-api" in finding.remediation
    assert value(result, "healthd_cell_connections_database_up", cell="cell1") == 0


def test_transport_fix_keeps_every_broker_host() -> None:
    outcomes = [db(), mq("10.0.0.6:5672", "auth", "AuthFailed"), mq("10.0.0.7:5672", "auth", "AuthFailed")]
    result = judged(CellConnections(C1, "cell1", outcomes=outcomes))
    assert result.status is Status.CRITICAL and len(result.findings) == 2
    assert ("--transport-url 'rabbit://nova:***@10.0.0.6:5672,nova:***@10.0.0.7:5672/'"
            in result.findings[0].remediation)


def test_one_broker_down_among_several_is_a_warning() -> None:
    outcomes = [db(), mq("10.0.0.6:5672"), mq("10.0.0.7:5672", "unreachable", "Refused")]
    result = judged(CellConnections(C1, "cell1", outcomes=outcomes))
    assert result.status is Status.WARNING
    assert "fails over" in result.findings[0].message


def test_tls_and_deadline_are_warnings_without_a_zero_series() -> None:
    outcomes = [db("deadline", "late"), mq(kind="tls", error="x")]
    result = judged(CellConnections(C1, "cell1", outcomes=outcomes))
    assert result.status is Status.WARNING
    assert value(result, "healthd_cell_connections_database_up", cell="cell1") is None


def test_notes_are_info_only() -> None:
    cell = CellConnections(C1, "cell1", outcomes=[db()], notes=[("transport", "template")])
    result = judged(cell)
    assert result.status is Status.OK
    assert [f.severity for f in result.findings] == [Severity.INFO]


def test_disabled_cell_is_still_judged() -> None:
    result = judged(CellConnections(C1, "cell1", disabled=True, outcomes=[db("unreachable", "Refused")]))
    assert result.status is Status.CRITICAL and "disabled" in result.findings[0].message


def test_format_url_fills_templates_as_nova_does() -> None:
    # nova/objects/cell_mapping.py CellMapping._format_url
    base = "mysql+pymysql://nova:s3cret@db.example:3307/nova?charset=utf8"
    assert (format_url("{scheme}://{username}:{password}@{hostname}:{port}/nova_cell1?{query}", base)
            == "mysql+pymysql://nova:s3cret@db.example:3307/nova_cell1?charset=utf8")
    multi = "rabbit://a:pa@h1:5672,b:pb@h2:5673/vh"
    assert (format_url("rabbit://{username1}:{password1}@{hostname1}:{port1},"
                       "{username2}:{password2}@{hostname2}:{port2}/{path}", multi)
            == "rabbit://a:pa@h1:5672,b:pb@h2:5673/vh")
    assert format_url("rabbit://u:p@h:5672/", multi) == "rabbit://u:p@h:5672/"


def test_url_secrets_are_registered_and_none_is_no_url() -> None:
    from healthd.openstack.cells import register_url_secrets
    from healthd.redact import redact

    register_url_secrets(None)  # an option the file does not set
    register_url_secrets("rabbit://u:first-s3cret@h1:5672,u:second-s3cret@h2:5672/")
    assert redact("first-s3cret second-s3cret") == "*** ***"
