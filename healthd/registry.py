"""Probes are found through the entry-point group ``healthd.checks``.

The built-in probes register the same way as a third-party package would,
so adding a probe never needs a change to healthd.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.metadata import entry_points

from healthd.config import Config
from healthd.probe import Probe

GROUP = "healthd.checks"
log = logging.getLogger(__name__)


class RegistryError(Exception):
    pass


def discover() -> dict[str, type[Probe]]:
    """Load every registered probe class, keyed by its name, sorted."""
    found: dict[str, type[Probe]] = {}
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not take the daemon down
            log.error("cannot load probe %s (%s): %s", ep.name, ep.value, exc)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Probe)):
            log.error("entry point %s (%s) is not a healthd Probe", ep.name, ep.value)
            continue
        if cls.name != ep.name:
            log.error("entry point %s names probe %r; skipped", ep.name, cls.name)
            continue
        if ep.name in found:
            log.error("two probes are registered as %s; keeping %s", ep.name, found[ep.name])
            continue
        found[ep.name] = cls
    return dict(sorted(found.items()))


def enabled(config: Config, available: Mapping[str, type[Probe]]) -> dict[str, Probe]:
    """The probes the config enables, each with its validated settings."""
    probes = {}
    for name, cls in available.items():
        settings = config.probe_settings.get(name, cls.Settings())
        if settings.enabled:
            probes[name] = cls(settings)
    return probes
