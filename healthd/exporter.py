"""Prometheus exposition of the last probe results, rendered off the scrape path.

Failure modes this module exists to avoid, all seen in peer exporters:

* A scrape that runs the checks (openstack-exporter without --cache) takes
  30 s to minutes on a real cloud and times out. Here a scrape never runs a
  probe and never even renders: a background thread renders the text once per
  snapshot version and scrapes serve the cached bytes (and a gzip copy).
* One duplicated label set makes client libraries fail the whole scrape with
  HTTP 500. Report drops duplicates per probe; the collector guards again and
  counts what it skipped in healthd_exporter_duplicate_samples_total.
* Two probes declaring the same metric name would produce two families with
  one name (an invalid exposition): validate_specs() rejects that at load.
* Stale values shown as current: when a probe's last run did not complete
  (UNKNOWN, including "not run yet"), its families have HELP/TYPE but no
  samples; healthd_check_status/up say why.

healthd_check_last_run_timestamp_seconds is 0 before the first run (not
absent), so an alert on ``time() - healthd_check_last_run_timestamp_seconds``
fires for a probe that never ran instead of silently having no series.
It is the start time of the last run attempt, completed or not.

Rendering is chunked per probe: a probe's families are rendered again only
when its Result object changed, so a small probe finishing does not re-render
the 100,000 series of a big one. Chunks are concatenated in a fixed order
(self-metrics first, then probes by name), identical to rendering Collector
through generate_latest in one go.

Rendering 100,000 series is 0.1 to 0.3 s of pure-Python work. Done in the
serving process it holds the GIL that long, and every scrape thread waits
behind it (p99 90 ms at 50 scrapers, see bench/README.md). So a chunk of more
than FORK_MIN_SAMPLES samples is rendered in a forked child: it inherits the
immutable Result copy-on-write (nothing is pickled), formats the text and its
compressed form, writes both to a pipe and exits; the render thread meanwhile
waits in poll/read/waitpid, which release the GIL. The child runs only the
pure formatting code below (no logging, no locks of ours) and always leaves
through os._exit. A child that fails or hangs (killed after a timeout), or a
fork that fails, falls back to rendering in-thread: slower scrapes, never a
missing chunk.

gzip is cached per chunk too: each chunk is compressed once into a raw deflate
segment ending on a byte boundary (Z_SYNC_FLUSH), and the response is one
gzip member made of the segments, an empty final block and the CRC of the
body (the trick pigz uses). Nothing is recompressed when another probe
changes, and clients that only read the first member of a multi-member gzip
stream (older curl) still get the whole body.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import logging
import os
import re
import select
import signal
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from healthd import __version__
from healthd.model import MetricSpec, MetricType, Result, Sample, Severity, Status
from healthd.redact import redact
from healthd.store import ResultStore, Snapshot

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
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

# Chunks with more samples than this render in a forked child. Below it a
# render takes well under 10 ms in-thread, less than forking costs.
FORK_MIN_SAMPLES = 5000
# A child still running after this long is killed and the chunk rendered in-thread.
FORK_TIMEOUT = 60.0
# Niceness added in the child (weight 335 against 1024: slowed, never starved, by busy CPUs).
CHILD_NICE = 5
GZIP_LEVEL = 5
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


# --------------------------------------------------------------------------- families


def self_families(snap: Snapshot, render_seconds: float = 0.0, duplicates: int = 0) -> list[Metric]:
    """healthd_check_* for every loaded probe (also before its first run), plus build/exporter info."""
    status = GaugeMetricFamily("healthd_check_status", SELF_METRICS["healthd_check_status"], labels=["check"])
    up = GaugeMetricFamily("healthd_check_up", SELF_METRICS["healthd_check_up"], labels=["check"])
    duration = GaugeMetricFamily(
        "healthd_check_duration_seconds", SELF_METRICS["healthd_check_duration_seconds"], labels=["check"]
    )
    last_run = GaugeMetricFamily(
        "healthd_check_last_run_timestamp_seconds",
        SELF_METRICS["healthd_check_last_run_timestamp_seconds"],
        labels=["check"],
    )
    findings = GaugeMetricFamily(
        "healthd_check_findings", SELF_METRICS["healthd_check_findings"], labels=["check", "severity"]
    )
    interval = GaugeMetricFamily(
        "healthd_check_interval_seconds", SELF_METRICS["healthd_check_interval_seconds"], labels=["check"]
    )
    for name in snap.specs:
        if name in snap.intervals:
            interval.add_metric([name], snap.intervals[name])
        result = snap.results.get(name)
        if result is None:  # not possible with ResultStore, but never crash a render
            continue
        status.add_metric([name], int(result.status))
        up.add_metric([name], 1 if result.completed else 0)
        duration.add_metric([name], result.duration)
        last_run.add_metric([name], result.started_at)
        counts = {sev: 0 for sev in Severity}
        for finding in result.findings:
            counts[finding.severity] += 1
        for sev in (Severity.WARNING, Severity.CRITICAL, Severity.INFO):
            findings.add_metric([name, sev.name.lower()], counts[sev])
    build = GaugeMetricFamily("healthd_build_info", SELF_METRICS["healthd_build_info"], labels=["version"])
    build.add_metric([__version__], 1)
    render = GaugeMetricFamily(
        "healthd_exposition_render_seconds",
        SELF_METRICS["healthd_exposition_render_seconds"],
        value=render_seconds,
    )
    dups = CounterMetricFamily(
        "healthd_exporter_duplicate_samples_total",
        SELF_METRICS["healthd_exporter_duplicate_samples_total"],
        value=duplicates,
    )
    return [status, up, duration, last_run, findings, interval, build, render, dups]


def probe_families(
    check: str, specs: Iterable[MetricSpec], result: Result | None
) -> tuple[list[Metric], int]:
    """One family per declared metric with the samples of the last completed run.

    Returns the families and the number of duplicate samples skipped.
    """
    families: dict[str, tuple[Metric, MetricSpec]] = {}
    for spec in specs:
        families[spec.name] = (_family(check, spec), spec)
    if result is None or not result.completed:
        return [fam for fam, _ in families.values()], 0  # never show an older run's values as current
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    skipped = 0
    for sample in result.samples:
        entry = families.get(sample.name)
        key = (sample.name, sample.labels)
        if entry is None or key in seen:
            skipped += 1
            continue
        seen.add(key)
        family, spec = entry
        labels = dict(sample.labels)
        if len(labels) != len(spec.labels) or any(k not in labels for k in spec.labels):
            skipped += 1  # would fail the scrape; Report makes this impossible for real probes
            continue
        values = [labels[k] for k in spec.labels]
        if spec.type is MetricType.INFO:
            family.add_metric(values, {})
        else:
            family.add_metric(values, sample.value)
    return [fam for fam, _ in families.values()], skipped


def _probe_help(check: str, spec: MetricSpec) -> str:
    text = spec.help.strip()
    if text and not text.endswith((".", "!", "?")):
        text += "."
    return f"{text} Cached from the last run of check {check}.".lstrip()


def _family(check: str, spec: MetricSpec) -> Metric:
    help_text = _probe_help(check, spec)
    labels = list(spec.labels)
    if spec.type is MetricType.COUNTER:
        return CounterMetricFamily(spec.name, help_text, labels=labels)
    if spec.type is MetricType.INFO:
        return InfoMetricFamily(spec.name.removesuffix("_info"), help_text, labels=labels)
    return GaugeMetricFamily(spec.name, help_text, labels=labels)


def render_probe(
    check: str,
    specs: Iterable[MetricSpec],
    result: Result | None,
    prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str] | None = None,
) -> tuple[bytes, int]:
    """Text of one probe's families: byte-identical to generate_latest over probe_families().

    generate_latest builds a dict and a namedtuple per sample and formats
    through several generic helpers; for 100,000 series that holds the GIL
    about three times longer than this direct formatting (see bench/README.md),
    and every millisecond the render thread holds the GIL delays scrapes.
    ``prefixes`` caches the ``name{labels}`` part of each line between renders
    of the same probe (host names rarely change between runs); it is updated
    in place to hold exactly the series of this render.
    Returns the text and the number of skipped duplicate/undeclared samples.
    """
    specs = tuple(specs)
    old = dict(prefixes) if prefixes else {}
    if prefixes is not None:
        prefixes.clear()
    new: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {} if prefixes is None else prefixes
    by_name: dict[str, list[Sample]] = {spec.name: [] for spec in specs}
    skipped = 0
    if result is not None and result.completed:  # never show an older run's values as current
        for sample in result.samples:
            bucket = by_name.get(sample.name)
            if bucket is None:
                skipped += 1
            else:
                bucket.append(sample)
    out: list[str] = []
    for spec in specs:
        help_text = _probe_help(check, spec).replace("\\", r"\\").replace("\n", r"\n")
        kind = "counter" if spec.type is MetricType.COUNTER else "gauge"
        out.append(f"# HELP {spec.name} {help_text}\n# TYPE {spec.name} {kind}\n")
        skipped += _render_samples(out, spec, by_name[spec.name], old, new)
    return "".join(out).encode(), skipped


def _render_samples(
    out: list[str],
    spec: MetricSpec,
    samples: list[Sample],
    old: dict[tuple[str, tuple[tuple[str, str], ...]], str],
    new: dict[tuple[str, tuple[tuple[str, str], ...]], str],
) -> int:
    skipped = 0
    info = spec.type is MetricType.INFO
    for sample in samples:
        key = (spec.name, sample.labels)
        if key in new:
            skipped += 1  # duplicate name+labels: would fail the whole scrape
            continue
        prefix = old.get(key)
        if prefix is None:
            prefix = _prefix(spec, sample)
            if prefix is None:
                skipped += 1
                continue
        new[key] = prefix
        out.append(f"{prefix} {'1.0' if info else _go_float(sample.value)}\n")
    return skipped


def _go_float(value: float) -> str:
    """floatToGoString, with a fast path: a repr of at most 8 chars never needs Go's exponent form."""
    text = repr(float(value))
    if len(text) > 8 or text in ("inf", "-inf", "nan"):
        return floatToGoString(value)
    return text


