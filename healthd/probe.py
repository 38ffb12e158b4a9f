"""The probe API: what a check declares and the context it runs in.

A probe says what it looks at and nothing about HTTP, Prometheus or threads:

    class MyProbe(Probe):
        name = "my_probe"
        description = "One line shown by `healthd list`."
        requires = ("db:nova_api",)
        metrics = (MetricSpec("healthd_my_thing", "What it measures.", ("host",)),)

        class Settings(ProbeSettings):
            warning_ratio: float = Field(0.8, gt=0, le=1)

        def run(self, ctx: Context, report: Report) -> None:
            with ctx.db("nova_api") as db:          # a read-only session, closed after the block
                rows = db.query("SELECT host FROM host_mappings")
            report.metric("healthd_my_thing", 1, host="compute-1")
            report.critical("host compute-1", "what is wrong", "the fix")

Register it under the entry-point group ``healthd.checks``.

Every handle the context gives (``db``, ``db_at``, ``memcached``, ``tcp_connect``,
``amqp_handshake``, ``openstack``) runs under the run's deadline: its connects and
reads get the time that is left, and its sockets are shut down when the time is up.
Failures are the typed errors of healthd/errors.py (``Refused``, ``TimedOut``,
``AuthFailed``, ...); one that escapes ``run`` makes the probe UNKNOWN with its reason.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from healthd.config import ProbeSettings
from healthd.connections import (
    Backends,
    Database,
    amqp,
    amqp_handshake,
    api_error,
    memcached,
    tcp_connect,
)
from healthd.deadline import Deadline
from healthd.errors import BackendUnavailable, NotConfigured
from healthd.model import MetricSpec, Report

__all__ = ["BackendUnavailable", "Context", "Probe", "ProbeSettings"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Context:
    """What a probe gets for one run: handles on the backends, under one deadline."""

    backends: Backends
    deadline: Deadline
    log: logging.Logger
    state: dict[str, Any] = field(default_factory=dict)  # kept between runs (counters, deltas)
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def close(self) -> None:
        """The run is over (the scheduler calls this): close what the handles left open."""
        for closer in self._closers:
            with contextlib.suppress(Exception):
                closer()
        self._closers.clear()
        self.deadline.close()

    @property
    def timeout(self) -> float:
        return self.deadline.timeout

    def remaining(self, cap: float | None = None) -> float:
        """Seconds left before the deadline (at least 0.05), optionally capped."""
        return self.deadline.remaining(cap)

    # -- databases ----------------------------------------------------------------------
    def has_db(self, name: str) -> bool:
        """Whether backends.databases.<name> is configured (for optional sources)."""
        return self.backends.database_config(name) is not None

    def db(self, name: str) -> contextlib.AbstractContextManager[Database]:
        """A read-only session on backends.databases.<name>; closed when the block ends."""
        return self.backends.database(name, self.deadline)

    def db_at(self, url: str, name: str, config_key: str = "") -> contextlib.AbstractContextManager[Database]:
        """A read-only session on a database the cloud itself names (e.g. a cell's URL).

        ``config_key`` is the backends.databases entry that would override it (named in errors).
        """
        return self.backends.database_at(url, name, self.deadline, config_key)

    # -- sockets ------------------------------------------------------------------------
    def tcp_connect(self, host: str, port: int) -> None:
        tcp_connect(host, port, self.deadline, self.backends.config.connect_timeout)

    def memcached_servers(self) -> list[str]:
        """backends.memcached.servers, as configured."""
        return list(self.backends.config.memcached.servers)

    def memcached(self, server: str) -> contextlib.AbstractContextManager[Any]:
        """A connected pymemcache client for ``host:port``; closed when the block ends."""
        mc = self.backends.config.memcached
        return memcached(server, self.deadline, mc.connect_timeout, mc.timeout)

    def amqp_handshake(self, host: str, port: int, user: str, password: str, vhost: str,
                       tls: ssl.SSLContext | None = None) -> None:
        """Log in to an AMQP 0-9-1 broker and open the vhost, then close."""
        amqp_handshake(host, port, user, password, vhost, self.deadline,
                       self.backends.config.connect_timeout, tls)

    def amqp(self, host: str, port: int, user: str, password: str, vhost: str,
             tls: ssl.SSLContext | None = None) -> contextlib.AbstractContextManager[Any]:
        """An open pika BlockingConnection for the block (login and vhost done), then closed."""
        timeout = self.backends.config.connect_timeout
        return amqp(host, port, user, password, vhost, self.deadline, timeout, tls)

    # -- OpenStack APIs -----------------------------------------------------------------
    def openstack(self) -> Any:
        """An openstacksdk Connection whose HTTP calls all end by the run's deadline."""
        api = self.backends.openstack
        if api is None:
            raise NotConfigured("no OpenStack cloud configured (backends.openstack)")
        try:
            connection, close = api.connect(self.deadline)
        except BackendUnavailable:
            raise
        except Exception as exc:
            raise api_error("OpenStack connection", exc, self.deadline) from None
        self._closers.append(close)
        return connection

    @contextlib.contextmanager
    def api_call(self, what: str) -> Iterator[None]:
        """Turn an API failure inside the block into a typed error naming ``what``."""
        try:
            yield
        except BackendUnavailable:
            raise
        except Exception as exc:
            if not _is_api_error(exc):
                raise
            if self.backends.openstack is not None:
                self.backends.openstack.reset()  # its token may be what broke
            raise api_error(what, exc, self.deadline) from None

    # -- fan-out ------------------------------------------------------------------------
    def map_parallel(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        max_workers: int,
        on_deadline: Callable[[T], R],
    ) -> dict[T, R]:
        """fn(item) for every item, a few at a time, until the deadline.

        Items not done by then get on_deadline(item). The handles fn uses are under the
        same deadline, so the threads still running end right after it.
        """
        items = list(dict.fromkeys(items))
        if not items:
            return {}
        pool = ThreadPoolExecutor(max_workers=min(max_workers, len(items)), thread_name_prefix="probe-io")
        try:
            futures = {item: pool.submit(fn, item) for item in items}
            wait(futures.values(), timeout=self.remaining())
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return {
            item: fut.result() if fut.done() and not fut.cancelled() else on_deadline(item)
            for item, fut in futures.items()
        }


def _is_api_error(exc: BaseException) -> bool:
    from keystoneauth1 import exceptions as ks_exc
    from openstack import exceptions as os_exc
    from requests import RequestException

    return isinstance(exc, os_exc.SDKException | ks_exc.ClientException | RequestException | OSError)


class Probe:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    default_interval: ClassVar[float] = 60.0
    default_timeout: ClassVar[float] = 30.0
    # Backends the probe needs, shown by `healthd list`: "openstack", "db:<name>", "memcached", ...
    requires: ClassVar[tuple[str, ...]] = ()
    metrics: ClassVar[tuple[MetricSpec, ...]] = ()
    Settings: ClassVar[type[ProbeSettings]] = ProbeSettings
    # Least privileges the probe needs, shown by `healthd list` and the README.
    privileges: ClassVar[str] = ""

    def __init__(self, settings: ProbeSettings | None = None) -> None:
        self.settings = settings if settings is not None else self.Settings()

    @property
    def interval(self) -> float:
        return self.settings.interval or self.default_interval

    @property
    def timeout(self) -> float:
        return self.settings.timeout or self.default_timeout

    def run(self, ctx: Context, report: Report) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
