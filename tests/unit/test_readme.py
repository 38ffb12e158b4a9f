"""The README's metrics table is what the exporter really exports."""

from __future__ import annotations

import re
from pathlib import Path

from healthd.docs import exported_metrics, readme_table
from healthd.registry import discover

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `(?P<name>[a-z_]+)` \| (?P<type>\w+) \| (?P<labels>[^|]*) \|")


def builtin_probes():
    # The README documents healthd's own checks, not the test plugins.
    return {name: cls for name, cls in discover().items() if cls.__module__.startswith("checks.")}


def test_readme_metrics_table_matches_the_exposition():
    documented = {}
    for line in readme_table(README.read_text()).splitlines():
        if m := ROW.match(line):
            labels = tuple(sorted(re.findall(r"`(\w+)`", m["labels"])))
            documented[m["name"]] = (m["type"], labels)
    exported = {
        name: (kind, labels) for name, (kind, labels, _) in exported_metrics(builtin_probes()).items()
    }
    assert documented == exported, "regenerate with: .venv/bin/python -m healthd.docs README.md"


def test_every_builtin_check_is_documented():
    probes = builtin_probes()
    assert set(probes) == {"catalog", "cell_mapping", "memcached", "service_config",
                           "nova_services", "disk_overcommit", "placement_allocations",
                           "cell_connections", "flavor_filters", "image_properties",
                           "api_backends", "db_grants", "config_values", "rabbit_queues"}
    text = README.read_text()
    for name in probes:
        assert f"`{name}`" in text
        assert (README.parent / "docs" / "probes" / f"{name}.md").exists()
