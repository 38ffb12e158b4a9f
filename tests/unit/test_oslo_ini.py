"""Reading oslo.config files as the services do (healthd/openstack/oslo_ini.py) and oslo.messaging's
view of a broker (healthd/openstack/messaging.py): pure parsing and judging, files under tmp_path only.

Each rule cites the library code it follows in oslo_ini.py / messaging.py; the cases here are the
shapes real deployments write (devstack, kolla-ansible, openstack-ansible) and the faults."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from healthd.model import Severity
from healthd.openstack import oslo_ini
from healthd.openstack.messaging import (
    AmqpTls,
    PermissionOp,
    TlsFileError,
    judge_permissions,
    permission_ops,
)
from healthd.redact import redact


def write(tmp_path: Path, text: str, name: str = "nova.conf") -> oslo_ini.ConfigFile:
    path = tmp_path / name
    path.write_text(text)
    return oslo_ini.read(str(path))


# == reading files with oslo.config ======================================================


def test_oslo_specifics_are_parsed(tmp_path: Path) -> None:
    cf = write(
        tmp_path,
        "[DEFAULT]\n"
        "transport_url = rabbit://old:old@gone:5672/\n"
        "transport_url = rabbit://u1:p%25w@h1:5672,u2:pw2@h2/nova?ssl=1\n"  # repeated: the last wins
        "[cache]\n"
        "memcache_servers = inet6:[::1]:11211, h3 ,unix:/run/mc.sock\n"
        "[Cache]\n"  # a repeated section merges; group names are matched without case
        "enabled = True\n"
        "backend = oslo_cache.memcache_pool\n",
    )
    assert cf.error is None and not cf.fatal
    assert cf.get("cache", "transport_url") is None  # [DEFAULT] is not a fallback section
    assert cf.value("DEFAULT", "transport_url") == "rabbit://u1:p%25w@h1:5672,u2:pw2@h2/nova?ssl=1"
    assert cf.value("cache", "enabled") is True
    assert cf.value("cache", "memcache_servers") == ["inet6:[::1]:11211", "h3", "unix:/run/mc.sock"]
    [found], problems = oslo_ini.memcache_lists(cf)
    assert problems == []
    assert [(s.host, s.port, s.family) for s in found.servers] == [
        ("::1", 11211, "inet6"), ("h3", 11211, "inet"), ("", 0, "any")]
    assert [s.key for s in found.usable] == ["[::1]:11211", "h3:11211"]


def test_values_as_oslo_config_reads_them(tmp_path: Path) -> None:
    """Quotes around a value are dropped, '$$' and '\\$' are a literal '$', '%' is literal, '#'
    after a value is part of it (no inline comments), options are case-sensitive."""
    cf = write(tmp_path, "[DEFAULT]\n"
                         "control_exchange = \"nova\"\n"
                         "transport_url = rabbit://nova:pa$$w%(x)s#1\\$@h1/\n"
                         "# transport_url = rabbit://commented:out@h9/\n"
                         "Transport_url = rabbit://other:x@h8/\n")
    assert cf.value("DEFAULT", "control_exchange") == "nova"
    assert cf.value("DEFAULT", "transport_url") == "rabbit://nova:pa$w%(x)s#1$@h1/"
    assert cf.has("DEFAULT", "Transport_url") and cf.get("DEFAULT", "Transport_url") == "rabbit://other:x@h8/"


def test_substitution_of_options_the_probe_does_not_know(tmp_path: Path) -> None:
    """$my_ip is nova's option, not healthd's: it is still substituted from the file, and a
    ${group.option} from its group, as oslo.config does in the service."""
    cf = write(tmp_path, "[DEFAULT]\nmy_ip = 10.0.0.9\n"
                         "[cache]\nenabled = true\nbackend = dogpile.cache.memcached\n"
                         "memcache_servers = $my_ip:11211,${vnc.server_listen}:11212\n"
                         "[vnc]\nserver_listen = 10.0.0.8\n")
    assert cf.value("cache", "memcache_servers") == ["10.0.0.9:11211", "10.0.0.8:11212"]


def test_a_reference_the_file_does_not_set_is_unresolved(tmp_path: Path) -> None:
    cf = write(tmp_path, "[cache]\nenabled = true\nbackend = dogpile.cache.memcached\n"
                         "memcache_servers = $my_ip:11211\n")
    with pytest.raises(oslo_ini.Unresolved) as raised:
        cf.value("cache", "memcache_servers")
    assert raised.value.names == ["my_ip"]
    lists, [problem] = oslo_ini.memcache_lists(cf)
    assert lists == []
    assert problem.severity is Severity.INFO and problem.subject.endswith("[cache] memcache_servers")
    assert "$my_ip, which this file does not set" in problem.message


def test_default_group_reference_fails_as_in_the_service(tmp_path: Path) -> None:
    """oslo.config has no group named DEFAULT: ${DEFAULT.x} raises in the service too."""
    cf = write(tmp_path, "[DEFAULT]\nmy_ip = 10.0.0.9\n[keystone_authtoken]\n"
                         "memcached_servers = ${DEFAULT.my_ip}:11211\n")
    with pytest.raises(oslo_ini.OptionError) as raised:
        cf.value("keystone_authtoken", "memcached_servers")
    assert not isinstance(raised.value, oslo_ini.Unresolved)
    _, [problem] = oslo_ini.memcache_lists(cf)
    assert problem.severity is Severity.CRITICAL


def test_a_value_oslo_config_rejects_is_an_option_error(tmp_path: Path) -> None:
    cf = write(tmp_path, "[cache]\nenabled = maybe\n")
    with pytest.raises(oslo_ini.OptionError, match=r"oslo\.config rejects its value: Unexpected boolean"):
        cf.value("cache", "enabled")
    cf = write(tmp_path, "[cache]\nenabled = true\nbackend = dogpile.cache.memcahced\n", "y.conf")
    _, [problem] = oslo_ini.memcache_lists(cf)
    assert problem.severity is Severity.CRITICAL and "oslo.config rejects its value" in problem.message


def test_unparsable_file_is_fatal_without_its_content(tmp_path: Path) -> None:
    cf = write(tmp_path, "transport_url = rabbit://u:SecretNoSection@h/\n")
    assert cf.fatal and cf.conf is None
    assert cf.error == "oslo.config cannot parse it: line 1: Section must be started before assignment"
    assert "SecretNoSection" not in cf.error
    cf = write(tmp_path, "[DEFAULT]\ndebug = true\n[cache\n", "y.conf")
    assert cf.fatal and cf.error is not None and "line 3" in cf.error


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert oslo_ini.read(str(tmp_path / "absent.conf")).error == "file does not exist"
    assert oslo_ini.read(str(tmp_path)).error == "is a directory"
    assert not oslo_ini.read(str(tmp_path)).fatal


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root every file is readable: the open() of oslo_ini is made to refuse instead."""
    path = tmp_path / "x.conf"
    path.write_text("[DEFAULT]\n")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(oslo_ini, "open", refuse, raising=False)
    cf = oslo_ini.read(str(path))
    assert cf.error == "permission denied" and not cf.fatal


