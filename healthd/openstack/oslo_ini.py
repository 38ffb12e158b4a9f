"""Read OpenStack service config files the way the services do, with oslo.config itself.

Each file is loaded into its own ``oslo_config.cfg.ConfigOpts`` with the options the probes
need registered as the libraries register them (same names, types, defaults and deprecated
names; each block below cites its source at the versions the lab runs: oslo.config 10.7.0,
oslo.messaging 18.3.1, oslo.cache 4.3.0, keystonemiddleware 13.0.1, kombu 5.7.0,
python-memcached 1.62, pymemcache 4.0.0). So quoting, repeated options (the last wins),
``$option`` / ``${group.option}`` substitution, ``$$`` and ``\\$`` escapes, list parsing and
deprecated names are oslo.config's own. A file oslo.config cannot parse is reported as such:
the service cannot start with it either.

On top of the values, this module knows what the libraries do with them:

- which memcached client library reads a server list (python-memcached, pymemcache, ...),
  how that library parses each entry, whether the list order decides where a key goes,
  and whether oslo.cache uses ``[cache]`` at all (``enabled``, ``backend``);
- how oslo.messaging and kombu read a ``transport_url``: the driver it loads, each host's
  credentials (a host written without them logs in as guest/guest), the vhost, the query
  options the rabbit driver accepts, and the TLS settings of ``[oslo_messaging_rabbit]``.

Shared by the probes that read service config files (memcached, service_config).
"""

from __future__ import annotations

import contextlib
import glob
import ipaddress
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from oslo_config import cfg, iniparser, types

from healthd.model import Severity
from healthd.openstack.messaging import AmqpTls
from healthd.redact import register_secret

# oslo.config logs each deprecated option name it reads at WARNING, every time a file is
# loaded: healthd reports the deprecated names it cares about itself.
logging.getLogger("oslo_config").setLevel(logging.ERROR)

TRUE_VALUES = frozenset({"1", "true", "yes", "on", "y", "t"})
FALSE_VALUES = frozenset({"0", "false", "no", "off", "n", "f"})

# == the options, declared as the libraries declare them ===========================

# oslo_messaging/transport.py _transport_opts ([DEFAULT]); a file without transport_url
# gets "rabbit://" (guest@localhost), which healthd does not check.
TRANSPORT_OPTS = (
    cfg.StrOpt("transport_url", default="rabbit://", secret=True),
    cfg.StrOpt("control_exchange", default="openstack"),
)
# oslo_messaging/notify/notifier.py _notifier_opts: without a transport_url of their own,
# notifications use [DEFAULT] transport_url (get_notification_transport).
NOTIFIER_OPTS = (
    cfg.MultiStrOpt("driver", default=[]),
    cfg.StrOpt("transport_url", secret=True),
    cfg.ListOpt("topics", default=["notifications"]),
)
# oslo_messaging/_drivers/impl_rabbit.py rabbit_opts, the ones the probe reads.
RABBIT_LOGIN_METHODS = ("PLAIN", "AMQPLAIN", "EXTERNAL", "RABBIT-CR-DEMO")
RABBIT_OPTS = (
    cfg.BoolOpt("ssl", default=False),
    cfg.StrOpt("ssl_version", default=""),
    cfg.StrOpt("ssl_key_file", default=""),
    cfg.StrOpt("ssl_cert_file", default=""),
    cfg.StrOpt("ssl_ca_file", default=""),
    cfg.StrOpt("rabbit_login_method", choices=RABBIT_LOGIN_METHODS, default="AMQPLAIN"),
)
# Every [oslo_messaging_rabbit] option of oslo.messaging 18.3.1 (impl_rabbit.py rabbit_opts +
# amqp.py amqp_opts). RabbitDriver.__init__ wraps the config in ConfigOptsProxy, whose
# _validate_query looks each transport_url query parameter up in this group: an unknown name
# raises NoSuchOptError and the driver, hence the service, does not start.
RABBIT_OPTION_NAMES = frozenset({
    "amqp_auto_delete", "amqp_durable_queues", "conn_pool_min_size", "conn_pool_ttl",
    "direct_mandatory_flag", "enable_cancel_on_failover", "heartbeat_rate",
    "heartbeat_timeout_threshold", "hostname", "kombu_compression", "kombu_failover_strategy",
    "kombu_missing_consumer_retry_timeout", "kombu_reconnect_delay", "kombu_reconnect_splay",
    "processname", "rabbit_ha_queues", "rabbit_interval_max", "rabbit_login_method",
    "rabbit_qos_prefetch_count", "rabbit_quorum_delivery_limit", "rabbit_quorum_max_memory_bytes",
    "rabbit_quorum_max_memory_length", "rabbit_quorum_queue", "rabbit_retry_backoff",
    "rabbit_retry_interval", "rabbit_stream_fanout", "rabbit_transient_queues_ttl",
    "rabbit_transient_quorum_queue", "rpc_conn_pool_size", "ssl", "ssl_ca_file", "ssl_cert_file",
    "ssl_enforce_fips_mode", "ssl_enforce_hostname_verification", "ssl_key_file", "ssl_version",
    "use_queue_manager",
})
# Names oslo.messaging 16.0.0 stopped reading ("rabbit: Clean up deprecated options", 7f7d8048):
# a file that still uses them gets the defaults (no TLS, no CA file).
REMOVED_RABBIT_OPTIONS = {
    "rabbit_use_ssl": "ssl", "kombu_ssl_version": "ssl_version", "kombu_ssl_keyfile": "ssl_key_file",
    "kombu_ssl_certfile": "ssl_cert_file", "kombu_ssl_ca_certs": "ssl_ca_file",
}
# Drivers of oslo.messaging 18.3.1 (setup.cfg [entry_points] oslo.messaging.drivers). "amqp"
# was the AMQP 1.0 driver (qpid-proton), removed in 15.0.0 (7997a199): a transport_url with
# amqp:// makes get_transport raise DriverLoadFailure.
MESSAGING_DRIVERS = frozenset({"rabbit", "kombu", "kafka", "fake"})
RABBIT_DRIVERS = frozenset({"rabbit", "kombu"})
# control_exchange as each project sets its default (messaging.set_transport_defaults):
# nova/config.py, keystone/conf/__init__.py, glance/notifier.py; oslo's own default otherwise.
PROJECT_EXCHANGES = {"nova": "nova", "keystone": "keystone", "glance": "glance"}

