"""Read OpenStack (oslo.config) INI files the way the services do, closely enough
to find which memcached and RabbitMQ servers a service talks to.

oslo.config files differ from what configparser expects by default: options may
repeat (multi-valued options, the last one wins for a plain option), ``[DEFAULT]``
is an ordinary section rather than a fallback for every other section, ``%`` is
not an interpolation marker (passwords contain it) and lists are comma separated.
Shared by the probes that read service config files (memcached, service_config).
"""

from __future__ import annotations

import configparser
import glob
import os
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from healthd.connections import split_host_port
from healthd.redact import register_secret

# configparser would otherwise copy [DEFAULT] options into every section, so
# "[cache] transport_url" would seem to exist. Name the fallback section after
# something that never appears in a real file.
_NO_DEFAULT_SECTION = "\x00healthd:no-default-section"

TRUE_VALUES = frozenset({"1", "true", "yes", "on", "y", "t"})
FALSE_VALUES = frozenset({"0", "false", "no", "off", "n", "f"})

# oslo.cache backends that talk to memcached (others ignore memcache_servers).
MEMCACHE_BACKENDS = frozenset({
    "dogpile.cache.memcached",
    "dogpile.cache.pylibmc",
    "dogpile.cache.bmemcached",
    "dogpile.cache.pymemcache",
    "oslo_cache.memcache_pool",
})

# (section, option) pairs that list memcached servers.
MEMCACHE_OPTIONS = (("cache", "memcache_servers"), ("keystone_authtoken", "memcached_servers"))
# Sections whose transport_url is used for RPC and for notifications.
TRANSPORT_SECTIONS = ("DEFAULT", "oslo_messaging_notifications")


@dataclass
class ConfigFile:
    path: str
    parser: configparser.RawConfigParser | None = None
    error: str | None = None  # why the file could not be used

    def get(self, section: str, option: str) -> str | None:
        if self.parser is None or not self.parser.has_section(section):
            return None
        value = self.parser.get(section, option, fallback=None)
        return value.strip() if value is not None else None


@dataclass(frozen=True)
class MissingPattern:
    pattern: str
    is_glob: bool


def expand(patterns: list[str]) -> tuple[list[str], list[MissingPattern]]:
    """Paths named by the patterns (globs allowed), in a stable order, deduplicated."""
    paths: list[str] = []
    missing: list[MissingPattern] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            found = sorted(glob.glob(pattern))
            if not found:
                missing.append(MissingPattern(pattern, True))
        else:
            found = [pattern]
        for path in found:
            real = os.path.abspath(path)
            if real not in paths:
                paths.append(real)
    return paths, missing


def read(path: str) -> ConfigFile:
    parser = configparser.RawConfigParser(
        strict=False,  # repeated options and sections: the last value wins, as in oslo.config
        interpolation=None,
        default_section=_NO_DEFAULT_SECTION,
        allow_no_value=True,
        comment_prefixes=("#", ";"),
        inline_comment_prefixes=None,  # oslo.config has none: '#' may be part of a password
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # oslo options are case-sensitive
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh, source=path)
    except FileNotFoundError:
        return ConfigFile(path, error="file does not exist")
    except PermissionError:
        return ConfigFile(path, error="permission denied")
    except IsADirectoryError:
        return ConfigFile(path, error="is a directory")
    except (OSError, UnicodeDecodeError) as exc:
        return ConfigFile(path, error=f"cannot read: {type(exc).__name__}")
    except configparser.Error as exc:
        # The message quotes the offending line, which may hold a password: keep only the kind.
        line = getattr(exc, "lineno", None)
        where = f" at line {line}" if line else ""
        return ConfigFile(path, error=f"not a valid INI file ({type(exc).__name__}{where})")
    return ConfigFile(path, parser)


def split_list(value: str | None) -> list[str]:
    """oslo ListOpt: comma separated, blanks dropped, order kept."""
    if not value:
        return []
    return [item.strip() for item in value.split(",") if item.strip()]


def normalize_server(entry: str, default_port: int = 11211) -> str | None:
    """'inet:host:port', '[v6]:port', 'host' -> 'host:port' ('[v6]:port'); None for unix sockets."""
    if entry.startswith(("unix:", "/")):
        return None
    try:
        host, port = split_host_port(entry, default_port)
    except ValueError:
        return entry.strip()  # kept as written: the checks report it (a typo in the port)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def cache_uses_memcache(cf: ConfigFile) -> bool:
    """[cache] memcache_servers matters unless caching is switched off or uses no memcached.

    Only an explicit ``enabled = false`` or an explicit non-memcached backend
    rules it out: services differ in their defaults (keystone caches by default).
    """
    enabled = (cf.get("cache", "enabled") or "").lower()
    backend = cf.get("cache", "backend")
    if enabled in FALSE_VALUES:
        return False
    return not (backend and backend not in MEMCACHE_BACKENDS)


