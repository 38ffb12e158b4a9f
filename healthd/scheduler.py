"""Runs every probe on its own interval, isolated from the others.

- Each probe runs in a thread of its own, at most ``workers`` at once, and
  never overlaps itself.
- A run that outlives its timeout is reported UNKNOWN at once and abandoned:
  its slot is released so it cannot starve the other probes. Python cannot
  kill a thread, so the run's deadline is handed to every connection the
  probe opens and shuts their sockets down when it passes (healthd/deadline.py):
  the abandoned run ends right after. Until it has, that probe is not started
  again, so abandoned threads can never pile up beyond one per probe.
- An exception is caught, logged once (until the error changes) and reported
  as UNKNOWN; BackendUnavailable is UNKNOWN with the backend's reason.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from healthd.config import SchedulerConfig
from healthd.connections import Backends
from healthd.deadline import Deadline
from healthd.errors import BackendUnavailable
from healthd.model import Report, Result, unknown
from healthd.probe import Context, Probe
from healthd.redact import describe_error
from healthd.store import ResultStore

log = logging.getLogger(__name__)

ABANDON_GRACE = 1.0  # seconds past a run's timeout before the scheduler gives up on it
FIRST_SEEN = "_first_seen"  # probe state: finding subject -> unix time first reported


def execute(probe: Probe, backends: Backends, state: dict[str, Any] | None = None) -> Result:
    """Run one probe once, synchronously, and turn whatever happens into a Result.

    The run's deadline is handed to every handle the probe opens; when it passes, their
    sockets are shut down, so the run ends shortly after even if a peer never answers.
    """
    state = {} if state is None else state
    started, t0 = time.time(), time.monotonic()
    ctx = Context(backends, Deadline(probe.timeout), logging.getLogger(f"healthd.checks.{probe.name}"), state)
    report = Report(probe.name, probe.metrics)
    try:
        probe.run(ctx, report)
    except BackendUnavailable as exc:
        _note_error(probe.name, state, str(exc), None)
        return unknown(probe.name, str(exc), started, time.monotonic() - t0)
    except Exception as exc:
        reason = f"probe crashed: {describe_error(exc)}"
        _note_error(probe.name, state, reason, exc)
        return unknown(probe.name, reason, started, time.monotonic() - t0)
    finally:
        ctx.close()
    state.pop("_last_error", None)
    if report.duplicates:
        log.warning("check %s emitted %d duplicate samples; kept the last of each",
                    probe.name, report.duplicates)
    return with_since(report.result(started, time.monotonic() - t0), state)


def with_since(result: Result, state: dict[str, Any]) -> Result:
    """Stamp each finding with the time its subject was first reported in consecutive runs.

    A subject missing from a completed run has cleared: it starts again from that run if it
    comes back. A run that could not tell (UNKNOWN) changes nothing. The times live in the
    probe's state, in memory: a restart of the daemon starts them again.
    """
    if not result.completed:
        return result
    before: dict[str, float] = state.get(FIRST_SEEN, {})
    seen: dict[str, float] = {}
    for finding in result.findings:
        seen.setdefault(finding.subject, before.get(finding.subject, result.started_at))
    state[FIRST_SEEN] = seen
    findings = tuple(dataclasses.replace(f, since=seen[f.subject]) for f in result.findings)
    return dataclasses.replace(result, findings=findings)


def _note_error(name: str, state: dict[str, Any], reason: str, exc: BaseException | None) -> None:
    """Log an error the first time it appears, not on every run while it lasts."""
    if state.get("_last_error") == reason:
        log.debug("check %s still failing: %s", name, reason)
        return
    state["_last_error"] = reason
    if exc is not None:
        log.error("check %s: %s", name, reason, exc_info=exc)
    else:
        log.warning("check %s is UNKNOWN: %s", name, reason)


@dataclass
class _Slot:
    probe: Probe
    next_run: float
    state: dict[str, Any] = field(default_factory=dict)
    running: bool = False
    abandoned: bool = False
    started: float = 0.0
    deadline: float = 0.0
    blocked_by: _Slot | None = None  # a run from before a reload that has not ended yet


class Scheduler:
    def __init__(
        self,
        probes: Mapping[str, Probe],
        backends: Backends,
        store: ResultStore,
        config: SchedulerConfig,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store = store
        self._on_tick = on_tick
        self.heartbeat = time.monotonic()
        self._install(probes, backends, config, {})

    def _install(
        self,
        probes: Mapping[str, Probe],
        backends: Backends,
        config: SchedulerConfig,
        old: Mapping[str, _Slot],
    ) -> None:
        now = time.monotonic()
        self.config = config
        self.backends = backends
        self._active = 0
        self._slots: dict[str, _Slot] = {}
        for name, probe in probes.items():
            prev = old.get(name)
            # Spread the first runs over a second so they do not all hit the APIs at once.
            slot = _Slot(probe, now + random.uniform(0, 1.0), prev.state if prev else {})
            if prev and prev.running:
                # Keep the no-overlap rule across a reload: wait for the old run,
                # whose result is dropped (it ran with the old settings).
                slot.blocked_by = prev
                prev.abandoned = True
            self._slots[name] = slot
        self._store.reset(
            ((name, p.metrics) for name, p in probes.items()),
            {name: p.interval for name, p in probes.items()},
        )

    # -- lifecycle ---------------------------------------------------------
    def start(self, first_run_delay: float | None = None) -> None:
        if first_run_delay is not None:
            for slot in self._slots.values():
                slot.next_run = time.monotonic() + first_run_delay
        self._thread = threading.Thread(target=self._loop, name="healthd-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)

    def reload(self, probes: Mapping[str, Probe], backends: Backends, config: SchedulerConfig) -> None:
        with self._lock:
            old_backends = self.backends
            self._install(probes, backends, config, self._slots)
        if old_backends is not backends:
            old_backends.close()
        self._wake.set()

    def alive(self) -> bool:
        """False when the loop has not ticked for stall_seconds (/healthz answers 503)."""
        running = self._thread is not None and self._thread.is_alive()
        return running and time.monotonic() - self.heartbeat < self.config.stall_seconds

    # -- the loop ----------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            if self._on_tick:
                self._on_tick()
            with self._lock:
                delay = self._tick(self.heartbeat)
            # Tick often enough for /healthz and the systemd watchdog even when idle.
            self._wake.wait(min(delay, 0.5, self.config.stall_seconds / 3))
            self._wake.clear()

    def _tick(self, now: float) -> float:
        """Expire overdue runs, start due ones; return seconds until the next event."""
        next_event = now + 1.0
        for name, slot in self._slots.items():
            if slot.running and not slot.abandoned and now >= slot.deadline:
                self._abandon(name, slot)
            if slot.running:
                next_event = min(next_event, slot.deadline) if not slot.abandoned else next_event
                continue
            if slot.blocked_by is not None:
                if slot.blocked_by.running:
                    continue
                slot.blocked_by = None
            if now >= slot.next_run and self._active < self.config.workers:
                self._launch(name, slot, now)
                next_event = min(next_event, slot.deadline)
            else:
                next_event = min(next_event, max(slot.next_run, now + 0.05))
        return max(0.01, next_event - now)

    def _launch(self, name: str, slot: _Slot, now: float) -> None:
        slot.running, slot.abandoned = True, False
        # The run's own deadline (healthd/deadline.py) ends its I/O at `timeout` and the probe
        # reports which backend did not answer; the scheduler abandons the run only if that
        # did not happen within a grace second (a probe stuck outside the handles).
        slot.started, slot.deadline = now, now + slot.probe.timeout + ABANDON_GRACE
        self._active += 1
        backends = self.backends
        threading.Thread(
            target=self._run, args=(name, slot, backends), name=f"probe-{name}", daemon=True
        ).start()

    def _abandon(self, name: str, slot: _Slot) -> None:
        slot.abandoned = True
        self._active -= 1
        timeout = slot.probe.timeout
        log.warning("check %s timed out after %g s; its run is abandoned", name, timeout)
        started_at = time.time() - (time.monotonic() - slot.started)
        self._store.publish(unknown(name, f"timed out after {timeout:g} s", started_at, timeout))

    def _run(self, name: str, slot: _Slot, backends: Backends) -> None:
        result = execute(slot.probe, backends, slot.state)
        with self._lock:
            if not slot.abandoned:
                self._active -= 1
                self._store.publish(result)
            slot.running = False
            jitter = 1 + random.uniform(-self.config.jitter, self.config.jitter)
            slot.next_run = slot.started + slot.probe.interval * jitter
        self._wake.set()


def run_once(
    probes: Mapping[str, Probe], backends: Backends, workers: int | None = None
) -> dict[str, Result]:
    """Run every probe once (for `healthd check`), with the same isolation and timeouts.

    By default all at once, so the wall time is bounded by the largest timeout, not by a
    queue of probes waiting for a worker behind hung ones.
    """
    workers = workers or max(1, len(probes))
    store = ResultStore()
    finished = threading.Event()
    # A run that ended (completed, failed or timed out) has a start time; "not run yet" has none.
    store.subscribe(lambda snap: all(r.started_at for r in snap.results.values()) and finished.set())
    scheduler = Scheduler(probes, backends, store, SchedulerConfig(workers=workers, jitter=0))
    scheduler.start(first_run_delay=0.0)
    longest = max((p.timeout for p in probes.values()), default=0.0)
    finished.wait((longest + ABANDON_GRACE) * (1 + len(probes) // workers) + 2)
    scheduler.stop(timeout=0.1)
    return dict(store.snapshot().results)
