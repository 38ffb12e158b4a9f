"""oslo.messaging's view of a RabbitMQ broker, for probes that check what the services use.

Two things live here: the TLS a service's rabbit driver sets up (``AmqpTls``), and a check,
without changing anything on the broker, that a user has the permissions oslo.messaging
needs in a vhost (``check_permissions``).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from healthd.redact import describe_error


class TlsFileError(ValueError):
    """A TLS file named in a service's config cannot be loaded by healthd."""

    def __init__(self, message: str, permission_denied: bool) -> None:
        super().__init__(message)
        self.permission_denied = permission_denied


# impl_rabbit.py Connection._SSL_PROTOCOLS: tlsv1 and sslv23 always, the others if the ssl
# module has them; anything else makes validate_ssl_version raise RuntimeError.
_SSL_PROTOCOL_NAMES = {
    "tlsv1": "PROTOCOL_TLSv1", "sslv23": "PROTOCOL_SSLv23", "sslv2": "PROTOCOL_SSLv2",
    "sslv3": "PROTOCOL_SSLv3", "tlsv1_1": "PROTOCOL_TLSv1_1", "tlsv1_2": "PROTOCOL_TLSv1_2",
}


def ssl_protocols() -> dict[str, int]:
    return {name: getattr(ssl, attr) for name, attr in _SSL_PROTOCOL_NAMES.items() if hasattr(ssl, attr)}


@dataclass(frozen=True)
class AmqpTls:
    """TLS for a broker connection, set up exactly as the services' rabbit driver sets it up.

    oslo.messaging 18.3.1 impl_rabbit.py Connection._fetch_ssl_params hands kombu
    ``ssl_version``, ``keyfile``/``certfile`` and, when ``ssl_ca_file`` is set, ``ca_certs``,
    ``cert_reqs=CERT_REQUIRED`` and ``server_hostname`` (the host of a one-host URL; for several
    hosts None, which kombu 5.7 transport/pyamqp.py establish_connection replaces with the host
    it connects to). py-amqp 5.4 transport.py SSLTransport._wrap_socket_sni then builds an
    SSLContext(ssl_version or PROTOCOL_TLS_CLIENT), loads the cert chain and the CA file, sets
    check_hostname only when a server_hostname is given, and loads the system CAs when no CA
    file is given and the context verifies at all. So:

    - ssl_ca_file set: chain against that file and the host name as written in the URL;
    - no ssl_ca_file: chain against the system store, host name not checked;
    - ssl_version set without ssl_ca_file: a protocol-specific context, which verifies nothing.

    Measured with oslo.messaging 18.3.1, kombu 5.7.0, amqp 5.4.2 against a TLS front of the
    local RabbitMQ (tests/test_service_config_probe.py does the same through healthd).
    """

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    ssl_version: str = ""

    @property
    def checks_hostname(self) -> bool:
        return bool(self.ca_file)

    def version_error(self) -> str:
        if not self.ssl_version or self.ssl_version.lower() in ssl_protocols():
            return ""
        return f"is not one of {', '.join(sorted(ssl_protocols()))}"

    def context(self) -> ssl.SSLContext:
        """Raises TlsFileError naming the file (ssl's own errors do not say which one)."""
        protocol = ssl_protocols().get(self.ssl_version.lower(), ssl.PROTOCOL_TLS_CLIENT) \
            if self.ssl_version else ssl.PROTOCOL_TLS_CLIENT
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # PROTOCOL_TLSv1 & co. are deprecated
            context = ssl.SSLContext(protocol)
        try:
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file or None)
        except (OSError, ValueError) as exc:
            raise _file_error("client certificate/key", self.cert_file, exc) from None
        try:
            if self.ca_file:
                context.load_verify_locations(cafile=self.ca_file)
        except (OSError, ValueError) as exc:
            raise _file_error("CA file", self.ca_file, exc) from None
        context.check_hostname = self.checks_hostname
        if self.ca_file:
            context.verify_mode = ssl.CERT_REQUIRED
        elif context.verify_mode != ssl.CERT_NONE:
            try:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
            except (OSError, ValueError) as exc:
                raise _file_error("CA file", "(system store)", exc) from None
        return context

    def describe(self) -> str:
        """How the services verify the broker, for a finding."""
        if self.ca_file:
            return f"against ssl_ca_file {self.ca_file}, host name included"
        if self.ssl_version:
            return "not at all (ssl_version without ssl_ca_file)"
        return "against the system CA store (ssl_ca_file is unset), host name not checked"


def _file_error(what: str, path: str, exc: BaseException) -> TlsFileError:
    denied = isinstance(exc, PermissionError)
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    return TlsFileError(f"cannot load {what} {path}: {reason}", denied)


