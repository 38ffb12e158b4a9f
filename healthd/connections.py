"""Connections to the backends a probe reads: MySQL, memcached, AMQP, TCP, the OpenStack APIs.

Every function here takes the run's ``Deadline``: connects and reads get the
time that is left (capped by the configured timeouts), and every socket is
registered with the deadline, which shuts it down when the run's time is up
(see healthd/deadline.py). Failures are raised as the typed errors of
healthd/errors.py with a reason that names the peer and carries no secret.

Probes do not call this module: they ask their Context (``ctx.db("nova_api")``),
which passes the deadline and the config in.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pymysql
import pymysql.cursors

from healthd.config import BackendsConfig, DatabaseConfig, OpenStackConfig
from healthd.dburl import DbTarget, parse_db_url
from healthd.deadline import Deadline
from healthd.errors import (
    AccessDenied,
    AuthFailed,
    BackendUnavailable,
    NotConfigured,
    ProtocolError,
    TimedOut,
    from_os_error,
)
from healthd.redact import describe_error, register_secret

# -- MySQL / MariaDB -----------------------------------------------------------------------

# Server error codes -> (error type, what to do). Everything else is a plain BackendUnavailable.
_MYSQL_ERRORS: dict[int, tuple[type[BackendUnavailable], str]] = {
    1045: (AuthFailed, "access denied: check the user and password"),
    1044: (AccessDenied, "access denied to the database: check the grants"),
    1142: (AccessDenied, "a SELECT grant is missing (see deploy/mysql/grants.sql)"),
    1143: (AccessDenied, "a column SELECT grant is missing (see deploy/mysql/grants.sql)"),
    1146: (ProtocolError, "a table is missing: is this the right schema and release?"),
    1049: (ProtocolError, "no such database"),
    2013: (TimedOut, "connection lost or read timed out"),
}


class Database:
    """A read-only session on one schema, for the length of a ``with`` block."""

    def __init__(self, name: str, target: DbTarget, conn: pymysql.Connection, deadline: Deadline,
                 stats: Counter[str]) -> None:
        self.name = name
        self.target = target
        self._conn = conn
        self._deadline = deadline
        self._stats = stats

    def query(self, sql: str, args: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        self._stats[self.name] += 1
        try:
            with self._conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        except (pymysql.err.MySQLError, OSError) as exc:
            raise _mysql_error(self.name, self.target, exc, self._deadline) from None


def _mysql_error(name: str, target: DbTarget, exc: BaseException, deadline: Deadline) -> BackendUnavailable:
    where = f"database {name} at {target.describe()}"
    if deadline.expired:
        return TimedOut(f"{where}: no answer before the check's deadline")
    if isinstance(exc, OSError):
        return from_os_error(where, exc)
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else -1
    kind, hint = _MYSQL_ERRORS.get(code, (BackendUnavailable, ""))
    detail = f"{hint} ({describe_error(exc)})" if hint else describe_error(exc)
    return kind(f"{where}: {detail}")


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


@contextlib.contextmanager
def database(name: str, target: DbTarget, password: str | None, deadline: Deadline,
             stats: Counter[str], cfg: DatabaseConfig | None = None) -> Iterator[Database]:
    """A session that is READ ONLY on the server side and closed when the block ends.

    autocommit: every SELECT is its own transaction, so no snapshot or metadata
    lock outlives the statement (an open transaction would block `nova-manage db sync`).
    """
    connect_timeout = deadline.remaining(cfg.connect_timeout if cfg else 5.0)
    read_timeout = deadline.remaining(cfg.read_timeout if cfg else 20.0)
    where = f"database {name} at {target.describe()}"
    conn = _Connection(
        host=target.host, port=target.port, user=target.user, password=password or "",
        database=target.database, unix_socket=target.unix_socket,
        read_timeout=read_timeout, write_timeout=read_timeout,
        cursorclass=pymysql.cursors.DictCursor, charset="utf8mb4", autocommit=True,
        defer_connect=True,
    )
    sock = _dial(where, target, connect_timeout, deadline)
    token = deadline.guard(sock)
    try:
        try:
            conn.connect(sock)  # handshake and login, under the deadline's guard
            with conn.cursor() as cur:  # any accidental write now fails on the server
                cur.execute("SET SESSION TRANSACTION READ ONLY")
        except (pymysql.err.MySQLError, OSError) as exc:
            raise _mysql_error(name, target, exc, deadline) from None
        yield Database(name, target, conn, deadline, stats)
    finally:
        with contextlib.suppress(Exception):
            conn.close()  # COM_QUIT: the server ends the session now
        with contextlib.suppress(Exception):
            sock.close()
        deadline.release(token)


def _dial(where: str, target: DbTarget, timeout: float, deadline: Deadline) -> socket.socket:
    try:
        if target.unix_socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(target.unix_socket)
            except OSError:
                sock.close()
                raise
            return sock
        sock = socket.create_connection((target.host, target.port), timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    except OSError as exc:
        raise from_os_error(where, exc, deadline.expired) from None


# -- plain TCP -------------------------------------------------------------------------------


def tcp_connect(host: str, port: int, deadline: Deadline, timeout: float) -> None:
    """Open and close a TCP connection."""
    try:
        with socket.create_connection((host, port), deadline.remaining(timeout)):
            pass
    except OSError as exc:
        raise from_os_error(f"{host}:{port}", exc, deadline.expired) from None


# -- memcached -------------------------------------------------------------------------------


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


@contextlib.contextmanager
def memcached(server: str, deadline: Deadline, connect_timeout: float, timeout: float) -> Iterator[Any]:
    """A connected pymemcache client for one server, closed when the block ends.

    Connecting is done here, so "nothing listens" (Refused, TimedOut, Unresolvable raised
    here) is told apart from "accepted but does not answer" (pymemcache's and socket's own
    exceptions from the commands the probe sends).
    """
    from pymemcache.client.base import Client

    try:
        host, port = split_host_port(server, 11211)
    except ValueError:
        raise NotConfigured(f"memcached {server}: not HOST:PORT with a numeric port") from None
    client = Client((host, port), connect_timeout=deadline.remaining(connect_timeout),
                    timeout=deadline.remaining(timeout), no_delay=True)
    try:
        client._connect()
    except OSError as exc:
        client.close()
        raise from_os_error(f"memcached {server}", exc, deadline.expired) from None
    token = deadline.guard(client.sock)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):  # closing a broken socket must not hide the result
            client.close()
        deadline.release(token)


# -- AMQP 0-9-1 ------------------------------------------------------------------------------


@contextlib.contextmanager
def amqp(host: str, port: int, user: str, password: str, vhost: str, deadline: Deadline,
         timeout: float, tls: ssl.SSLContext | None = None) -> Iterator[Any]:
    """An open pika BlockingConnection (authenticated, vhost open), closed after the block.

    pika's stack_timeout bounds the whole handshake (TCP, TLS, AMQP), not each read; when it
    trips, pika raises its connector's own AMQPConnectorStackTimeout, which is no AMQPError.
    Once open, the socket is under the deadline's guard: channel calls and the close (which
    waits for the broker's Close-Ok without any timeout) end by the deadline too.
    """
    import pika
    import pika.exceptions
    from pika.adapters.utils.connection_workflow import AMQPConnectorException, AMQPConnectorStackTimeout

    where = f"AMQP {host}:{port}"
    limit = deadline.remaining(timeout)
    params = pika.ConnectionParameters(
        host=host, port=port, virtual_host=vhost, credentials=pika.PlainCredentials(user, password),
        connection_attempts=1, socket_timeout=limit, stack_timeout=limit,
        blocked_connection_timeout=limit,
        ssl_options=pika.SSLOptions(tls, host) if tls is not None else None,
    )
    try:
        connection = pika.BlockingConnection(params)
    except pika.exceptions.ProbableAuthenticationError:
        raise AuthFailed(f"{where}: authentication refused for user {user}") from None
    except pika.exceptions.ProbableAccessDeniedError:
        raise AccessDenied(f"{where}: access to vhost {vhost!r} refused for user {user}") from None
    except pika.exceptions.AMQPConnectionError as exc:
        raise _amqp_connection_error(where, exc, deadline) from None
    except OSError as exc:  # pika re-raises socket and TLS errors as they are
        raise from_os_error(where, exc, deadline.expired) from None
    except pika.exceptions.AMQPError as exc:
        detail = describe_error(exc) or "no AMQP answer"
        raise ProtocolError(f"{where}: handshake failed ({detail})") from None
    except AMQPConnectorStackTimeout:
        raise TimedOut(f"{where}: no complete AMQP handshake within {limit:.1f} s") from None
    except AMQPConnectorException as exc:  # the connector's other failures (aborted, wrong state)
        raise ProtocolError(f"{where}: handshake failed ({type(exc).__name__})") from None
    token = deadline.guard(_pika_socket(connection))
    try:
        yield connection
    finally:
        with contextlib.suppress(Exception):
            connection.close()
        deadline.release(token)


def amqp_handshake(host: str, port: int, user: str, password: str, vhost: str, deadline: Deadline,
                   timeout: float, tls: ssl.SSLContext | None = None) -> None:
    """Complete an AMQP handshake (authentication and vhost open), then close."""
    with amqp(host, port, user, password, vhost, deadline, timeout, tls):
        pass


def _pika_socket(connection: Any) -> socket.socket | None:
    """The socket under a BlockingConnection (pika keeps it private: None if that changes)."""
    transport = getattr(getattr(connection, "_impl", None), "_transport", None)
    sock = getattr(transport, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _amqp_connection_error(where: str, exc: BaseException, deadline: Deadline) -> BackendUnavailable:
    """pika wraps the error that ended the attempt, up to three deep (AMQPConnectionError ->
    the connector's phase error -> the socket or TLS error): classify the innermost one."""
    cause = _innermost_pika_cause(exc)
    if isinstance(cause, OSError):  # refused, unreachable, reset, TLS (ssl.SSLError is an OSError)
        return from_os_error(where, cause, deadline.expired)
    if "timeout" in type(cause).__name__.lower():  # pika's own timers (stack, socket connect)
        return TimedOut(f"{where}: no AMQP handshake before the timeout")
    if deadline.expired:
        return TimedOut(f"{where}: no answer before the check's deadline")
    return ProtocolError(f"{where}: handshake failed ({describe_error(cause) or 'no AMQP answer'})")


def _innermost_pika_cause(exc: BaseException) -> BaseException:
    """Follow pika's wrappers: args[0] of AMQPConnectionError, .exception of a connector phase
    error (pika/adapters/utils/connection_workflow.py), the last of a workflow's .exceptions."""
    cause: BaseException = exc
    for _ in range(8):
        inner = getattr(cause, "exception", None)
        if not isinstance(inner, BaseException):
            tried = getattr(cause, "exceptions", None)
            inner = tried[-1] if tried and isinstance(tried[-1], BaseException) else None
        if inner is None and cause.args and isinstance(cause.args[0], BaseException):
            inner = cause.args[0]
        if inner is None:
            return cause
        cause = inner
    return cause


# -- the OpenStack APIs ----------------------------------------------------------------------


class OpenStack:
    """The cloud's API credentials, loaded once; a Connection per run with the run's deadline.

    The auth plugin (and so the token) and the version discovery cache are shared between
    runs; the HTTP session is new per run, so every socket it opens is under that run's
    deadline and none outlives it.
    """

    def __init__(self, cfg: OpenStackConfig) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._region: Any = None

    def connect(self, deadline: Deadline) -> tuple[Any, Callable[[], None]]:
        """(an openstacksdk Connection for this run, the function that closes its sockets)."""
        import openstack.connection

        region = copy.copy(self._cloud_region())
        session = self._session(region, deadline)
        region._keystone_session = session  # what the constructor's session= sets
        return openstack.connection.Connection(config=region), session.session.close

    def reset(self) -> None:
        """Forget the credentials' state (a token or session that may be broken)."""
        with self._lock:
            self._region = None

    def _cloud_region(self) -> Any:
        import openstack.config
        from openstack import exceptions as os_exc

        with self._lock:
            if self._region is not None:
                return self._region
            cfg = self.cfg
            files = [str(cfg.clouds_yaml)] if cfg.clouds_yaml else None
            kwargs: dict[str, Any] = {"region_name": cfg.region_name, "interface": cfg.interface,
                                      "api_timeout": cfg.read_timeout, "verify": cfg.verify}
            try:
                loader = openstack.config.OpenStackConfig(config_files=files, load_envvars=False)
                if cfg.cloud:
                    region = loader.get_one(cloud=cfg.cloud, **kwargs)
                else:
                    region = loader.get_one(auth=dict(cfg.auth or {}),
                                            auth_type=cfg.auth_type or "password", **kwargs)
            except (os_exc.SDKException, OSError, KeyError, ValueError) as exc:
                raise NotConfigured(f"OpenStack cloud config: {describe_error(exc)}") from None
            for key in ("password", "application_credential_secret", "token"):
                register_secret(region.auth.get(key))  # from clouds.yaml / secure.yaml
            self._region = region
            return region

    def _session(self, region: Any, deadline: Deadline) -> Any:
        import requests
        from keystoneauth1 import session as ks_session

        http = requests.Session()
        adapter = _guarded_adapter(deadline)
        http.mount("https://", adapter)
        http.mount("http://", adapter)
        verify, cert = region.get_requests_verify_args()
        # One (connect, read) pair per request; the deadline's guard bounds the sum of them.
        timeout = (deadline.remaining(self.cfg.connect_timeout), deadline.remaining(self.cfg.read_timeout))
        sess = ks_session.Session(auth=region.get_auth(), verify=verify, cert=cert, session=http,
                                  discovery_cache=region._discovery_cache)
        sess.timeout = timeout  # keystoneauth only takes a float; requests takes the pair
        return sess


def _guarded_adapter(deadline: Deadline) -> Any:
    """A requests adapter whose every new socket is registered with the run's deadline."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class GuardedHTTP(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            deadline.guard(sock)
            return sock

    class GuardedHTTPS(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            deadline.guard(sock)
            return sock

    class GuardedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {
                "http": type("GuardedPool", (HTTPConnectionPool,), {"ConnectionCls": GuardedHTTP}),
                "https": type("GuardedSPool", (HTTPSConnectionPool,), {"ConnectionCls": GuardedHTTPS}),
            }

    return GuardedAdapter()


def api_error(what: str, exc: BaseException, deadline: Deadline) -> BackendUnavailable:
    """An exception from openstacksdk/keystoneauth/requests as a typed error naming the call."""
    from keystoneauth1 import exceptions as ks_exc
    from openstack import exceptions as os_exc

    if deadline.expired:
        peer = _request_peer(exc)
        return TimedOut(f"{what}: no answer{f' from {peer}' if peer else ''} before the check's deadline")
    if isinstance(exc, ks_exc.ConnectionError):
        cause = _socket_cause(exc)
        if cause is not None:
            peer = _request_peer(exc)
            return from_os_error(f"{what}: {peer}" if peer else what, cause)
        kind = TimedOut if isinstance(exc, ks_exc.ConnectTimeout) else BackendUnavailable
        return kind(f"{what}: cannot connect ({describe_error(exc)})")
    status = getattr(exc, "status_code", None) or getattr(exc, "http_status", None)
    detail = describe_error(exc)
    if status == 401 or isinstance(exc, ks_exc.Unauthorized):
        return AuthFailed(f"{what}: credentials refused (HTTP 401): {detail}")
    if status == 403 or isinstance(exc, ks_exc.Forbidden | os_exc.ForbiddenException):
        return AccessDenied(f"{what}: not allowed by policy (HTTP 403): {detail}")
    if isinstance(exc, OSError):
        return from_os_error(what, exc)
    return BackendUnavailable(f"{what}: {detail}")


def _request_peer(exc: BaseException) -> str:
    """scheme://host:port of the request that failed, from the exception chain ('' if none).

    The deadline's message has no other detail to name the peer by (requests' errors keep
    the request, keystoneauth's the response); the path and any user info are left out.
    """
    from urllib.parse import urlsplit

    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            break
        for holder in (getattr(current, "request", None), getattr(current, "response", None)):
            url = getattr(holder, "url", None)
            if isinstance(url, str) and "://" in url:
                parts = urlsplit(url)
                return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        current = current.__cause__ or current.__context__
    return ""


def _socket_cause(exc: BaseException) -> OSError | None:
    """The socket error under keystoneauth's, requests' and urllib3's wrappers, if one says more."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        specific = (ConnectionRefusedError, socket.gaierror, TimeoutError, ssl.SSLError)
        if isinstance(current, specific):
            return current
        reason = getattr(current, "reason", None)
        todo += [current.__cause__, current.__context__]
        todo.append(reason if isinstance(reason, BaseException) else None)
        todo += [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
    return None


# -- the set of them, per daemon -------------------------------------------------------------


class Backends:
    """What connections are made from: the config, the API credentials' cache, statement counts.

    One per loaded config; the scheduler gives a Context (healthd/probe.py) per run.
    """

    def __init__(self, config: BackendsConfig) -> None:
        self.config = config
        self.sql_statements: Counter[str] = Counter()  # for benchmarks and tests
        self.openstack = OpenStack(config.openstack) if config.openstack else None

    def database_config(self, name: str) -> DatabaseConfig | None:
        return self.config.databases.get(name)

    @contextlib.contextmanager
    def database(self, name: str, deadline: Deadline) -> Iterator[Database]:
        cfg = self.database_config(name)
        if cfg is None:
            raise NotConfigured(f"no database configured as backends.databases.{name}")
        target = parse_db_url(cfg.url)
        try:
            password = cfg.resolve() or target.password
        except ValueError as exc:
            raise NotConfigured(f"backends.databases.{name}: {exc}") from None
        with database(name, target, password, deadline, self.sql_statements, cfg) as db:
            yield db

    @contextlib.contextmanager
    def database_at(
        self, url: str, name: str, deadline: Deadline, config_key: str = ""
    ) -> Iterator[Database]:
        try:
            target = parse_db_url(url)
        except ValueError as exc:
            hint = f"; configure backends.databases.{config_key}" if config_key else ""
            raise NotConfigured(f"database {name}: {exc}{hint}") from None
        with database(name, target, target.password, deadline, self.sql_statements) as db:
            yield db

    def close(self) -> None:
        if self.openstack is not None:
            self.openstack.reset()
