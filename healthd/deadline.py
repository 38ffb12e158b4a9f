"""The run's deadline, handed to every connection a probe opens.

Socket timeouts bound each single operation, not a conversation: a peer that
sends one byte a second never trips a 5 s read timeout, and a paginated API
call makes a fresh timeout per page. So besides giving every connect and
read the time that is left, each handle registers its socket here, and when
the deadline passes the sockets still open are shut down: whatever call is
blocked on them returns at once with an error, and the probe thread ends
instead of outliving its run (the scheduler has already reported it UNKNOWN).

``shutdown(2)`` acts on the connection, not on one descriptor, so a ``dup``
of the socket taken at registration reaches the connection even after a
library wrapped the original in TLS; and since the dup is ours, its number
can never be reused for an unrelated socket before we close it.

When the run ends (``close``), whatever is still registered is cut too: it can
only belong to a thread the run left behind (a ``map_parallel`` worker whose
waiter saw the deadline before the timer did) or to the run's discarded HTTP
pool, and neither may outlive the run.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class Deadline:
    """A monotonic point in time, and the sockets to cut when it passes."""

    def __init__(self, seconds: float) -> None:
        self.timeout = seconds
        self.at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.name = "healthd-deadline"
        self._timer.start()

    def remaining(self, cap: float | None = None) -> float:
        """Seconds left (at least 0.05, so a socket timeout is never 0 = non-blocking), capped."""
        left = max(0.05, self.at - time.monotonic())
        return min(left, cap) if cap is not None else left

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def guard(self, sock: socket.socket | None) -> socket.socket | None:
        """Shut ``sock``'s connection down when the deadline passes (or now, if it has).

        Returns the token to hand to ``release`` when the handle closes the connection
        itself: until then the dup keeps the connection open on our side.
        """
        if sock is None:
            return None
        try:
            # Not sock.dup(): an ssl.SSLSocket (pika's TLS transport) refuses it.
            dup = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
        except OSError:
            return None  # already closed: nothing left to interrupt
        with self._lock:
            if not self._closed and not self.expired:
                self._sockets.append(dup)
                return dup
        _cut(dup)
        return None

    def release(self, token: socket.socket | None) -> None:
        """The handle closed its connection: forget it (closing our dup lets it really end)."""
        if token is None:
            return
        with self._lock, contextlib.suppress(ValueError):
            self._sockets.remove(token)
        token.close()

    def _expire(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _cut(sock)

    def close(self) -> None:
        """The run is over: stop the timer and cut what is still registered.

        A handle that ended normally has released its socket already. One still here
        belongs to a thread the run no longer waits for: ``map_parallel`` stops waiting at
        the deadline, and when its wait returns before this timer fires, the run can end
        first; merely closing the dup would leave that thread reading a trickling peer
        forever. Or it is a pooled HTTP connection of the run's session, which ends with
        the run anyway.
        """
        self._timer.cancel()
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _cut(sock)


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
