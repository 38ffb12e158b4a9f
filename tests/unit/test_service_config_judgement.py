"""service_config judgement on plain data: parsed files and each endpoint's outcome in, findings out.

Nothing is resolved or connected to: tests/test_service_config_probe.py does that against a
real RabbitMQ and memcached. Files are written under tmp_path and parsed with oslo_ini.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from checks.service_config import (
    M_CONSISTENT,
    M_ENDPOINT,
    M_FILE,
    M_VARIANTS,
    Outcome,
    Plan,
    ServiceConfigProbe,
    Target,
    _connect_failure,
    _tls_failure,
    _tls_file_failure,
    collect,
    judge,
    report_files,
)
from healthd.errors import BackendUnavailable, Refused, TimedOut, TlsFailed, TlsUntrusted
from healthd.model import Report, Severity, Status
from healthd.openstack import oslo_ini
from healthd.openstack.messaging import AmqpTls, TlsFileError
from tests.helpers.probes import ProbeRun

PASSWORD = "Unit-secret-51c9"
DOWN = Outcome(False, "connection refused: nothing listens on this port", "start it")


def nova_conf(tmp_path: Path, name: str = "nova.conf", brokers: str = "h1:5672", memcache: str = "mc1:11211",
              vhost: str = "nova", extra: str = "") -> oslo_ini.ConfigFile:
    hosts = ",".join(f"nova:{PASSWORD}@{b}" for b in brokers.split(","))
    path = tmp_path / name
    path.write_text(
        f"[DEFAULT]\ntransport_url = rabbit://{hosts}/{vhost}\n"
        f"[oslo_messaging_notifications]\ntransport_url = rabbit://{hosts}/{vhost}\n"
        f"[cache]\nbackend = oslo_cache.memcache_pool\nmemcache_servers = {memcache}\n"
        f"[keystone_authtoken]\nmemcached_servers = {memcache}\n" + extra
    )
    cf = oslo_ini.read(str(path))
    assert cf.error is None
    return cf


class Judged(ProbeRun):
    plan: Plan


def judged(*configs: oslo_ini.ConfigFile, failing: dict[str, Outcome] | None = None) -> Judged:
    """collect + judge, every endpoint up except those in failing (endpoint -> outcome)."""
    report = Report(ServiceConfigProbe.name, ServiceConfigProbe.metrics)
    plan = collect(report, list(configs))
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
    assert sorted((t.kind, t.endpoint, t.user, t.vhost) for t in run.plan.uses) == [
        ("memcached", "mc1:11211", "", ""), ("rabbit", "h1:5672", "nova", "nova")]
    for section in ("DEFAULT", "oslo_messaging_notifications"):
        assert endpoint(run, cf, section, "transport_url", "rabbit", "h1:5672") == 1
    assert endpoint(run, cf, "cache", "memcache_servers", "memcached", "mc1:11211") == 1
    assert endpoint(run, cf, "keystone_authtoken", "memcached_servers", "memcached", "mc1:11211") == 1
    assert run.value(M_CONSISTENT, section="cache", option="memcache_servers") == 1
    assert run.value(M_VARIANTS, section="DEFAULT", option="transport_url") == 1
    assert run.summary == "1 file(s), 2 endpoint(s) checked, 0 failing, 0 option(s) disagree between files"
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
    assert run.summary == "1 file(s), 2 endpoint(s) checked, 1 failing, 0 option(s) disagree between files"


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
    path = tmp_path / "x.conf"
    path.write_text("[DEFAULT]\ntransport_url = kafka://k1:9092\n")
    run = judged(oslo_ini.read(str(path)), failing={"k1:9092": DOWN})
    [target] = run.plan.uses
    assert (target.kind, target.endpoint) == ("transport", "k1:9092")
    [finding] = run.findings
    assert finding.subject == "transport k1:9092" and finding.severity is Severity.CRITICAL
    assert finding.message.startswith("connection refused: nothing listens on this port; configured in")


def test_two_users_on_one_broker_are_two_targets(tmp_path: Path) -> None:
    path = tmp_path / "x.conf"
    path.write_text("[DEFAULT]\ntransport_url = rabbit://a:pa@h1:5672/\n"
                    "[oslo_messaging_notifications]\ntransport_url = rabbit://b:pb@h1:5672/\n")
    run = judged(oslo_ini.read(str(path)))
    assert sorted(t.user for t in run.plan.uses) == ["a", "b"]
    assert {t.vhost for t in run.plan.uses} == {"/"}


def test_tls_targets_carry_the_files_of_their_config(tmp_path: Path) -> None:
    cf = nova_conf(tmp_path, extra="[oslo_messaging_rabbit]\nssl = true\nssl_ca_file = /etc/pki/ca.pem\n"
                                   "kombu_ssl_certfile = /etc/pki/c.pem\n")
    rabbit = [t for t in judged(cf).plan.uses if t.kind == "rabbit"]
    assert [t.tls for t in rabbit] == [AmqpTls("/etc/pki/ca.pem", "/etc/pki/c.pem", "")]
    plain = nova_conf(tmp_path, "plain.conf")
    assert all(t.tls is None for t in judged(plain).plan.uses)


def test_an_unparsable_transport_url_is_critical_without_its_password(tmp_path: Path) -> None:
    path = tmp_path / "x.conf"
    path.write_text(f"[DEFAULT]\ntransport_url = rabbit://nova:{PASSWORD}X@h1:56x72/\n"
                    "[oslo_messaging_notifications]\ntransport_url = just-a-host\n")
    run = judged(oslo_ini.read(str(path)))
    assert run.status is Status.CRITICAL
    broken, notifications = run.findings
    assert broken.subject == f"{path} [DEFAULT] transport_url"
    assert broken.message == ("cannot be parsed: invalid port number; the service cannot reach its "
                              "message broker")
    # The redactor masks the PASSWORD placeholder of the example too (rabbit://USER:***@HOST:5672).
    assert broken.remediation.startswith("write it as rabbit://USER:") and "@HOST:5672," in broken.remediation
    assert notifications.subject == f"{path} [oslo_messaging_notifications] transport_url"
    assert "not a URL" in notifications.message
    assert run.plan.uses == {} and run.plan.values == {}
    assert f"{PASSWORD}X" not in run.everything()


# -- consistency between files ------------------------------------------------------


def test_memcache_lists_in_another_order_disagree(tmp_path: Path) -> None:
    one = nova_conf(tmp_path, "a.conf", memcache="mc1:11211,mc2:11211")
    two = nova_conf(tmp_path, "b.conf", memcache="mc1:11211,mc2:11211")
    odd = nova_conf(tmp_path, "c.conf", memcache="mc2:11211,mc1:11211")
    run = judged(one, two, odd)
    assert run.status is Status.WARNING
    cache, authtoken = run.findings
    assert cache.subject == "[cache] memcache_servers"
    assert authtoken.subject == "[keystone_authtoken] memcached_servers"
    assert cache.message.startswith(
        f"files disagree: {one.path}, {two.path} list [mc1:11211,mc2:11211] but {odd.path} list "
        "[mc2:11211,mc1:11211]; order matters: memcache clients map each key")
    assert "(same servers, same order)" in cache.remediation
    assert run.value(M_CONSISTENT, section="cache", option="memcache_servers") == 0
    assert run.value(M_VARIANTS, section="cache", option="memcache_servers") == 2
    assert run.value(M_CONSISTENT, section="DEFAULT", option="transport_url") == 1
    assert run.summary.endswith("2 option(s) disagree between files")


def test_each_minority_list_is_compared_with_the_most_common(tmp_path: Path) -> None:
    files = [nova_conf(tmp_path, f"{n}.conf", memcache=m) for n, m in
             (("a", "mc1:11211"), ("b", "mc2:11211"), ("c", "mc2:11211"), ("d", "mc3:11211"))]
    run = judged(*files)
    messages = [f.message for f in run.about("[cache] memcache_servers")]
    assert len(messages) == 2
    assert all(m.startswith(f"files disagree: {files[1].path}, {files[2].path} list [mc2:11211]")
               for m in messages)
    assert run.value(M_VARIANTS, section="cache", option="memcache_servers") == 3


def test_brokers_or_vhosts_that_differ_disagree(tmp_path: Path) -> None:
    one = nova_conf(tmp_path, "a.conf", brokers="h1:5672,h2:5672", vhost="nova")
    two = nova_conf(tmp_path, "b.conf", brokers="h1:5672,h2:5672", vhost="nova2")
    run = judged(one, two)
    [default, notifications] = run.about("transport_url")
    assert default.subject == "[DEFAULT] transport_url"
    assert default.message == (f"files disagree: {one.path} list [h1:5672/nova, h2:5672/nova] but {two.path} "
                               "list [h1:5672/nova2, h2:5672/nova2]: services on these nodes use different "
                               "brokers or vhosts and may not hear each other")
    assert "(same servers)" in default.remediation and "order" not in default.remediation
    assert notifications.subject == "[oslo_messaging_notifications] transport_url"


def test_broker_order_and_credentials_do_not_matter(tmp_path: Path) -> None:
    one = nova_conf(tmp_path, "a.conf", brokers="h1:5672,h2:5672")
    path = tmp_path / "b.conf"
    path.write_text("[DEFAULT]\ntransport_url = rabbit://other:pw2@h2:5672,other:pw2@h1:5672/nova\n")
    run = judged(one, oslo_ini.read(str(path)))
    assert run.findings == []
    assert run.value(M_CONSISTENT, section="DEFAULT", option="transport_url") == 1


def test_a_file_without_the_option_does_not_disagree(tmp_path: Path) -> None:
    path = tmp_path / "b.conf"
    path.write_text("[DEFAULT]\ndebug = true\n")
    run = judged(nova_conf(tmp_path, "a.conf"), oslo_ini.read(str(path)))
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
    ("not a valid INI file (MissingSectionHeaderError at line 1)",
     "fix the path in checks.service_config.files"),
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


def test_untrusted_broker_certificate_names_the_ca_option() -> None:
    def untrusted(why: str) -> TlsUntrusted:
        return TlsUntrusted(f"AMQP h1:5671: TLS certificate not trusted: {why}", why)

    system = _tls_failure(Target("rabbit", "h1", 5671, tls=AmqpTls()), untrusted("expired"))
    assert system.message.startswith(
        "TLS certificate not trusted: expired; checked against the system CA store")
    assert system.fix.startswith("openssl s_client -connect h1:5671 -showcerts; renew")
    own = _tls_failure(Target("rabbit", "h1", 5671, tls=AmqpTls("/ca.pem")), untrusted("x"))
    assert "checked against ssl_ca_file /ca.pem" in own.message and "-CAfile /ca.pem" in own.fix
    failed = TlsFailed("AMQP h1:5671: TLS handshake failed: bad record")
    handshake = _tls_failure(Target("rabbit", "h1", 5671, tls=AmqpTls()), failed)
    assert handshake.message == "TLS handshake failed: bad record" and "openssl s_client" in handshake.fix


def test_memcache_entry_with_a_bad_port_is_a_finding_not_a_crash(tmp_path) -> None:
    conf = tmp_path / "nova.conf"
    conf.write_text("[cache]\nenabled = true\nbackend = oslo_cache.memcache_pool\n"
                    "memcache_servers = 10.0.0.1:11211,10.0.0.2:11211x\n")
    report = Report(ServiceConfigProbe.name, ServiceConfigProbe.metrics)
    plan = collect(report, [oslo_ini.read(str(conf))])
    [finding] = report.findings
    assert finding.severity is Severity.CRITICAL and "'10.0.0.2:11211x'" in finding.message
    assert [t.endpoint for t in plan.uses] == ["10.0.0.1:11211"]


@pytest.mark.parametrize("denied,fix", [
    (True, "let the healthd user read the TLS files"),
    (False, "[oslo_messaging_rabbit] ssl_ca_file / ssl_cert_file / ssl_key_file must name PEM files"),
])
def test_tls_files_healthd_cannot_load(denied: bool, fix: str) -> None:
    outcome = _tls_file_failure(TlsFileError("cannot load CA file /ca.pem: Permission denied", denied))
    assert outcome.message.startswith("TLS setup failed: cannot load CA file /ca.pem")
    assert ("the services may still read it" in outcome.message) == denied
    assert outcome.fix.startswith(fix)
