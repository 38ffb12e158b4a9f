"""Prometheus exposition of the last probe results: one renderer, nothing done on the scrape path.

How the bytes are made, in one pass from probe to scrape:

1. A probe reports a sample; ``Report.metric`` formats its line then and there
   (healthd/textformat.py). When the run ends, ``Report.result`` joins the lines
   under their HELP/TYPE headers into ``Result.exposition``, in the probe's thread.
2. The scheduler publishes the Result to the store; the render thread here wakes,
   formats the few self-metric lines (healthd_check_*), joins them with every
   probe's bytes, gzips the body with the standard library (zlib releases the GIL
   while it compresses) and swaps in the new ``Rendered``.
3. A scrape copies ``current().body`` or ``.gzipped``: it never runs a probe,
   never formats and never compresses.

Failure modes this module exists to avoid, all seen in peer exporters:

* A scrape that runs the checks (openstack-exporter without --cache) takes
  30 s to minutes on a real cloud and times out.
* One duplicated label set makes the whole scrape fail (HTTP 500 in client
  libraries, a parse error in Prometheus). Report keeps one sample per series
  and counts what it dropped in healthd_exporter_duplicate_samples_total.
* Two probes declaring the same metric name would produce two families with
  one name: validate_specs() rejects that at load.
* Stale values shown as current: when a probe's last run did not complete
  (UNKNOWN, including "not run yet"), its families have HELP/TYPE but no
  samples; healthd_check_status/up say why.

healthd_check_last_run_timestamp_seconds is 0 before the first run (not
absent), so an alert on ``time() - healthd_check_last_run_timestamp_seconds``
fires for a probe that never ran instead of silently having no series.
It is the start time of the last run attempt, completed or not.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from healthd import __version__, textformat
from healthd.model import MetricSpec, MetricType, Result, Severity, Status, families_without_samples
from healthd.redact import redact
from healthd.store import ResultStore, Snapshot
from healthd.textformat import CONTENT_TYPE

__all__ = ["CONTENT_TYPE", "Exposition", "Rendered", "SpecError", "checks_document", "validate_specs"]

log = logging.getLogger(__name__)

_CACHED = "(cached between runs; see healthd_check_last_run_timestamp_seconds)"

# name -> HELP; validate_specs() keeps probe metrics from colliding with these.
SELF_METRICS: dict[str, str] = {
    "healthd_check_status": "Status of the last run of each check: 0 OK, 1 WARNING, 2 CRITICAL, "
    f"3 UNKNOWN {_CACHED}.",
    "healthd_check_up": f"1 if the last run of the check completed, 0 if it could not tell {_CACHED}.",
    "healthd_check_duration_seconds": f"Wall time of the last run of each check {_CACHED}.",
    "healthd_check_last_run_timestamp_seconds": "Unix time the last run of each check started, "
    "completed or not; 0 before the first run.",
    "healthd_check_findings": f"Findings of the last completed run of each check, by severity {_CACHED}.",
    "healthd_check_interval_seconds": "Configured seconds between runs of each check "
    "(scale staleness alerts with it).",
    "healthd_build_info": "healthd version; the value is always 1.",
    "healthd_exposition_render_seconds": "Time the previous render of this exposition took "
    "(rendering happens when results change, never during a scrape).",
    "healthd_exporter_duplicate_samples_total": "Samples dropped because their name and labels "
    "repeated within a result (each would otherwise fail the whole scrape).",
}
# Suffixes prometheus_client appends; a probe name ending like this would clash too.
_RESERVED_SUFFIXES = ("_created", "_bucket", "_count", "_sum")

# zlib level 1: 100,000 series (6.9 MB) compress in 52 ms with the GIL released, to 635 KB;
# level 5 takes 82 ms for 545 KB. A render happens each time any check finishes, so the
# cheaper level wins (bench/README.md).
GZIP_LEVEL = 1
_METRIC_NAME = re.compile(r"healthd_[a-zA-Z0-9_]+")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class SpecError(ValueError):
    """Probe metric declarations that would produce an invalid exposition."""


def validate_specs(specs: Mapping[str, Iterable[MetricSpec]]) -> None:
    """Reject metric names declared twice (across or within probes) or clashing with self-metrics.

    ``specs`` maps probe name -> its MetricSpecs (what ResultStore.reset takes).
    """
    owner: dict[str, str] = {name: "healthd itself" for name in SELF_METRICS}
    for probe, metric_specs in specs.items():
        for spec in metric_specs:
            _check_spec_name(probe, spec)
            if spec.name in owner:
                raise SpecError(
                    f"probe {probe} declares metric {spec.name}, already declared by {owner[spec.name]}"
                )
            owner[spec.name] = f"probe {probe}"


def _check_spec_name(probe: str, spec: MetricSpec) -> None:
    # Legacy charset only (colons are for recording rules), in healthd's namespace.
    if not _METRIC_NAME.fullmatch(spec.name):
        pattern = _METRIC_NAME.pattern
        raise SpecError(f"probe {probe}: invalid metric name {spec.name!r}: must match {pattern}")
    if spec.type is MetricType.COUNTER and not spec.name.endswith("_total"):
        raise SpecError(f"probe {probe}: counter {spec.name} must end in _total")
    if spec.type is not MetricType.COUNTER and spec.name.endswith("_total"):
        raise SpecError(f"probe {probe}: {spec.name} ends in _total but is a {spec.type.value}")
    if spec.type is MetricType.INFO and not spec.name.endswith("_info"):
        raise SpecError(f"probe {probe}: info metric {spec.name} must end in _info")
    if spec.name.endswith(_RESERVED_SUFFIXES):
        raise SpecError(f"probe {probe}: {spec.name} ends in a suffix reserved for histograms/summaries")
    for label in spec.labels:
        if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
            raise SpecError(f"probe {probe}: {spec.name} has invalid label name {label!r}")
    if len(set(spec.labels)) != len(spec.labels):
        raise SpecError(f"probe {probe}: {spec.name} repeats a label name")


# --------------------------------------------------------------------------- self-metrics


def self_metrics(snap: Snapshot, render_seconds: float = 0.0, duplicates: int = 0) -> bytes:
    """healthd_check_* for every loaded probe (also before its first run), plus build/exporter info."""
    per_check: dict[str, list[str]] = {name: [] for name in (
        "healthd_check_status", "healthd_check_up", "healthd_check_duration_seconds",
        "healthd_check_last_run_timestamp_seconds", "healthd_check_findings",
        "healthd_check_interval_seconds",
    )}
    for name in snap.specs:
        check = {"check": name}
        if name in snap.intervals:
            per_check["healthd_check_interval_seconds"].append(
                _line("healthd_check_interval_seconds", check, snap.intervals[name]))
        result = snap.results.get(name)
        if result is None:  # not possible with ResultStore, but never crash a render
            continue
        per_check["healthd_check_status"].append(_line("healthd_check_status", check, int(result.status)))
        per_check["healthd_check_up"].append(_line("healthd_check_up", check, 1 if result.completed else 0))
        per_check["healthd_check_duration_seconds"].append(
            _line("healthd_check_duration_seconds", check, result.duration))
        per_check["healthd_check_last_run_timestamp_seconds"].append(
            _line("healthd_check_last_run_timestamp_seconds", check, result.started_at))
        counts = dict.fromkeys(Severity, 0)
        for finding in result.findings:
            counts[finding.severity] += 1
        for sev in (Severity.WARNING, Severity.CRITICAL, Severity.INFO):
            per_check["healthd_check_findings"].append(
                _line("healthd_check_findings", {"check": name, "severity": sev.name.lower()}, counts[sev]))
    parts: list[str] = []
    for metric, lines in per_check.items():
        parts.append(textformat.header(metric, SELF_METRICS[metric], "gauge"))
        parts.extend(lines)
    for metric, kind, labels, value in (
        ("healthd_build_info", "gauge", {"version": __version__}, 1.0),
        ("healthd_exposition_render_seconds", "gauge", {}, render_seconds),
        ("healthd_exporter_duplicate_samples_total", "counter", {}, float(duplicates)),
    ):
        parts.append(textformat.header(metric, SELF_METRICS[metric], kind))
        parts.append(_line(metric, labels, value))
    return "".join(parts).encode()


def _line(metric: str, labels: dict[str, str], value: float) -> str:
    return textformat.line(textformat.series(metric, labels), value)


# --------------------------------------------------------------------------- exposition


@dataclass(frozen=True)
class Rendered:
    """Everything a scrape needs, for one snapshot version. Swapped as a whole."""

    version: int
    body: bytes
    gzipped: bytes
    checks_json: bytes
    snapshot: Snapshot | None = None  # what they were made from (the status page reads it)
    rendered_at: float = field(default_factory=time.time)


class Exposition:
    """Joins the store's snapshot in a background thread; scrapes read ``current()``.

    Usage::

        exposition = Exposition(store)
        exposition.start()          # renders the current snapshot before returning
        exposition.current().body   # bytes for /metrics
        exposition.stop()
    """

    def __init__(self, store: ResultStore, gzip_level: int = GZIP_LEVEL) -> None:
        self._store = store
        self._gzip_level = gzip_level
        self._changed = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._headers: dict[tuple[str, tuple[MetricSpec, ...]], bytes] = {}
        self._counted: dict[str, Result] = {}  # the result whose duplicates were last counted
        self.duplicates = 0
        self.render_seconds = 0.0
        self.renders = 0
        self._current = Rendered(-1, b"", gzip.compress(b"", gzip_level, mtime=0), b"{}")
        store.subscribe(self._on_change)

    def _on_change(self, _snap: Snapshot) -> None:
        self._changed.set()  # runs under the store's lock: do nothing else

    def current(self) -> Rendered:
        return self._current

    def start(self) -> None:
        self._render(self._store.snapshot())
        self._thread = threading.Thread(target=self._loop, name="healthd-render", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_for(self, version: int, timeout: float = 5.0) -> bool:
        """Block until a snapshot at least ``version`` is rendered (tests, startup)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._current.version >= version, timeout)

    def _loop(self) -> None:
        while True:
            self._changed.wait()
            if self._stopping:
                return
            self._changed.clear()
            snap = self._store.snapshot()
            if snap.version == self._current.version:
                continue
            try:
                self._render(snap)
            except Exception:  # keep serving the previous exposition rather than dying
                log.exception("rendering the exposition of snapshot %d failed", snap.version)

    def _render(self, snap: Snapshot) -> None:
        started = time.perf_counter()
        chunks = [self._probe_bytes(name, specs, snap.results.get(name))
                  for name, specs in snap.specs.items()]
        self._counted = {name: r for name, r in self._counted.items() if name in snap.specs}
        body = b"".join([self_metrics(snap, self.render_seconds, self.duplicates), *chunks])
        rendered = Rendered(snap.version, body, gzip.compress(body, self._gzip_level, mtime=0),
                            checks_document(snap), snap)
        self.render_seconds = time.perf_counter() - started
        self.renders += 1
        with self._cond:
            self._current = rendered  # one reference swap: a scrape sees old or new, never a mix
            self._cond.notify_all()

    def _probe_bytes(self, name: str, specs: tuple[MetricSpec, ...], result: Result | None) -> bytes:
        if result is not None and self._counted.get(name) is not result:
            self._counted[name] = result
            if result.duplicates:
                self.duplicates += result.duplicates
                log.warning("check %s: dropped %d duplicate samples", name, result.duplicates)
        if result is not None and result.completed and result.exposition:
            return result.exposition
        # Never show an older run's values as current: HELP/TYPE only.
        key = (name, specs)
        if key not in self._headers:
            self._headers = {k: v for k, v in self._headers.items() if k[0] != name}
            self._headers[key] = families_without_samples(name, specs)
        return self._headers[key]


def checks_document(snap: Snapshot) -> bytes:
    """The /checks JSON: overall (worst) status and every probe's last result."""
    results = [snap.results[name] for name in snap.specs if name in snap.results]
    doc = {
        "status": Status.worst(r.status for r in results).name,
        "snapshot_version": snap.version,
        "checks": [_redacted(r.as_dict()) for r in results],
    }
    return json.dumps(doc, indent=1).encode() + b"\n"


def _redacted(value: object) -> object:
    # Report already redacts; summaries set by the engine pass here too.
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value
