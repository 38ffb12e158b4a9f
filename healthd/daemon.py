"""`healthd run`: the scheduler, the HTTP endpoint and the process life around them.

SIGTERM/SIGINT stop cleanly (exit 0); SIGHUP reloads the config, and a new
config that does not validate leaves the running one in place. Under systemd
(NOTIFY_SOCKET set) it sends READY=1 once serving and WATCHDOG=1 from the
scheduler loop, so a hung loop gets the daemon restarted.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Mapping

from healthd import __version__, registry
from healthd.config import Config, ConfigError, load
from healthd.connections import Backends
from healthd.exporter import Exposition, validate_specs
from healthd.http import serve
from healthd.probe import Probe
from healthd.scheduler import Scheduler
from healthd.store import ResultStore
from healthd.systemd import Notifier
from healthd.webconfig import WebConfigError

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, config_path: str, available: Mapping[str, type[Probe]], config: Config,
                 listen: tuple[str, int] | None = None) -> None:
        self.config_path = config_path
        self.available = available
        self.config = config
        self.listen = listen
        self.notifier = Notifier()
        self.store = ResultStore()
        self._stop = threading.Event()
        self._reload = threading.Event()

    def _probes(self, config: Config) -> dict[str, Probe]:
        probes = registry.enabled(config, self.available)
        validate_specs({name: p.metrics for name, p in probes.items()})
        return probes

    def run(self) -> int:
        probes = self._probes(self.config)
        self.scheduler = Scheduler(
            probes, Backends(self.config.backends), self.store, self.config.scheduler,
            on_tick=self.notifier.watchdog,
        )
        exposition = Exposition(self.store)
        exposition.start()
        server_config = self.config.server
        if self.listen:
            server_config = server_config.model_copy(
                update={"listen_address": self.listen[0], "port": self.listen[1]}
            )
        try:
            server = serve(server_config, exposition, self.scheduler.alive)
        except (OSError, WebConfigError) as exc:
            log.error("cannot serve on %s:%d: %s", server_config.listen_address, server_config.port, exc)
            exposition.stop()
            return 2
        # Move everything loaded so far (modules, config, probe classes) out of the
        # collector's sight: full collections then walk only what runs create.
        gc.freeze()
        self.scheduler.start()
        self._install_signals()
        log.info("healthd %s serving on %s:%d with checks: %s", __version__,
                 server_config.listen_address, server.server_port, ", ".join(probes) or "none")
        self.notifier.ready()
        try:
            while not self._stop.is_set():
                self._stop.wait(0.5)
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
        finally:
            self.notifier.stopping()
            log.info("stopping")
            self.scheduler.stop(timeout=2.0)
            server.shutdown()
            exposition.stop()
            self.scheduler.backends.close()
        return 0

    def reload(self) -> None:
        self.notifier.reloading()
        try:
            config = load(self.config_path, self.available)
            probes = self._probes(config)
        except (ConfigError, ValueError) as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            self.notifier.ready()
            return
        for section in ("server", "logging"):
            if getattr(config, section) != getattr(self.config, section):
                log.warning("%s settings changed; they take effect on restart", section)
        self.scheduler.reload(probes, Backends(config.backends), config.scheduler)
        self.config = config
        log.info("config reloaded from %s; checks: %s", self.config_path, ", ".join(probes) or "none")
        self.notifier.ready()

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
