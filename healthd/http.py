"""The HTTP server Prometheus scrapes: cached /metrics, /checks, /healthz.

Failure modes it is built against:

* Listen backlog: socketserver's default of 5 makes the kernel drop SYNs
  when a few dozen scrapers (several Prometheus replicas, federation,
  people with curl) connect at once; the client retransmits after 1 s, so
  the scrape shows a 1 s tail. We ask for 1024 (the kernel caps it at
  net.core.somaxconn).
* A hung or slow client holding a handler thread forever: every client
  socket, including the TLS handshake, has a 10 s timeout.
* Nagle + delayed ACK adding 40 ms to a response sent as headers + body:
  TCP_NODELAY on every client socket.
* The TLS handshake runs in the connection's own thread, not in the accept
  loop, so one slow handshake does not stall every other scraper.
* Basic auth protects every path, /healthz included, as exporter-toolkit does
  (a kubelet/systemd liveness probe then needs the credentials, or use a
  separate unauthenticated check such as the process being up).

No request ever runs a probe or renders metrics: /metrics and /checks are
bytes rendered in advance by healthd.exporter.Exposition. The status page at
/ is made per request from the same snapshot (healthd/statuspage.py).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from healthd import __version__, statuspage, webconfig
from healthd.config import ServerConfig
from healthd.exporter import CONTENT_TYPE, Exposition

log = logging.getLogger(__name__)
access_log = logging.getLogger("healthd.http.access")

CLIENT_TIMEOUT = 10.0  # seconds a client may stay silent mid-request (or idle on keep-alive)


class HealthdServer(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        exposition: Exposition,
        is_alive: Callable[[], bool],
        web: webconfig.WebConfig | None = None,
    ) -> None:
        self.address_family = _family(address[0])
        self.exposition = exposition
        self.is_alive = is_alive
        self.ssl_context = web.ssl_context if web else None
        self.auth = web.auth if web else None
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__(address, Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        host = self.server_address[0]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self.port}"

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and self.server_address[0] in ("::", ""):
            # "::" means every address, IPv4 included, as in Go exporters.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, name="healthd-http", daemon=True
        )
        self._thread.start()

    def shutdown(self) -> None:
        """Stop accepting, close the listener and cut open keep-alive connections."""
        super().shutdown()
        self.server_close()
        with self._clients_lock:
            clients = list(self._clients)
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def finish_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        """Runs in the connection's thread: timeouts, TLS handshake, then the handler."""
        request.settimeout(CLIENT_TIMEOUT)
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn: socket.socket = request
        if self.ssl_context is not None:
            try:
                conn = self.ssl_context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address[0], exc)
                return
        with self._clients_lock:
            self._clients.add(conn)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            with self._clients_lock:
                self._clients.discard(conn)
            if conn is not request:
                conn.close()

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        # Default prints a traceback to stderr; a reset connection is routine.
        log.debug("error serving %s", client_address[0], exc_info=True)


def _family(host: str) -> socket.AddressFamily:
    if ":" in host:
        return socket.AF_INET6
    try:
        infos = socket.getaddrinfo(host or None, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve listen address {host!r}: {exc}") from None
    return infos[0][0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus reuses its connection
    server_version = f"healthd/{__version__}"
    sys_version = ""
    timeout = CLIENT_TIMEOUT
    server: HealthdServer

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def _dispatch(self, head: bool) -> None:
        if self.server.auth is not None and not self._authorized():
            self._send(
                401,
                b"unauthorized\n",
                "text/plain; charset=utf-8",
                head,
                {"WWW-Authenticate": 'Basic realm="healthd"'},
            )
            return
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._metrics(head)
        elif path == "/checks":
            self._send(200, self.server.exposition.current().checks_json, "application/json", head)
        elif path == "/healthz":
            self._healthz(head)
        elif path == "/":
            self._page(head)
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8", head)

    def _metrics(self, head: bool) -> None:
        rendered = self.server.exposition.current()
        if rendered.version < 0:
            self._send(503, b"metrics not rendered yet\n", "text/plain; charset=utf-8", head)
        elif accepts_gzip(self.headers.get("Accept-Encoding", "")):
            self._send(
                200,
                rendered.gzipped,
                CONTENT_TYPE,
                head,
                {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"},
            )
        else:
            self._send(200, rendered.body, CONTENT_TYPE, head, {"Vary": "Accept-Encoding"})

    def _page(self, head: bool) -> None:
        snapshot = self.server.exposition.current().snapshot
        if snapshot is None:
            self._send(503, b"not rendered yet\n", "text/plain; charset=utf-8", head)
            return
        page = statuspage.render(snapshot)
        self._send(200, page, "text/html; charset=utf-8", head, {"Cache-Control": "no-store"})

    def _healthz(self, head: bool) -> None:
        try:
            alive = bool(self.server.is_alive())
        except Exception:
            log.exception("is_alive() failed")
            alive = False
        if alive:
            self._send(200, b"ok\n", "text/plain; charset=utf-8", head)
        else:
            self._send(503, b"scheduler loop stalled\n", "text/plain; charset=utf-8", head)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        auth = self.server.auth
        return bool(sep) and auth is not None and auth.check(user, password)

    def _send(
        self, code: int, body: bytes, content_type: str, head: bool, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # Never straight to stderr; off unless healthd.http.access is at DEBUG.
        access_log.debug("%s %s", self.address_string(), format % args)


def accepts_gzip(header: str) -> bool:
    """True if Accept-Encoding allows gzip (q > 0), e.g. Prometheus' "gzip"."""
    for part in header.split(","):
        token, _, params = part.partition(";")
        if token.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        return q > 0
    return False


def serve(config: ServerConfig, exposition: Exposition, is_alive: Callable[[], bool]) -> HealthdServer:
    """Bind config.listen_address:port and serve in a background thread.

    Raises OSError if the address cannot be bound and webconfig.WebConfigError
    if the web config file is invalid. Call ``server.shutdown()`` to stop.
    """
    web = webconfig.load(config.web_config_file) if config.web_config_file else None
    host = config.listen_address.strip("[]")
    server = HealthdServer((host, config.port), exposition, is_alive, web)
    if web and web.auth and not web.ssl_context:
        log.warning("basic auth without TLS: passwords cross the network in clear text")
    server.start()
    log.info("serving on %s", server.url)
    return server
