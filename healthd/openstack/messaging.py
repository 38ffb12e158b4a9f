"""oslo.messaging's view of a RabbitMQ broker, for probes that check what the services use."""

from __future__ import annotations

import ssl
from dataclasses import dataclass


class TlsFileError(ValueError):
    """A TLS file named in a service's config cannot be loaded by healthd."""

    def __init__(self, message: str, permission_denied: bool) -> None:
        super().__init__(message)
        self.permission_denied = permission_denied


@dataclass(frozen=True)
class AmqpTls:
    """TLS for a broker connection, set up the way oslo.messaging's rabbit driver does it.

    oslo_messaging/_drivers/impl_rabbit.py hands [oslo_messaging_rabbit] ssl_ca_file,
    ssl_cert_file and ssl_key_file to py-amqp, which verifies the certificate chain (against
    ssl_ca_file, else the system store) but not the host name (no server_hostname is passed).
    The probe checks what the services check: stricter would page for a broker they use
    happily, looser would miss the expired or untrusted certificate that stops them.
    """

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def context(self) -> ssl.SSLContext:
        """Raises TlsFileError naming the file (ssl's own errors do not say which one)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            if self.ca_file:
                context.load_verify_locations(cafile=self.ca_file)
            else:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        except (OSError, ValueError) as exc:
            raise _file_error("CA file", self.ca_file or "(system store)", exc) from None
        try:
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file or None)
        except (OSError, ValueError) as exc:
            raise _file_error("client certificate/key", self.cert_file, exc) from None
        return context


def _file_error(what: str, path: str, exc: BaseException) -> TlsFileError:
    denied = isinstance(exc, PermissionError)
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
    return TlsFileError(f"cannot load {what} {path}: {reason}", denied)
