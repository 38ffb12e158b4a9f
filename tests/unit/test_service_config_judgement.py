"""service_config judgement on plain data: parsed files and each endpoint's outcome in, findings out.

Nothing is resolved or connected to: tests/test_service_config_probe.py does that against a
real RabbitMQ and memcached. Files are written under tmp_path and read with oslo_ini (oslo.config).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from checks.service_config import (
    M_CONSISTENT,
    M_ENDPOINT,
    M_FILE,
    M_VARIANTS,
    CellBroker,
    Outcome,
    Plan,
    ServiceConfigProbe,
    Target,
    _auth_failure,
    _connect_failure,
    _tls_failure,
    _tls_file_failure,
    _wrong_family,
    cell_brokers,
    collect,
    judge,
    permission_outcome,
    report_files,
)
from healthd.errors import BackendUnavailable, Refused, TimedOut, TlsFailed, TlsUntrusted
from healthd.model import Report, Severity, Status
from healthd.openstack import oslo_ini
from healthd.openstack.messaging import AmqpTls, Permissions, TlsFileError
from tests.helpers.probes import ProbeRun

PASSWORD = "Unit-secret-51c9"
DOWN = Outcome(False, "connection refused: nothing listens on this port", "start it")
POOL = "oslo_cache.memcache_pool"
HASH = "dogpile.cache.pymemcache"


def nova_conf(tmp_path: Path, name: str = "nova.conf", brokers: str = "h1:5672", memcache: str = "mc1:11211",
              vhost: str = "nova", extra: str = "", backend: str = POOL, notify: str = "messagingv2") -> \
        oslo_ini.ConfigFile:
    hosts = ",".join(f"nova:{PASSWORD}@{b}" for b in brokers.split(","))
    path = tmp_path / name
    path.write_text(
        f"[DEFAULT]\ntransport_url = rabbit://{hosts}/{vhost}\n"
        f"[oslo_messaging_notifications]\ndriver = {notify}\ntransport_url = rabbit://{hosts}/{vhost}\n"
        f"[cache]\nenabled = true\nbackend = {backend}\nmemcache_servers = {memcache}\n"
        f"[keystone_authtoken]\nmemcached_servers = {memcache}\n" + extra
    )
    return read(path)


def read(path: Path) -> oslo_ini.ConfigFile:
    cf = oslo_ini.read(str(path))
    assert cf.error is None, cf.error
    return cf


def conf(tmp_path: Path, name: str, text: str) -> oslo_ini.ConfigFile:
    path = tmp_path / name
    path.write_text(text)
    return read(path)


class Judged(ProbeRun):
    plan: Plan


def judged(*configs: oslo_ini.ConfigFile, failing: dict[str, Outcome] | None = None,
           cells: list[CellBroker] | None = None) -> Judged:
    """collect + judge, every endpoint up except those in failing (endpoint -> outcome)."""
    report = Report(ServiceConfigProbe.name, ServiceConfigProbe.metrics)
    plan = collect(report, list(configs), cells)
    failing = failing or {}
    outcomes = {t: failing.get(t.endpoint, Outcome(True)) for t in plan.uses}
    judge(report, plan, outcomes, len(configs))
    run = Judged(report.result(0, 0))
    run.plan = plan
    return run


def endpoint(run: ProbeRun, cf: oslo_ini.ConfigFile, section: str, option: str, kind: str,
             where: str) -> float | None:
    return run.value(M_ENDPOINT, file=cf.path, section=section, option=option, kind=kind, endpoint=where)


def test_healthy_file_is_ok_and_each_endpoint_is_one_target(tmp_path: Path) -> None:
    cf = nova_conf(tmp_path)
    run = judged(cf)
    assert run.status is Status.OK and run.findings == []
    assert sorted((t.kind, t.endpoint, t.user, t.vhost, t.exchange) for t in run.plan.uses) == [
        ("memcached", "mc1:11211", "", "", ""), ("rabbit", "h1:5672", "nova", "nova", "nova")]
    for section in ("DEFAULT", "oslo_messaging_notifications"):
        assert endpoint(run, cf, section, "transport_url", "rabbit", "h1:5672") == 1
    assert endpoint(run, cf, "cache", "memcache_servers", "memcached", "mc1:11211") == 1
    assert endpoint(run, cf, "keystone_authtoken", "memcached_servers", "memcached", "mc1:11211") == 1
    assert run.value(M_CONSISTENT, section="cache", option="memcache_servers") == 1
    assert run.value(M_VARIANTS, section="DEFAULT", option="transport_url") == 1
    assert run.summary == ("1 file(s), 2 endpoint(s) checked, 0 failing, 0 option(s) disagree between "
                           "files of a service")
    assert PASSWORD not in run.everything()
    assert PASSWORD not in repr(list(run.plan.uses))


# -- endpoints ----------------------------------------------------------------------


def test_the_only_broker_down_is_critical_and_names_every_place(tmp_path: Path) -> None:
    cf = nova_conf(tmp_path)
    run = judged(cf, failing={"h1:5672": DOWN})
    assert run.status is Status.CRITICAL
    [finding] = run.findings
    assert finding.severity is Severity.CRITICAL and finding.subject == "rabbit h1:5672"
    assert finding.message == (
        "connection refused: nothing listens on this port (user nova, vhost nova); configured in "
        f"{cf.path} [DEFAULT] transport_url = rabbit://nova:***@h1:5672/nova; "
        f"{cf.path} [oslo_messaging_notifications] transport_url = rabbit://nova:***@h1:5672/nova")
    assert finding.remediation == "start it"
    assert endpoint(run, cf, "DEFAULT", "transport_url", "rabbit", "h1:5672") == 0
    assert run.summary.startswith("1 file(s), 2 endpoint(s) checked, 1 failing")


def test_one_broker_of_a_live_cluster_down_is_a_warning(tmp_path: Path) -> None:
    run = judged(nova_conf(tmp_path, brokers="h1:5672,h2:5672,h3:5672"), failing={"h2:5672": DOWN})
    assert run.status is Status.WARNING
    [finding] = run.findings
    assert finding.severity is Severity.WARNING and finding.subject == "rabbit h2:5672"


def test_every_broker_of_a_cluster_down_is_critical(tmp_path: Path) -> None:
    run = judged(nova_conf(tmp_path, brokers="h1:5672,h2:5672"), failing={"h1:5672": DOWN, "h2:5672": DOWN})
    assert [(f.subject, f.severity) for f in run.findings] == [
        ("rabbit h1:5672", Severity.CRITICAL), ("rabbit h2:5672", Severity.CRITICAL)]


def test_a_broker_that_is_alone_in_any_file_is_critical(tmp_path: Path) -> None:
    clustered = nova_conf(tmp_path, "a.conf", brokers="h1:5672,h2:5672")
    alone = nova_conf(tmp_path, "b.conf", brokers="h2:5672")
    run = judged(clustered, alone, failing={"h2:5672": DOWN})
    [finding] = run.about("rabbit h2:5672")
    assert finding.severity is Severity.CRITICAL
    assert f"{clustered.path} [DEFAULT]" in finding.message and f"{alone.path} [DEFAULT]" in finding.message


def test_a_memcached_down_is_critical_even_with_live_siblings(tmp_path: Path) -> None:
    cf = nova_conf(tmp_path, memcache="mc1:11211,mc2:11211")
    run = judged(cf, failing={"mc2:11211": DOWN})
    assert run.status is Status.CRITICAL
    [finding] = run.findings
    assert finding.subject == "memcached mc2:11211" and finding.severity is Severity.CRITICAL
    assert finding.message == (
        "connection refused: nothing listens on this port; configured in "
        f"{cf.path} [cache] memcache_servers = mc1:11211,mc2:11211; "
        f"{cf.path} [keystone_authtoken] memcached_servers = mc1:11211,mc2:11211")
    assert endpoint(run, cf, "cache", "memcache_servers", "memcached", "mc1:11211") == 1
    assert endpoint(run, cf, "cache", "memcache_servers", "memcached", "mc2:11211") == 0


def test_another_driver_is_checked_by_tcp_and_shown_without_user(tmp_path: Path) -> None:
    run = judged(conf(tmp_path, "x.conf", "[DEFAULT]\ntransport_url = kafka://k1:9092\n"),
                 failing={"k1:9092": DOWN})
    [target] = run.plan.uses
    assert (target.kind, target.endpoint, target.user) == ("transport", "k1:9092", "")
    [finding] = run.findings
    assert finding.subject == "transport k1:9092" and finding.severity is Severity.CRITICAL
    assert finding.message.startswith("connection refused: nothing listens on this port; configured in")


def test_two_users_on_one_broker_are_two_targets(tmp_path: Path) -> None:
    run = judged(conf(tmp_path, "x.conf", "[DEFAULT]\ntransport_url = rabbit://a:pa@h1:5672/\n"
                                          "[oslo_messaging_notifications]\ndriver = messaging\n"
                                          "transport_url = rabbit://b:pb@h1:5672/\n"))
    assert sorted(t.user for t in run.plan.uses) == ["a", "b"]
    assert {t.vhost for t in run.plan.uses} == {"/"}


def test_a_host_without_credentials_is_checked_as_guest(tmp_path: Path) -> None:
    run = judged(conf(tmp_path, "x.conf", "[DEFAULT]\ntransport_url = rabbit://nova:pw1@h1,h2/nova\n"))
    by_host = {t.host: t for t in run.plan.uses}
    assert (by_host["h1"].user, by_host["h1"].credentials_written) == ("nova", True)
    assert (by_host["h2"].user, by_host["h2"].password, by_host["h2"].credentials_written) == (
        "guest", "guest", False)
    [note] = run.findings
    assert note.severity is Severity.INFO and "guest/guest" in note.message


def test_tls_targets_carry_the_files_of_their_config(tmp_path: Path) -> None:
    cf = nova_conf(tmp_path, extra="[oslo_messaging_rabbit]\nssl = true\nssl_ca_file = /etc/pki/ca.pem\n"
                                   "ssl_cert_file = /etc/pki/c.pem\n")
    rabbit = [t for t in judged(cf).plan.uses if t.kind == "rabbit"]
    assert [t.tls for t in rabbit] == [AmqpTls("/etc/pki/ca.pem", "/etc/pki/c.pem", "")]
    plain = nova_conf(tmp_path, "plain.conf")
    assert all(t.tls is None for t in judged(plain).plan.uses)


def test_an_unparsable_transport_url_is_critical_without_its_password(tmp_path: Path) -> None:
    path = tmp_path / "x.conf"
    path.write_text(f"[DEFAULT]\ntransport_url = rabbit://nova:{PASSWORD}X@h1:56x72/\n"
                    "[oslo_messaging_notifications]\ndriver = messagingv2\ntransport_url = just-a-host\n")
    run = judged(read(path))
    assert run.status is Status.CRITICAL
    broken, notifications = run.findings
    assert broken.subject == f"{path} [DEFAULT] transport_url"
    assert broken.message == ("cannot be parsed: invalid port number (int() fails in oslo_utils "
                              "parse_host_port); the service cannot reach its message broker")
    # the hint survives the redactor whole (it used to come out as rabbit://USER:***@HOST)
    assert broken.remediation == oslo_ini.URL_FIX
    assert "USER:PASSWORD@HOST:PORT" in broken.remediation
    assert notifications.subject == f"{path} [oslo_messaging_notifications] transport_url"
    assert "no driver given" in notifications.message
    assert run.plan.uses == {} and run.plan.values == {}
    assert f"{PASSWORD}X" not in run.everything()


def test_amqp_scheme_is_critical(tmp_path: Path) -> None:
    run = judged(conf(tmp_path, "nova.conf", f"[DEFAULT]\ntransport_url = amqp://nova:{PASSWORD}@h1/nova\n"))
    [finding] = run.findings
    assert finding.severity is Severity.CRITICAL and "'amqp' driver" in finding.message
    assert run.plan.uses == {}


# -- what oslo.cache and the notifier do not use --------------------------------------------


def test_dead_servers_of_a_cache_that_is_off_are_info_without_metrics(tmp_path: Path) -> None:
    cf = conf(tmp_path, "nova.conf", "[DEFAULT]\ntransport_url = rabbit://nova:pw@h1/nova\n"
                                     "[cache]\nbackend = oslo_cache.memcache_pool\n"
                                     "memcache_servers = mc9:11211\n")
    run = judged(cf, failing={"mc9:11211": DOWN})
    assert run.status is Status.OK
    [finding] = run.findings
    assert finding.severity is Severity.INFO and finding.subject == "memcached mc9:11211"
    assert "[cache] enabled is false by default" in finding.message
    assert "nothing uses it now" in finding.message
    assert run.values(M_ENDPOINT) == [({"endpoint": "h1:5672", "file": cf.path, "kind": "rabbit",
                                        "option": "transport_url", "section": "DEFAULT"}, 1.0)]
    assert run.value(M_CONSISTENT, section="cache", option="memcache_servers") is None


def test_a_cache_that_is_off_is_not_compared(tmp_path: Path) -> None:
    on = nova_conf(tmp_path, "nova-a.conf", memcache="mc1:11211,mc2:11211")
    off = conf(tmp_path, "nova-b.conf", "[cache]\nenabled = false\nbackend = oslo_cache.memcache_pool\n"
                                   "memcache_servers = mc2:11211,mc1:11211\n")
    run = judged(on, off)
    assert run.findings == []


def test_a_dead_notification_broker_with_notifications_off_is_info(tmp_path: Path) -> None:
    cf = conf(tmp_path, "nova.conf", "[DEFAULT]\ntransport_url = rabbit://nova:pw@h1/nova\n"
                                     "[oslo_messaging_notifications]\ndriver = noop\n"
                                     "transport_url = rabbit://nova:pw@h9/notify\n")
    run = judged(cf, failing={"h9:5672": DOWN})
    [finding] = run.findings
    assert finding.severity is Severity.INFO and "notifications are off" in finding.message
    assert endpoint(run, cf, "oslo_messaging_notifications", "transport_url", "rabbit", "h9:5672") is None


# -- memcache entries the library cannot parse --------------------------------------------------


def test_an_ipv6_entry_python_memcached_cannot_parse_is_critical(tmp_path: Path) -> None:
    cf = nova_conf(tmp_path, memcache="[::1]:11211")
    run = judged(cf)
    assert run.status is Status.CRITICAL
    cache_entry, authtoken_entry = run.findings
    assert cache_entry.subject == f"{cf.path} [cache] memcache_servers"
    assert "python-memcached cannot parse it" in cache_entry.message
    assert cache_entry.remediation.startswith("write it as inet6:[::1]:11211")
    assert authtoken_entry.subject == f"{cf.path} [keystone_authtoken] memcached_servers"
    assert [t for t in run.plan.uses if t.kind == "memcached"] == []  # the service never reaches it


def test_the_python_memcached_form_is_wrong_for_pymemcache(tmp_path: Path) -> None:
    cf = conf(tmp_path, "nova.conf", "[cache]\nenabled = true\nbackend = dogpile.cache.pymemcache\n"
                                     "memcache_servers = inet6:[::1]:11211\n")
    [finding] = judged(cf).findings
    assert finding.severity is Severity.CRITICAL and "pymemcache reads the host as" in finding.message
    assert finding.remediation.startswith("write it as [::1]:11211")


def test_ipv4_only_entries_carry_their_family(tmp_path: Path) -> None:
    cf = nova_conf(tmp_path, memcache="mc1:11211,inet6:[mc2]:11211")
    families = {t.endpoint: t.family for t in judged(cf).plan.uses if t.kind == "memcached"}
    assert families == {"mc1:11211": "inet", "mc2:11211": "inet6"}


# -- consistency between the files of one service ------------------------------------------


def test_memcache_lists_in_another_order_disagree_for_python_memcached(tmp_path: Path) -> None:
    one = nova_conf(tmp_path, "nova-a.conf", memcache="mc1:11211,mc2:11211")
    two = nova_conf(tmp_path, "nova-b.conf", memcache="mc1:11211,mc2:11211")
    odd = nova_conf(tmp_path, "nova-c.conf", memcache="mc2:11211,mc1:11211")
    run = judged(one, two, odd)
    assert run.status is Status.WARNING
    cache, authtoken = run.findings
    assert cache.subject == "nova: [cache] memcache_servers"
    assert authtoken.subject == "nova: [keystone_authtoken] memcached_servers"
    assert cache.message.startswith(
        f"nova files disagree: {one.path}, {two.path} list [mc1:11211,mc2:11211] but {odd.path} list "
        "[mc2:11211,mc1:11211]; order matters: python-memcached maps each key to a position in the list")
    assert "(same servers, same order)" in cache.remediation
    assert run.value(M_CONSISTENT, section="cache", option="memcache_servers") == 0
    assert run.value(M_VARIANTS, section="cache", option="memcache_servers") == 2
    assert run.value(M_CONSISTENT, section="DEFAULT", option="transport_url") == 1
    assert run.summary.endswith("2 option(s) disagree between files of a service")


def test_pymemcache_lists_in_another_order_agree(tmp_path: Path) -> None:
    """dogpile.cache.pymemcache: HashClient's rendezvous hash does not depend on the order."""
    one = nova_conf(tmp_path, "nova-a.conf", memcache="mc1:11211,mc2:11211", backend=HASH)
    two = nova_conf(tmp_path, "nova-b.conf", memcache="mc2:11211, mc1:11211", backend=HASH)
    run = judged(one, two)
    assert run.about("[cache]") == []
    assert run.value(M_CONSISTENT, section="cache", option="memcache_servers") == 1
    # keystonemiddleware reads the same lists with python-memcached: there the order matters
    [authtoken] = run.about("nova: [keystone_authtoken] memcached_servers")
    assert "order matters" in authtoken.message