# oslo_cache/_opts.py OPTS, the ones the probe reads.
CACHE_BACKENDS = (
    "oslo_cache.memcache_pool", "oslo_cache.dict", "oslo_cache.etcd3gw", "dogpile.cache.pymemcache",
    "dogpile.cache.memcached", "dogpile.cache.pylibmc", "dogpile.cache.bmemcached", "dogpile.cache.dbm",
    "dogpile.cache.redis", "dogpile.cache.redis_sentinel", "dogpile.cache.memory",
    "dogpile.cache.memory_pickle", "dogpile.cache.null",
)
CACHE_OPTS = (
    cfg.BoolOpt("enabled", default=False),
    cfg.StrOpt("backend", default="dogpile.cache.null", choices=CACHE_BACKENDS),
    cfg.MultiStrOpt("backend_argument", default=[], secret=True),
    cfg.ListOpt("memcache_servers", default=["localhost:11211"]),
    cfg.BoolOpt("tls_enabled", default=False),
    cfg.BoolOpt("memcache_sasl_enabled", default=False),
)
# keystonemiddleware/auth_token/_opts.py _OPTS, the ones the probe reads.
AUTHTOKEN_OPTS = (
    cfg.ListOpt("memcached_servers", deprecated_name="memcache_servers"),
    cfg.BoolOpt("memcache_use_advanced_pool", default=True),
    cfg.BoolOpt("memcache_tls_enabled", default=False),
    cfg.BoolOpt("memcache_sasl_enabled", default=False),
)
OPTION_GROUPS = (
    ("DEFAULT", TRANSPORT_OPTS),
    ("oslo_messaging_notifications", NOTIFIER_OPTS),
    ("oslo_messaging_rabbit", RABBIT_OPTS),
    ("cache", CACHE_OPTS),
    ("keystone_authtoken", AUTHTOKEN_OPTS),
)

# oslo_cache backends that talk to memcached, and the client library each one uses.
# oslo_cache/backends/memcache_pool.py: python-memcached (_memcache_pool), or
# python-binary-memcached (_bmemcache_pool) once TLS or SASL is on.
# dogpile/cache/backends/memcached.py: MemcachedBackend imports python-memcached's `memcache`,
# PyMemcacheBackend builds pymemcache's HashClient, PylibmcBackend pylibmc, BMemcachedBackend bmemcached.
PYTHON_MEMCACHED = "python-memcached"
PYMEMCACHE = "pymemcache"
BMEMCACHED = "python-binary-memcached"
PYLIBMC = "pylibmc"
MEMCACHE_BACKENDS = {
    "oslo_cache.memcache_pool": PYTHON_MEMCACHED,
    "dogpile.cache.memcached": PYTHON_MEMCACHED,
    "dogpile.cache.pymemcache": PYMEMCACHE,
    "dogpile.cache.pylibmc": PYLIBMC,
    "dogpile.cache.bmemcached": BMEMCACHED,
}
# oslo_cache/core.py _build_cache_config: [cache] tls_enabled is accepted for these backends
# only (spelled as there: "dogpile.cache.bmemcache"), any other raises ConfigurationError.
CACHE_TLS_BACKENDS = frozenset({"dogpile.cache.bmemcache", "dogpile.cache.pymemcache",
                                "oslo_cache.memcache_pool"})
# Whether the list order decides which server holds a key:
# python-memcached memcache.py Client._get_server: crc32(key) % len(buckets) -> yes;
# libmemcached (pylibmc) distributes modulo the server count by default -> yes;
# pymemcache client/hash.py HashClient: RendezvousHash over "host:port" names -> no;
# bmemcached.Client is ReplicatingClient, every key on every server -> no.
ORDER_MATTERS = {PYTHON_MEMCACHED: True, PYLIBMC: True, PYMEMCACHE: False, BMEMCACHED: False}


# == reading a file ================================================================


class OptionError(ValueError):
    """An option the library reads has a value the service cannot use (message is secret-free)."""


