"""Real servers for tests, private to the test that starts them.

- free_port(): a loopback TCP port nobody listens on (right now).
- Memcached: a private memcached on a free loopback port, started with any
  extra arguments (``-c 64``), stopped afterwards; never the system one on 11211.
- hold_memcached_connections(): open connections until memcached refuses one,
  the real way to drive it to its connection limit.
- rabbit_vhost(): a fresh RabbitMQ vhost and user (unique names), removed after.
- SilentListener: accepts TCP connections and never answers (a hung peer).
- TlsFront: a TLS listener relaying to the real RabbitMQ (TLS terminated in front of it).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def unique_name(prefix: str = "healthd-test") -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Memcached:
    """A memcached process of our own: ``with Memcached("-c", "64") as mc: mc.server``."""

    def __init__(self, *args: str, port: int | None = None) -> None:
        self.args = args
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> Memcached:
        binary = shutil.which("memcached")
        if binary is None:
            raise RuntimeError("memcached is not installed (apt-get install -y memcached)")
        cmd = [binary, "-l", LOOPBACK, "-p", str(self.port), "-U", "0", *self.args]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # memcached refuses to run as root without -u
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"memcached exited at start: {err.strip()}")
            addr = (LOOPBACK, self.port)
            with contextlib.suppress(OSError), socket.create_connection(addr, timeout=1) as s:
                s.sendall(b"version\r\n")
                if s.recv(64).startswith(b"VERSION"):
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("memcached did not start in time")

    def stats(self) -> dict[str, str]:
        """`stats` over a fresh connection (fails if the server is at its limit)."""
        with socket.create_connection((LOOPBACK, self.port), timeout=2) as s:
            s.sendall(b"stats\r\n")
            data = b""
            while not data.endswith(b"END\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError(f"memcached closed the connection: {data[:80]!r}")
                data += chunk
        return {p[1]: p[2] for p in (line.split(" ", 2) for line in data.decode().splitlines())
                if len(p) == 3 and p[0] == "STAT"}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()

    def __enter__(self) -> Memcached:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def hold_memcached_connections(port: int, limit: int = 5000, timeout: float = 1.0) -> list[socket.socket]:
    """Open and keep connections until memcached refuses or stops answering one.

    Returns the connections it accepted (the caller closes them). With the default
    maxconns_fast the refused one gets "ERROR Too many open connections"; with
    ``-o no_maxconns_fast`` it is left unanswered in the backlog.
    """
    held: list[socket.socket] = []
    for _ in range(limit):
        s = socket.create_connection((LOOPBACK, port), timeout=timeout)
        try:
            s.sendall(b"version\r\n")
            reply = s.recv(64)
        except OSError:
            reply = b""
        if not reply.startswith(b"VERSION"):
            s.close()
            return held
        held.append(s)
    raise RuntimeError(f"memcached on {port} accepted {limit} connections without refusing one")


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()
    socks.clear()


class SilentListener:
    """Accepts TCP connections and never answers: a hung peer. Closes them on exit."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def server(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self._conns.append(conn)

    def __enter__(self) -> SilentListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        close_all(self._conns)
        self.sock.close()


@dataclass(frozen=True)
class RabbitAccount:
    vhost: str
    user: str
    password: str


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def rabbit_vhost(prefix: str = "healthd-test") -> Iterator[RabbitAccount]:
    """A new vhost and a user allowed into it (permissions that match nothing), removed after."""
    name = unique_name(prefix)
    # Hex: a password starting with "-" would be read as an option by rabbitmqctl (exit 64).
    account = RabbitAccount(vhost=name, user=name, password=secrets.token_hex(16))
    _rabbitmqctl("add_vhost", account.vhost)
    try:
        _rabbitmqctl("add_user", account.user, account.password)
        try:
            # Opening the vhost needs a permission entry; "^$" grants no resource at all.
            _rabbitmqctl("set_permissions", "-p", account.vhost, account.user, "^$", "^$", "^$")
            yield account
        finally:
            _rabbitmqctl("delete_user", account.user)
    finally:
        _rabbitmqctl("delete_vhost", account.vhost)


class TlsFront:
    """A TLS listener on a free loopback port in front of a real TCP server (the local
    RabbitMQ by default), the way HAProxy or stunnel terminate TLS for a broker. Each
    connection is handshaken with the given certificate, then relayed byte for byte."""

    def __init__(self, cert_file: str, key_file: str, backend: tuple[str, int] = (LOOPBACK, 5672)):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert_file, key_file)
        self.backend = backend
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):  # the client refused our certificate, or was a TCP probe
            raw.close()
            return
        upstream = socket.create_connection(self.backend, timeout=10)
        self._open += [client, upstream]
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()

    def __enter__(self) -> TlsFront:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        close_all(self._open)
        self.sock.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    for s in (src, dst):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