def test_pymemcache_lists_with_other_servers_disagree(tmp_path: Path) -> None:
    one = nova_conf(tmp_path, "nova-a.conf", memcache="mc1:11211,mc2:11211", backend=HASH)
    two = nova_conf(tmp_path, "nova-b.conf", memcache="mc1:11211,mc3:11211", backend=HASH)
    [cache] = judged(one, two).about("nova: [cache]")
    assert "rendezvous hashing: the order does not matter, the names do" in cache.message
    assert "same order" not in cache.remediation


def test_same_servers_through_different_libraries_disagree(tmp_path: Path) -> None:
    one = nova_conf(tmp_path, "nova-a.conf", memcache="mc1:11211,mc2:11211")
    two = nova_conf(tmp_path, "nova-b.conf", memcache="mc1:11211,mc2:11211", backend=HASH)
    [cache] = judged(one, two).about("nova: [cache]")
    shown = f"{one.path} list [mc1:11211,mc2:11211] (python-memcached via [cache] backend {POOL})"
    assert shown in cache.message
    assert "the client libraries place keys differently" in cache.message
    assert "same backend" in cache.remediation


def test_the_deprecated_authtoken_name_is_compared_with_the_new_one(tmp_path: Path) -> None:
    new = conf(tmp_path, "nova-a.conf", "[keystone_authtoken]\nmemcached_servers = mc1:11211,mc2:11211\n")
    old = conf(tmp_path, "nova-b.conf", "[keystone_authtoken]\nmemcache_servers = mc2:11211,mc1:11211\n")
    run = judged(new, old)
    [finding] = run.findings
    assert finding.subject == "nova: [keystone_authtoken] memcached_servers"
    assert f"{old.path} list [mc2:11211,mc1:11211]" in finding.message
    places = {u.place for uses in run.plan.uses.values() for u in uses}
    assert f"{old.path} [keystone_authtoken] memcache_servers" in places