def _prefix(spec: MetricSpec, sample: Sample) -> str | None:
    """``name{a="x",b="y"}`` with labels sorted as generate_latest does; None if labels mismatch."""
    labels = dict(sample.labels)
    if len(labels) != len(spec.labels) or not set(spec.labels).issuperset(labels):
        return None
    if not labels:
        return spec.name
    parts = []
    for key in sorted(labels):
        esc = labels[key].replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
        parts.append(f'{key}="{esc}"')
    return f"{spec.name}{{{','.join(parts)}}}"


class Collector:
    """prometheus_client custom collector over one Snapshot per collect() call.

    ``snapshot`` is called once per collect, so every family comes from the
    same consistent set of results.
    """

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot
        self.render_seconds = 0.0
        self.duplicates = 0

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        yield from self_families(snap, self.render_seconds, self.duplicates)
        for name, specs in snap.specs.items():
            families, _ = probe_families(name, specs, snap.results.get(name))
            yield from families


class _Fixed:
    """A collector returning prepared families (to render one chunk)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def render_families(families: list[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return generate_latest(registry)


# --------------------------------------------------------------------------- exposition


@dataclass(frozen=True)
class Rendered:
    """Everything a scrape needs, for one snapshot version. Swapped as a whole."""

    version: int
    body: bytes
    gzipped: bytes
    checks_json: bytes
    rendered_at: float = field(default_factory=time.time)


@dataclass
class _Chunk:
    result: Result | None
    specs: tuple[MetricSpec, ...]
    text: bytes
    deflated: bytes  # raw deflate segment of text, see deflate_segment()
    prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str]


class Exposition:
    """Renders the store's snapshot in a background thread; scrapes read ``current()``.

    Usage::

        exposition = Exposition(store)
        exposition.start()          # renders the current snapshot before returning
        exposition.current().body   # bytes for /metrics
        exposition.stop()
    """

    def __init__(
        self,
        store: ResultStore,
        gzip_level: int = GZIP_LEVEL,
        fork_min_samples: int | None = FORK_MIN_SAMPLES,
        fork_timeout: float = FORK_TIMEOUT,
    ) -> None:
        """``fork_min_samples=None`` renders every chunk in-thread."""
        self._store = store
        self._gzip_level = gzip_level
        self._fork_min_samples = fork_min_samples
        self._fork_timeout = fork_timeout
        self._changed = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._chunks: dict[str, _Chunk] = {}
        self._cond = threading.Condition()
        self.collector = Collector(store.snapshot)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self._current = Rendered(-1, b"", gzip_stream([deflate_segment(b"", gzip_level)], b""), b"{}")
        self.renders = 0
        self.forked_renders = 0  # chunks rendered in a child (bench, tests)
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
        chunks = [
            self._probe_chunk(name, specs, snap.results.get(name)) for name, specs in snap.specs.items()
        ]
        self._chunks = {name: self._chunks[name] for name in snap.specs}  # forget removed probes
        head = render_families(self_families(snap, self.collector.render_seconds, self.collector.duplicates))
        body = b"".join([head, *(c.text for c in chunks)])
        segments = [deflate_segment(head, self._gzip_level), *(c.deflated for c in chunks)]
        rendered = Rendered(snap.version, body, gzip_stream(segments, body), checks_document(snap))
        self.collector.render_seconds = time.perf_counter() - started
        self.renders += 1
        with self._cond:
            self._current = rendered  # one reference swap: a scrape sees old or new, never a mix
            self._cond.notify_all()

    def _probe_chunk(self, name: str, specs: tuple[MetricSpec, ...], result: Result | None) -> _Chunk:
        chunk = self._chunks.get(name)
        if chunk is not None and chunk.result is result and chunk.specs == specs:
            return chunk
        prefixes = chunk.prefixes if chunk is not None else {}
        rendered = None
        if self._should_fork(result):
            rendered = self._render_forked(name, specs, result, prefixes)
            # The child's prefix cache died with it; keeping ours would only hold memory.
            prefixes = {}
        if rendered is None:
            text, skipped = render_probe(name, specs, result, prefixes)
            rendered = (text, deflate_segment(text, self._gzip_level), skipped)
        text, deflated, skipped = rendered
        if skipped:
            self.collector.duplicates += skipped
            log.warning("check %s: dropped %d duplicate or undeclared samples", name, skipped)
        self._chunks[name] = _Chunk(result, specs, text, deflated, prefixes)
        return self._chunks[name]

    def _should_fork(self, result: Result | None) -> bool:
        limit = self._fork_min_samples
        return limit is not None and result is not None and result.completed and len(result.samples) > limit

    def _render_forked(
        self,
        name: str,
        specs: tuple[MetricSpec, ...],
        result: Result | None,
        prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str],
    ) -> tuple[bytes, bytes, int] | None:
        """(text, deflated, skipped) rendered by a child process; None if that failed."""
        try:
            rendered = render_in_child(name, specs, result, self._gzip_level, self._fork_timeout, prefixes)
        except (OSError, ChildRenderError) as exc:
            log.warning("check %s: rendering in a child process failed (%s); rendering in-thread", name, exc)
            return None
        self.forked_renders += 1
        return rendered


# --------------------------------------------------------------------------- gzip


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0, OS unknown
_DEFLATE_END = b"\x03\x00"  # an empty final block (fixed Huffman): ends the deflate stream


def deflate_segment(data: bytes, level: int = GZIP_LEVEL) -> bytes:
    """Raw deflate of ``data`` ending on a byte boundary without a final block.

    Such segments concatenate into one valid deflate stream: each starts a new
    block and refers back only to its own data.
    """
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


def gzip_stream(segments: Sequence[bytes], body: bytes) -> bytes:
    """One gzip member of ``body`` from the deflate segments of its parts, in order."""
    trailer = struct.pack("<LL", zlib.crc32(body), len(body) & 0xFFFFFFFF)
    return b"".join([_GZIP_HEADER, *segments, _DEFLATE_END, trailer])


# --------------------------------------------------------------------------- child rendering


class ChildRenderError(Exception):
    """The child rendering a chunk failed, hung or sent a malformed reply."""


_REPLY_HEADER = struct.Struct("!QQQ")  # skipped, len(text), len(deflated)
_PIPE_SIZE = 1 << 20  # fewer wake-ups of the reading thread than the default 64 KiB


def render_in_child(
    check: str,
    specs: tuple[MetricSpec, ...],
    result: Result | None,
    level: int = GZIP_LEVEL,
    timeout: float = FORK_TIMEOUT,
    prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str] | None = None,
) -> tuple[bytes, bytes, int]:
    """render_probe() + deflate_segment() in a forked child; returns (text, deflated, skipped).

    The calling thread only waits in system calls, so other threads keep the
    GIL meanwhile. Raises OSError if the pipe or fork fails, ChildRenderError
    if the child fails or outlives ``timeout`` (it is killed and reaped).
    """
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep the default
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:
        _child_main(read_fd, write_fd, check, specs, result, level, prefixes)
    os.close(write_fd)
    try:
        return _read_reply(read_fd, time.monotonic() + timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.close(read_fd)
        _reap(pid)


def _child_main(
    read_fd: int,
    write_fd: int,
    check: str,
    specs: tuple[MetricSpec, ...],
    result: Result | None,
    level: int,
    prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str] | None,
) -> NoReturn:
    """Runs in the forked child. Must never return, raise, log or take a lock of the parent's."""
    code = 1
    try:
        # A collection would walk, and so copy, every page of the parent's heap.
        gc.disable()
        # Batch work: on a busy 2-core host the scrape threads should win the CPU.
        os.nice(CHILD_NICE)
        # The daemon's SIGTERM handler would run here, in a copy without its threads.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        os.close(read_fd)
        text, skipped = render_probe(check, specs, result, dict(prefixes) if prefixes else None)
        deflated = deflate_segment(text, level)
        _write_all(write_fd, _REPLY_HEADER.pack(skipped, len(text), len(deflated)))
        _write_all(write_fd, text)
        _write_all(write_fd, deflated)
        code = 0
    finally:
        os._exit(code)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_reply(fd: int, deadline: float) -> tuple[bytes, bytes, int]:
    header = _read_exact(fd, _REPLY_HEADER.size, deadline)
    skipped, text_len, deflated_len = _REPLY_HEADER.unpack(header)
    text = _read_exact(fd, text_len, deadline)
    deflated = _read_exact(fd, deflated_len, deadline)
    if _read_exact(fd, 1, deadline, eof_ok=True):
        raise ChildRenderError("child sent more than announced")
    return text, deflated, skipped


def _read_exact(fd: int, size: int, deadline: float, eof_ok: bool = False) -> bytes:
    """``size`` bytes from the pipe, waiting at most until ``deadline`` (poll and read drop the GIL)."""
    poller = select.poll()  # not select.select: the fd may be above 1024 in a busy daemon
    poller.register(fd, select.POLLIN)
    parts: list[bytes] = []
    missing = size
    while missing:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            raise ChildRenderError("child did not finish in time (killed)")
        part = os.read(fd, min(missing, _PIPE_SIZE))
        if not part:
            if eof_ok and missing == size:
                return b""
            raise ChildRenderError("child exited before sending its result")
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)


def _reap(pid: int) -> None:
    _, status = os.waitpid(pid, 0)  # blocks without the GIL; the child has exited or been killed
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise ChildRenderError(f"child exited with {code}")


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