# == permissions a service needs in its vhost ========================================
#
# oslo.messaging's rabbit driver (impl_rabbit.py, amqpdriver.py) declares, binds, publishes
# to and consumes from two kinds of names in its vhost:
# - the control exchange ([DEFAULT] control_exchange: "nova" for nova) and the topic queues
#   bound to it: configure (declare), write (publish RPC calls), read (bind queues to it);
# - its reply queue and exchange "reply_" + uuid4().hex (amqpdriver.py _get_reply_q):
#   configure (declare), write (bind, publish replies), read (consume).
# RabbitMQ permissions are three regular expressions over resource names (configure, write,
# read), so the check asks the broker about the control exchange's name and a fresh
# reply_<hex> name. It uses operations RabbitMQ authorises before doing anything and that
# then change nothing (rabbit_channel.erl, 3.10 to 4.3; measured on 3.10.8):
# - exchange.declare with an "alternate-exchange" argument of the wrong type: the configure
#   check comes first; then an existing exchange fails the equivalence check (406) and a new
#   one the argument's type check (406) before anything is created;
# - basic.get on the reply name, which no queue has: read is checked, then 404;
# - exchange.unbind / queue.unbind with a random routing key: write on the destination and
#   read on the source are checked, then nothing matches (unbind-ok, or 404).
# A refused permission is 403 ACCESS_REFUSED. Every 406/404 closes only its channel, and the
# broker logs it as a channel error: the probe keeps a granted result for a while (its
# permissions_interval) rather than asking every run.


class _ExpectedCloses(logging.Filter):
    """pika logs every Channel.Close from the broker at WARNING; the permission check provokes
    them on purpose (403, 404, 406), one channel per question. healthd's engine opens no
    channels, so every such record is the check's own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Received remote Channel.Close")


logging.getLogger("pika.channel").addFilter(_ExpectedCloses())


@dataclass(frozen=True)
class PermissionOp:
    name: str
    tests: tuple[str, str]  # (permission, resource) that a 403 refuses
    needs: tuple[tuple[str, str], ...]  # permissions checked before it by the broker, that must hold
    call: Callable[[Any], Any] = field(repr=False, compare=False)


def permission_ops(exchange: str, reply: str | None = None) -> list[PermissionOp]:
    reply = reply or f"reply_{uuid.uuid4().hex}"
    key = f"healthd-{uuid.uuid4().hex}"
    wrong_type = {"alternate-exchange": 0}
    ex, rq = f"exchange {exchange!r}", f"{reply!r}"
    return [
        PermissionOp("exchange.declare", ("configure", ex), (),
                     lambda ch: ch.exchange_declare(exchange, "topic", arguments=wrong_type)),
        PermissionOp("exchange.declare", ("configure", rq), (),
                     lambda ch: ch.exchange_declare(reply, "direct", arguments=wrong_type)),
        PermissionOp("basic.get", ("read", rq), (), lambda ch: ch.basic_get(reply)),
        PermissionOp("exchange.unbind", ("write", rq), (("read", rq),),
                     lambda ch: ch.exchange_unbind(destination=reply, source=reply, routing_key=key)),
        PermissionOp("exchange.unbind", ("write", ex), (("read", rq),),
                     lambda ch: ch.exchange_unbind(destination=exchange, source=reply, routing_key=key)),
        PermissionOp("queue.unbind", ("read", ex), (("write", rq),),
                     lambda ch: ch.queue_unbind(reply, exchange, routing_key=key)),
    ]


@dataclass(frozen=True)
class Permissions:
    """What the check found: which (permission, resource) pairs the broker refused."""

    checked: bool
    denied: tuple[tuple[str, str], ...] = ()
    reason: str = ""  # why it could not be checked

    @property
    def ok(self) -> bool:
        return self.checked and not self.denied

    @property
    def missing(self) -> list[str]:
        return sorted({perm for perm, _ in self.denied}, key=("configure", "write", "read").index)


def judge_permissions(ops: list[PermissionOp], refused: dict[int, bool]) -> Permissions:
    """refused: op index -> True if the broker answered 403. An op's 403 is counted against
    the permission it tests only when the ones the broker checks first are known to hold."""
    granted: set[tuple[str, str]] = set()
    denied: list[tuple[str, str]] = []
    for i, op in enumerate(ops):
        if i not in refused:
            continue
        if not refused[i]:
            granted.add(op.tests)
            granted.update(op.needs)
        elif all(need in granted for need in op.needs) and op.tests not in denied:
            denied.append(op.tests)
    return Permissions(True, tuple(denied))


def check_permissions(connection: Any, exchange: str, deadline_expired: Callable[[], bool]) -> Permissions:
    """Ask the broker about each permission (see above) on an open connection of the service's user.

    The connection comes from the probe's context (``ctx.amqp``), under the run's deadline.
    Failures here only mean "not checked": the handshake before it already judged
    reachability and login.
    """
    import pika.exceptions

    ops = permission_ops(exchange)
    refused: dict[int, bool] = {}
    try:
        for i, op in enumerate(ops):
            if deadline_expired():
                return Permissions(False, reason="no time left before the check's deadline")
            channel = connection.channel()
            try:
                op.call(channel)
            except pika.exceptions.ChannelClosedByBroker as exc:
                refused[i] = exc.reply_code == 403
            else:
                refused[i] = False
                with contextlib.suppress(Exception):
                    channel.close()
    except Exception as exc:  # pika raises many unrelated types; all mean "not checked"
        return Permissions(False, reason=describe_error(exc))
    return judge_permissions(ops, refused)
