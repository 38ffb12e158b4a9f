"""service_config probe against real RabbitMQ (a fresh vhost+user) and private memcached."""

from __future__ import annotations

import json
import logging
import os
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
from tests.helpers.servers import Memcached, RabbitAccount, SilentListener, TlsFront, free_port, rabbit_vhost

RABBIT = "127.0.0.1:5672"


@pytest.fixture(scope="module")
def rabbit() -> Iterator[RabbitAccount]:
    with rabbit_vhost("healthd-svccfg") as account:
        yield account


@pytest.fixture(scope="module")
def mc() -> Iterator[Memcached]:
    with Memcached() as server:
        yield server


def backends() -> Any:
    return make_backends(connect_timeout=2, memcached={"connect_timeout": 1, "timeout": 2})


def probe(*files: Path | str) -> ServiceConfigProbe:
    return ServiceConfigProbe(ServiceConfigProbe.Settings(files=[str(f) for f in files], timeout=20))


def url(account: RabbitAccount, hostport: str = RABBIT, password: str | None = None) -> str:
    return f"rabbit://{account.user}:{password or account.password}@{hostport}/{account.vhost}"


def nova_conf(path: Path, transport: str, memcache: str) -> Path:
    path.write_text(
        "[DEFAULT]\n"
        "debug = false\n"
        f"transport_url = {transport}\n"
        "[oslo_messaging_notifications]\n"
        "driver = messagingv2\n"
        f"transport_url = {transport}\n"
        "[cache]\n"
        "enabled = true\n"
        "backend = oslo_cache.memcache_pool\n"
        f"memcache_servers = {memcache}\n"
        "[keystone_authtoken]\n"
        f"memcached_servers = {memcache}\n"
        "password = not-a-rabbit-secret%x\n"
    )
    return path


def test_healthy_config_is_ok(tmp_path: Path, rabbit: RabbitAccount, mc: Memcached) -> None:
    conf = nova_conf(tmp_path / "nova.conf", url(rabbit), mc.server)
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


def tls_conf(path: Path, transport: str, memcache: str, **rabbit_options: str) -> Path:
    """nova.conf with TLS to the broker as kolla-ansible writes it: [oslo_messaging_rabbit] ssl."""
    nova_conf(path, transport, memcache)
    with path.open("a") as f:
        f.write("[oslo_messaging_rabbit]\nssl = true\n")
        f.writelines(f"{k} = {v}\n" for k, v in rabbit_options.items())
    return path


def test_tls_broker_trusted_through_ssl_ca_file_is_ok(tmp_path: Path, rabbit: RabbitAccount,
                                                       mc: Memcached) -> None:
    # The certificate names "rabbitmq.internal", the URL an IP: oslo.messaging does not check host
    # names, so neither does the probe (else it would page for a broker the services use).
    cert = issue(tmp_path, ("rabbitmq.internal",))
    with TlsFront(str(cert.cert_file), str(cert.key_file)) as front:
        endpoint = f"127.0.0.1:{front.port}"
        conf = tls_conf(tmp_path / "nova.conf", url(rabbit, endpoint), mc.server,
                        ssl_ca_file=str(cert.ca_file))
        run = run_probe(probe(conf), backends())
        assert run.status is Status.OK, [f.as_dict() for f in run.findings]
        assert run.value(M_ENDPOINT, file=str(conf), section="DEFAULT", option="transport_url",
                         kind="rabbit", endpoint=endpoint) == 1


@pytest.mark.parametrize("fault", ["no ssl_ca_file", "expired", "missing ca file", "plain amqp"])
def test_tls_broker_faults_are_critical_with_the_option_to_fix(tmp_path: Path, rabbit: RabbitAccount,
                                                                mc: Memcached, fault: str) -> None:
    cert = issue(tmp_path, ("127.0.0.1",), expired=fault == "expired")
    options = {"ssl_ca_file": str(cert.ca_file)}
    if fault == "no ssl_ca_file":  # the private CA is not in the system store
        options = {}
    elif fault == "missing ca file":
        options = {"kombu_ssl_ca_certs": str(tmp_path / "absent-ca.pem")}  # the pre-Ocata name
    with TlsFront(str(cert.cert_file), str(cert.key_file)) as front:
        endpoint = f"127.0.0.1:{front.port}"
        conf = tls_conf(tmp_path / "nova.conf", url(rabbit, endpoint), mc.server, **options)
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
    }[fault]
    assert expected[0] in finding.message, finding.message
    assert expected[1] in finding.remediation, finding.remediation
    assert rabbit.password not in json.dumps(finding.as_dict())


def test_memcache_lists_in_different_order_warn(tmp_path: Path, rabbit: RabbitAccount,
                                                mc: Memcached) -> None:
    with Memcached() as mc2:
        one = nova_conf(tmp_path / "nova.conf", url(rabbit), f"{mc.server},{mc2.server}")
        two = nova_conf(tmp_path / "nova-ctrl2.conf", url(rabbit), f"{mc2.server},{mc.server}")
        p, b = probe(tmp_path / "*.conf"), backends()
        run = run_probe(p, b)
        assert run.status is Status.WARNING, run.findings
        [finding] = run.about("[cache] memcache_servers", Severity.WARNING)
        assert str(one) in finding.message and str(two) in finding.message
        assert f"[{mc.server},{mc2.server}]" in finding.message
        assert f"[{mc2.server},{mc.server}]" in finding.message
        assert "order" in finding.message
        assert run.about("[keystone_authtoken] memcached_servers", Severity.WARNING)
        assert run.value(M_CONSISTENT, section="cache", option="memcache_servers") == 0
        assert run.value(M_VARIANTS, section="cache", option="memcache_servers") == 2
        assert run.value(M_CONSISTENT, section="DEFAULT", option="transport_url") == 1

        nova_conf(two, url(rabbit), f"{mc.server},{mc2.server}")
        fixed = run_probe(p, b)
        assert fixed.status is Status.OK, fixed.findings


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
    conf.write_text("[cache]\nmemcache_servers = nonexistent-cache.invalid:11211\n")
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


def test_no_readable_file_is_unknown(tmp_path: Path) -> None:
    run = run_probe(probe(tmp_path / "absent.conf"), backends())
    assert run.status is Status.UNKNOWN
    assert "could be read" in run.summary
    none = run_probe(probe(), backends())
    assert none.status is Status.UNKNOWN
    assert "no service config files configured" in none.summary

