"""The last completed result of every probe, as one consistent snapshot.

The scheduler publishes results here; the exporter renders a snapshot when
it changes. Readers never see a half-updated set: a snapshot is an immutable
mapping replaced as a whole under a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from healthd.model import MetricSpec, Result, not_run_yet


@dataclass(frozen=True)
class Snapshot:
    version: int
    results: Mapping[str, Result]
    # Metric declarations of every loaded probe: the exporter emits HELP/TYPE
    # for each, even when a probe has no samples yet.
    specs: Mapping[str, tuple[MetricSpec, ...]] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    # Configured seconds between runs of each probe (healthd_check_interval_seconds),
    # so staleness alerts scale per check. A probe missing here exports no interval.
    intervals: Mapping[str, float] = field(default_factory=dict)


class ResultStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = Snapshot(0, MappingProxyType({}), MappingProxyType({}))
        self._listeners: list[Callable[[Snapshot], None]] = []

    def snapshot(self) -> Snapshot:
        return self._snapshot  # replaced atomically, never mutated

    def subscribe(self, listener: Callable[[Snapshot], None]) -> None:
        """Call ``listener`` (quickly; it should only set a flag) after each change."""
        self._listeners.append(listener)

    def reset(
        self,
        probes: Iterable[tuple[str, tuple[MetricSpec, ...]]],
        intervals: Mapping[str, float] | None = None,
    ) -> None:
        """Set the probe list (start or config reload); keeps results of kept probes.

        ``intervals`` maps probe name -> configured seconds between runs.
        """
        with self._lock:
            old = self._snapshot.results
            specs = dict(probes)
            results = {name: old.get(name) or not_run_yet(name) for name in specs}
            kept = {name: float(v) for name, v in (intervals or {}).items() if name in specs}
            self._replace(results, specs, kept)

    def publish(self, result: Result) -> None:
        with self._lock:
            if result.check not in self._snapshot.specs:
                return  # the probe was removed by a reload while it ran
            results = dict(self._snapshot.results)
            results[result.check] = result
            self._replace(results, self._snapshot.specs, self._snapshot.intervals)

    def _replace(
        self,
        results: dict[str, Result],
        specs: Mapping[str, tuple[MetricSpec, ...]],
        intervals: Mapping[str, float],
    ) -> None:
        snap = Snapshot(
            self._snapshot.version + 1,
            MappingProxyType(dict(sorted(results.items()))),
            MappingProxyType(dict(specs)),
            intervals=MappingProxyType(dict(intervals)),
        )
        self._snapshot = snap
        for listener in self._listeners:
            listener(snap)
