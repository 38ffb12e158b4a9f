"""The probe API: what a check declares and the context it runs in.

A probe says what it looks at and nothing about HTTP, Prometheus or threads:

    class MyProbe(Probe):
        name = "my_probe"
        description = "One line shown by `healthd list`."
        requires = ("db:nova_api",)
        metrics = (MetricSpec("healthd_my_thing", "What it measures.", ("host",)),)

        class Settings(ProbeSettings):
            warning_ratio: float = Field(0.8, gt=0, le=1)

        def run(self, ctx: Context, report: Report) -> None:
            with ctx.backends.database("nova_api", ctx) as db:
                ...
            report.metric("healthd_my_thing", 1, host="compute-1")
            report.critical("host compute-1", "what is wrong", "the fix")

Register it under the entry-point group ``healthd.checks``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from healthd.model import MetricSpec, Report

if TYPE_CHECKING:
    from healthd.backends import Backends


T = TypeVar("T")
R = TypeVar("R")


class BackendUnavailable(Exception):
    """A backend the probe needs is down or misconfigured: the probe is UNKNOWN."""


class ProbeSettings(BaseModel):
    """Per-probe config; subclasses add thresholds. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    interval: float | None = Field(None, gt=0, description="seconds between runs")
    timeout: float | None = Field(None, gt=0, description="seconds before the run is UNKNOWN")


@dataclass
class Context:
    """What a probe gets for one run."""

    backends: Backends
    timeout: float
    deadline: float  # time.monotonic() value after which the run is abandoned
    log: logging.Logger
    state: dict[str, Any] = field(default_factory=dict)  # kept between runs (counters, deltas)

    def remaining(self, cap: float | None = None) -> float:
        """Seconds left before the deadline (at least 0.1), optionally capped."""
        left = max(0.1, self.deadline - time.monotonic())
        return min(left, cap) if cap is not None else left

    def map_parallel(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        max_workers: int,
        on_deadline: Callable[[T], R],
    ) -> dict[T, R]:
        """fn(item) for every item, a few at a time, until the deadline.

        Items not done by then get on_deadline(item). fn must carry its own I/O
        timeouts: threads still running are left to end by themselves.
        """
        items = list(dict.fromkeys(items))
        if not items:
            return {}
        pool = ThreadPoolExecutor(max_workers=min(max_workers, len(items)), thread_name_prefix="probe-io")
        try:
            futures = {item: pool.submit(fn, item) for item in items}
            wait(futures.values(), timeout=self.remaining())
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return {
            item: fut.result() if fut.done() and not fut.cancelled() else on_deadline(item)
            for item, fut in futures.items()
        }


class Probe:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    default_interval: ClassVar[float] = 60.0
    default_timeout: ClassVar[float] = 30.0
    # Backends the probe needs: "openstack", "db:<role>", "cells", "memcached".
    requires: ClassVar[tuple[str, ...]] = ()
    metrics: ClassVar[tuple[MetricSpec, ...]] = ()
    Settings: ClassVar[type[ProbeSettings]] = ProbeSettings
    # Least privileges the probe needs, shown by `healthd list` and the README.
    privileges: ClassVar[str] = ""

    def __init__(self, settings: ProbeSettings | None = None) -> None:
        self.settings = settings if settings is not None else self.Settings()

    @property
    def interval(self) -> float:
        return self.settings.interval or self.default_interval

    @property
    def timeout(self) -> float:
        return self.settings.timeout or self.default_timeout

    def run(self, ctx: Context, report: Report) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
