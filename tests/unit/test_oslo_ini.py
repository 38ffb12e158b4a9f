"""Reading oslo.config files as the services do (healthd/openstack/oslo_ini.py): pure parsing,
files under tmp_path only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from healthd.openstack import oslo_ini
from healthd.redact import redact


def write(tmp_path: Path, text: str, name: str = "x.conf") -> oslo_ini.ConfigFile:
    path = tmp_path / name
    path.write_text(text)
    return oslo_ini.read(str(path))


# -- reading files ---------------------------------------------------------------------


def test_oslo_specifics_are_parsed(tmp_path: Path) -> None:
    cf = write(
        tmp_path,
        "[DEFAULT]\n"
        "transport_url = rabbit://old:old@gone:5672/\n"
        "transport_url = rabbit://u1:p%25w@h1:5672,u2:pw2@h2/nova?ssl=1\n"  # repeated: the last wins
        "[cache]\n"
        "memcache_servers = inet6:[::1]:11211, h3 ,unix:/run/mc.sock\n"
        "[cache]\n"  # a repeated section merges
        "enabled = True\n",
    )
    assert cf.error is None
    assert cf.get("cache", "transport_url") is None  # [DEFAULT] is not a fallback section
    parsed = oslo_ini.parse_transport_url(cf.get("DEFAULT", "transport_url") or "")
    assert [(h.host, h.port, h.user, h.password) for h in parsed.hosts] == [
        ("h1", 5672, "u1", "p%w"), ("h2", 5672, "u2", "pw2")]
    assert parsed.vhost == "nova" and parsed.tls
    assert parsed.redacted() == "rabbit://u1:***@h1:5672,u2:***@h2:5672/nova?ssl=1"
    assert oslo_ini.memcache_server_lists(cf) == [("cache", "memcache_servers", ["[::1]:11211", "h3:11211"])]


def test_values_are_taken_literally(tmp_path: Path) -> None:
    """No interpolation (passwords hold '%'), no inline comments ('#' too), case-sensitive names,
    surrounding blanks stripped; full-line comments with '#' or ';' are comments."""
    cf = write(tmp_path, "[keystone_authtoken]\npassword = a%(b)s #c ;d  \nPassword = other\n"
                         "# memcached_servers = commented:1\n; x = y\nflag\n")
    assert cf.get("keystone_authtoken", "password") == "a%(b)s #c ;d"
    assert cf.get("keystone_authtoken", "Password") == "other"
    assert cf.get("keystone_authtoken", "memcached_servers") is None
    assert cf.get("keystone_authtoken", "flag") is None  # an option without a value
    assert cf.get("no_such_section", "password") is None


def test_unparsable_file_is_reported_without_its_content(tmp_path: Path) -> None:
    cf = write(tmp_path, "transport_url = rabbit://u:SecretNoSection@h/\n")
    assert cf.error == "not a valid INI file (MissingSectionHeaderError at line 1)"
    assert cf.parser is None and cf.get("DEFAULT", "transport_url") is None


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert oslo_ini.read(str(tmp_path / "absent.conf")).error == "file does not exist"
    assert oslo_ini.read(str(tmp_path)).error == "is a directory"


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root every file is readable: the open() of oslo_ini is made to refuse instead."""
    path = tmp_path / "x.conf"
    path.write_text("[DEFAULT]\n")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(oslo_ini, "open", refuse, raising=False)
    assert oslo_ini.read(str(path)).error == "permission denied"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "x.conf"
    path.write_bytes(b"[DEFAULT]\ndebug = \xff\xfe\n")
    assert oslo_ini.read(str(path)).error == "cannot read: UnicodeDecodeError"


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


# -- lists and servers ------------------------------------------------------------------


@pytest.mark.parametrize("value,items", [
    (None, []), ("", []), (" a , ,b,", ["a", "b"]), ("b,a", ["b", "a"]),
])
def test_split_list(value: str | None, items: list[str]) -> None:
    assert oslo_ini.split_list(value) == items


@pytest.mark.parametrize("entry,server", [
    ("h1", "h1:11211"),
    ("h1:11212", "h1:11212"),
    ("inet:h1:11212", "h1:11212"),
    ("inet6:[fd00::1]:11213", "[fd00::1]:11213"),
    ("[fd00::1]", "[fd00::1]:11211"),
    ("unix:/run/memcached.sock", None),
    ("/run/memcached.sock", None),
])
def test_normalize_server(entry: str, server: str | None) -> None:
    assert oslo_ini.normalize_server(entry) == server


@pytest.mark.parametrize("cache,uses", [
    ("", True),  # services differ in their defaults: only an explicit "off" rules memcached out
    ("enabled = true\n", True),
    ("enabled = false\n", False),
    ("enabled = 0\n", False),
    ("enabled = No\n", False),
    ("backend = dogpile.cache.memcached\n", True),
    ("backend = oslo_cache.memcache_pool\n", True),
    ("backend = dogpile.cache.null\n", False),
    ("backend = oslo_cache.dict\n", False),
])
def test_cache_uses_memcache(tmp_path: Path, cache: str, uses: bool) -> None:
    cf = write(tmp_path, "[cache]\n" + cache + "memcache_servers = h1:11211\n")
    assert oslo_ini.cache_uses_memcache(cf) is uses
    expected = [("cache", "memcache_servers", ["h1:11211"])] if uses else []
    assert oslo_ini.memcache_server_lists(cf) == expected