def test_different_services_may_use_different_vhosts_and_caches(tmp_path: Path) -> None:
    """openstack-ansible gives each service its own vhost (and user): nova.conf is compared
    with other nova files, never with keystone.conf or glance-api.conf."""
    nova = nova_conf(tmp_path, "nova.conf", vhost="nova", memcache="mc1:11211,mc2:11211")
    keystone = conf(tmp_path, "keystone.conf", "[oslo_messaging_notifications]\ndriver = messagingv2\n"
                    "transport_url = rabbit://keystone:pw@h1:5672/keystone\n"
                    "[cache]\nenabled = true\nbackend = oslo_cache.memcache_pool\n"
                    "memcache_servers = mc2:11211,mc1:11211\n")
    glance = conf(tmp_path, "glance-api.conf", "[DEFAULT]\ntransport_url = rabbit://glance:pw@h1:5672/glance\n")
    run = judged(nova, keystone, glance)
    assert run.findings == []
    assert run.value(M_CONSISTENT, section="DEFAULT", option="transport_url") == 1


def test_brokers_or_vhosts_that_differ_within_a_service_disagree(tmp_path: Path) -> None:
    one = nova_conf(tmp_path, "nova-a.conf", brokers="h1:5672,h2:5672", vhost="nova")
    two = nova_conf(tmp_path, "nova-compute.conf", brokers="h1:5672,h2:5672", vhost="nova2")
    run = judged(one, two, cells=[])  # cell_mappings read: no cell has its own broker
    [default, notifications] = run.about("transport_url")
    assert default.subject == "nova: [DEFAULT] transport_url" and default.severity is Severity.WARNING
    assert default.message == (f"nova files disagree: {one.path} list [h1:5672/nova, h2:5672/nova] but "
                               f"{two.path} list [h1:5672/nova2, h2:5672/nova2]: services of this kind on "
                               "these nodes use different brokers or vhosts and may not hear each other")
    assert "(same servers)" in default.remediation and "order" not in default.remediation
    assert notifications.subject == "nova: [oslo_messaging_notifications] transport_url"
    assert run.value(M_CONSISTENT, section="DEFAULT", option="transport_url") == 0


