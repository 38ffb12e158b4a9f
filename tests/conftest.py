"""Shared test setup: the pretend third-party probes in tests/plugins are installed
by putting their folder on sys.path (and PYTHONPATH for subprocesses)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

PLUGINS = str(Path(__file__).parent / "plugins")
if PLUGINS not in sys.path:
    sys.path.insert(0, PLUGINS)


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a healthd subprocess that sees the test plugins."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PLUGINS, env.get("PYTHONPATH", "")) if p)
    env.pop("NOTIFY_SOCKET", None)
    env.update(extra)
    return env


@pytest.fixture
def memcached_server():
    """A private memcached: (host:port, stop, start); start() reuses the same port."""
    from tests.helpers.servers import Memcached

    mc = Memcached().start()
    yield mc.server, mc.stop, mc.start
    mc.stop()


@pytest.fixture
def novadb():
    """Per-test databases made from the real schema dumps, dropped afterwards."""
    from tests.helpers.novadb import NovaDB

    db = NovaDB()
    try:
        yield db
    finally:
        db.close()
