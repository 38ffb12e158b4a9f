"""Shared test setup.

- The pretend third-party probes in tests/plugins are installed by putting their
  folder on sys.path (and PYTHONPATH for subprocesses).
- Markers by folder: tests/unit/ holds the fast tests (plain data, no server, no
  root); tests/e2e/ is marked ``e2e`` (the lab); every other test is marked
  ``backend`` (real MariaDB, RabbitMQ, memcached, promtool...). So
  ``scripts/test -m "not e2e and not backend"`` runs exactly tests/unit.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PLUGINS = str(Path(__file__).parent / "plugins")
if PLUGINS not in sys.path:
    sys.path.insert(0, PLUGINS)


UNIT = Path(__file__).parent / "unit"
E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if E2E in path.parents:
            item.add_marker(pytest.mark.e2e)
        elif UNIT not in path.parents:
            item.add_marker(pytest.mark.backend)


@contextlib.contextmanager
def _secrets_registered_inside_stay_inside() -> Iterator[None]:
    """The redactor is process-wide: a password one test registers ("guest") must not mask
    another test's expected text. What is registered inside the block is forgotten after it."""
    from healthd import redact

    saved = (dict(redact._secrets), redact._by_length)
    yield
    with redact._lock:
        redact._secrets.clear()
        redact._secrets.update(saved[0])
        redact._by_length = saved[1]
        redact._redact_cached.cache_clear()


@pytest.fixture(autouse=True, scope="module")
def _secrets_of_this_module_only() -> Iterator[None]:
    with _secrets_registered_inside_stay_inside():  # module fixtures' secrets end with the module
        yield


@pytest.fixture(autouse=True)
def _secrets_of_this_test_only() -> Iterator[None]:
    with _secrets_registered_inside_stay_inside():
        yield


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