class Unresolved(OptionError):
    """The value uses $NAME references this file does not set: only the service knows its default."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        refs = ", ".join(f"${n}" for n in names)
        super().__init__(f"it uses {refs}, which this file does not set (the service substitutes its "
                         "own default, which healthd does not know)")


_UNSET = re.compile("\x00unset:([^\x00]*)\x00")


@dataclass
class ConfigFile:
    """One service config file: its values as oslo.config gives them, or why there are none."""

    path: str
    conf: cfg.ConfigOpts | None = field(default=None, repr=False)
    raw: dict[str, dict[str, list[str]]] = field(default_factory=dict, repr=False)
    error: str | None = None  # why the file cannot be used
    fatal: bool = False  # oslo.config rejects it: the service cannot start with this file either

    @property
    def service(self) -> str:
        return service_of(self.path)

    def has(self, section: str, *options: str) -> bool:
        """Whether the file writes any of these options (names as written, before deprecation)."""
        values = self.raw.get(_group_name(section), {})
        return any(option in values for option in options)

    def get(self, section: str, option: str) -> str | None:
        """The option's last value as written (no substitution), or None."""
        values = self.raw.get(_group_name(section), {}).get(option)
        return values[-1].strip() if values else None

    def value(self, section: str, option: str) -> Any:
        """The option as the service reads it. Raises OptionError, or Unresolved for a $NAME
        that only the service's own default could fill."""
        if self.conf is None:
            raise OptionError(self.error or "the file could not be loaded")
        try:
            group = self.conf if section == "DEFAULT" else getattr(self.conf, section)
            value = getattr(group, option)
        except cfg.ConfigFileValueError as exc:
            reason = str(exc.msg or exc).rpartition(" is not valid: ")[2] or type(exc).__name__
            raise OptionError(f"oslo.config rejects its value: {reason}") from None
        except cfg.TemplateSubstitutionError as exc:
            raise OptionError(f"a $ substitution in it fails: {exc.msg}") from None
        except (cfg.NoSuchOptError, cfg.NoSuchGroupError) as exc:
            raise OptionError(f"a $ substitution in it names no option ({exc})") from None
        unset = sorted({name for text in _texts(value) for name in _UNSET.findall(text)})
        if unset:
            raise Unresolved(unset)
        return value


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return []


def _group_name(section: str) -> str:
    """oslo.config matches group names case-insensitively, except DEFAULT (cfg._normalize_group_name)."""
    return section if section == "DEFAULT" else section.lower()


def service_of(path: str) -> str:
    """The project a file belongs to, from its name: nova.conf, nova-compute.conf -> nova;
    glance-api.conf -> glance (also kolla's /etc/kolla/nova-api/nova.conf -> nova)."""
    stem = os.path.basename(path).split(".")[0]
    return re.split(r"[-_]", stem, maxsplit=1)[0].lower() or stem


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
    """Load one file with oslo.config. Never raises: the ConfigFile says what went wrong."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return ConfigFile(path, error="file does not exist")
    except PermissionError:
        return ConfigFile(path, error="permission denied")
    except IsADirectoryError:
        return ConfigFile(path, error="is a directory")
    except UnicodeDecodeError as exc:
        return ConfigFile(path, error=f"not UTF-8 text (byte {exc.start}); oslo.config cannot read it",
                          fatal=True)
    except OSError as exc:
        return ConfigFile(path, error=f"cannot read: {type(exc).__name__}")
    sections: dict[str, dict[str, list[str]]] = {}
    parser = cfg.ConfigParser(path, sections)
    try:
        iniparser.BaseParser.parse(parser, text.splitlines(keepends=True))
    except iniparser.ParseError as exc:
        # str(exc) quotes the line, which may hold a password: only its number and the reason.
        return ConfigFile(path, error=f"oslo.config cannot parse it: line {exc.lineno}: {exc.msg}",
                          fatal=True)
    raw: dict[str, dict[str, list[str]]] = {}
    for section, values in sections.items():
        merged = raw.setdefault(_group_name(section), {})
        for option, items in values.items():
            merged.setdefault(option, []).extend(items)
    try:
        conf = _load(path, raw)
    except cfg.ConfigFilesPermissionDeniedError:
        return ConfigFile(path, error="permission denied")
    except cfg.ConfigFilesNotFoundError:
        return ConfigFile(path, error="file does not exist")
    except (cfg.Error, OSError, UnicodeDecodeError) as exc:
        return ConfigFile(path, error=f"oslo.config cannot load it ({type(exc).__name__})", fatal=True)
    return ConfigFile(path, conf, raw)


def _load(path: str, raw: dict[str, dict[str, list[str]]]) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    for group, opts in OPTION_GROUPS:
        conf.register_opts(list(opts), group=None if group == "DEFAULT" else group)
    _register_references(conf, raw)
    conf(args=[], project=service_of(path), prog="healthd", default_config_files=[path],
         default_config_dirs=[], use_env=False, validate_default_values=False)
    return conf


def _register_references(conf: cfg.ConfigOpts, raw: dict[str, dict[str, list[str]]]) -> None:
    """Register every option the file's values reference with $NAME or ${GROUP.NAME}.

    The service registers hundreds of options healthd does not; without them oslo.config
    could not substitute ``$my_ip``. Each gets the file's value, or a marker default that
    ``ConfigFile.value`` turns into Unresolved (the service would use its own default).
    ``${DEFAULT.x}`` is left alone: oslo.config has no group named DEFAULT and fails on it,
    in the service too (cfg.ConfigOpts.StrSubWrapper).
    """
    pattern = cfg.ConfigOpts.Template.pattern
    seen: set[tuple[str | None, str]] = set()
    for values in raw.values():
        for items in values.values():
            for item in items:
                for match in pattern.finditer(item.replace(r"\$", "$$")):
                    ref = match.group("named") or match.group("braced")
                    if not ref:
                        continue
                    # StrSubWrapper.__getitem__: key.split(".", 1) -> group, option
                    group, _, name = ref.partition(".") if "." in ref else ("", "", ref)
                    if group == "DEFAULT":
                        continue
                    key = (group or None, name)
                    if key in seen:
                        continue
                    seen.add(key)
                    # DuplicateOptError: one of the probe's own options, oslo.config uses it as it is
                    with contextlib.suppress(cfg.DuplicateOptError):
                        conf.register_opt(cfg.StrOpt(name, default=f"\x00unset:{ref}\x00"), group=key[0])


def read_all(patterns: list[str]) -> tuple[list[MissingPattern], list[ConfigFile]]:
    paths, missing = expand(patterns)
    return missing, [read(path) for path in paths]


# == problems the probes report ======================================================


@dataclass(frozen=True)
class Problem:
    """Something in one option that the service will trip over (or, INFO, should know)."""

    severity: Severity
    path: str
    section: str
    option: str
    message: str
    fix: str

    @property
    def subject(self) -> str:
        return f"{self.path} [{self.section}] {self.option}"


# == memcached server lists ==========================================================


@dataclass(frozen=True)
class MemcacheServer:
    """One entry of a server list, read the way its client library reads it."""

    entry: str  # as written
    host: str = ""  # as the library will look it up ("" for a unix socket or an unusable entry)
    port: int = 0
    family: str = "any"  # python-memcached: "inet" (IPv4 only) or "inet6"; others: "any"
    fault: str = ""  # why the library cannot use the entry
    fix: str = ""

    @property
    def key(self) -> str:
        """host:port, [v6]:port: how healthd names the server (metric labels, one check each)."""
        if not self.host:
            return ""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def node(self) -> str:
        """The name pymemcache hashes the server by (client/hash.py _make_client_key)."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class MemcacheList:
    """A memcached server list and what reads it."""

    path: str
    section: str
    option: str  # as written (a deprecated name if the file uses one)
    servers: tuple[MemcacheServer, ...]
    backend: str  # [cache] backend, or "keystonemiddleware"
    library: str
    in_use: bool = True
    unused: str = ""  # why nothing uses it
    default: bool = False  # not written: the library's default list
    protocol: bool = True  # healthd can speak plain memcached to it (no TLS, no SASL)
    deprecated_name: str = ""  # the new name, when the file writes a deprecated one

    @property
    def place(self) -> str:
        return f"{self.path} [{self.section}] {self.option}"

    @property
    def order_matters(self) -> bool:
        return ORDER_MATTERS.get(self.library, True)

    @property
    def usable(self) -> list[MemcacheServer]:
        return [s for s in self.servers if s.host and not s.fault]

    def shown(self) -> str:
        text = ",".join(s.entry for s in self.servers)
        return f"{text} (the default)" if self.default else text

    def compare_key(self) -> tuple[str, object]:
        """What two nodes must share to find each other's keys: the library (they hash
        differently), then the list in order, or the set of names for rendezvous hashing."""
        if self.library == PYMEMCACHE:
            return (self.library, frozenset(s.node for s in self.servers))
        if self.library == BMEMCACHED:
            return (self.library, frozenset(s.key or s.entry for s in self.servers))
        return (self.library, tuple(s.key or s.entry for s in self.servers))


