"""service_config and memcached end to end on the loopback lab: the lab's own config files
(nova.conf of the controller and computes, keystone.conf, as the lab's services load them), its
RabbitMQ vhost and user, its memcached.

Healthy, the real files give no finding at all (pymemcache caches, notifications off, the
lab user's '.*' permissions). A RabbitMQ user of the lab's vhost without permissions
(`rabbitmqctl set_permissions -p VHOST USER '' '' ''`) in a copy of the lab's nova.conf is
CRITICAL with the grant to run, and clears once granted. The lab's own user is left alone:
its nova services keep running.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from checks.memcached import M_UP, MemcachedProbe
from checks.service_config import M_ENDPOINT, ServiceConfigProbe
from healthd.model import Severity, Status
from tests.helpers.probes import lab_backends, run_probe
from tests.helpers.servers import _rabbitmqctl, unique_name

pytestmark = pytest.mark.e2e


def lab_files(lab: dict[str, Any]) -> list[str]:
    config = yaml.safe_load(Path(lab["healthd_yaml"]).read_text())
    return list(config["checks"]["service_config"]["files"])


def test_healthy_lab_configs_give_no_finding(lab: dict[str, Any]) -> None:
    backends = lab_backends(lab)
    run = run_probe(ServiceConfigProbe(ServiceConfigProbe.Settings(files=lab_files(lab))), backends)
    assert run.status is Status.OK, [f.as_dict() for f in run.findings]
    assert run.findings == []
    nova_conf = lab["paths"]["nova_conf"]
    assert run.value(M_ENDPOINT, file=nova_conf, section="DEFAULT", option="transport_url", kind="rabbit",
                     endpoint="127.0.0.1:5672") == 1
    mc = f"127.0.0.1:{lab['ports']['memcached']}"
    assert run.value(M_ENDPOINT, file=nova_conf, section="cache", option="memcache_servers", kind="memcached",
                     endpoint=mc) == 1

    memcached = run_probe(MemcachedProbe(MemcachedProbe.Settings(config_files=lab_files(lab))), backends)
    assert memcached.status is Status.OK, [f.as_dict() for f in memcached.findings]
    assert memcached.value(M_UP, server=mc) == 1


def test_a_rabbit_user_without_permissions_on_the_labs_vhost(lab: dict[str, Any], tmp_path: Path) -> None:
    nova_conf = Path(lab["paths"]["nova_conf"]).read_text()
    match = re.search(r"^transport_url = rabbit://([^:]+):([^@]+)@([^/]+)/(\S+)$", nova_conf, re.M)
    assert match, "the lab's nova.conf has a transport_url"
    vhost = match.group(4)
    user, password = unique_name("healthd-e2e-noperm"), secrets.token_hex(16)
    _rabbitmqctl("add_user", user, password)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, user, "", "", "")
        conf = tmp_path / "nova.conf"
        line = f"transport_url = rabbit://{user}:{password}@{match.group(3)}/{vhost}"
        conf.write_text(nova_conf.replace(match.group(0), line))
        probe = ServiceConfigProbe(ServiceConfigProbe.Settings(files=[str(conf)]))
        backends, state = lab_backends(lab), {}
        run = run_probe(probe, backends, state)
        assert run.status is Status.CRITICAL, run.findings
        [finding] = run.about(f"rabbit {match.group(3)}", Severity.CRITICAL)
        lacks = f"user {user} lacks the configure/read permission in vhost '{vhost}'"
        assert finding.message.startswith(lacks)
        assert f"rabbitmqctl set_permissions -p {vhost} {user} '.*' '.*' '.*'" in finding.remediation
        assert password not in run.everything()

        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        fixed = run_probe(probe, backends, state)
        assert fixed.status is Status.OK, fixed.findings
    finally:
        _rabbitmqctl("delete_user", user)


def test_bad_config_hosts_fault_is_critical_and_clears(lab: dict[str, Any], lab_api: Any) -> None:
    """Lab fault bad-config-hosts: a copy of nova.conf whose transport_url and [cache] point at
    loopback ports where nothing listens (a decommissioned controller)."""
    probe = ServiceConfigProbe(ServiceConfigProbe.Settings(files=lab_files(lab)))
    backends = lab_backends(lab)
    info = lab_api.inject("bad-config-hosts")
    try:
        run = run_probe(probe, backends)
        assert run.status is Status.CRITICAL, run.findings
        bad = info["path"]
        [broker] = run.about(f"rabbit 127.0.0.1:{info['rabbit_port']}", Severity.CRITICAL)
        assert "connection refused" in broker.message and f"{bad} [DEFAULT] transport_url" in broker.message
        [cache] = run.about(f"memcached 127.0.0.1:{info['memcached_port']}", Severity.CRITICAL)
        assert f"{bad} [cache] memcache_servers" in cache.message
        # the copy disagrees with the other nova files; the lab caches through pymemcache
        [disagree] = run.about("nova: [cache] memcache_servers", Severity.WARNING)
        assert "rendezvous hashing" in disagree.message and bad in disagree.message
    finally:
        lab_api.revert("bad-config-hosts")
    clean = run_probe(probe, backends)
    assert clean.status is Status.OK, clean.findings
