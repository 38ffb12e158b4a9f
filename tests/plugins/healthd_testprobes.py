"""Probes of a pretend third-party package, registered through entry points.

The engine tests load them exactly as healthd loads any plugin: this folder
holds a dist-info with an entry_points.txt, and tests put it on sys.path
(PYTHONPATH for the daemon subprocesses).
"""

from __future__ import annotations

import time

from pydantic import Field

from healthd.model import MetricSpec, Report
from healthd.probe import BackendUnavailable, Context, Probe, ProbeSettings


class EchoProbe(Probe):
    """Emits a metric and, on request, a finding carrying a given text."""

    name = "t_echo"
    description = "test probe: emits one metric and optional findings"
    default_interval = 0.5
    default_timeout = 2.0
    metrics = (MetricSpec("healthd_t_echo_value", "A test value.", ("item",)),)

    class Settings(ProbeSettings):
        value: float = 1.0
        critical_message: str = ""

    def run(self, ctx: Context, report: Report) -> None:
        report.metric("healthd_t_echo_value", self.settings.value, item="a")
        ctx.state["runs"] = ctx.state.get("runs", 0) + 1
        if self.settings.critical_message:
            report.critical("item a", self.settings.critical_message, "no fix needed")


class SleepProbe(Probe):
    """Blocks like a call to a hung peer would."""

    name = "t_sleep"
    description = "test probe: sleeps longer than its timeout"
    default_interval = 0.5
    default_timeout = 0.5

    class Settings(ProbeSettings):
        seconds: float = Field(3.0, ge=0)

    def run(self, ctx: Context, report: Report) -> None:
        time.sleep(self.settings.seconds)


class BoomProbe(Probe):
    name = "t_boom"
    description = "test probe: raises"
    default_interval = 0.5
    default_timeout = 2.0

    def run(self, ctx: Context, report: Report) -> None:
        raise RuntimeError("boom while reading mysql+pymysql://nova:canary-s3cret@db/nova")


class MemcachedPingProbe(Probe):
    """Needs a backend: every configured memcached must answer `version`."""

    name = "t_mcping"
    description = "test probe: asks each configured memcached for its version"
    default_interval = 0.3
    default_timeout = 2.0
    requires = ("memcached",)
    metrics = (MetricSpec("healthd_t_mcping_up", "1 if the server answered.", ("server",)),)

    def run(self, ctx: Context, report: Report) -> None:
        for server in ctx.memcached_servers():
            with ctx.memcached(server) as client:  # a refused connection raises Refused: UNKNOWN
                try:
                    client.version()
                except OSError as exc:
                    raise BackendUnavailable(f"memcached {server}: {exc}") from None
            report.metric("healthd_t_mcping_up", 1, server=server)