def memcache_lists(cf: ConfigFile) -> tuple[list[MemcacheList], list[Problem]]:
    """The file's memcached server lists ([cache] as oslo.cache uses it, [keystone_authtoken]
    as keystonemiddleware does) and the problems found in them."""
    lists: list[MemcacheList] = []
    problems: list[Problem] = []
    for build in (_cache_list, _authtoken_list):
        try:
            found = build(cf, problems)
        except OptionError as exc:
            section, option = ("cache", "memcache_servers") if build is _cache_list else \
                ("keystone_authtoken", "memcached_servers")
            severity = Severity.INFO if isinstance(exc, Unresolved) else Severity.CRITICAL
            fix = ("set the referenced option in this file, or write the servers out, so healthd can "
                   "check them") if isinstance(exc, Unresolved) else \
                "correct the value; oslo.config raises when the service reads it"
            problems.append(Problem(severity, cf.path, section, option, f"cannot be read: {exc}", fix))
            continue
        if found is not None:
            lists.append(found)
            problems.extend(_entry_problems(found))
    return lists, problems


def _cache_list(cf: ConfigFile, problems: list[Problem]) -> MemcacheList | None:
    """[cache] as oslo_cache/core.py _build_cache_config reads it: the backend is
    dogpile.cache.null unless ``enabled`` is true (default False); the servers come from a
    ``backend_argument = url:...`` if there is one (split at commas for dogpile.cache.memcached
    and oslo_cache.memcache_pool only), else ``memcache_servers`` (default localhost:11211)."""
    enabled = cf.value("cache", "enabled")
    backend = cf.value("cache", "backend")
    written = cf.has("cache", "memcache_servers")
    library = MEMCACHE_BACKENDS.get(backend, "")
    if not enabled or not library:
        if not written:
            return None
        unused = ("oslo.cache does not use it: [cache] enabled is "
                  + ("false" if cf.has("cache", "enabled") else "false by default") if not enabled
                  else f"oslo.cache does not use it: [cache] backend {backend} is not a memcached backend")
        try:
            entries = cf.value("cache", "memcache_servers")
        except OptionError:
            return None  # not used: a broken value there harms nobody
        servers = tuple(_parse_server(e, library or PYTHON_MEMCACHED) for e in entries)
        return MemcacheList(cf.path, "cache", "memcache_servers", servers, backend,
                            library or PYTHON_MEMCACHED, in_use=False, unused=unused)
    entries: list[str] = list(cf.value("cache", "memcache_servers"))
    option = "memcache_servers"
    for argument in cf.value("cache", "backend_argument"):
        name, sep, value = argument.partition(":")
        if sep and name == "url":
            split = backend in ("dogpile.cache.memcached", "oslo_cache.memcache_pool")
            entries, option, written = (value.split(",") if split else [value]), "backend_argument", True
    tls, sasl = cf.value("cache", "tls_enabled"), cf.value("cache", "memcache_sasl_enabled")
    if tls and backend not in CACHE_TLS_BACKENDS:
        problems.append(Problem(
            Severity.CRITICAL, cf.path, "cache", "tls_enabled",
            f"tls_enabled = true is not supported by backend {backend}: oslo.cache raises "
            "ConfigurationError when the service configures its cache region",
            "use dogpile.cache.pymemcache or oslo_cache.memcache_pool for TLS to memcached, or set "
            "tls_enabled = false"))
    if backend == "oslo_cache.memcache_pool" and (tls or sasl):
        library = BMEMCACHED
    servers = tuple(_parse_server(e, library) for e in entries)
    return MemcacheList(cf.path, "cache", option, servers, backend, library, default=not written,
                        protocol=not (tls or sasl))


