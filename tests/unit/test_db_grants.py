"""db_grants: MariaDB's matching rules and the judgement, on plain data (no server).

Each ordering rule below was measured on MariaDB 10.11.19 (the backend tests prove the
ones that matter on the real server): the most specific host wins the login, a named
user beats the anonymous one on the same host, the first matching mysql.db row wins.
"""

from __future__ import annotations

from typing import Any

import pytest

from checks.db_grants import (
    RUNTIME,
    Account,
    Client,
    DbGrantsProbe,
    DbRow,
    Grants,
    TableRow,
    Use,
    clients_for,
    covers,
    db_row,
    evaluate,
    grants_from_rows,
    host_matches,
    judge,
    like,
    login_account,
    magic,
)
from healthd.model import Report, Severity

ALL = frozenset(("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "INDEX", "ALTER"))
IP3 = Client("127.0.0.3", ip="127.0.0.3")
IP1 = Client("127.0.0.1", ip="127.0.0.1")


def test_like_is_mariadbs_wildcard_compare() -> None:
    assert like("nova%", "nova_api")
    assert like("nova_api", "novaXapi")  # an unescaped _ is any one character
    assert not like("nova\\_api", "novaXapi")  # \_ is a literal underscore
    assert like("nova\\_api", "nova_api")
    assert not like("nova", "nova_api")
    assert like("CONTROLLER%", "controller1", case_insensitive=True)


def test_host_patterns_match_addresses_names_and_netmasks() -> None:
    assert host_matches("%", IP3) and host_matches("", IP3)
    assert host_matches("127.0.0.%", IP3)
    assert not host_matches("127.0.0.1", IP3)
    assert host_matches("127.0.0.0/255.255.255.0", IP3)
    assert not host_matches("10.0.0.0/255.0.0.0", IP3)
    assert host_matches("localhost", Client("127.0.0.1", "127.0.0.1", ("localhost",)))
    assert not host_matches("localhost", IP1)  # skip_name_resolve: the address only


def test_covers_is_about_every_host_of_the_other_pattern() -> None:
    assert covers("%", "10.0.0.%")
    assert covers("10.0.%", "10.0.0.%")
    assert not covers("10.0.0._", "10.0.0.%")  # 10.0.0.12 is not matched by 10.0.0._
    assert not covers("10.0.0.%", "10.%")


def test_magic_orders_literal_before_patterns_before_percent() -> None:
    order = sorted(["%", "127.0.0.%", "127.0.0.3", "127.0.0._", "127.0.0.0/255.255.255.0"],
                   key=lambda h: magic(h, 255))
    assert order[-1] == "%"
    assert set(order[:2]) == {"127.0.0.3", "127.0.0.0/255.255.255.0"}  # literal = netmask
    assert order.index("127.0.0._") < order.index("127.0.0.%")  # measured: _ beats %


def test_anonymous_on_a_more_specific_host_wins_the_login() -> None:
    accounts = [Account("%", "nova"), Account("127.0.0.3", "")]
    assert login_account(accounts, "nova", IP3) == Account("127.0.0.3", "")
    assert login_account(accounts, "nova", IP1) == Account("%", "nova")
    # same host: the named user first
    assert login_account([Account("127.0.0.3", ""), Account("127.0.0.3", "nova")], "nova", IP3).user == "nova"
    # anonymous on '%' never beats a named user on a literal host
    assert login_account([Account("%", ""), Account("127.0.0.3", "nova")], "nova", IP3).user == "nova"


def test_the_first_matching_db_row_wins_rows_are_not_added() -> None:
    rows = [DbRow("%", "nova\\_api", "nova", frozenset({"SELECT"})),
            DbRow("%", "nova%", "nova", frozenset({"INSERT"}))]
    assert db_row(rows, "nova", IP1, "nova_api").privs == {"SELECT"}
    rows = [DbRow("%", "nova_api", "nova", ALL),
            DbRow("127.0.0.3", "nova_api", "nova", frozenset({"SELECT"}))]
    assert db_row(rows, "nova", IP3, "nova_api").privs == {"SELECT"}
    assert db_row(rows, "nova", IP1, "nova_api").privs == ALL
    # a '' user row is every user's (measured)
    assert db_row([DbRow("%", "shared", "", ALL)], "nova", IP1, "shared") is not None


def grants(*, accounts: list[Account], dbs: list[DbRow] = (), tables: list[TableRow] = (),
           roles: list[tuple[str, str, str]] = ()) -> Grants:
    return Grants(list(accounts), list(dbs), list(tables), list(roles))


def test_evaluate_sources() -> None:
    g = grants(accounts=[Account("%", "nova")], dbs=[DbRow("%", "nova_api", "nova", ALL)])
    assert evaluate(g, "nova", "nova_api", IP1).have == ALL
    g = grants(accounts=[Account("%", "nova", ALL)])
    assert evaluate(g, "nova", "nova_api", IP1).have == ALL  # global grant
    g = grants(accounts=[Account("%", "nova", default_role="r"), Account("", "r", is_role=True)],
               dbs=[DbRow("", "nova_api", "r", ALL)], roles=[("%", "nova", "r")])
    assert evaluate(g, "nova", "nova_api", IP1).have == ALL
    g = grants(accounts=[Account("%", "nova"), Account("", "r", is_role=True)],  # granted, not default
               dbs=[DbRow("", "nova_api", "r", ALL)], roles=[("%", "nova", "r")])
    assert evaluate(g, "nova", "nova_api", IP1).have == frozenset()
    # nested role
    g = grants(accounts=[Account("%", "nova", default_role="a"), Account("", "a", is_role=True),
                         Account("", "b", is_role=True)],
               dbs=[DbRow("", "nova_api", "b", ALL)], roles=[("%", "nova", "a"), ("", "a", "b")])
    assert evaluate(g, "nova", "nova_api", IP1).have == ALL


def use(user: str = "nova", database: str = "nova_api", server: str = "db.example.com:3306") -> Use:
    return Use("nova", user, database, server, "/etc/nova/nova.conf [api_database] connection")


def test_any_host_mode_judges_own_patterns_and_more_specific_shadows() -> None:
    g = grants(accounts=[Account("%", "nova"), Account("localhost", "nova"), Account("127.0.0.3", ""),
                         Account("10.9.9.9", "other")],
               dbs=[DbRow("10.0.0.5", "nova_api", "nova", frozenset({"SELECT"}))])
    labels = [c.label for c in clients_for(use(), g, [])]
    assert labels == ["%", "localhost", "127.0.0.3", "10.0.0.5"]
    assert [c.label for c in clients_for(use(server="127.0.0.1:3306"), g, [])] == ["127.0.0.1"]
    assert [c.label for c in clients_for(use(), g, ["10.1.1.1"])] == ["10.1.1.1"]


def run_judge(g: Grants, uses: list[Use], state: dict[str, Any] | None = None, **settings: Any) -> Report:
    report = Report("db_grants", DbGrantsProbe.metrics)
    s = DbGrantsProbe.Settings(**settings)
    judge(report, uses, [], g, "db.example.com:3306", s, {}, state if state is not None else {})
    return report


def findings(report: Report, severity: Severity) -> list[str]:
    return [f"{f.subject} | {f.message} | {f.remediation}" for f in report.findings if f.severity is severity]


def test_healthy_all_on_the_database() -> None:
    g = grants(accounts=[Account("%", "nova")], dbs=[DbRow("%", "nova\\_api", "nova", ALL)])
    report = run_judge(g, [use()])
    assert not report.findings
    assert [s.value for s in report.samples if s.name == "healthd_db_grants_ok"] == [1.0]


def test_missing_grant_is_critical_with_the_fix() -> None:
    g = grants(accounts=[Account("%", "nova")], dbs=[DbRow("%", "nova_cell1", "nova", ALL)])
    report = run_judge(g, [use()], client_hosts=["10.0.0.11"])
    [text] = findings(report, Severity.CRITICAL)
    assert "'nova'@'10.0.0.11' on nova_api" in text
    assert "lacks SELECT, INSERT, UPDATE, DELETE" in text
    assert "GRANT ALL PRIVILEGES ON `nova_api`.* TO 'nova'@'%';" in text


def test_any_host_mode_warns_about_an_anonymous_shadow_and_pages_on_the_own_pattern() -> None:
    g = grants(accounts=[Account("%", "nova"), Account("127.0.0.3", "")],
               dbs=[DbRow("%", "nova_api", "nova", ALL)])
    report = run_judge(g, [use()])
    [warning] = findings(report, Severity.WARNING)
    assert "anonymous account ''@'127.0.0.3'" in warning and "DROP USER ''@'127.0.0.3'" in warning
    assert not findings(report, Severity.CRITICAL)
    report = run_judge(g, [use()], client_hosts=["127.0.0.3"])
    assert len(findings(report, Severity.CRITICAL)) == 1


def test_table_level_only_is_a_warning_and_sync_privileges_are_info() -> None:
    tables = [TableRow("%", "nova_api", "nova", "cell_mappings", frozenset(RUNTIME))]
    g = grants(accounts=[Account("%", "nova")], tables=tables)
    report = run_judge(g, [use()])
    [warning] = findings(report, Severity.WARNING)
    assert "table-level grant(s) only (cell_mappings)" in warning
    g = grants(accounts=[Account("%", "nova")], dbs=[DbRow("%", "nova_api", "nova", frozenset(RUNTIME))])
    report = run_judge(g, [use()])
    [info] = findings(report, Severity.INFO)
    assert "CREATE, ALTER, INDEX, DROP" in info and report.status().name == "OK"


def test_no_account_and_other_servers() -> None:
    report = run_judge(grants(accounts=[]), [use()])
    [text] = findings(report, Severity.CRITICAL)
    assert "no account 'nova' exists" in text
    report = run_judge(grants(accounts=[]), [use(server="other-db:3306")])
    [info] = findings(report, Severity.INFO)
    assert "not the audited server" in info
    report = run_judge(grants(accounts=[]), [use(server="vip:3306")], server_aliases=["vip"])
    assert findings(report, Severity.CRITICAL)


def test_access_denied_delta_warns_once_it_rises() -> None:
    state: dict[str, Any] = {}
    g = grants(accounts=[])
    g.denied = 10
    report = run_judge(g, [], state)
    assert not report.findings
    g.denied = 14  # 4: below the default threshold of 5 (a person's mistyped password)
    report = run_judge(g, [], state)
    assert [s.value for s in report.samples if s.name == "healthd_db_grants_access_denied_increase"] == [4.0]
    assert not report.findings
    g.denied = 19
    report = run_judge(g, [], state)
    [warning] = findings(report, Severity.WARNING)
    assert "rose by 5" in warning and "every user's denials" in warning
    g.denied = 2  # server restarted
    report = run_judge(g, [], state)
    assert not report.findings


def test_rows_from_the_server_shape() -> None:
    g = grants_from_rows(
        [{"Host": "%", "User": "nova", "Select_priv": "Y", "Insert_priv": "N", "is_role": "N",
          "default_role": ""}],
        [{"Host": "%", "Db": "nova_api", "User": "nova", "Select_priv": "Y", "Delete_priv": "Y"}],
        [{"Host": "%", "Db": "nova_api", "User": "nova", "Table_name": "t", "Table_priv": "Select,Insert",
          "Column_priv": ""}],
        [{"Host": "%", "User": "nova", "Role": "r"}],
        {"skip_name_resolve": 0, "denied": "7"})
    assert g.accounts[0].privs == {"SELECT"}
    assert g.dbs[0].privs == {"SELECT", "DELETE"}
    assert g.tables[0].privs == {"SELECT", "INSERT"}
    assert g.denied == 7 and g.skip_name_resolve is False


@pytest.mark.parametrize("bad", [{"unknown": 1}, {"denied_increase_warning": -1}])
def test_settings_reject_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DbGrantsProbe.Settings(**bad)


def test_any_host_mode_a_narrower_db_row_is_a_warning_naming_its_host() -> None:
    g = grants(accounts=[Account("%", "nova")],
               dbs=[DbRow("%", "nova_api", "nova", ALL),
                    DbRow("10.0.0.5", "nova_api", "nova", frozenset({"SELECT"}))])
    report = run_judge(g, [use()])
    [warning] = findings(report, Severity.WARNING)
    assert warning.startswith("'nova'@'10.0.0.5' on nova_api")
    assert "the more specific mysql.db row 'nova'@'10.0.0.5'" in warning
    assert "lacks INSERT, UPDATE, DELETE" in warning
    assert not findings(report, Severity.CRITICAL)
    # the same row for a host the services are configured to connect from: CRITICAL
    report = run_judge(g, [use()], client_hosts=["10.0.0.5"])
    assert len(findings(report, Severity.CRITICAL)) == 1


def test_the_host_a_loopback_url_connects_as() -> None:
    g = grants(accounts=[Account("localhost", "nova")], dbs=[DbRow("localhost", "nova_api", "nova", ALL)])
    tcp = Use("nova", "nova", "nova_api", "localhost:3306", "f [api_database] connection")
    sock = Use("nova", "nova", "nova_api", "localhost:3306", "f [api_database] connection", socket=True)
    # PyMySQL dials TCP: with skip_name_resolve the server sees 127.0.0.1, not 'localhost'

    here = {"server_aliases": ["localhost"]}
    assert findings(run_judge(g, [tcp], **here), Severity.CRITICAL)
    g.skip_name_resolve = False  # with name resolution 127.0.0.1 is also "localhost"
    assert not run_judge(g, [tcp], **here).findings
    g.skip_name_resolve = True
    assert not run_judge(g, [sock], **here).findings  # mysqlclient's socket: host 'localhost'


def test_ignore_and_several_places_in_one_finding() -> None:
    g = grants(accounts=[Account("%", "nova")])
    other = Use("nova", "nova", "nova_api", "db.example.com:3306", "cell cell1 (nova_api.cell_mappings)")
    report = run_judge(g, [use(), other], client_hosts=["10.0.0.11"])
    [text] = findings(report, Severity.CRITICAL)
    assert "[api_database] connection; cell cell1" in text
    assert not run_judge(g, [use()], ignore=["nova@nova_api"]).findings
