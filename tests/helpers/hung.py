"""Hung peers on loopback: listeners that accept a connection and then never finish answering.

- ``silent()``: accepts and holds every connection, never sends a byte. Defeats nothing but
  patience: a client with a read timeout gives up after it.
- ``amqp_mute_after_open()``: an AMQP broker that completes the handshake (the login and
  the vhost are accepted) and then never answers again: pika's close waits for a Close-Ok.
- ``trickle(preamble)``: accepts, sends ``preamble`` at once, then one filler byte a second,
  forever. Every read gets its byte before a per-read timeout of more than a second trips,
  so only a bound on the whole conversation (the run's deadline) ends the client's wait.
  The preambles below take each protocol's parser as far as a header announcing a long
  message (or an unterminated line), so the client keeps reading instead of failing fast
  on a malformed byte.

There is no "black hole" (a SYN that is never answered) here: the loopback kernel completes
the TCP handshake for any listener, so connect timeouts cannot be provoked this way.

    with silent() as peer:           # peer.host, peer.port, peer.server ("127.0.0.1:PORT")
        ...
    with trickle(HTTP) as peer:      # peer.url -> "http://127.0.0.1:PORT"
        ...

The threads are named ``hung-peer-*`` (never ``probe-*``), so tests that look for probe
threads left running do not see them. Leaving the block closes every connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

LOOPBACK = "127.0.0.1"

# What each protocol's client reads first, up to a point where it waits for more.
HTTP = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Trickle: "  # header line never ends
# MySQL: a packet header (length 65535, sequence 0) and protocol version 10: pymysql reads
# the whole 64 KiB handshake packet before it looks at it.
MYSQL = b"\xff\xff\x00\x00\x0a"
# AMQP 0-9-1: a method frame on channel 0 announcing 65535 bytes: pika waits for the frame end.
AMQP = b"\x01\x00\x00\x00\x00\xff\xff\x00\x0a"
MEMCACHED = b"STAT pid "  # a `stats` line that never ends in CRLF
PREAMBLES = {"http": HTTP, "mysql": MYSQL, "amqp": AMQP, "memcached": MEMCACHED}


class HungPeer:
    """A loopback TCP listener on a free port that accepts and then hangs (see module doc)."""

    def __init__(self, kind: str, preamble: bytes = b"", filler: bytes = b"H", interval: float = 1.0,
                 script: Callable[[socket.socket], None] | None = None) -> None:
        self.kind = kind  # "silent", "trickle", or a name for a scripted peer
        self.script = script  # says its piece on each connection (in a thread), then holds it
        self.preamble = preamble
        self.filler = filler
        self.interval = interval
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.host = LOOPBACK
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0  # connections accepted so far (tests check the peer was really reached)
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, name=f"hung-peer-{kind}-{self.port}",
                                          daemon=True)]
        if kind == "trickle":
            self._threads.append(threading.Thread(target=self._trickle, daemon=True,
                                                  name=f"hung-peer-trickle-{self.port}-send"))

    @property
    def server(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __repr__(self) -> str:
        return f"<{self.kind} peer {self.server}>"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # timeout (to look at _stop), or the listener closed
                continue
            conn.settimeout(1.0)  # a send to a client that stopped reading must not block us
            if self.kind == "trickle" and self.preamble:
                try:
                    conn.sendall(self.preamble)
                except OSError:
                    conn.close()
                    continue
            with self._lock:
                self._conns.append(conn)
                self.accepted += 1
            if self.script is not None:
                threading.Thread(target=self._run_script, args=(conn,), daemon=True,
                                 name=f"hung-peer-{self.kind}-{self.port}-conn").start()

    def _run_script(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.settimeout(10)
            assert self.script is not None
            self.script(conn)

    def _trickle(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                conns = list(self._conns)
            for conn in conns:
                try:
                    conn.sendall(self.filler)
                except OSError:  # the client hung up (or its deadline cut it): stop feeding it
                    with self._lock, contextlib.suppress(ValueError):
                        self._conns.remove(conn)
                    conn.close()

    def start(self) -> HungPeer:
        for thread in self._threads:
            thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(3)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()
        self.sock.close()

    def __enter__(self) -> HungPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def silent() -> HungPeer:
    """Accepts, never sends a byte, holds the connection until the block ends."""
    return HungPeer("silent")


def trickle(preamble: bytes = b"", filler: bytes = b"H", interval: float = 1.0) -> HungPeer:
    """Accepts, sends ``preamble``, then ``filler`` every ``interval`` seconds until the block ends."""
    return HungPeer("trickle", preamble, filler, interval)


def _amqp_open_then_mute(conn: socket.socket) -> None:
    """Connection.Start, Tune, Open-Ok, each after the client's previous frames; then nothing."""
    from pika import frame, spec

    def send(method: object) -> None:
        conn.sendall(frame.Method(0, method).marshal())  # type: ignore[arg-type]

    conn.recv(8)  # the protocol header, AMQP 0-9-1
    send(spec.Connection.Start(server_properties={"product": "hung"}, mechanisms="PLAIN",
                               locales="en_US"))
    conn.recv(4096)  # Start-Ok: the credentials (any are fine)
    send(spec.Connection.Tune(channel_max=0, frame_max=131072, heartbeat=0))
    conn.recv(4096)  # Tune-Ok, and Connection.Open with the vhost
    send(spec.Connection.OpenOk())


def amqp_mute_after_open() -> HungPeer:
    """An AMQP broker that lets the client log in and open its vhost, then never answers."""
    return HungPeer("amqp-mute", script=_amqp_open_then_mute)


def peer(kind: str, protocol: str) -> HungPeer:
    """``peer("silent" | "trickle", "http" | "mysql" | "amqp" | "memcached")``."""
    if kind == "silent":
        return silent()
    return trickle(PREAMBLES[protocol])


@contextlib.contextmanager
def peers(*specs: tuple[str, str]) -> Iterator[list[HungPeer]]:
    """Several peers at once, all closed when the block ends."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(peer(kind, protocol)) for kind, protocol in specs]