def _authtoken_list(cf: ConfigFile, problems: list[Problem]) -> MemcacheList | None:
    """keystonemiddleware/auth_token/_cache.py: with memcached_servers set, tokens are cached
    through python-memcached (memcache.Client, or oslo.cache's pool when
    memcache_use_advanced_pool, the default), or python-binary-memcached with SASL (or TLS in
    the advanced pool). Unset: the in-process cache, no memcached."""
    servers_value = cf.value("keystone_authtoken", "memcached_servers")
    if not servers_value:
        return None
    tls = cf.value("keystone_authtoken", "memcache_tls_enabled")
    sasl = cf.value("keystone_authtoken", "memcache_sasl_enabled")
    advanced = cf.value("keystone_authtoken", "memcache_use_advanced_pool")
    library = BMEMCACHED if (sasl or (advanced and tls)) else PYTHON_MEMCACHED
    deprecated = not cf.has("keystone_authtoken", "memcached_servers")
    option = "memcache_servers" if deprecated else "memcached_servers"
    servers = tuple(_parse_server(e, library) for e in servers_value)
    return MemcacheList(cf.path, "keystone_authtoken", option, servers, "keystonemiddleware", library,
                        protocol=not (tls or sasl),
                        deprecated_name="memcached_servers" if deprecated else "")


def _entry_problems(found: MemcacheList) -> list[Problem]:
    problems = []
    for server in found.servers:
        if not server.fault:
            continue
        severity = Severity.CRITICAL if found.in_use else Severity.INFO
        who = found.backend if found.backend == "keystonemiddleware" else f"backend {found.backend}"
        problems.append(Problem(
            severity, found.path, found.section, found.option,
            f"entry {server.entry!r}: {server.fault}; {found.library} (used by {who}) never reaches "
            "this server, even if it answers"
            + ("" if found.in_use else f" ({found.unused}, so nothing uses the list now)"),
            server.fix))
    return problems


# python-memcached 1.62 memcache.py _Host.__init__: the four forms it accepts, in this order.
_PYMC_FORMS = (
    re.compile(r"^(?P<proto>unix):(?P<path>.*)$"),
    re.compile(r"^(?P<proto>inet6):\[(?P<host>[^\[\]]+)\](:(?P<port>[0-9]+))?$"),
    re.compile(r"^(?P<proto>inet):(?P<host>[^:]+)(:(?P<port>[0-9]+))?$"),
    re.compile(r"^(?P<host>[^:]+)(:(?P<port>[0-9]+))?$"),
)


HOST_PORT_FIX = "write it as HOST:PORT, e.g. 10.0.0.5:11211"


def _out_of_range(entry: str, port: int) -> MemcacheServer:
    return MemcacheServer(entry, fault=f"port {port} is out of range", fix="write a port between 1 and 65535")


def _parse_server(entry: str, library: str) -> MemcacheServer:
    entry = entry.strip()
    if library == PYTHON_MEMCACHED:
        return _parse_python_memcached(entry)
    if library == PYMEMCACHE:
        return _parse_pymemcache(entry)
    return _parse_lenient(entry)


def _ipv6_form(entry: str) -> str:
    """The address an IPv6-looking entry names, for the fix ('' if it does not look like one)."""
    text = entry.removeprefix("inet6:").removeprefix("inet:")
    if text.startswith("["):
        return text[1:].partition("]")[0]
    with_port = text.rpartition(":")[0]
    for candidate in (text, with_port):
        try:
            if isinstance(ipaddress.ip_address(candidate), ipaddress.IPv6Address):
                return candidate
        except ValueError:
            continue
    return ""


def _port_of(entry: str) -> str:
    text = entry.removeprefix("inet6:").removeprefix("inet:")
    if text.startswith("["):
        return text.partition("]")[2].lstrip(":") or "11211"
    if text.count(":") == 1:
        return text.partition(":")[2] or "11211"
    return "11211"