def test_keystone_authtoken_servers_count_whatever_the_cache_says(tmp_path: Path) -> None:
    cf = write(tmp_path, "[cache]\nenabled = false\nmemcache_servers = h1:11211\n"
                         "[keystone_authtoken]\nmemcached_servers = h2, unix:/x.sock\n")
    assert oslo_ini.memcache_server_lists(cf) == [("keystone_authtoken", "memcached_servers", ["h2:11211"])]


def test_empty_server_lists_are_left_out(tmp_path: Path) -> None:
    cf = write(tmp_path, "[cache]\nmemcache_servers =\n[keystone_authtoken]\nmemcached_servers = unix:/x\n")
    assert oslo_ini.memcache_server_lists(cf) == []


# -- transport_url --------------------------------------------------------------------


def test_credentials_carry_over_to_the_next_host_else_guest() -> None:
    url = oslo_ini.parse_transport_url("rabbit://u1:p1@h1,h2:5673,u3:p3@h3/")
    assert [(h.host, h.port, h.user, h.password) for h in url.hosts] == [
        ("h1", 5672, "u1", "p1"), ("h2", 5673, "u1", "p1"), ("h3", 5672, "u3", "p3")]
    assert url.vhost == "/"
    bare = oslo_ini.parse_transport_url("amqp://h1")
    got = (bare.scheme, bare.hosts[0].user, bare.hosts[0].password, bare.vhost)
    assert got == ("amqp", "guest", "guest", "/")


def test_redacted_and_identity() -> None:
    url = oslo_ini.parse_transport_url("RABBIT://u:pw-x1@[fd00::1]:5672,u2:pw-x2@h2/")
    assert url.scheme == "rabbit"
    assert url.redacted() == "rabbit://u:***@[fd00::1]:5672,u2:***@h2:5672/"
    assert url.identity() == frozenset({"[fd00::1]:5672//", "h2:5672//"})
    other = oslo_ini.parse_transport_url("rabbit://x:y-z@h2:5672,x:y-z@[fd00::1]/")
    assert other.identity() == url.identity()  # credentials and order do not count


def test_passwords_are_registered_as_secrets() -> None:
    oslo_ini.parse_transport_url("rabbit://u:unit-p%40ss-9f3e@h1/")
    assert redact("said unit-p@ss-9f3e here") == "said *** here"


@pytest.mark.parametrize("query,default,tls", [
    ("", False, False), ("", True, True), ("?ssl=1", False, True), ("?ssl=true", False, True),
    ("?ssl=0", True, False), ("?SSL=Off", True, False), ("?heartbeat=10", True, True),
])
def test_tls_from_the_url_else_the_file_default(query: str, default: bool, tls: bool) -> None:
    assert oslo_ini.parse_transport_url(f"rabbit://h1/v{query}", default).tls is tls


def test_query_without_a_path() -> None:
    url = oslo_ini.parse_transport_url("rabbit://u:p@h1:5671?ssl=1")
    assert (url.hosts[0].endpoint, url.vhost, url.tls) == ("h1:5671", "/", True)


def test_percent_encoded_vhost() -> None:
    assert oslo_ini.parse_transport_url("rabbit://h1/%2Fnova").vhost == "/nova"


@pytest.mark.parametrize("value,reason", [
    ("h1:5672", "not a URL"),
    ("://h1", "not a URL"),
    ("rabbit:///nova", "no host in the URL"),
    ("rabbit://u:unit-secret-2b@h1:notaport/", "invalid port number"),
    ("rabbit://u:unit-secret-2b@h1:99999/", "invalid port number"),
    ("rabbit://u:unit-secret-2b@:5672/", "empty host name"),
])
def test_unparsable_urls_raise_without_quoting_them(value: str, reason: str) -> None:
    with pytest.raises(ValueError) as raised:
        oslo_ini.parse_transport_url(value)
    assert reason in str(raised.value)
    assert "unit-secret-2b" not in str(raised.value) and "h1" not in str(raised.value)


# -- [oslo_messaging_rabbit] TLS ------------------------------------------------------


@pytest.mark.parametrize("options,tls", [
    ("", False), ("ssl = true\n", True), ("ssl = False\n", False), ("rabbit_use_ssl = 1\n", True),
    ("ssl = false\nrabbit_use_ssl = yes\n", True),
])
def test_rabbit_tls_default(tmp_path: Path, options: str, tls: bool) -> None:
    assert oslo_ini.rabbit_tls_default(write(tmp_path, "[oslo_messaging_rabbit]\n" + options)) is tls


def test_rabbit_tls_files_new_names_win_over_the_kombu_ones(tmp_path: Path) -> None:
    cf = write(tmp_path, "[oslo_messaging_rabbit]\n"
                         "ssl_ca_file = /new/ca.pem\nkombu_ssl_ca_certs = /old/ca.pem\n"
                         "kombu_ssl_certfile = /old/cert.pem\n"
                         "ssl_key_file =  \nkombu_ssl_keyfile = /old/key.pem\n")
    assert oslo_ini.rabbit_tls_files(cf) == ("/new/ca.pem", "/old/cert.pem", "/old/key.pem")
    assert oslo_ini.rabbit_tls_files(write(tmp_path, "[DEFAULT]\n", "y.conf")) == ("", "", "")
