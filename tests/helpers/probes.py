"""Run a probe once, the way the engine does, and look at what it produced.

``run_probe`` goes through healthd.scheduler.execute, so tests see exactly the
Result the daemon would store (BackendUnavailable -> UNKNOWN with the reason,
a crash -> UNKNOWN "probe crashed"). A crash fails the test by default, so an
UNKNOWN expected for a down backend cannot hide a bug.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from healthd.config import BackendsConfig
from healthd.connections import Backends
from healthd.model import Finding, Result, Severity, Status
from healthd.probe import Probe
from healthd.scheduler import execute


@dataclass
class ProbeRun:
    result: Result

    @property
    def status(self) -> Status:
        return self.result.status

    @property
    def findings(self) -> list[Finding]:
        return list(self.result.findings)

    @property
    def summary(self) -> str:
        return self.result.summary

    def value(self, name: str, **labels: str) -> float | None:
        """The value of one sample (labels must match exactly), or None."""
        want = {k: str(v) for k, v in labels.items()}
        for s in self.result.samples:
            if s.name == name and dict(s.labels) == want:
                return s.value
        return None

    def values(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [(dict(s.labels), s.value) for s in self.result.samples if s.name == name]

    def about(self, text: str, severity: Severity | None = None) -> list[Finding]:
        """Findings whose subject or message mention the text."""
        return [f for f in self.findings
                if text in f"{f.subject} {f.message}" and (severity is None or f.severity is severity)]

    def everything(self) -> str:
        """All text a person or Prometheus could see: for secret canaries."""
        parts = [self.summary]
        parts += [f"{f.subject} {f.message} {f.remediation}" for f in self.findings]
        parts += [f"{s.name} {s.labels}" for s in self.result.samples]
        return "\n".join(parts)


def make_backends(**config: Any) -> Backends:
    return Backends(BackendsConfig(**config))


def run_probe(probe: Probe, backends: Backends, state: dict[str, Any] | None = None,
              allow_crash: bool = False) -> ProbeRun:
    """One run; pass the same ``state`` dict to successive calls to keep counters between runs."""
    result = execute(probe, backends, state)
    if not allow_crash and result.summary.startswith("probe crashed"):
        raise AssertionError(f"{probe.name}: {result.summary}")
    return ProbeRun(result)


def lab_backends(lab: dict[str, Any], **openstack: Any) -> Backends:
    """Backends from the lab's own healthd.yaml, optionally with the openstack section changed."""
    from pathlib import Path

    import healthd.config
    import healthd.registry

    config = healthd.config.load(Path(lab["healthd_yaml"]), healthd.registry.discover())
    backends = config.backends
    if openstack:
        changed = backends.openstack.model_copy(update=openstack)  # type: ignore[union-attr]
        backends = backends.model_copy(update={"openstack": changed})
    return Backends(backends)
