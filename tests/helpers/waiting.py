"""Polling for tests that drive real processes: wait until something is true, or fail with logs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def wait_for(what: str, probe: Callable[[], Any], timeout: float, logs: list[Path]) -> Any:
    """probe() until it returns something truthy (OSError counts as not yet); fail naming
    ``what`` with the tail of each log when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.5)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{tails}")
