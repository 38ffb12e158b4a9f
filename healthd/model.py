"""The result model every probe returns: a status, findings and measurements.

Statuses follow Nagios plugins and oslo.upgradecheck: OK < WARNING < CRITICAL,
and UNKNOWN when the probe could not tell (backend down, timeout, crash).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from healthd import textformat
from healthd.redact import redact


class Status(enum.IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @staticmethod
    def worst(statuses: Iterable[Status]) -> Status:
        """UNKNOWN outranks OK and WARNING but not CRITICAL: a known outage pages first."""
        order = (Status.OK, Status.WARNING, Status.UNKNOWN, Status.CRITICAL)
        return max(statuses, key=order.index, default=Status.OK)


class Severity(enum.IntEnum):
    """Severity of a single finding; maps onto the status it implies."""

    INFO = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def status(self) -> Status:
        return {Severity.INFO: Status.OK, Severity.WARNING: Status.WARNING}.get(
            self, Status.CRITICAL
        )


@dataclass(frozen=True)
class Finding:
    """Something a person can act on: what is wrong, where, and the fix."""

    severity: Severity
    subject: str  # the exact object: "service 1f3c...", "host compute-7", "memcached 10.0.0.5:11211"
    message: str
    remediation: str = ""
    # Unix time this check first reported this subject, in consecutive completed runs; set by
    # the scheduler (healthd.scheduler.execute), 0 until then.
    since: float = 0.0

    def as_dict(self) -> dict[str, str | float | None]:
        return {
            "severity": self.severity.name.lower(),
            "subject": self.subject,
            "message": self.message,
            "remediation": self.remediation,
            "since": self.since or None,
        }


class MetricType(enum.Enum):
    GAUGE = "gauge"
    COUNTER = "counter"
    INFO = "info"


@dataclass(frozen=True)
class MetricSpec:
    """Declares one metric a probe exports; the README table is checked against these."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    type: MetricType = MetricType.GAUGE


class Sample(NamedTuple):
    """One value of a declared metric (a tuple: probes emit tens of thousands per run)."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


def family_help(check: str, spec: MetricSpec) -> str:
    text = spec.help.strip()
    if text and not text.endswith((".", "!", "?")):
        text += "."
    return f"{text} Cached from the last run of check {check}.".lstrip()


def family_header(check: str, spec: MetricSpec) -> str:
    kind = "counter" if spec.type is MetricType.COUNTER else "gauge"
    return textformat.header(spec.name, family_help(check, spec), kind)


def families_without_samples(check: str, specs: Iterable[MetricSpec]) -> bytes:
    """HELP/TYPE of every declared metric: what a run that did not complete exports."""
    return "".join(family_header(check, spec) for spec in specs).encode()


@dataclass(frozen=True)
class Result:
    """What one probe run produced. Immutable: it shares nothing mutable with the run."""

    check: str
    status: Status
    summary: str = ""
    findings: tuple[Finding, ...] = ()
    samples: tuple[Sample, ...] = ()
    started_at: float = 0.0  # unix time
    duration: float = 0.0  # seconds
    completed: bool = False  # the probe ran to completion (healthd_check_up)
    # The probe's families in the exposition format, rendered when the run ended; empty for
    # a run that did not complete (the exporter then shows HELP/TYPE without samples).
    exposition: bytes = field(default=b"", repr=False)
    duplicates: int = 0  # samples dropped because their name and labels repeated

    def as_dict(self) -> dict[str, object]:
        return {
            "check": self.check,
            "status": self.status.name,
            "summary": self.summary,
            "completed": self.completed,
            "last_run": self.started_at or None,
            "duration_seconds": round(self.duration, 6),
            "findings": [f.as_dict() for f in self.findings],
        }


class Report:
    """Builder a probe fills during one run.

    It checks every sample against the probe's declared metrics, so a typo'd
    name or label set fails loudly in tests, drops duplicate label sets (a
    single duplicate would make the whole scrape fail), and formats each
    sample's exposition line as it is reported: the exporter only joins them.
    """

    def __init__(self, check: str, metrics: Iterable[MetricSpec]) -> None:
        self.check = check
        self._specs = {m.name: (m, frozenset(m.labels)) for m in metrics}
        self._entries: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[Sample, str]] = {}
        self.findings: list[Finding] = []
        self.duplicates = 0
        self.summary = ""

    def metric(self, name: str, value: float, **labels: object) -> None:
        spec, label_names = self._specs.get(name, (None, None))
        if spec is None:
            raise ValueError(f"probe {self.check} emitted undeclared metric {name}")
        if labels.keys() != label_names:
            raise ValueError(
                f"metric {name} needs labels {sorted(spec.labels)}, got {sorted(labels)}"
            )
        key_labels = tuple((k, redact(str(labels[k]))) for k in spec.labels)
        key = (name, key_labels)
        if key in self._entries:
            self.duplicates += 1
        value = float(value)
        if math.isnan(value) and spec.type is MetricType.COUNTER:
            raise ValueError(f"counter {name} must not be NaN")
        shown = "1.0" if spec.type is MetricType.INFO else textformat.go_float(value)
        text = f"{textformat.series(name, key_labels)} {shown}\n"
        self._entries[key] = (Sample(name, key_labels, value), text)

    def finding(
        self, severity: Severity, subject: str, message: str, remediation: str = ""
    ) -> None:
        self.findings.append(
            Finding(severity, redact(subject), redact(message), redact(remediation))
        )

    def info(self, subject: str, message: str, remediation: str = "") -> None:
        self.finding(Severity.INFO, subject, message, remediation)

    def warning(self, subject: str, message: str, remediation: str = "") -> None:
        self.finding(Severity.WARNING, subject, message, remediation)

    def critical(self, subject: str, message: str, remediation: str = "") -> None:
        self.finding(Severity.CRITICAL, subject, message, remediation)

    @property
    def samples(self) -> list[Sample]:
        return [sample for sample, _ in self._entries.values()]

    def status(self) -> Status:
        return Status.worst(f.severity.status for f in self.findings)

    def result(self, started_at: float, duration: float) -> Result:
        """The completed run as an immutable Result, its exposition text joined."""
        lines: dict[str, list[str]] = {name: [] for name in self._specs}
        for (name, _), (_, text) in self._entries.items():
            lines[name].append(text)
        parts: list[str] = []
        for name, (spec, _) in self._specs.items():
            parts.append(family_header(self.check, spec))
            parts.extend(lines[name])
        status = self.status()
        count = len(self.findings)
        summary = self.summary or (
            "no problems found" if not count else f"{count} finding(s), worst {status.name}"
        )
        return Result(
            check=self.check,
            status=status,
            summary=redact(summary),
            findings=tuple(self.findings),
            samples=tuple(self.samples),
            started_at=started_at,
            duration=duration,
            completed=True,
            exposition="".join(parts).encode(),
            duplicates=self.duplicates,
        )


def unknown(check: str, reason: str, started_at: float | None = None, duration: float = 0.0) -> Result:
    """A result that says the probe could not tell, and why."""
    return Result(
        check=check,
        status=Status.UNKNOWN,
        summary=redact(reason),
        started_at=started_at if started_at is not None else 0.0,
        duration=duration,
        completed=False,
    )


def not_run_yet(check: str) -> Result:
    return unknown(check, "not run yet")