def _parse_python_memcached(entry: str) -> MemcacheServer:
    for form in _PYMC_FORMS:
        m = form.match(entry)
        if m:
            break
    else:
        v6 = _ipv6_form(entry)
        port = _port_of(entry)
        fix = (f"write it as inet6:[{v6}]:{port} (python-memcached needs the inet6: prefix and brackets "
               "for IPv6)" if v6 else "write it as HOST:PORT, e.g. 10.0.0.5:11211")
        return MemcacheServer(entry, fault="python-memcached cannot parse it (memcache.py raises "
                              "'Unable to parse connection string')", fix=fix)
    parts = m.groupdict()
    if parts.get("proto") == "unix":
        return MemcacheServer(entry)
    port = int(parts.get("port") or 11211)
    family = "inet6" if parts.get("proto") == "inet6" else "inet"
    if not 0 < port < 65536:
        return _out_of_range(entry, port)
    return MemcacheServer(entry, parts["host"], port, family)


def _parse_pymemcache(entry: str) -> MemcacheServer:
    """pymemcache 4.0 client/base.py normalize_server_spec, then checks that what it makes of
    the entry can be a host at all (it resolves the host only when it connects)."""
    if entry.startswith(("unix:", "/")):
        return MemcacheServer(entry)
    if ":" not in entry or entry.endswith("]"):
        host, port_text = entry, "11211"
    else:
        host, _, port_text = entry.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        return MemcacheServer(entry, fault=f"pymemcache cannot read port {port_text!r} (int() fails, "
                              "so HashClient cannot be built)", fix=HOST_PORT_FIX)
    if host.startswith("["):
        host = host.strip("[]")
    if not 0 < port < 65536:
        return _out_of_range(entry, port)
    if not _plausible_host(host):
        v6 = _ipv6_form(entry)
        fix = (f"write it as [{v6}]:{_port_of(entry)} (pymemcache knows no inet:/inet6: prefixes; IPv6 "
               "addresses go in brackets)" if v6 else "write it as HOST:PORT, e.g. 10.0.0.5:11211 "
               "(pymemcache knows no inet:/inet6: prefixes)")
        return MemcacheServer(entry, fault=f"pymemcache reads the host as {host!r}, which is no host name "
                              "or address, so it never connects", fix=fix)
    return MemcacheServer(entry, host, port, "any")


def _parse_lenient(entry: str) -> MemcacheServer:
    """pylibmc and python-binary-memcached: HOST[:PORT] and [V6]:PORT (forms not judged further)."""
    if entry.startswith(("unix:", "/")):
        return MemcacheServer(entry)
    text = entry.removeprefix("inet:").removeprefix("inet6:")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":") or "11211"
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, "11211"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return MemcacheServer(entry, fault=f"port {port_text!r} is not a number between 1 and 65535",
                              fix="write it as HOST:PORT, e.g. 10.0.0.5:11211")
    return MemcacheServer(entry, host, int(port_text), "any")


def _plausible_host(host: str) -> bool:
    if not host or any(c in host for c in "[]/ @,"):
        return False
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.partition("%")[0])
        except ValueError:
            return False
    return True


# == transport_url ===================================================================


class TransportError(ValueError):
    """A transport_url the service cannot use; the message never quotes the URL."""