def test_file_that_is_not_utf8_is_fatal(tmp_path: Path) -> None:
    path = tmp_path / "x.conf"
    path.write_bytes(b"[DEFAULT]\ndebug = \xff\xfe\n")
    cf = oslo_ini.read(str(path))
    assert cf.fatal and cf.error == "not UTF-8 text (byte 18); oslo.config cannot read it"


def test_expand_globs_sorted_deduplicated_and_missing(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("b.conf", "a.conf", "c.txt"):
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    paths, missing = oslo_ini.expand([str(tmp_path / "*.conf"), "a.conf", str(tmp_path / "none-*.conf"),
                                      str(tmp_path / "absent.conf")])
    assert paths == [str(tmp_path / "a.conf"), str(tmp_path / "b.conf"), str(tmp_path / "absent.conf")]
    # a plain path that does not exist is kept: reading it says why (file does not exist)
    assert missing == [oslo_ini.MissingPattern(str(tmp_path / "none-*.conf"), True)]
    assert all(os.path.isabs(p) for p in paths)


@pytest.mark.parametrize("path,service", [
    ("/etc/nova/nova.conf", "nova"),
    ("/etc/nova/nova-compute.conf", "nova"),
    ("/srv/lab/etc/nova/nova-compute-lab-compute1.conf", "nova"),
    ("/etc/kolla/nova-api/nova.conf", "nova"),  # kolla-ansible: one dir per container
    ("/etc/glance/glance-api.conf", "glance"),
    ("/etc/keystone/keystone.conf", "keystone"),
    ("/etc/neutron/neutron.conf", "neutron"),
])
def test_service_of_a_file(path: str, service: str) -> None:
    assert oslo_ini.service_of(path) == service


# == memcached server lists: which library reads them, and how ============================


def cache(tmp_path: Path, options: str, name: str = "nova.conf") -> tuple[
        list[oslo_ini.MemcacheList], list[oslo_ini.Problem]]:
    return oslo_ini.memcache_lists(write(tmp_path, "[cache]\n" + options, name))


@pytest.mark.parametrize("options,in_use,why", [
    # oslo_cache/_opts.py: enabled defaults to False, backend to dogpile.cache.null
    ("memcache_servers = h1:11211\n", False, "[cache] enabled is false by default"),
    ("enabled = false\nbackend = oslo_cache.memcache_pool\nmemcache_servers = h1:11211\n", False,
     "[cache] enabled is false"),
    ("enabled = true\nmemcache_servers = h1:11211\n", False, "backend dogpile.cache.null is not a memcached"),
    ("enabled = true\nbackend = dogpile.cache.redis\nmemcache_servers = h1:11211\n", False,
     "backend dogpile.cache.redis is not a memcached"),
    ("enabled = true\nbackend = oslo_cache.memcache_pool\nmemcache_servers = h1:11211\n", True, ""),
    ("enabled = 1\nbackend = dogpile.cache.pymemcache\nmemcache_servers = h1:11211\n", True, ""),
])
def test_cache_counts_only_when_oslo_cache_uses_it(tmp_path: Path, options: str, in_use: bool,
                                                   why: str) -> None:
    [found], problems = cache(tmp_path, options)
    assert problems == []
    assert found.in_use is in_use
    assert why in found.unused and bool(found.unused) is not in_use


def test_a_cache_that_is_off_and_lists_nothing_is_left_out(tmp_path: Path) -> None:
    assert cache(tmp_path, "enabled = false\n") == ([], [])
    assert oslo_ini.memcache_lists(write(tmp_path, "[DEFAULT]\ndebug = true\n", "y.conf")) == ([], [])


def test_an_enabled_memcache_cache_without_servers_uses_the_default(tmp_path: Path) -> None:
    [found], _ = cache(tmp_path, "enabled = true\nbackend = dogpile.cache.memcached\n")
    assert found.default and [s.key for s in found.servers] == ["localhost:11211"]
    assert found.shown() == "localhost:11211 (the default)"


def test_backend_argument_url_overrides_memcache_servers(tmp_path: Path) -> None:
    """oslo_cache/core.py: setdefault(url, memcache_servers) after the backend arguments; the
    url is split at commas only for dogpile.cache.memcached and oslo_cache.memcache_pool."""
    [pooled], _ = cache(tmp_path, "enabled = true\nbackend = oslo_cache.memcache_pool\n"
                                  "backend_argument = url:h1:11211,h2:11211\nmemcache_servers = x:1\n")
    assert [s.key for s in pooled.servers] == ["h1:11211", "h2:11211"]
    assert pooled.option == "backend_argument"
    [hashed], [problem] = cache(tmp_path, "enabled = true\nbackend = dogpile.cache.pymemcache\n"
                                          "backend_argument = url:h1:11211,h2:11211\n", "y.conf")
    assert [s.entry for s in hashed.servers] == ["h1:11211,h2:11211"]  # one entry for pymemcache
    assert problem.severity is Severity.CRITICAL
    assert "pymemcache reads the host as 'h1:11211,h2'" in problem.message


@pytest.mark.parametrize("options,library,protocol", [
    ("backend = oslo_cache.memcache_pool\n", oslo_ini.PYTHON_MEMCACHED, True),
    ("backend = dogpile.cache.memcached\n", oslo_ini.PYTHON_MEMCACHED, True),
    ("backend = dogpile.cache.pymemcache\n", oslo_ini.PYMEMCACHE, True),
    ("backend = dogpile.cache.pylibmc\n", oslo_ini.PYLIBMC, True),
    ("backend = dogpile.cache.bmemcached\n", oslo_ini.BMEMCACHED, True),
    ("backend = oslo_cache.memcache_pool\ntls_enabled = true\n", oslo_ini.BMEMCACHED, False),
    ("backend = oslo_cache.memcache_pool\nmemcache_sasl_enabled = true\n", oslo_ini.BMEMCACHED, False),
    ("backend = dogpile.cache.pymemcache\ntls_enabled = true\n", oslo_ini.PYMEMCACHE, False),
])
def test_the_client_library_follows_the_backend(tmp_path: Path, options: str, library: str,
                                                protocol: bool) -> None:
    [found], problems = cache(tmp_path, "enabled = true\nmemcache_servers = h1:11211\n" + options)
    assert (found.library, found.protocol, problems) == (library, protocol, [])


def test_tls_on_a_backend_oslo_cache_refuses_it_for(tmp_path: Path) -> None:
    _, [problem] = cache(tmp_path, "enabled = true\nbackend = dogpile.cache.memcached\ntls_enabled = true\n"
                                   "memcache_servers = h1:11211\n")
    assert (problem.severity, problem.option) == (Severity.CRITICAL, "tls_enabled")
    assert "ConfigurationError" in problem.message


def test_keystonemiddleware_still_reads_the_deprecated_memcache_servers(tmp_path: Path) -> None:
    cf = write(tmp_path, "[keystone_authtoken]\nmemcache_servers = h1:11211,h2:11211\n")
    [found], problems = oslo_ini.memcache_lists(cf)
    assert problems == []
    assert (found.section, found.option, found.deprecated_name) == (
        "keystone_authtoken", "memcache_servers", "memcached_servers")
    assert [s.key for s in found.servers] == ["h1:11211", "h2:11211"]
    assert found.in_use and found.library == oslo_ini.PYTHON_MEMCACHED and found.order_matters
    # the new name wins when both are written (oslo.config)
    cf = write(tmp_path, "[keystone_authtoken]\nmemcache_servers = old:1\nmemcached_servers = new:2\n",
               "y.conf")
    [found], _ = oslo_ini.memcache_lists(cf)
    assert (found.option, found.deprecated_name, [s.key for s in found.servers]) == (
        "memcached_servers", "", ["new:2"])


@pytest.mark.parametrize("options,library,protocol", [
    ("", oslo_ini.PYTHON_MEMCACHED, True),
    ("memcache_use_advanced_pool = false\n", oslo_ini.PYTHON_MEMCACHED, True),
    ("memcache_tls_enabled = true\n", oslo_ini.BMEMCACHED, False),
    ("memcache_sasl_enabled = true\n", oslo_ini.BMEMCACHED, False),
    ("memcache_use_advanced_pool = false\nmemcache_tls_enabled = true\n", oslo_ini.PYTHON_MEMCACHED, False),
])
def test_keystonemiddleware_library(tmp_path: Path, options: str, library: str, protocol: bool) -> None:
    [found], _ = oslo_ini.memcache_lists(write(
        tmp_path, "[keystone_authtoken]\nmemcached_servers = h1:11211\n" + options))
    assert (found.library, found.protocol) == (library, protocol)


def test_keystone_authtoken_without_servers_is_no_list(tmp_path: Path) -> None:
    cf = write(tmp_path, "[keystone_authtoken]\nauth_type = password\n")
    assert oslo_ini.memcache_lists(cf) == ([], [])


@pytest.mark.parametrize("entry,host,port,family,fault,fix", [
    # python-memcached 1.62 memcache.py _Host: unix:, inet6:[h]:p, inet:h:p, h:p
    ("h1", "h1", 11211, "inet", "", ""),
    ("h1:11212", "h1", 11212, "inet", "", ""),
    ("inet:h1:11212", "h1", 11212, "inet", "", ""),
    ("inet6:[fd00::1]:11213", "fd00::1", 11213, "inet6", "", ""),
    ("inet6:[mc.example]:11211", "mc.example", 11211, "inet6", "", ""),
    ("unix:/run/mc.sock", "", 0, "any", "", ""),
    ("[fd00::1]:11211", "", 0, "any", "python-memcached cannot parse it", "inet6:[fd00::1]:11211"),
    ("fd00::1", "", 0, "any", "python-memcached cannot parse it", "inet6:[fd00::1]:11211"),
    ("inet6:fd00::1:11211", "", 0, "any", "python-memcached cannot parse it", "inet6:[fd00::1]:11211"),
    ("h1:11211x", "", 0, "any", "python-memcached cannot parse it", "HOST:PORT"),
    ("h1:99999", "", 0, "any", "port 99999 is out of range", "between 1 and 65535"),
])
def test_python_memcached_forms(entry: str, host: str, port: int, family: str, fault: str, fix: str) -> None:
    server = oslo_ini._parse_server(entry, oslo_ini.PYTHON_MEMCACHED)
    assert (server.host, server.port, server.family) == (host, port, family)
    assert fault in server.fault and bool(server.fault) is bool(fault)
    assert fix in server.fix


@pytest.mark.parametrize("entry,host,port,fault,fix", [
    # pymemcache 4.0 client/base.py normalize_server_spec
    ("h1", "h1", 11211, "", ""),
    ("h1:11212", "h1", 11212, "", ""),
    ("[fd00::1]:11213", "fd00::1", 11213, "", ""),
    ("[fd00::1]", "fd00::1", 11211, "", ""),
    ("unix:/run/mc.sock", "", 0, "", ""),
    ("/run/mc.sock", "", 0, "", ""),
    ("inet6:[fd00::1]:11211", "", 0, "pymemcache reads the host as 'inet6:[fd00::1]'", "[fd00::1]:11211"),
    ("inet:h1:11211", "", 0, "pymemcache reads the host as 'inet:h1'", "HOST:PORT"),
    ("fd00::1", "", 0, "pymemcache reads the host as 'fd00:'", "[fd00::1]:11211"),
    ("h1:11211x", "", 0, "pymemcache cannot read port '11211x'", "HOST:PORT"),
])
def test_pymemcache_forms(entry: str, host: str, port: int, fault: str, fix: str) -> None:
    server = oslo_ini._parse_server(entry, oslo_ini.PYMEMCACHE)
    assert (server.host, server.port) == (host, port)
    assert fault in server.fault and bool(server.fault) is bool(fault)
    assert fix in server.fix


def test_an_entry_the_library_cannot_parse_is_critical_in_use_info_otherwise(tmp_path: Path) -> None:
    _, [problem] = cache(tmp_path, "enabled = true\nbackend = oslo_cache.memcache_pool\n"
                                   "memcache_servers = 10.0.0.1:11211,[::1]:11211\n")
    assert problem.severity is Severity.CRITICAL
    assert problem.subject.endswith("nova.conf [cache] memcache_servers")
    assert problem.message.startswith("entry '[::1]:11211': python-memcached cannot parse it")
    assert "(used by backend oslo_cache.memcache_pool) never reaches this server, even if it answers" \
        in problem.message
    assert problem.fix.startswith("write it as inet6:[::1]:11211")
    _, [off] = cache(tmp_path, "enabled = false\nbackend = oslo_cache.memcache_pool\n"
                               "memcache_servers = [::1]:11211\n", "y.conf")
    assert off.severity is Severity.INFO and "nothing uses the list now" in off.message


def test_order_and_comparison_follow_the_library(tmp_path: Path) -> None:
    def found(backend: str, servers: str) -> oslo_ini.MemcacheList:
        [one], _ = cache(tmp_path, f"enabled = true\nbackend = {backend}\nmemcache_servers = {servers}\n")
        return one

    pool_ab = found("oslo_cache.memcache_pool", "a:1,b:2")
    pool_ba = found("oslo_cache.memcache_pool", "b:2,a:1")
    hash_ab = found("dogpile.cache.pymemcache", "a:1,b:2")
    hash_ba = found("dogpile.cache.pymemcache", "b:2, a:1")
    assert pool_ab.order_matters and not hash_ab.order_matters
    assert pool_ab.compare_key() != pool_ba.compare_key()
    assert hash_ab.compare_key() == hash_ba.compare_key()  # rendezvous hashing: a set of names
    assert hash_ab.compare_key() != pool_ab.compare_key()  # another library places keys elsewhere
    # pymemcache hashes the name as written: localhost and 127.0.0.1 are two different nodes
    assert found("dogpile.cache.pymemcache", "localhost:1").compare_key() != \
        found("dogpile.cache.pymemcache", "127.0.0.1:1").compare_key()


@pytest.mark.parametrize("entry,server", [
    ("h1", "h1:11211"),
    ("h1:11212", "h1:11212"),
    ("inet:h1:11212", "h1:11212"),
    ("inet6:[fd00::1]:11213", "[fd00::1]:11213"),
    ("[fd00::1]", "[fd00::1]:11211"),
    ("unix:/run/memcached.sock", None),
    ("/run/memcached.sock", None),
    ("h1:1x", "h1:1x"),  # kept as written: the memcached check reports it
])
def test_normalize_server_for_healthds_own_list(entry: str, server: str | None) -> None:
    assert oslo_ini.normalize_server(entry) == server


# == transport_url: as oslo.messaging and kombu read it ===================================


def test_each_host_has_its_own_credentials_else_guest() -> None:
    """impl_rabbit.py _transform_transport_url writes '' for missing credentials; kombu reads
    them as missing and pyamqp's default_connection_params give guest/guest (measured with
    oslo.messaging 18.3.1 and kombu 5.7.0: no reuse of the previous host's credentials)."""
    url = oslo_ini.parse_transport_url("rabbit://u1:p1@h1,h2:5673,u3@h3,:p4@h4/")
    assert [(h.host, h.port, h.user, h.password, h.credentials_written) for h in url.hosts] == [
        ("h1", 5672, "u1", "p1", True), ("h2", 5673, "guest", "guest", False),
        ("h3", 5672, "u3", "guest", False), ("h4", 5672, "guest", "p4", True)]
    assert url.vhost == "/"


@pytest.mark.parametrize("url,vhost", [
    ("rabbit://h1", "/"), ("rabbit://h1/", "/"), ("rabbit://h1/nova", "nova"), ("rabbit://h1/%2F", "/"),
    ("rabbit://h1/%2Fnova", "/nova"), ("rabbit://h1?ssl=1", "/"),
])
def test_vhost(url: str, vhost: str) -> None:
    assert oslo_ini.parse_transport_url(url).vhost == vhost


def test_addresses_and_query() -> None:
    url = oslo_ini.parse_transport_url("RABBIT://u:pw-x1@[fd00::1]:5671,u2:pw-x2@fd00::2/v?ssl=1&ssl=0")
    assert url.scheme == "rabbit" and url.driver == "rabbit"
    assert [h.endpoint for h in url.hosts] == ["[fd00::1]:5671", "[fd00::2]:5672"]
    assert url.query == (("ssl", "1,0"),)  # TransportURL.parse joins repeated values with commas
    assert url.redacted() == "rabbit://u:***@[fd00::1]:5671,u2:***@[fd00::2]:5672/v?ssl=1,0"
    assert url.identity() == frozenset({"[fd00::1]:5671/v", "[fd00::2]:5672/v"})
    other = oslo_ini.parse_transport_url("rabbit://x:y-z@fd00::2,x:y-z@[fd00::1]:5671/v")
    assert other.identity() == url.identity()  # credentials and order do not count


def test_a_host_without_credentials_is_shown_without_them() -> None:
    url = oslo_ini.parse_transport_url("rabbit://u:pw@h1,h2/v")
    assert url.redacted() == "rabbit://u:***@h1:5672,h2:5672/v"


def test_passwords_are_registered_as_secrets() -> None:
    oslo_ini.parse_transport_url("rabbit://u:unit-p%40ss-9f3e@h1/")
    assert redact("said unit-p@ss-9f3e here") == "said *** here"


@pytest.mark.parametrize("value,reason", [
    ("just-a-host", "no driver given"),
    ("rabbit://u:unit-secret-2b@h1:notaport/", "invalid port number"),
    ("rabbit://u:unit-secret-2b@h1:99999/", "out of range"),
    ("rabbit://u:unit-secret-2b@[fd00::1/", "not a URL (Invalid IPv6 URL)"),
])
def test_unparsable_urls_raise_without_quoting_them(value: str, reason: str) -> None:
    with pytest.raises(oslo_ini.TransportError) as raised:
        oslo_ini.parse_transport_url(value)
    assert reason in str(raised.value)
    assert "unit-secret-2b" not in str(raised.value) and "h1" not in str(raised.value)


def conf_transports(tmp_path: Path, text: str, name: str = "nova.conf") -> tuple[
        list[oslo_ini.Transport], list[oslo_ini.Problem]]:
    return oslo_ini.transports(write(tmp_path, text, name))


def test_rpc_and_notification_transports(tmp_path: Path) -> None:
    found, problems = conf_transports(tmp_path, "[DEFAULT]\ntransport_url = rabbit://n:p@h1/nova\n"
                                                "[oslo_messaging_notifications]\ndriver = messagingv2\n"
                                                "transport_url = rabbit://n:p@h2/notify\n")
    assert problems == []
    rpc, notify = found
    assert (rpc.section, rpc.in_use, rpc.exchange, rpc.tls, rpc.login) == (
        "DEFAULT", True, "nova", None, True)
    assert (notify.section, notify.in_use, notify.url.vhost) == (
        "oslo_messaging_notifications", True, "notify")


@pytest.mark.parametrize("drivers", ["", "driver = noop\n"])
def test_notifications_off_leave_their_transport_unused(tmp_path: Path, drivers: str) -> None:
    [rpc, notify], _ = conf_transports(tmp_path, "[DEFAULT]\ntransport_url = rabbit://n:p@h1/nova\n"
                                                 "[oslo_messaging_notifications]\n" + drivers
                                                 + "transport_url = rabbit://n:p@h2/notify\n")
    assert rpc.in_use and not notify.in_use
    assert "notifications are off" in notify.unused


def test_a_file_without_transport_url_has_none(tmp_path: Path) -> None:
    assert conf_transports(tmp_path, "[DEFAULT]\ndebug = true\n") == ([], [])


@pytest.mark.parametrize("name,text,exchange", [
    ("nova.conf", "", "nova"),
    ("keystone.conf", "", "keystone"),
    ("glance-api.conf", "", "glance"),
    ("cinder.conf", "", "openstack"),
    ("nova.conf", "control_exchange = mynova\n", "mynova"),
])
def test_control_exchange(tmp_path: Path, name: str, text: str, exchange: str) -> None:
    [found], _ = conf_transports(tmp_path, f"[DEFAULT]\ntransport_url = rabbit://n:p@h1/\n{text}", name)
    assert found.exchange == exchange


@pytest.mark.parametrize("url,driver", [("amqp://n:secret-amqp@h1/nova", "amqp"), ("h1:5672", "h1")])
def test_a_driver_oslo_messaging_lacks_cannot_start(tmp_path: Path, url: str, driver: str) -> None:
    found, [problem] = conf_transports(tmp_path, f"[DEFAULT]\ntransport_url = {url}\n")
    assert found == []
    assert problem.severity is Severity.CRITICAL and problem.subject.endswith("[DEFAULT] transport_url")
    assert f"names the {driver!r} driver, which oslo.messaging does not have" in problem.message
    assert "DriverLoadFailure" in problem.message and problem.fix.startswith("use rabbit://")
    assert "secret-amqp" not in problem.message


@pytest.mark.parametrize("query,message", [
    ("heartbeat=10", "query parameter 'heartbeat', which is no [oslo_messaging_rabbit] option"),
    ("ssl=maybe", "query parameter ssl: Unexpected boolean value 'maybe'"),
])
def test_query_options_the_rabbit_driver_rejects(tmp_path: Path, query: str, message: str) -> None:
    found, [problem] = conf_transports(tmp_path, f"[DEFAULT]\ntransport_url = rabbit://n:p@h1/nova?{query}\n")
    assert found == [] and problem.severity is Severity.CRITICAL
    assert message in problem.message and "the service does not start" in problem.message


def test_known_query_options_are_fine(tmp_path: Path) -> None:
    found, problems = conf_transports(tmp_path, "[DEFAULT]\ntransport_url = "
                                                "rabbit://n:p@h1/nova?heartbeat_timeout_threshold=30\n")
    assert len(found) == 1 and problems == []


@pytest.mark.parametrize("rabbit,query,tls", [
    ("", "", None),
    ("ssl = true\n", "", AmqpTls()),
    ("ssl = true\nssl_ca_file = /ca.pem\nssl_cert_file = /c.pem\nssl_key_file = /k.pem\n", "",
     AmqpTls("/ca.pem", "/c.pem", "/k.pem")),
    ("ssl = true\n", "?ssl=0", None),  # the query wins (ConfigOptsProxy)
    ("", "?ssl=1&ssl_ca_file=/q.pem", AmqpTls("/q.pem")),
    ("ssl = true\nssl_version = TLSv1_2\nssl_ca_file = /ca.pem\n", "",
     AmqpTls("/ca.pem", ssl_version="TLSv1_2")),
])
def test_tls_settings_from_the_file_and_the_query(tmp_path: Path, rabbit: str, query: str,
                                                  tls: AmqpTls | None) -> None:
    [found], problems = conf_transports(tmp_path, f"[DEFAULT]\ntransport_url = rabbit://n:p@h1/{query}\n"
                                                  f"[oslo_messaging_rabbit]\n{rabbit}")
    assert found.tls == tls and problems == []


def test_removed_rabbit_option_names_are_not_read(tmp_path: Path) -> None:
    """oslo.messaging 16.0.0 dropped rabbit_use_ssl and kombu_ssl_*: such a file gets no TLS."""
    [found], problems = conf_transports(tmp_path, "[DEFAULT]\ntransport_url = rabbit://n:p@h1/\n"
                                                  "[oslo_messaging_rabbit]\nrabbit_use_ssl = true\n"
                                                  "kombu_ssl_ca_certs = /old/ca.pem\n")
    assert found.tls is None
    assert [(p.severity, p.option) for p in problems] == [
        (Severity.INFO, "rabbit_use_ssl"), (Severity.INFO, "kombu_ssl_ca_certs")]
    assert problems[0].fix == "rename it to ssl" and "(no TLS)" in problems[0].message


def test_invalid_ssl_version_cannot_connect(tmp_path: Path) -> None:
    found, [problem] = conf_transports(tmp_path, "[DEFAULT]\ntransport_url = rabbit://n:p@h1/\n"
                                                 "[oslo_messaging_rabbit]\nssl = true\nssl_version = TLSv9\n")
    assert found == [] and problem.severity is Severity.CRITICAL
    assert "ssl_version 'TLSv9' is not one of" in problem.message and "Invalid SSL version" in problem.message


def test_ssl_version_without_ca_file_verifies_nothing(tmp_path: Path) -> None:
    [found], [problem] = conf_transports(tmp_path, "[DEFAULT]\ntransport_url = rabbit://n:p@h1/\n"
                                                   "[oslo_messaging_rabbit]\nssl = true\n"
                                                   "ssl_version = sslv23\n")
    assert found.tls == AmqpTls(ssl_version="sslv23")
    assert problem.severity is Severity.INFO and "verifies no certificate at all" in problem.message


def test_hosts_without_credentials_are_noted(tmp_path: Path) -> None:
    [found], [problem] = conf_transports(tmp_path, "[DEFAULT]\ntransport_url = rabbit://n:p@h1,h2/nova\n")
    assert [h.user for h in found.url.hosts] == ["n", "guest"]
    assert problem.severity is Severity.INFO
    assert problem.message.startswith("host(s) h2:5672 have no USER:PASSWORD@ of their own")


def test_external_login_and_other_drivers(tmp_path: Path) -> None:
    [ext], problems = conf_transports(tmp_path, "[DEFAULT]\ntransport_url = rabbit://h1/\n"
                                                "[oslo_messaging_rabbit]\nrabbit_login_method = EXTERNAL\n")
    assert not ext.login and problems == []
    [kafka], _ = conf_transports(tmp_path, "[DEFAULT]\ntransport_url = kafka://k1:9092\n", "y.conf")
    assert kafka.url.driver == "kafka" and kafka.tls is None
    assert conf_transports(tmp_path, "[DEFAULT]\ntransport_url = fake://\n", "z.conf") == ([], [])


def test_transport_url_with_an_unset_reference_is_not_checked(tmp_path: Path) -> None:
    found, [problem] = conf_transports(tmp_path, "[DEFAULT]\ntransport_url = rabbit://n:p@$rabbit_host/\n")
    assert found == [] and problem.severity is Severity.INFO and "$rabbit_host" in problem.message


def test_url_fix_survives_the_redactor() -> None:
    assert redact(oslo_ini.URL_FIX) == oslo_ini.URL_FIX
    assert "USER:PASSWORD@HOST:PORT" in oslo_ini.URL_FIX


# == TLS as the rabbit driver sets it up (messaging.AmqpTls) ==============================


def test_tls_with_a_ca_file_checks_chain_and_host_name(tmp_path: Path) -> None:
    from tests.helpers.certs import issue

    cert = issue(tmp_path)
    context = AmqpTls(str(cert.ca_file)).context()
    assert context.check_hostname and context.verify_mode is ssl.CERT_REQUIRED
    assert AmqpTls(str(cert.ca_file)).describe().endswith("host name included")


def test_tls_without_a_ca_file_checks_the_chain_against_the_system_store() -> None:
    context = AmqpTls().context()
    assert not context.check_hostname and context.verify_mode is ssl.CERT_REQUIRED
    assert "system CA store" in AmqpTls().describe()


def test_tls_with_ssl_version_and_no_ca_file_verifies_nothing() -> None:
    context = AmqpTls(ssl_version="TLSv1_2").context()
    assert not context.check_hostname and context.verify_mode is ssl.CERT_NONE
    assert AmqpTls(ssl_version="TLSv1_2").version_error() == ""
    assert AmqpTls(ssl_version="bogus").version_error().startswith("is not one of ")


def test_tls_files_that_cannot_be_loaded_are_named(tmp_path: Path) -> None:
    with pytest.raises(TlsFileError, match=f"cannot load CA file {tmp_path}/absent.pem: No such file"):
        AmqpTls(str(tmp_path / "absent.pem")).context()
    with pytest.raises(TlsFileError, match="cannot load client certificate/key"):
        AmqpTls(cert_file=str(tmp_path / "absent-cert.pem")).context()


# == permissions (messaging.permission_ops / judge_permissions) ===========================


def test_permission_ops_ask_about_the_services_names() -> None:
    ops = permission_ops("nova", "reply_0123")
    assert [(op.name, op.tests) for op in ops] == [
        ("exchange.declare", ("configure", "exchange 'nova'")),
        ("exchange.declare", ("configure", "'reply_0123'")),
        ("basic.get", ("read", "'reply_0123'")),
        ("exchange.unbind", ("write", "'reply_0123'")),
        ("exchange.unbind", ("write", "exchange 'nova'")),
        ("queue.unbind", ("read", "exchange 'nova'")),
    ]
    fresh = permission_ops("nova")[1].tests[1]
    assert fresh.startswith("'reply_") and len(fresh) == len("'reply_'") + 32  # uuid4().hex as oslo


def judged_permissions(refused: dict[int, bool]) -> tuple[list[str], list[tuple[str, str]]]:
    ops: list[PermissionOp] = permission_ops("nova", "reply_x")
    found = judge_permissions(ops, refused)
    assert found.checked
    return found.missing, list(found.denied)


def test_all_granted() -> None:
    assert judged_permissions(dict.fromkeys(range(6), False)) == ([], [])


def test_nothing_granted_counts_only_what_can_be_told_apart() -> None:
    """'' '' '': every op is refused; the unbinds' refusals could be the read checked first."""
    missing, denied = judged_permissions(dict.fromkeys(range(6), True))
    assert missing == ["configure", "read"]
    assert denied == [("configure", "exchange 'nova'"), ("configure", "'reply_x'"), ("read", "'reply_x'")]


def test_write_refused_alone() -> None:
    """'.*' '^$' '.*': configure and read pass, the unbinds fail on write."""
    refused = {0: False, 1: False, 2: False, 3: True, 4: True, 5: True}
    missing, denied = judged_permissions(refused)
    assert missing == ["write"]
    assert denied == [("write", "'reply_x'"), ("write", "exchange 'nova'")]


def test_a_pattern_that_misses_the_control_exchange() -> None:
    """'^reply_.*' for everything: the reply names pass, the control exchange does not."""
    refused = {0: True, 1: False, 2: False, 3: False, 4: True, 5: True}
    missing, denied = judged_permissions(refused)
    assert missing == ["configure", "write", "read"]
    assert denied == [("configure", "exchange 'nova'"), ("write", "exchange 'nova'"),
                      ("read", "exchange 'nova'")]
