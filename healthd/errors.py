"""Typed backend errors: what went wrong with a backend, as a type a probe can match on.

Every handle the engine gives a probe (database, memcached, AMQP, TCP, the
OpenStack APIs) raises a subclass of ``BackendUnavailable`` when its peer
fails, so a probe writes ``except Refused:`` instead of looking for English
words in a message. The message is the reason shown to a person: it names
the peer and never carries a secret. A probe that lets one escape is UNKNOWN
with that reason.
"""

from __future__ import annotations

import socket
import ssl

from healthd.redact import describe_error, redact


class BackendUnavailable(Exception):
    """A backend the probe needs is down or misconfigured: the probe is UNKNOWN."""

    def __init__(self, reason: str) -> None:
        super().__init__(redact(reason))


class NotConfigured(BackendUnavailable):
    """healthd's config names no such backend (or not enough of it to connect)."""


class Unresolvable(BackendUnavailable):
    """The host name does not resolve."""


class Refused(BackendUnavailable):
    """Nothing listens on the port (connection refused or reset at once)."""


class TimedOut(BackendUnavailable):
    """No connection or no answer in time, including the run's deadline passing."""


class AuthFailed(BackendUnavailable):
    """The peer refused the credentials."""


class AccessDenied(BackendUnavailable):
    """Authenticated, but not allowed to do this (a missing grant, a vhost, a policy)."""


class TlsFailed(BackendUnavailable):
    """The TLS handshake failed."""


class TlsUntrusted(TlsFailed):
    """The peer's certificate did not verify (expired, unknown CA, ...); ``verify_message`` says why."""

    def __init__(self, reason: str, verify_message: str = "") -> None:
        super().__init__(reason)
        self.verify_message = verify_message


class ProtocolError(BackendUnavailable):
    """The peer answered, but not as this protocol should (wrong port, wrong schema, garbage)."""


def from_os_error(where: str, exc: BaseException, deadline_passed: bool = False) -> BackendUnavailable:
    """Classify a socket-level failure talking to ``where`` (a secret-free description)."""
    if deadline_passed:
        return TimedOut(f"{where}: no answer before the check's deadline")
    if isinstance(exc, socket.gaierror):
        return Unresolvable(f"{where}: cannot connect: host name does not resolve ({describe_error(exc)})")
    if isinstance(exc, ConnectionRefusedError):
        return Refused(f"{where}: cannot connect: connection refused")
    if isinstance(exc, TimeoutError | socket.timeout):
        return TimedOut(f"{where}: timed out")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TlsUntrusted(f"{where}: TLS certificate not trusted: {exc.verify_message}", exc.verify_message)
    if isinstance(exc, ssl.SSLError):
        return TlsFailed(f"{where}: TLS handshake failed: {exc.reason or describe_error(exc)}")
    if isinstance(exc, ConnectionResetError | BrokenPipeError | EOFError):
        return ProtocolError(f"{where}: connection closed by the peer ({describe_error(exc)})")
    return BackendUnavailable(f"{where}: {describe_error(exc)}")