@dataclass(frozen=True)
class BrokerHost:
    host: str
    port: int
    user: str = field(default="guest")
    password: str = field(default="guest", repr=False)
    credentials_written: bool = True  # False: kombu's guest/guest (or guest as password) is used

    @property
    def endpoint(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TransportUrl:
    scheme: str
    hosts: tuple[BrokerHost, ...]
    vhost: str
    query: tuple[tuple[str, str], ...] = ()

    @property
    def driver(self) -> str:
        return self.scheme.split("+", 1)[0]

    def option(self, name: str) -> str | None:
        return dict(self.query).get(name)

    def redacted(self) -> str:
        """The URL as a person may see it: user names kept, passwords masked."""
        hosts = ",".join(f"{h.user}:***@{h.endpoint}" if h.credentials_written else h.endpoint
                         for h in self.hosts)
        vhost = "" if self.vhost == "/" else self.vhost
        query = "&".join(f"{k}={v}" for k, v in self.query)
        return f"{self.scheme}://{hosts}/{vhost}" + (f"?{query}" if query else "")

    def identity(self) -> frozenset[str]:
        """What two files must agree on: the brokers and the vhost, not the credentials."""
        return frozenset(f"{h.endpoint}/{self.vhost}" for h in self.hosts)


def parse_transport_url(url: str) -> TransportUrl:
    """Parse a transport_url as oslo.messaging and kombu do, registering every password as a secret.

    oslo_messaging/transport.py TransportURL.parse: urllib's urlparse, hosts split at commas,
    ``user:pass@`` per host (unquoted), oslo_utils netutils.parse_host_port for the address,
    the path after "/" (unquoted) as the virtual host, query values joined at commas.
    impl_rabbit.py Connection._transform_transport_url then writes one kombu URL per host
    with ``username or ''`` and ``password or ''``; kombu reads an empty user or password as
    missing and pyamqp's default_connection_params fill in guest / guest. So a host written
    without credentials logs in as guest/guest, not with the previous host's. Port 5672 when
    none is given, the vhost "/" when none is. Raises TransportError (never quoting the URL)
    where the service fails too.
    """
    try:
        parsed = urlparse(url.strip())
    except ValueError as exc:  # "Invalid IPv6 URL": oslo.messaging raises the same
        raise TransportError(f"not a URL ({exc})") from None
    if not parsed.scheme:
        raise TransportError("no driver given (expected rabbit://USER:PASSWORD@HOST:5672/VHOST)")
    query = tuple((k, ",".join(v)) for k, v in parse_qs(parsed.query).items())
    vhost = unquote(parsed.path[1:]) if parsed.path.startswith("/") else ""
    hosts: list[BrokerHost] = []
    for part in parsed.netloc.split(","):
        if not part:
            continue
        user = password = None
        hostport = part
        if "@" in part:
            user, hostport = part.rsplit("@", 1)
            if ":" in user:
                user, password = user.split(":", 1)
                password = unquote(password)
            user = unquote(user)
        register_secret(password)
        host, port = _parse_host_port(hostport)
        hosts.append(BrokerHost(host or "localhost", port or 5672, user or "guest", password or "guest",
                                user is not None and password is not None))
    return TransportUrl(parsed.scheme, tuple(hosts), vhost or "/", query)


def _parse_host_port(address: str) -> tuple[str, int | None]:
    """oslo_utils/netutils.py parse_host_port: [v6]:port, host:port, or a bare v4/v6 address."""
    try:
        if address.startswith("["):
            host, _, rest = address[1:].partition("]")
            port = rest.split(":")[1] if ":" in rest else None
        elif address.count(":") == 1:
            host, port = address.split(":")
        else:
            host, port = address, None
        number = int(port) if port is not None else None
    except (ValueError, IndexError):
        raise TransportError("invalid port number (int() fails in oslo_utils parse_host_port)") from None
    if number is not None and not 0 <= number < 65536:
        raise TransportError(f"port {number} is out of range")
    return host, number


@dataclass(frozen=True)
class Transport:
    """One transport_url option of one file, as the service will use it."""

    path: str
    section: str
    url: TransportUrl
    in_use: bool = True
    unused: str = ""
    tls: AmqpTls | None = None
    login: bool = True  # the service logs in with user and password (not EXTERNAL)
    exchange: str = "openstack"

    @property
    def place(self) -> str:
        return f"{self.path} [{self.section}] transport_url"


def transports(cf: ConfigFile) -> tuple[list[Transport], list[Problem]]:
    """The file's transport URLs for RPC ([DEFAULT]) and notifications, with their problems."""
    found: list[Transport] = []
    problems: list[Problem] = []
    rabbit = _rabbit_settings(cf, problems)
    exchange = _control_exchange(cf)
    notify_driver = _notification_drivers(cf)
    for section in ("DEFAULT", "oslo_messaging_notifications"):
        if not cf.has(section, "transport_url"):
            continue
        in_use, unused = True, ""
        if section == "oslo_messaging_notifications" and not notify_driver:
            # notify/notifier.py: with no driver (or only noop) nothing is sent; nova still builds
            # the notification transport at start (nova/rpc.py init), so the driver must load.
            in_use = False
            unused = "notifications are off ([oslo_messaging_notifications] driver is empty or noop)"
        try:
            raw = cf.value(section, "transport_url")
        except Unresolved as exc:
            problems.append(Problem(Severity.INFO, cf.path, section, "transport_url", f"not checked: {exc}",
                                    "write the URL out in this file so healthd can check it"))
            continue
        except OptionError as exc:
            problems.append(Problem(Severity.CRITICAL, cf.path, section, "transport_url",
                                    f"cannot be read: {exc}", "correct the value"))
            continue
        transport = _transport(cf, section, raw or "", rabbit, exchange, in_use, unused, problems)
        if transport is not None:
            found.append(transport)
    return found, list(dict.fromkeys(problems))  # a file-wide note found through both URLs: once


URL_FIX = ("write it as rabbit:// followed by USER:PASSWORD@HOST:PORT for each broker (comma "
           "separated), then /VHOST; percent-encode special characters in the password (%40 for "
           "@, %2F for /, %3A for :, %23 for #)")


def _transport(cf: ConfigFile, section: str, raw: str, rabbit: _Rabbit, exchange: str, in_use: bool,
               unused: str, problems: list[Problem]) -> Transport | None:
    def fail(message: str, fix: str = URL_FIX) -> None:
        problems.append(Problem(Severity.CRITICAL, cf.path, section, "transport_url", message, fix))

    try:
        url = parse_transport_url(raw)
    except TransportError as exc:
        fail(f"cannot be parsed: {exc}; the service cannot reach its message broker")
        return None
    if url.driver not in MESSAGING_DRIVERS:
        fail(f"names the {url.driver!r} driver, which oslo.messaging does not have (drivers: "
             f"{', '.join(sorted(MESSAGING_DRIVERS))}; the AMQP 1.0 'amqp' driver was removed in 15.0.0): "
             "get_transport raises DriverLoadFailure and the service does not start",
             "use rabbit:// for RabbitMQ (the same hosts, credentials and vhost)")
        return None
    if url.driver == "fake" or url.scheme.startswith("kombu+") or not url.hosts:
        return None  # in-process or default transports: nothing to connect to
    if url.driver not in RABBIT_DRIVERS:
        return Transport(cf.path, section, url, in_use, unused)
    bad = _bad_query(url)
    if bad:
        fail(bad, "remove the query parameter from the URL, or set the option in [oslo_messaging_rabbit]")
        return None
    use_tls = rabbit.tls
    if url.option("ssl") is not None:
        use_tls = types.Boolean()(url.option("ssl"))
    tls_files = {name: url.option(name) if url.option(name) is not None else getattr(rabbit, name)
                 for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file", "ssl_version")}
    login_method = url.option("rabbit_login_method") or rabbit.login_method
    tls = AmqpTls(tls_files["ssl_ca_file"], tls_files["ssl_cert_file"], tls_files["ssl_key_file"],
                  tls_files["ssl_version"]) if use_tls else None
    if tls is not None and tls.version_error():
        fail(f"[oslo_messaging_rabbit] ssl_version {tls.ssl_version!r} {tls.version_error()}: "
             "impl_rabbit.py validate_ssl_version raises RuntimeError('Invalid SSL version') and the "
             "service cannot connect",
             "remove ssl_version (the default negotiates the best TLS version) or use TLSv1_2")
        return None
    if tls is not None and tls.ssl_version and not tls.ca_file:
        problems.append(Problem(
            Severity.INFO, cf.path, "oslo_messaging_rabbit", "ssl_version",
            "ssl_version is set and ssl_ca_file is not: py-amqp then builds an SSLContext for that "
            "protocol, which verifies no certificate at all, so any broker is accepted",
            "set ssl_ca_file to the CA of the broker certificates (or remove ssl_version)"))
    unnamed = [h.endpoint for h in url.hosts if not h.credentials_written]
    if unnamed and login_method != "EXTERNAL":
        problems.append(Problem(
            Severity.INFO, cf.path, section, "transport_url",
            f"host(s) {', '.join(unnamed)} have no USER:PASSWORD@ of their own: oslo.messaging does not "
            "reuse another host's credentials, kombu logs in there as guest/guest (checked that way)",
            "give every host its own credentials in the URL (deployment tools write the same user and "
            "password before each host)"))
    return Transport(cf.path, section, url, in_use, unused, tls, login_method != "EXTERNAL", exchange)


def _bad_query(url: TransportUrl) -> str:
    typed = {opt.name: opt for opt in RABBIT_OPTS}
    for name, value in url.query:
        if name not in RABBIT_OPTION_NAMES:
            return (f"has the query parameter {name!r}, which is no [oslo_messaging_rabbit] option: the "
                    "rabbit driver looks every query parameter up in that group "
                    "(ConfigOptsProxy._validate_query) and fails with NoSuchOptError, so the service does "
                    "not start")
        if name in typed:
            try:
                typed[name].type(value)
            except ValueError as exc:
                return (f"query parameter {name}: {exc}; the rabbit driver converts it when it loads and the "
                        "service does not start")
    return ""


@dataclass(frozen=True)
class _Rabbit:
    tls: bool = False
    ssl_ca_file: str = ""
    ssl_cert_file: str = ""
    ssl_key_file: str = ""
    ssl_version: str = ""
    login_method: str = "AMQPLAIN"


def _rabbit_settings(cf: ConfigFile, problems: list[Problem]) -> _Rabbit:
    values: dict[str, Any] = {}
    for opt in RABBIT_OPTS:
        try:
            values[opt.name] = cf.value("oslo_messaging_rabbit", opt.name)
        except OptionError as exc:
            problems.append(Problem(Severity.CRITICAL, cf.path, "oslo_messaging_rabbit", opt.name,
                                    f"cannot be read: {exc}", "correct the value"))
            values[opt.name] = opt.default
    for old, new in REMOVED_RABBIT_OPTIONS.items():
        if cf.has("oslo_messaging_rabbit", old) and not cf.has("oslo_messaging_rabbit", new):
            problems.append(Problem(
                Severity.INFO, cf.path, "oslo_messaging_rabbit", old,
                f"is no longer read (oslo.messaging removed the name in 16.0.0): the service uses the "
                f"default of {new}" + (" (no TLS)" if new == "ssl" else ""), f"rename it to {new}"))
    return _Rabbit(bool(values["ssl"]), values["ssl_ca_file"] or "", values["ssl_cert_file"] or "",
                   values["ssl_key_file"] or "", values["ssl_version"] or "",
                   values["rabbit_login_method"] or "AMQPLAIN")


def _control_exchange(cf: ConfigFile) -> str:
    try:
        if cf.has("DEFAULT", "control_exchange"):
            return str(cf.value("DEFAULT", "control_exchange"))
    except OptionError:
        pass
    return PROJECT_EXCHANGES.get(cf.service, "openstack")


def _notification_drivers(cf: ConfigFile) -> list[str]:
    try:
        drivers: Iterable[str] = cf.value("oslo_messaging_notifications", "driver") or []
    except OptionError:
        return ["?"]
    return [d for d in drivers if d and d.strip() != "noop"]


# == used by the memcached probe for backends.memcached.servers ======================


def normalize_server(entry: str, default_port: int = 11211) -> str | None:
    """'inet:host:port', '[v6]:port', 'host' -> 'host:port' ('[v6]:port'); None for unix sockets.

    healthd's own server list (backends.memcached.servers) takes every form either library
    understands; the service config lists are read by their own library (memcache_lists)."""
    if entry.startswith(("unix:", "/")):
        return None
    server = _parse_lenient(entry.strip())
    if not server.host:
        return entry.strip()  # kept as written: the checks report it (a typo in the port)
    return server.key
