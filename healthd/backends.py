"""The one place that owns connections to the cloud's backends.

Every connection carries connect and read timeouts, so a probe thread that
the scheduler abandoned ends by itself. Database connections are opened per
run and closed after it (a broken one is simply re-made next run); the
OpenStack connection is cached and dropped on failure. A backend that is down
raises BackendUnavailable, which makes the probes needing it UNKNOWN.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pymysql
import pymysql.cursors

from healthd.config import BackendsConfig, DatabaseConfig
from healthd.dburl import DbTarget, parse_db_url
from healthd.probe import BackendUnavailable, Context
from healthd.redact import describe_error, redact, register_secret

log = logging.getLogger(__name__)


class Database:
    """A read-only handle on one MySQL/MariaDB schema for the length of a run."""

    def __init__(self, role: str, target: DbTarget, conn: pymysql.Connection, stats: Counter[str]):
        self.role = role
        self.target = target
        self._conn = conn
        self._stats = stats

    def query(self, sql: str, args: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        self._stats[self.role] += 1
        try:
            with self._conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        except pymysql.err.MySQLError as exc:
            raise BackendUnavailable(_mysql_reason(self.role, self.target, exc)) from None


@dataclass(frozen=True)
class Cell:
    uuid: str
    name: str
    target: DbTarget | None  # None when the mapping has no usable URL

    @property
    def label(self) -> str:
        return self.name or self.uuid

    @property
    def is_cell0(self) -> bool:
        return self.uuid == "00000000-0000-0000-0000-000000000000"


class _Connection(pymysql.connections.Connection):
    """PyMySQL >= 1.2 tries TLS when the URL asks for none ("preferred", no verification) and
    builds a new default SSLContext for that on every connection: 25 ms of loading the system
    CA store, a sixth of a database probe's run at 10,000 hosts. One shared context is the same.
    """

    def _create_ssl_ctx(self, sslp: Any) -> Any:
        return super()._create_ssl_ctx(sslp) if sslp else _preferred_tls_context()


@functools.cache
def _preferred_tls_context() -> Any:
    # The method does not touch the connection; thread-safe to share (OpenSSL SSL_CTX).
    return pymysql.connections.Connection._create_ssl_ctx(None, {})  # type: ignore[arg-type]


def _mysql_reason(role: str, target: DbTarget, exc: BaseException) -> str:
    code = exc.args[0] if getattr(exc, "args", None) else None
    hint = {
        1045: "access denied: check the user and password",
        1044: "access denied to the database: check the grants",
        1142: "a SELECT grant is missing (see deploy/mysql/grants.sql)",
        1146: "a table is missing: is this the right schema and release?",
        2003: "cannot connect",
        2013: "connection lost or read timed out",
    }.get(code if isinstance(code, int) else -1)
    detail = f"{hint} ({describe_error(exc)})" if hint else describe_error(exc)
    return redact(f"database {role} at {target.describe()}: {detail}")


@dataclass(frozen=True)
class AmqpTls:
    """TLS for a broker connection, set up the way oslo.messaging's rabbit driver does it.

    oslo.messaging hands [oslo_messaging_rabbit] ssl_ca_file/ssl_cert_file/ssl_key_file to
    py-amqp, which verifies the certificate chain (against ssl_ca_file, else the system
    store) but not the host name (no server_hostname is passed). The probe checks what the
    services check: stricter would page for a broker they use happily, looser would miss
    the expired or untrusted certificate that stops them.
    """

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        with _loading("CA file", self.ca_file):
            if self.ca_file:
                context.load_verify_locations(cafile=self.ca_file)
            else:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        with _loading("client certificate/key", self.cert_file):
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file or None)
        return context


@contextlib.contextmanager
def _loading(what: str, path: str) -> Iterator[None]:
    """Name the file: ssl's own errors do not say which one is missing or malformed."""
    try:
        yield
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else describe_error(exc)
        raise ValueError(f"cannot load {what} {path or '(system store)'}: {reason}") from None


def _tls_error(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message}"
    return f"TLS handshake failed: {exc.reason or describe_error(exc)}"