def test_nova_rpc_brokers_that_differ_without_cell_mappings_are_only_info(tmp_path: Path) -> None:
    """devstack's default (superconductor): nova.conf on vhost "/", nova_cell1.conf on "nova_cell1".
    Without cell_mappings healthd cannot tell a second cell from a stray file: INFO, no metric."""
    top = nova_conf(tmp_path, "nova.conf", vhost="")
    cell1 = nova_conf(tmp_path, "nova_cell1.conf", vhost="nova_cell1")
    run = judged(top, cell1)
    [rpc, notifications] = run.about("transport_url")
    assert rpc.severity is Severity.INFO and rpc.subject == "nova: [DEFAULT] transport_url"
    assert "backends.databases.nova_api" in rpc.message
    assert notifications.severity is Severity.INFO
    assert run.status is Status.OK
    assert run.value(M_CONSISTENT, section="DEFAULT", option="transport_url") == 1
    assert run.summary.endswith("0 option(s) disagree between files of a service")
    glance = conf(tmp_path, "glance-api.conf", "[DEFAULT]\ntransport_url = rabbit://g:p@h1/glance\n")
    glance2 = conf(tmp_path, "glance-api-2.conf", "[DEFAULT]\ntransport_url = rabbit://g:p@h1/glance2\n")
    [other] = judged(glance, glance2).findings
    assert other.severity is Severity.WARNING and other.subject == "glance: [DEFAULT] transport_url"


