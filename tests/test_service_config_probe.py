"""service_config probe against the real RabbitMQ (a fresh vhost and users per run) and private memcached."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from checks.service_config import M_CONSISTENT, M_ENDPOINT, M_FILE, M_VARIANTS, ServiceConfigProbe
from healthd.model import Severity, Status
from tests.helpers.certs import issue
from tests.helpers.probes import make_backends, run_probe
from tests.helpers.servers import (
    Memcached,
    RabbitAccount,
    SilentListener,
    TlsFront,
    _rabbitmqctl,
    free_port,
    rabbit_vhost,
    unique_name,
)

RABBIT = "127.0.0.1:5672"
ALL = (".*", ".*", ".*")  # what devstack, kolla-ansible and openstack-ansible grant a service user


@pytest.fixture(scope="module")
def rabbit() -> Iterator[RabbitAccount]:
    """A fresh vhost and a service user with the permissions deployment tools give it."""
    with rabbit_vhost("healthd-svccfg") as account:
        _rabbitmqctl("set_permissions", "-p", account.vhost, account.user, *ALL)
        yield account


@contextlib.contextmanager
def rabbit_user(vhost: str, configure: str, write: str, read: str) -> Iterator[RabbitAccount]:
    """Another user of the vhost with the given permission patterns, deleted afterwards."""
    account = RabbitAccount(vhost, unique_name("healthd-svccfg-user"), secrets.token_hex(16))
    _rabbitmqctl("add_user", account.user, account.password)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, account.user, configure, write, read)
        yield account
    finally:
        _rabbitmqctl("delete_user", account.user)


def vhost_objects(vhost: str) -> tuple[str, str, str]:
    """Exchanges, queues and bindings of the vhost, to show the check changes nothing."""
    def listing(*args: str) -> str:
        return subprocess.run(["rabbitmqctl", "-q", *args, "-p", vhost], check=True, capture_output=True,
                              text=True, timeout=60).stdout
    return (listing("list_exchanges", "name", "type", "durable", "arguments"),
            listing("list_queues", "name", "messages"), listing("list_bindings"))


@pytest.fixture(scope="module")
def mc() -> Iterator[Memcached]:
    with Memcached() as server:
        yield server


def backends() -> Any:
    return make_backends(connect_timeout=2, memcached={"connect_timeout": 1, "timeout": 2})


def probe(*files: Path | str, **settings: Any) -> ServiceConfigProbe:
    settings = {"timeout": 20, **settings}
    return ServiceConfigProbe(ServiceConfigProbe.Settings(files=[str(f) for f in files], **settings))


def url(account: RabbitAccount, hostport: str = RABBIT, password: str | None = None) -> str:
    return f"rabbit://{account.user}:{password or account.password}@{hostport}/{account.vhost}"


def nova_conf(path: Path, transport: str, memcache: str, backend: str = "oslo_cache.memcache_pool") -> Path:
    path.write_text(
        "[DEFAULT]\n"
        "debug = false\n"
        f"transport_url = {transport}\n"
        "[oslo_messaging_notifications]\n"
        "driver = messagingv2\n"
        f"transport_url = {transport}\n"
        "[cache]\n"
        "enabled = true\n"
        f"backend = {backend}\n"
        f"memcache_servers = {memcache}\n"
        "[keystone_authtoken]\n"
        f"memcached_servers = {memcache}\n"
        "password = not-a-rabbit-secret%x\n"
    )
    return path


def test_healthy_config_is_ok_and_the_check_changes_nothing(tmp_path: Path, rabbit: RabbitAccount,
                                                            mc: Memcached) -> None:
    conf = nova_conf(tmp_path / "nova.conf", url(rabbit), mc.server)
    before = vhost_objects(rabbit.vhost)
    run = run_probe(probe(conf), backends())
    assert run.status is Status.OK, run.findings
    assert run.findings == []
    assert run.value(M_FILE, file=str(conf)) == 1
    for section in ("DEFAULT", "oslo_messaging_notifications"):
        assert run.value(M_ENDPOINT, file=str(conf), section=section, option="transport_url",
                         kind="rabbit", endpoint=RABBIT) == 1
    assert run.value(M_ENDPOINT, file=str(conf), section="cache", option="memcache_servers",
                     kind="memcached", endpoint=mc.server) == 1
    assert run.value(M_CONSISTENT, section="cache", option="memcache_servers") == 1
    assert rabbit.password not in run.everything()
    # the permission check created, changed and consumed nothing
    assert vhost_objects(rabbit.vhost) == before


def test_dead_endpoints_are_critical_and_clear_when_fixed(tmp_path: Path, rabbit: RabbitAccount,
                                                          mc: Memcached) -> None:
    dead_rabbit, dead_mc = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    conf = nova_conf(tmp_path / "nova.conf", url(rabbit, dead_rabbit), dead_mc)
    p, b = probe(conf), backends()
    run = run_probe(p, b)
    assert run.status is Status.CRITICAL
    [broker] = run.about(f"rabbit {dead_rabbit}", Severity.CRITICAL)
    assert "connection refused" in broker.message
    assert f"{conf} [DEFAULT] transport_url" in broker.message
    assert f"{conf} [oslo_messaging_notifications] transport_url" in broker.message
    assert f"rabbit://{rabbit.user}:***@{dead_rabbit}/{rabbit.vhost}" in broker.message
    [cache] = run.about(f"memcached {dead_mc}", Severity.CRITICAL)
    assert f"{conf} [cache] memcache_servers" in cache.message
    assert f"{conf} [keystone_authtoken] memcached_servers" in cache.message
    assert run.value(M_ENDPOINT, file=str(conf), section="DEFAULT", option="transport_url",
                     kind="rabbit", endpoint=dead_rabbit) == 0
    assert rabbit.password not in run.everything()

    nova_conf(conf, url(rabbit), mc.server)  # the operator fixes the file
    fixed = run_probe(p, b)
    assert fixed.status is Status.OK, fixed.findings


def test_wrong_rabbit_password_is_refused_and_never_shown(tmp_path: Path, rabbit: RabbitAccount,
                                                          mc: Memcached,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    canary = "Canary-pw-7d1f%2Fzz"  # also percent-encoded in the URL: the decoded form is the secret
    conf = nova_conf(tmp_path / "nova.conf", url(rabbit, password=canary), mc.server)
    with caplog.at_level(logging.DEBUG):
        run = run_probe(probe(conf), backends())
    assert run.status is Status.CRITICAL
    [finding] = run.about(f"rabbit {RABBIT}")
    assert f"authentication refused for user {rabbit.user}" in finding.message
    assert "rabbitmqctl" in finding.remediation
    for secret in (canary, "Canary-pw-7d1f/zz", rabbit.password):
        assert secret not in run.everything()
        assert secret not in caplog.text


def test_vhost_without_permission_is_refused(tmp_path: Path, rabbit: RabbitAccount, mc: Memcached) -> None:
    transport = f"rabbit://{rabbit.user}:{rabbit.password}@{RABBIT}/healthd-no-such-vhost-{os.getpid()}"
    conf = nova_conf(tmp_path / "nova.conf", transport, mc.server)
    run = run_probe(probe(conf), backends())
    assert run.status is Status.CRITICAL
    [finding] = run.about(f"rabbit {RABBIT}")
    assert "vhost" in finding.message and "refused" in finding.message


# -- permissions: the user gets into the vhost but cannot run oslo.messaging there -----------


def test_a_user_without_permissions_is_critical_and_clears_when_granted(tmp_path: Path, rabbit: RabbitAccount,
                                                                       mc: Memcached) -> None:
    with rabbit_user(rabbit.vhost, "", "", "") as user:  # rabbitmqctl set_permissions -p V U '' '' ''
        conf = nova_conf(tmp_path / "nova.conf", url(user), mc.server)
        p, b, state = probe(conf), backends(), {}
        before = vhost_objects(rabbit.vhost)
        run = run_probe(p, b, state)
        assert run.status is Status.CRITICAL, run.findings
        [finding] = run.about(f"rabbit {RABBIT}", Severity.CRITICAL)
        assert finding.message.startswith(f"user {user.user} lacks the configure/read permission in vhost "
                                          f"'{rabbit.vhost}' (RabbitMQ refused: configure on exchange 'nova'")
        assert f"(user {user.user}, vhost {rabbit.vhost}); configured in {conf} [DEFAULT] transport_url" \
            in finding.message
        grant = f"rabbitmqctl set_permissions -p {rabbit.vhost} {user.user} '.*' '.*' '.*'"
        assert grant in finding.remediation
        assert run.value(M_ENDPOINT, file=str(conf), section="DEFAULT", option="transport_url",
                         kind="rabbit", endpoint=RABBIT) == 0
        assert vhost_objects(rabbit.vhost) == before
        assert user.password not in run.everything()

        _rabbitmqctl("set_permissions", "-p", rabbit.vhost, user.user, *ALL)  # the operator grants them
        fixed = run_probe(p, b, state)
        assert fixed.status is Status.OK, fixed.findings


@pytest.mark.parametrize("patterns,missing,refused", [
    (("^reply_.*", "^reply_.*", "^reply_.*"), "configure/write/read", "configure on exchange 'nova'"),
    ((".*", "^$", ".*"), "write", "write on 'reply_"),
    ((".*", ".*", "^(nova|reply_.*)$"), "", ""),  # everything the service names: fine
])
def test_permission_patterns(tmp_path: Path, rabbit: RabbitAccount, mc: Memcached,
                             patterns: tuple[str, str, str], missing: str, refused: str) -> None:
    with rabbit_user(rabbit.vhost, *patterns) as user:
        conf = nova_conf(tmp_path / "nova.conf", url(user), mc.server)
        run = run_probe(probe(conf), backends())
    if not missing:
        assert run.status is Status.OK, run.findings
        return
    [finding] = run.about(f"rabbit {RABBIT}", Severity.CRITICAL)
    assert f"lacks the {missing} permission" in finding.message and refused in finding.message


def test_granted_permissions_are_trusted_for_the_interval(tmp_path: Path, rabbit: RabbitAccount,
                                                          mc: Memcached) -> None:
    """RabbitMQ logs each question as a channel error: a granted answer is kept for
    permissions_interval; a refusal is asked again every run."""
    with rabbit_user(rabbit.vhost, *ALL) as user:
        conf = nova_conf(tmp_path / "nova.conf", url(user), mc.server)
        state: dict[str, Any] = {}
        assert run_probe(probe(conf), backends(), state).status is Status.OK
        _rabbitmqctl("set_permissions", "-p", rabbit.vhost, user.user, "", "", "")
        assert run_probe(probe(conf), backends(), state).status is Status.OK  # within the hour
        again = run_probe(probe(conf, permissions_interval=0), backends(), state)
        assert again.status is Status.CRITICAL and again.about("lacks the configure/read permission")
        off = run_probe(probe(conf, check_permissions=False), backends(), {})
        assert off.status is Status.OK, off.findings


def test_a_host_without_credentials_is_tried_as_guest(tmp_path: Path, rabbit: RabbitAccount,
                                                      mc: Memcached) -> None:
    """rabbit://U:P@h1,h2/V: oslo.messaging does not reuse U:P for h2; kombu logs in as guest/guest,
    which has no permission entry in this vhost."""
    transport = f"rabbit://{rabbit.user}:{rabbit.password}@{RABBIT},localhost:5672/{rabbit.vhost}"
    conf = nova_conf(tmp_path / "nova.conf", transport, mc.server)
    run = run_probe(probe(conf), backends())
    assert run.status is Status.WARNING, run.findings  # the first host still works
    [guest] = run.about("rabbit localhost:5672", Severity.WARNING)
    assert guest.message.startswith(f"access to vhost '{rabbit.vhost}' refused for user guest: the URL gives "
                                    "this host no USER:PASSWORD@ of its own")
    assert run.about(f"{conf} [DEFAULT] transport_url", Severity.INFO)  # the note on the URL itself


def test_amqp_scheme_cannot_start_and_is_not_dialled(tmp_path: Path, rabbit: RabbitAccount,
                                                     mc: Memcached) -> None:
    conf = nova_conf(tmp_path / "nova.conf", url(rabbit).replace("rabbit://", "amqp://"), mc.server)
    run = run_probe(probe(conf), backends())
    assert run.status is Status.CRITICAL
    findings = run.about(f"{conf} [DEFAULT] transport_url", Severity.CRITICAL)
    assert findings and "'amqp' driver" in findings[0].message
    kinds = {labels["kind"] for labels, _ in run.values(M_ENDPOINT)}
    assert kinds == {"memcached"}


# -- TLS, verified as oslo.messaging 18.3.1 + kombu 5.7 + py-amqp 5.4 verify ----------------


def tls_conf(path: Path, transport: str, memcache: str, **rabbit_options: str) -> Path:
    """nova.conf with TLS to the broker as kolla-ansible writes it: [oslo_messaging_rabbit] ssl."""
    nova_conf(path, transport, memcache)
    with path.open("a") as f:
        f.write("[oslo_messaging_rabbit]\nssl = true\n")
        f.writelines(f"{k} = {v}\n" for k, v in rabbit_options.items())
    return path


def test_tls_broker_trusted_through_ssl_ca_file_is_ok(tmp_path: Path, rabbit: RabbitAccount,
                                                       mc: Memcached) -> None:
    cert = issue(tmp_path, ("127.0.0.1",))
    with TlsFront(str(cert.cert_file), str(cert.key_file)) as front:
        endpoint = f"127.0.0.1:{front.port}"
        conf = tls_conf(tmp_path / "nova.conf", url(rabbit, endpoint), mc.server,
                        ssl_ca_file=str(cert.ca_file))
        run = run_probe(probe(conf), backends())
        assert run.status is Status.OK, [f.as_dict() for f in run.findings]
        assert run.value(M_ENDPOINT, file=str(conf), section="DEFAULT", option="transport_url",
                         kind="rabbit", endpoint=endpoint) == 1


def test_ssl_version_without_ca_file_accepts_any_certificate_as_the_services_do(
        tmp_path: Path, rabbit: RabbitAccount, mc: Memcached) -> None:
    cert = issue(tmp_path, ("rabbitmq.internal",))  # another name, a CA nobody trusts
    with TlsFront(str(cert.cert_file), str(cert.key_file)) as front:
        conf = tls_conf(tmp_path / "nova.conf", url(rabbit, f"127.0.0.1:{front.port}"), mc.server,
                        ssl_version="TLSv1_2")
        run = run_probe(probe(conf), backends())
    assert run.status is Status.OK, run.findings
    [note] = run.about("ssl_version", Severity.INFO)
    assert "verifies no certificate at all" in note.message


@pytest.mark.parametrize("fault", ["no ssl_ca_file", "expired", "missing ca file", "plain amqp",
                                   "other host name", "other host name, two brokers", "old kombu name"])
def test_tls_broker_faults_are_critical_with_the_option_to_fix(tmp_path: Path, rabbit: RabbitAccount,
                                                                mc: Memcached, fault: str) -> None:
    names = ("rabbitmq.internal",) if fault.startswith("other host name") else ("127.0.0.1",)
    cert = issue(tmp_path, names, expired=fault == "expired")
    options = {"ssl_ca_file": str(cert.ca_file)}
    if fault == "no ssl_ca_file":  # the private CA is not in the system store
        options = {}
    elif fault == "missing ca file":
        options = {"ssl_ca_file": str(tmp_path / "absent-ca.pem")}
    elif fault == "old kombu name":  # not read since oslo.messaging 16.0.0: the system store applies
        options = {"kombu_ssl_ca_certs": str(cert.ca_file)}
    with TlsFront(str(cert.cert_file), str(cert.key_file)) as front, \
            TlsFront(str(cert.cert_file), str(cert.key_file)) as second:
        endpoint = f"127.0.0.1:{front.port}"
        transport = url(rabbit, endpoint)
        if fault == "other host name, two brokers":  # kombu checks each broker's name (server_hostname=None)
            transport = (f"rabbit://{rabbit.user}:{rabbit.password}@{endpoint},"
                         f"{rabbit.user}:{rabbit.password}@127.0.0.1:{second.port}/{rabbit.vhost}")
        conf = tls_conf(tmp_path / "nova.conf", transport, mc.server, **options)
        if fault == "plain amqp":  # the port only speaks TLS; the file forgot ssl = true
            conf = nova_conf(tmp_path / "nova.conf", url(rabbit, endpoint), mc.server)
        run = run_probe(probe(conf), backends())
    assert run.status is Status.CRITICAL
    [finding] = run.about(f"rabbit {endpoint}")
    assert finding.severity is Severity.CRITICAL
    assert run.value(M_ENDPOINT, file=str(conf), section="DEFAULT", option="transport_url",
                     kind="rabbit", endpoint=endpoint) == 0
    expected = {
        "no ssl_ca_file": ("TLS certificate not trusted: unable to get local issuer certificate; checked "
                           "against the system CA store (ssl_ca_file is unset)", "ssl_ca_file"),
        "expired": ("TLS certificate not trusted: certificate has expired", "renew an expired broker"),
        "missing ca file": (f"cannot load CA file {tmp_path / 'absent-ca.pem'}: No such file",
                            "ssl_ca_file / ssl_cert_file / ssl_key_file"),
        "plain amqp": ("no AMQP answer", "[oslo_messaging_rabbit] ssl = true"),
        "other host name": ("IP address mismatch, certificate is not valid for '127.0.0.1'",
                            "-verify_hostname 127.0.0.1"),
        "other host name, two brokers": ("oslo.messaging verifies the host name when ssl_ca_file is set",
                                         "with the host names the services use"),
        "old kombu name": ("unable to get local issuer certificate; checked against the system CA store",
                           "ssl_ca_file"),
    }[fault]
    assert expected[0] in finding.message, finding.message
    assert expected[1] in finding.remediation, finding.remediation
    assert rabbit.password not in json.dumps(finding.as_dict())
    if fault == "old kombu name":
        [renamed] = run.about(f"{conf} [oslo_messaging_rabbit] kombu_ssl_ca_certs", Severity.INFO)
        assert renamed.remediation == "rename it to ssl_ca_file"


# -- memcached lists -----------------------------------------------------------------------


def test_memcache_lists_in_different_order_warn_for_python_memcached(tmp_path: Path, rabbit: RabbitAccount,
                                                                     mc: Memcached) -> None:
    with Memcached() as mc2:
        one = nova_conf(tmp_path / "nova.conf", url(rabbit), f"{mc.server},{mc2.server}")
        two = nova_conf(tmp_path / "nova-ctrl2.conf", url(rabbit), f"{mc2.server},{mc.server}")
        p, b = probe(tmp_path / "*.conf"), backends()
        run = run_probe(p, b)
        assert run.status is Status.WARNING, run.findings
        [finding] = run.about("nova: [cache] memcache_servers", Severity.WARNING)
        assert str(one) in finding.message and str(two) in finding.message
        assert f"[{mc.server},{mc2.server}]" in finding.message
        assert f"[{mc2.server},{mc.server}]" in finding.message
        assert "order matters" in finding.message
        assert run.about("nova: [keystone_authtoken] memcached_servers", Severity.WARNING)
        assert run.value(M_CONSISTENT, section="cache", option="memcache_servers") == 0
        assert run.value(M_VARIANTS, section="cache", option="memcache_servers") == 2
        assert run.value(M_CONSISTENT, section="DEFAULT", option="transport_url") == 1

        nova_conf(two, url(rabbit), f"{mc.server},{mc2.server}")
        fixed = run_probe(p, b)
        assert fixed.status is Status.OK, fixed.findings


def test_pymemcache_order_does_not_matter(tmp_path: Path, rabbit: RabbitAccount, mc: Memcached) -> None:
    with Memcached() as mc2:
        nova_conf(tmp_path / "nova.conf", url(rabbit), f"{mc.server},{mc2.server}",
                  "dogpile.cache.pymemcache")
        nova_conf(tmp_path / "nova-ctrl2.conf", url(rabbit), f"{mc2.server},{mc.server}",
                  "dogpile.cache.pymemcache")
        run = run_probe(probe(tmp_path / "*.conf"), backends())
    assert run.about("[cache]") == []
    assert run.value(M_CONSISTENT, section="cache", option="memcache_servers") == 1


def test_a_dead_server_in_a_cache_that_is_off_is_only_info(tmp_path: Path, rabbit: RabbitAccount) -> None:
    dead = f"127.0.0.1:{free_port()}"
    conf = tmp_path / "nova.conf"
    conf.write_text(f"[DEFAULT]\ntransport_url = {url(rabbit)}\n"
                    f"[cache]\nbackend = oslo_cache.memcache_pool\nmemcache_servers = {dead}\n")
    run = run_probe(probe(conf), backends())
    assert run.status is Status.OK, run.findings
    [finding] = run.about(f"memcached {dead}", Severity.INFO)
    assert "connection refused" in finding.message
    assert "[cache] enabled is false by default" in finding.message
    assert run.value(M_ENDPOINT, file=str(conf), section="cache", option="memcache_servers",
                     kind="memcached", endpoint=dead) is None


def test_an_ipv6_form_python_memcached_cannot_parse_is_critical_though_the_server_answers(
        tmp_path: Path, rabbit: RabbitAccount) -> None:
    with Memcached("-l", "::1") as mc6:
        conf = nova_conf(tmp_path / "nova.conf", url(rabbit), f"[::1]:{mc6.port}")
        run = run_probe(probe(conf), backends())
        assert run.status is Status.CRITICAL
        [cache] = run.about(f"{conf} [cache] memcache_servers", Severity.CRITICAL)
        assert "python-memcached cannot parse it" in cache.message
        assert cache.remediation.startswith(f"write it as inet6:[::1]:{mc6.port}")

        nova_conf(conf, url(rabbit), f"inet6:[::1]:{mc6.port}")  # the form python-memcached reads
        fixed = run_probe(probe(conf), backends())
        assert fixed.status is Status.OK, fixed.findings
        assert fixed.value(M_ENDPOINT, file=str(conf), section="cache", option="memcache_servers",
                           kind="memcached", endpoint=f"[::1]:{mc6.port}") == 1


def test_nova_files_of_two_cells_are_compared_per_cell(tmp_path: Path, rabbit: RabbitAccount,
                                                       mc: Memcached) -> None:
    """A cloud with two cells: each cell's nova services use the broker of its cell_mappings row
    (nova-manage cell_v2 create_cell --transport-url). With nova_api readable, healthd compares
    a cell's files with that cell's files only; without it, it cannot tell and warns."""
    from tests.helpers.novadb import NovaDB, utcnow

    with rabbit_vhost("healthd-svccfg-cell2") as cell2:
        _rabbitmqctl("set_permissions", "-p", cell2.vhost, cell2.user, *ALL)
        one = nova_conf(tmp_path / "nova-cell1.conf", url(rabbit), mc.server)
        two = nova_conf(tmp_path / "nova-cell2.conf", url(cell2), mc.server)
        alone = run_probe(probe(one, two), backends())
        assert alone.status is Status.OK, alone.findings  # cannot tell a second cell from a stray
        assert alone.about("nova: [DEFAULT] transport_url", Severity.INFO), alone.findings

        novadb = NovaDB()
        try:
            api = novadb.create("nova_api", "nova_api")
            for name, account in (("cell1", rabbit), ("cell2", cell2)):
                novadb.insert(api, "cell_mappings", {
                    "created_at": utcnow(), "uuid": f"{name}-uuid", "name": name,
                    "transport_url": url(account),
                    "database_connection": "mysql+pymysql://nova:x@db/nova_" + name, "disabled": 0})
            b = make_backends(connect_timeout=2, memcached={"connect_timeout": 1, "timeout": 2},
                              databases={"nova_api": {"url": NovaDB.url(api)}})
            run = run_probe(probe(one, two), b)
        finally:
            novadb.close()
    assert run.status is Status.OK, run.findings
    assert cell2.password not in run.everything() and rabbit.password not in run.everything()


def test_one_dead_broker_of_a_cluster_is_a_warning(tmp_path: Path, rabbit: RabbitAccount,
                                                   mc: Memcached) -> None:
    dead = f"127.0.0.1:{free_port()}"
    transport = (f"rabbit://{rabbit.user}:{rabbit.password}@{RABBIT},"
                 f"{rabbit.user}:{rabbit.password}@{dead}/{rabbit.vhost}")
    conf = nova_conf(tmp_path / "nova.conf", transport, mc.server)
    run = run_probe(probe(conf), backends())
    assert run.status is Status.WARNING, run.findings
    assert run.about(f"rabbit {dead}", Severity.WARNING)


def test_hung_memcached_peer_is_reported(tmp_path: Path, rabbit: RabbitAccount) -> None:
    with SilentListener() as hung:
        conf = nova_conf(tmp_path / "nova.conf", url(rabbit), hung.server)
        p = probe(conf)
        run = run_probe(p, backends())
    assert run.status is Status.CRITICAL
    assert run.result.duration < p.timeout
    [finding] = run.about(f"memcached {hung.server}")
    assert "did not answer" in finding.message


def test_each_endpoint_is_checked_once_however_many_files(tmp_path: Path, rabbit: RabbitAccount) -> None:
    with Memcached() as own:
        for i in range(10):
            nova_conf(tmp_path / f"svc{i}.conf", url(rabbit), own.server)
        before = int(own.stats()["total_connections"])
        run = run_probe(probe(tmp_path / "*.conf"), backends())
        after = int(own.stats()["total_connections"])
    assert run.status is Status.OK, run.findings
    assert len(run.values(M_ENDPOINT)) == 10 * 4  # every file's options still get their sample
    assert after - before == 2  # the probe's one connection + this test's second `stats`


def test_invalid_host_name_is_reported_without_dns(tmp_path: Path, rabbit: RabbitAccount) -> None:
    conf = nova_conf(tmp_path / "nova.conf", url(rabbit), "cache01..example:11211")
    run = run_probe(probe(conf), backends())
    assert run.status is Status.CRITICAL
    [finding] = run.about("memcached cache01..example:11211")
    assert "not a valid host name" in finding.message


UNRESOLVABLE_SCRIPT = """
import json, sys
from checks.service_config import ServiceConfigProbe
from healthd.connections import Backends
from healthd.config import BackendsConfig
from healthd.scheduler import execute
probe = ServiceConfigProbe(ServiceConfigProbe.Settings(files=[sys.argv[1]], timeout=20))
result = execute(probe, Backends(BackendsConfig(connect_timeout=2)))
print(json.dumps({"status": result.status.name, "findings": [f.as_dict() for f in result.findings]}))
"""


def test_unresolvable_host_name(tmp_path: Path) -> None:
    """Run in a network namespace of its own: the resolver's query fails locally
    (network unreachable) and no DNS packet leaves this machine."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) missing: a real DNS lookup would leave the machine")
    conf = tmp_path / "nova.conf"
    conf.write_text("[cache]\nenabled = true\nbackend = dogpile.cache.memcached\n"
                    "memcache_servers = nonexistent-cache.invalid:11211\n")
    try:
        out = subprocess.run(["unshare", "-n", sys.executable, "-c", UNRESOLVABLE_SCRIPT, str(conf)],
                             capture_output=True, text=True, timeout=60, check=True)
    except subprocess.CalledProcessError as exc:
        if "Traceback" in exc.stderr:  # the probe failed, not the namespace: that is a failure
            raise AssertionError(exc.stderr) from None
        pytest.skip(f"cannot create a network namespace here: {exc.stderr.strip()[:200]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "CRITICAL"
    [finding] = result["findings"]
    assert finding["subject"] == "memcached nonexistent-cache.invalid:11211"
    assert "does not resolve" in finding["message"]


def test_missing_and_unmatched_files_warn_but_the_rest_is_checked(tmp_path: Path, rabbit: RabbitAccount,
                                                                  mc: Memcached) -> None:
    conf = nova_conf(tmp_path / "nova.conf", url(rabbit), mc.server)
    missing = tmp_path / "glance-api.conf"
    run = run_probe(probe(conf, missing, tmp_path / "nothing-*.conf"), backends())
    assert run.status is Status.WARNING, run.findings
    assert run.about(f"file {missing}", Severity.WARNING)
    assert run.about("nothing-*.conf", Severity.WARNING)
    assert run.value(M_FILE, file=str(missing)) == 0
    assert run.value(M_ENDPOINT, file=str(conf), section="cache", option="memcache_servers",
                     kind="memcached", endpoint=mc.server) == 1


def test_a_file_oslo_config_cannot_parse_is_critical(tmp_path: Path, rabbit: RabbitAccount,
                                                     mc: Memcached) -> None:
    good = nova_conf(tmp_path / "nova.conf", url(rabbit), mc.server)
    broken = tmp_path / "nova-compute.conf"
    broken.write_text(f"transport_url = {url(rabbit)}\n[DEFAULT]\n")
    run = run_probe(probe(good, broken), backends())
    assert run.status is Status.CRITICAL
    [finding] = run.about(f"file {broken}", Severity.CRITICAL)
    assert "oslo.config cannot parse it: line " in finding.message
    assert rabbit.password not in run.everything()
    assert run.value(M_FILE, file=str(broken)) == 0


def test_no_readable_file_is_unknown(tmp_path: Path) -> None:
    run = run_probe(probe(tmp_path / "absent.conf"), backends())
    assert run.status is Status.UNKNOWN
    assert "could be read" in run.summary
    none = run_probe(probe(), backends())
    assert none.status is Status.UNKNOWN
    assert "no service config files configured" in none.summary