def memcache_server_lists(cf: ConfigFile) -> list[tuple[str, str, list[str]]]:
    """(section, option, [normalized host:port, ...]) for every memcache list in use."""
    found = []
    for section, option in MEMCACHE_OPTIONS:
        if section == "cache" and not cache_uses_memcache(cf):
            continue
        entries = [normalize_server(e) for e in split_list(cf.get(section, option))]
        servers = [e for e in entries if e]
        if servers:
            found.append((section, option, servers))
    return found


@dataclass(frozen=True)
class AmqpHost:
    host: str
    port: int
    user: str = field(default="guest")
    password: str = field(default="guest", repr=False)

    @property
    def endpoint(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TransportUrl:
    scheme: str
    hosts: tuple[AmqpHost, ...]
    vhost: str
    tls: bool

    def redacted(self) -> str:
        """The URL as a person may see it: user names kept, passwords masked."""
        hosts = ",".join(f"{h.user}:***@{h.endpoint}" for h in self.hosts)
        vhost = "" if self.vhost == "/" else self.vhost
        return f"{self.scheme}://{hosts}/{vhost}" + ("?ssl=1" if self.tls else "")

    def identity(self) -> frozenset[str]:
        """What two files must agree on: the brokers and the vhost, not the credentials."""
        return frozenset(f"{h.endpoint}/{self.vhost}" for h in self.hosts)


def parse_transport_url(url: str, tls_default: bool = False) -> TransportUrl:
    """Parse an oslo.messaging transport_url, registering every password as a secret.

    ``rabbit://u1:p1@h1:5672,u2:p2@h2:5672/vhost?ssl=1``. A host without
    credentials reuses those of the host before it (deployment tools write
    them once per host, so this is only a fallback), then guest/guest, the
    rabbit driver's historical default. Raises ValueError without quoting the URL.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise ValueError("not a URL (expected driver://user:password@host:port/vhost)")
    netloc, _, path_query = rest.partition("/")
    path, _, query = path_query.partition("?")
    if "?" in netloc:  # rabbit://h1?ssl=1 without a path
        netloc, _, query = netloc.partition("?")
    hosts: list[AmqpHost] = []
    user, password = "guest", "guest"
    for part in netloc.split(","):
        if not part.strip():
            continue
        if "@" in part:
            creds, _, hostport = part.rpartition("@")
            user, _, password = creds.partition(":")
            user, password = unquote(user), unquote(password)
            register_secret(password)
        else:
            hostport = part
        host, port = _host_port(hostport, 5672)
        hosts.append(AmqpHost(host, port, user, password))
    if not hosts:
        raise ValueError("no host in the URL")
    vhost = unquote(path) if path else "/"
    params = {k.lower(): v[-1].lower() for k, v in parse_qs(query).items()}
    tls = params["ssl"] in TRUE_VALUES if "ssl" in params else tls_default
    return TransportUrl(scheme.lower(), tuple(hosts), vhost, tls)


def _host_port(hostport: str, default_port: int) -> tuple[str, int]:
    parsed = urlsplit(f"//{hostport}")
    try:
        port = parsed.port or default_port
    except ValueError:
        raise ValueError("invalid port number") from None
    if not parsed.hostname:
        raise ValueError("empty host name")
    return parsed.hostname, port


def rabbit_tls_default(cf: ConfigFile) -> bool:
    """[oslo_messaging_rabbit] ssl (or the older rabbit_use_ssl) turns TLS on for every URL."""
    for option in ("ssl", "rabbit_use_ssl"):
        value = (cf.get("oslo_messaging_rabbit", option) or "").lower()
        if value in TRUE_VALUES:
            return True
    return False


# oslo.messaging's [oslo_messaging_rabbit] TLS files, each with its pre-Ocata (kombu_*) name.
RABBIT_TLS_FILES = (("ssl_ca_file", "kombu_ssl_ca_certs"), ("ssl_cert_file", "kombu_ssl_certfile"),
                    ("ssl_key_file", "kombu_ssl_keyfile"))


def rabbit_tls_files(cf: ConfigFile) -> tuple[str, str, str]:
    """(ssl_ca_file, ssl_cert_file, ssl_key_file) as the service will use them; "" if unset."""
    values = []
    for names in RABBIT_TLS_FILES:
        found = (cf.get("oslo_messaging_rabbit", name) for name in names)
        values.append(next((v.strip() for v in found if v and v.strip()), ""))
    return values[0], values[1], values[2]