def test_nova_files_on_different_cells_brokers_are_not_compared(tmp_path: Path) -> None:
    """Each cell's services use their cell's broker (nova_api.cell_mappings.transport_url)."""
    api = nova_conf(tmp_path, "nova.conf", brokers="api-mq:5672", vhost="nova")
    cell1 = nova_conf(tmp_path, "nova-cell1.conf", brokers="mq1:5672", vhost="nova_cell1")
    cell2 = nova_conf(tmp_path, "nova-cell2.conf", brokers="mq2:5672", vhost="nova_cell2")
    cell2b = nova_conf(tmp_path, "nova-cell2-b.conf", brokers="mq2:5672", vhost="nova_cell2_typo")
    cells = cell_brokers([
        {"uuid": "00000000-0000-0000-0000-000000000000", "name": "cell0", "transport_url": "none:///"},
        {"uuid": "u1", "name": "cell1", "transport_url": "rabbit://nova:x@mq1:5672/nova_cell1"},
        {"uuid": "u2", "name": "cell2", "transport_url": "rabbit://nova:y@mq2:5672/nova_cell2"},
    ])
    assert [c.label for c in cells] == ["cell cell1", "cell cell2"]
    without = judged(api, cell1, cell2)
    unsure = without.about("nova: [DEFAULT] transport_url")  # cannot tell cells from strays
    assert unsure and all(f.severity is Severity.INFO for f in unsure)
    run = judged(api, cell1, cell2, cells=cells)
    assert run.about("transport_url") == []
    # the typo'd vhost matches no cell: it is compared with the top-level files
    typo = judged(api, cell1, cell2, cell2b, cells=cells)
    [finding, _notifications] = typo.about("transport_url")
    assert finding.subject == "nova: [DEFAULT] transport_url" and cell2b.path in finding.message