class Backends:
    def __init__(self, config: BackendsConfig) -> None:
        self.config = config
        self.sql_statements: Counter[str] = Counter()  # for benchmarks and tests
        self._openstack: Any = None
        self._openstack_lock = threading.Lock()

    # -- MySQL -------------------------------------------------------------
    def _db_config(self, role: str) -> DatabaseConfig:
        db = getattr(self.config.databases, role, None)
        if db is None:
            raise BackendUnavailable(
                f"no database configured for {role} (backends.databases.{role})"
            )
        return db

    @contextlib.contextmanager
    def database(self, role: str, ctx: Context | None = None) -> Iterator[Database]:
        cfg = self._db_config(role)
        target = parse_db_url(cfg.url)
        password = cfg.resolve() or target.password
        with self._connect(role, target, password, cfg, ctx) as db:
            yield db

    @contextlib.contextmanager
    def _connect(
        self,
        role: str,
        target: DbTarget,
        password: str | None,
        cfg: DatabaseConfig | None,
        ctx: Context | None,
    ) -> Iterator[Database]:
        connect_timeout = cfg.connect_timeout if cfg else 5.0
        read_timeout = cfg.read_timeout if cfg else 20.0
        if ctx is not None:
            connect_timeout = ctx.remaining(connect_timeout)
            read_timeout = ctx.remaining(read_timeout)
        try:
            conn = _Connection(
                host=target.host,
                port=target.port,
                user=target.user,
                password=password or "",
                database=target.database,
                unix_socket=target.unix_socket,
                connect_timeout=max(1, int(connect_timeout + 0.999)),
                read_timeout=max(1, int(read_timeout + 0.999)),
                write_timeout=max(1, int(read_timeout + 0.999)),
                cursorclass=pymysql.cursors.DictCursor,
                charset="utf8mb4",
                autocommit=True,
            )
        except pymysql.err.MySQLError as exc:
            raise BackendUnavailable(_mysql_reason(role, target, exc)) from None
        try:
            # Probes only read; make any accidental write fail on the server side.
            with conn.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION READ ONLY")
            yield Database(role, target, conn, self.sql_statements)
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def cells(self, ctx: Context | None = None, include_cell0: bool = False) -> list[Cell]:
        """The cells of nova_api.cell_mappings, with config overrides applied."""
        with self.database("nova_api", ctx) as api:
            rows = api.query("SELECT uuid, name, database_connection FROM cell_mappings ORDER BY id")
        cells = []
        for row in rows:
            cell = Cell(row["uuid"], row["name"] or "", None)
            if cell.is_cell0 and not include_cell0:
                continue
            override = self._cell_override(cell)
            url = override.url if override else row["database_connection"]
            try:
                target = parse_db_url(url or "")
            except ValueError as exc:
                log.warning("cell %s: unusable database_connection: %s", cell.label, exc)
                target = None
            cells.append(Cell(cell.uuid, cell.name, target))
        return cells

    def _cell_override(self, cell: Cell) -> DatabaseConfig | None:
        overrides = self.config.databases.cells
        return overrides.get(cell.name) or overrides.get(cell.uuid)

    @contextlib.contextmanager
    def cell_database(self, cell: Cell, ctx: Context | None = None) -> Iterator[Database]:
        if cell.target is None:
            raise BackendUnavailable(
                f"cell {cell.label}: cell_mappings.database_connection is not a usable "
                f"MySQL URL; set backends.databases.cells.{cell.label}"
            )
        override = self._cell_override(cell)
        password = (override.resolve() if override else None) or cell.target.password
        with self._connect(f"cell {cell.label}", cell.target, password, override, ctx) as db:
            yield db

    # -- OpenStack APIs ----------------------------------------------------
    def openstack(self, ctx: Context | None = None) -> Any:
        """A cached openstacksdk Connection (keystoneauth session underneath)."""
        cfg = self.config.openstack
        if cfg is None:
            raise BackendUnavailable("no OpenStack cloud configured (backends.openstack)")
        with self._openstack_lock:
            if self._openstack is None:
                self._openstack = self._make_openstack(cfg)
            return self._openstack

    def _make_openstack(self, cfg: Any) -> Any:
        import openstack.config  # heavy import: only when a probe needs the APIs
        import openstack.connection
        from openstack import exceptions as os_exc

        files = [str(cfg.clouds_yaml)] if cfg.clouds_yaml else None
        try:
            loader = openstack.config.OpenStackConfig(config_files=files, load_envvars=False)
            kwargs: dict[str, Any] = {
                "region_name": cfg.region_name,
                "interface": cfg.interface,
                "api_timeout": cfg.read_timeout,
                "verify": cfg.verify,
            }
            if cfg.cloud:
                region = loader.get_one(cloud=cfg.cloud, **kwargs)
            else:
                region = loader.get_one(auth=dict(cfg.auth), auth_type=cfg.auth_type or "password", **kwargs)
            for key in ("password", "application_credential_secret", "token"):
                register_secret(region.auth.get(key))  # from clouds.yaml / secure.yaml
            return openstack.connection.Connection(config=region)
        except (os_exc.SDKException, OSError, KeyError, ValueError) as exc:
            raise BackendUnavailable(f"OpenStack cloud config: {describe_error(exc)}") from None

    def reset_openstack(self) -> None:
        """Drop the cached connection (its token or session may be broken)."""
        with self._openstack_lock:
            self._openstack = None

    @contextlib.contextmanager
    def openstack_call(self, what: str) -> Iterator[None]:
        """Turn API failures into BackendUnavailable with a secret-free reason."""
        from keystoneauth1 import exceptions as ks_exc
        from openstack import exceptions as os_exc

        try:
            yield
        except (os_exc.SDKException, ks_exc.ClientException, OSError) as exc:
            self.reset_openstack()
            raise BackendUnavailable(f"{what}: {describe_error(exc)}") from None

    # -- memcached ---------------------------------------------------------
    def memcached_servers(self) -> list[str]:
        return list(self.config.memcached.servers)

    def memcached(self, server: str, ctx: Context | None = None) -> Any:
        """A fresh pymemcache client for one server; the caller closes it."""
        from pymemcache.client.base import Client

        host, port = split_host_port(server, 11211)
        mc = self.config.memcached
        timeout = ctx.remaining(mc.timeout) if ctx else mc.timeout
        connect = ctx.remaining(mc.connect_timeout) if ctx else mc.connect_timeout
        return Client((host, port), connect_timeout=connect, timeout=timeout, no_delay=True)

    # -- plain TCP and AMQP ------------------------------------------------
    def tcp_connect(self, host: str, port: int, ctx: Context | None = None) -> None:
        """Open and close a TCP connection; raises OSError on failure."""
        timeout = ctx.remaining(self.config.connect_timeout) if ctx else self.config.connect_timeout
        with socket.create_connection((host, port), timeout=timeout):
            pass

    def amqp_handshake(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        vhost: str,
        tls: AmqpTls | None = None,
        ctx: Context | None = None,
    ) -> None:
        """Complete an AMQP 0-9-1 handshake (auth and vhost open) and close.

        Raises BackendUnavailable with a reason that carries no credentials.
        """
        import pika
        import pika.exceptions

        timeout = ctx.remaining(self.config.connect_timeout) if ctx else self.config.connect_timeout
        try:
            ssl_options = pika.SSLOptions(tls.context(), host) if tls else None
        except ValueError as exc:
            raise BackendUnavailable(f"AMQP {host}:{port}: TLS setup failed: {exc}") from None
        params = pika.ConnectionParameters(
            host=host,
            port=port,
            virtual_host=vhost,
            credentials=pika.PlainCredentials(user, password),
            connection_attempts=1,
            socket_timeout=timeout,
            stack_timeout=timeout,
            blocked_connection_timeout=timeout,
            ssl_options=ssl_options,
        )
        try:
            pika.BlockingConnection(params).close()
        except pika.exceptions.ProbableAuthenticationError:
            raise BackendUnavailable(f"AMQP {host}:{port}: authentication refused for user {user}") from None
        except pika.exceptions.ProbableAccessDeniedError:
            raise BackendUnavailable(f"AMQP {host}:{port}: access to vhost {vhost!r} refused") from None
        except ssl.SSLError as exc:
            raise BackendUnavailable(f"AMQP {host}:{port}: {_tls_error(exc)}") from None
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise BackendUnavailable(
                f"AMQP {host}:{port}: handshake failed ({describe_error(exc) or 'no AMQP answer'})"
            ) from None

    def close(self) -> None:
        self.reset_openstack()


def split_host_port(server: str, default_port: int) -> tuple[str, int]:
    """'host:port', '[v6]:port' or 'host' -> (host, port). Strips an 'inet:' prefix."""
    server = server.strip().removeprefix("inet:").removeprefix("inet6:")
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    if server.count(":") == 1:
        host, port = server.split(":")
        return host, int(port)
    return server, default_port
