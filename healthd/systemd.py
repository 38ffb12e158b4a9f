"""sd_notify(3) for Type=notify units: READY=1, WATCHDOG=1, STOPPING=1.

The protocol is one datagram on the socket named by NOTIFY_SOCKET; without
that variable (not under systemd) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        self._address = address or None
        usec = os.environ.get("WATCHDOG_USEC", "")
        # Ping at a third of the watchdog period (systemd recommends half or less).
        self._ping_every = int(usec) / 3e6 if usec.isdigit() and int(usec) > 0 else 5.0
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, message: str) -> None:
        if not self._address:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect(self._address)
                sock.sendall(message.encode())
            except OSError:
                pass  # systemd went away; nothing useful to do

    def ready(self) -> None:
        self.notify("READY=1\nSTATUS=running")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def reloading(self) -> None:
        self.notify(f"RELOADING=1\nMONOTONIC_USEC={int(time.monotonic() * 1e6)}")

    def watchdog(self) -> None:
        """Called from the scheduler loop: a hung loop stops the pings."""
        now = time.monotonic()
        if now - self._last_ping >= self._ping_every:
            self._last_ping = now
            self.notify("WATCHDOG=1")