def test_each_minority_list_is_compared_with_the_most_common(tmp_path: Path) -> None:
    files = [nova_conf(tmp_path, f"nova-{n}.conf", memcache=m) for n, m in
             (("a", "mc1:11211"), ("b", "mc2:11211"), ("c", "mc2:11211"), ("d", "mc3:11211"))]
    run = judged(*files)
    messages = [f.message for f in run.about("nova: [cache] memcache_servers")]
    assert len(messages) == 2
    assert all(m.startswith(f"nova files disagree: {files[1].path}, {files[2].path} list [mc2:11211]")
               for m in messages)
    assert run.value(M_VARIANTS, section="cache", option="memcache_servers") == 3


def test_broker_order_and_credentials_do_not_matter(tmp_path: Path) -> None:
    one = nova_conf(tmp_path, "nova-a.conf", brokers="h1:5672,h2:5672")
    two = conf(tmp_path, "nova-a2.conf", "[DEFAULT]\ntransport_url = rabbit://other:pw2@h2:5672,other:pw2@h1:5672/nova\n")
    run = judged(one, two)
    assert run.findings == []
    assert run.value(M_CONSISTENT, section="DEFAULT", option="transport_url") == 1


def test_a_file_without_the_option_does_not_disagree(tmp_path: Path) -> None:
    other = conf(tmp_path, "nova-ab.conf", "[DEFAULT]\ndebug = true\n")
    run = judged(nova_conf(tmp_path, "nova-a.conf"), other)
    assert run.findings == [] and run.summary.startswith("2 file(s), 2 endpoint(s)")


# -- the files themselves -------------------------------------------------------------


def files_report(missing: list[oslo_ini.MissingPattern], files: list[oslo_ini.ConfigFile]) -> tuple[
        ProbeRun, list[oslo_ini.ConfigFile]]:
    report = Report(ServiceConfigProbe.name, ServiceConfigProbe.metrics)
    usable = report_files(report, missing, files)
    return ProbeRun(report.result(0, 0)), usable


@pytest.mark.parametrize("error,fix", [
    ("permission denied",
     "grant read access to the healthd user: setfacl -m u:healthd:r /etc/nova/nova.conf"),
    ("file does not exist", "fix the path in checks.service_config.files, or the file itself"),
])
def test_an_unreadable_file_is_a_warning_and_left_out(error: str, fix: str) -> None:
    good = oslo_ini.ConfigFile("/etc/glance/glance-api.conf")
    run, usable = files_report([], [oslo_ini.ConfigFile("/etc/nova/nova.conf", error=error), good])
    assert usable == [good]
    [finding] = run.findings
    assert finding.severity is Severity.WARNING and finding.subject == "file /etc/nova/nova.conf"
    assert finding.message == f"cannot be checked: {error}"
    assert finding.remediation.startswith(fix)
    assert run.value(M_FILE, file="/etc/nova/nova.conf") == 0
    assert run.value(M_FILE, file="/etc/glance/glance-api.conf") == 1


def test_a_file_oslo_config_cannot_parse_is_critical(tmp_path: Path) -> None:
    path = tmp_path / "nova.conf"
    path.write_text(f"transport_url = rabbit://nova:{PASSWORD}@h1/\n")
    run, usable = files_report([], [oslo_ini.read(str(path))])
    assert usable == []
    [finding] = run.findings
    assert finding.severity is Severity.CRITICAL and finding.subject == f"file {path}"
    assert finding.message == ("oslo.config cannot parse it: line 1: Section must be started before "
                               "assignment: a service loading this file does not start")
    assert PASSWORD not in run.everything()


def test_a_pattern_that_matches_nothing_is_a_warning() -> None:
    run, usable = files_report([oslo_ini.MissingPattern("/etc/cinder/*.conf", True)], [])
    assert usable == []
    [finding] = run.findings
    assert finding.subject == "files pattern /etc/cinder/*.conf"
    assert finding.message.startswith("matches no file")
    assert run.status is Status.WARNING


# -- what a failed step is turned into ---------------------------------------------------


def test_connect_failures_by_type() -> None:
    rabbit = Target("rabbit", "h1", 5672)
    refused = _connect_failure(rabbit, Refused("h1:5672: cannot connect: connection refused"))
    assert refused.message == "connection refused: nothing listens on this port"
    assert "systemctl status rabbitmq-server" in refused.fix and "grep ':5672 '" in refused.fix
    assert "systemctl status memcached" in _connect_failure(Target("memcached", "m", 1), Refused("x")).fix
    timed_out = _connect_failure(rabbit, TimedOut("h1:5672: timed out"))
    assert timed_out.message.startswith("no TCP connection before the timeout")
    assert "check that h1 is up and 5672/tcp is open" in timed_out.fix
    other = _connect_failure(Target("rabbit", "fd00::1", 5672), BackendUnavailable("h1: weird"))
    assert other == Outcome(False, "cannot connect (h1: weird)", "check the network path to [fd00::1]:5672")


def test_untrusted_broker_certificate_names_how_the_services_verify() -> None:
    def untrusted(why: str) -> TlsUntrusted:
        return TlsUntrusted(f"AMQP h1:5671: TLS certificate not trusted: {why}", why)

    system = _tls_failure(Target("rabbit", "h1", 5671, tls=AmqpTls()), untrusted("expired"))
    assert system.message.startswith(
        "TLS certificate not trusted: expired; checked against the system CA store (ssl_ca_file is unset), "
        "host name not checked, as oslo.messaging does")
    assert system.fix.startswith("openssl s_client -connect h1:5671 -showcerts; renew")
    own = _tls_failure(Target("rabbit", "h1", 5671, tls=AmqpTls("/ca.pem")),
                       untrusted("IP address mismatch, certificate is not valid for 'h1'."))
    assert "checked against ssl_ca_file /ca.pem, host name included" in own.message
    assert "oslo.messaging verifies the host name when ssl_ca_file is set, so the certificate must name h1" \
        in own.message
    assert "-CAfile /ca.pem -verify_hostname h1" in own.fix
    failed = TlsFailed("AMQP h1:5671: TLS handshake failed: bad record")
    handshake = _tls_failure(Target("rabbit", "h1", 5671, tls=AmqpTls()), failed)
    assert handshake.message == "TLS handshake failed: bad record" and "openssl s_client" in handshake.fix


@pytest.mark.parametrize("denied,fix", [
    (True, "let the healthd user read the TLS files"),
    (False, "[oslo_messaging_rabbit] ssl_ca_file / ssl_cert_file / ssl_key_file must name PEM files"),
])
def test_tls_files_healthd_cannot_load(denied: bool, fix: str) -> None:
    outcome = _tls_file_failure(TlsFileError("cannot load CA file /ca.pem: Permission denied", denied))
    assert outcome.message.startswith("TLS setup failed: cannot load CA file /ca.pem")
    assert ("the services may still read it" in outcome.message) == denied
    assert outcome.fix.startswith(fix)


def test_auth_failure_of_a_host_without_credentials_says_guest() -> None:
    guest = _auth_failure(Target("rabbit", "h2", 5672, "guest", "guest", "nova", credentials_written=False))
    assert "the URL gives this host no USER:PASSWORD@ of its own" in guest.message
    assert "guest/guest" in guest.message
    own = _auth_failure(Target("rabbit", "h1", 5672, "nova", "x", "nova"))
    assert own.message == "authentication refused for user nova" and "change_password nova" in own.fix


def test_wrong_address_family_for_python_memcached() -> None:
    v6only = _wrong_family(Target("memcached", "mc6.example", 11211, family="inet"))
    assert "has no IPv4 address" in v6only.message
    assert v6only.fix == "write the entry as inet6:[mc6.example]:11211"
    v4only = _wrong_family(Target("memcached", "mc4.example", 11211, family="inet6"))
    assert "has no IPv6 address" in v4only.message


def test_permissions_refused_name_what_and_how_to_grant() -> None:
    target = Target("rabbit", "h1", 5672, "nova", "pw", "nova", exchange="nova")
    found = Permissions(True, (("configure", "exchange 'nova'"), ("read", "'reply_x'")))
    outcome = permission_outcome(target, found)
    assert not outcome.ok
    assert outcome.message.startswith(
        "user nova lacks the configure/read permission in vhost 'nova' (RabbitMQ refused: configure on "
        "exchange 'nova'; read on 'reply_x'): oslo.messaging cannot declare, bind, publish to or consume")
    assert "rabbitmqctl set_permissions -p nova nova '.*' '.*' '.*'" in outcome.fix
    assert permission_outcome(target, Permissions(True)) == Outcome(True)
    unknown = permission_outcome(target, Permissions(False, reason="ConnectionClosed"))
    assert unknown.ok and "not checked: ConnectionClosed" in unknown.note


def test_a_note_is_info_and_the_endpoint_stays_up(tmp_path: Path) -> None:
    cf = nova_conf(tmp_path)
    report = Report(ServiceConfigProbe.name, ServiceConfigProbe.metrics)
    plan = collect(report, [cf])
    outcomes = {t: Outcome(True, note="permissions of user nova in vhost 'nova' not checked: x")
                if t.kind == "rabbit" else Outcome(True) for t in plan.uses}
    judge(report, plan, outcomes, 1)
    run = ProbeRun(report.result(0, 0))
    [note] = run.findings
    assert note.severity is Severity.INFO and note.subject == "rabbit h1:5672"
    assert endpoint(run, cf, "DEFAULT", "transport_url", "rabbit", "h1:5672") == 1


# -- fingerprints: this node's values, for Prometheus to compare across nodes ---------------


def fingerprints(run: ProbeRun, service: str, section: str, option: str) -> list[str]:
    return sorted(labels["fingerprint"] for labels, _ in run.values("healthd_service_config_fingerprint_info")
                  if (labels["service"], labels["section"], labels["option"]) == (service, section, option))


def node(tmp_path: Path, name: str, **kw: str) -> ProbeRun:
    """One node's run over its own copy of nova.conf (a directory per node)."""
    (tmp_path / name).mkdir()
    return judged(nova_conf(tmp_path / name, **kw), cells=cell_brokers([
        {"name": "cell1", "transport_url": f"rabbit://nova:{PASSWORD}@h1:5672/nova"}]))


def test_nodes_with_the_same_servers_share_a_fingerprint_and_credentials_do_not_count(
        tmp_path: Path) -> None:
    a = node(tmp_path, "a")
    b = node(tmp_path, "b")  # the same file on another node
    [one] = fingerprints(a, "nova", "cache", "memcache_servers")
    assert fingerprints(b, "nova", "cache", "memcache_servers") == [one]
    assert len(one) == 12 and int(one, 16) >= 0
    # Another node whose file carries another password for the same brokers and vhost.
    (tmp_path / "c").mkdir()
    path = tmp_path / "c" / "nova.conf"
    path.write_text((tmp_path / "a" / "nova.conf").read_text().replace(PASSWORD, "Another-pw-77aa"))
    c = judged(read(path), cells=cell_brokers([
        {"name": "cell1", "transport_url": f"rabbit://nova:{PASSWORD}@h1:5672/nova"}]))
    assert fingerprints(c, "nova", "DEFAULT", "transport_url") == fingerprints(a, "nova", "DEFAULT",
                                                                              "transport_url") != []
    assert PASSWORD not in c.everything() and "Another-pw-77aa" not in c.everything()


def test_order_changes_the_fingerprint_only_where_the_client_hashes_by_position(tmp_path: Path) -> None:
    pool_ab = node(tmp_path, "p1", memcache="mc1:11211,mc2:11211")
    pool_ba = node(tmp_path, "p2", memcache="mc2:11211,mc1:11211")
    hash_ab = node(tmp_path, "h1", memcache="mc1:11211,mc2:11211", backend=HASH)
    hash_ba = node(tmp_path, "h2", memcache="mc2:11211,mc1:11211", backend=HASH)
    fp = [fingerprints(r, "nova", "cache", "memcache_servers") for r in (pool_ab, pool_ba, hash_ab, hash_ba)]
    assert fp[0] != fp[1]  # python-memcached: crc32 % n, the position is the server
    assert fp[2] == fp[3]  # pymemcache: rendezvous hash over names
    assert fp[0] != fp[2]  # the same list read by two libraries lands keys differently


def test_two_values_on_one_node_give_two_series(tmp_path: Path) -> None:
    run = judged(nova_conf(tmp_path, "nova.conf", memcache="mc1:11211"),
                 nova_conf(tmp_path, "nova-compute.conf", memcache="mc9:11211"))
    assert len(fingerprints(run, "nova", "cache", "memcache_servers")) == 2


def test_nova_brokers_are_not_fingerprinted_without_the_cells(tmp_path: Path) -> None:
    run = judged(nova_conf(tmp_path))
    assert fingerprints(run, "nova", "DEFAULT", "transport_url") == []
    assert len(fingerprints(run, "nova", "cache", "memcache_servers")) == 1
