"""Every alert links a runbook section that exists, and every section is reachable.

A runbook_url whose anchor does not exist lands on-call at the top of a long
page in the middle of the night. GitHub derives anchors from headings
(lower case, punctuation dropped, spaces to hyphens, -1/-2 for repeats); this
test computes them the same way from docs/runbooks.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RULES = ROOT / "deploy" / "prometheus" / "healthd-alerts.yml"
PREFIX = "https://github.com/healthd/healthd/blob/main/docs/runbooks.md#"


def github_anchor(heading: str) -> str:
    text = re.sub(r"[`*]|<[^>]+>", "", heading.strip()).lower()  # markup is not part of the slug
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#{1,6}\s+(.*)", line)
        if not m:
            continue
        slug = github_anchor(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def alerts() -> dict[str, str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r["annotations"]["runbook_url"] for g in doc["groups"] for r in g["rules"]}


def section(name: str) -> str:
    text = RUNBOOKS.read_text()
    m = re.search(rf"^### {name}\n(.*?)(?=^#{{2,3}} |\Z)", text, re.M | re.S)
    assert m, f"no section for {name}"
    return m.group(1)


def test_anchor_rules() -> None:
    assert github_anchor("NovaComputeDown") == "novacomputedown"
    assert github_anchor("Nova cells: `discover_hosts`!") == "nova-cells-discover_hosts"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


@pytest.mark.parametrize(("alert", "url"), sorted(alerts().items()))
def test_runbook_url_anchor_exists(alert: str, url: str) -> None:
    assert url.startswith(PREFIX)
    assert url.removeprefix(PREFIX) in anchors(RUNBOOKS.read_text()), f"{alert}: {url}"


@pytest.mark.parametrize("alert", sorted(alerts()))
def test_section_says_meaning_confirm_fix(alert: str) -> None:
    body = section(alert)
    for part in ("**Meaning.**", "**Confirm.**", "**Fix.**"):
        assert part in body, f"{alert}: missing {part}"


def test_every_alert_section_belongs_to_an_alert() -> None:
    documented = set(re.findall(r"^### (\w+)$", RUNBOOKS.read_text(), re.M))
    assert documented == set(alerts())


def test_confirm_steps_use_the_real_tools() -> None:
    """The failure modes are confirmed with the commands an operator has at hand."""
    expected = {
        "OpenStackCatalogDuplicateService": "openstack service list",
        "NovaComputeHostUnmapped": "nova-manage cell_v2 list_hosts",
        "MemcachedConnectionsNearLimit": "echo stats | nc",
        "NovaComputeDown": "openstack compute service list",
        "NovaComputeDiskFreeNegative": "FROM compute_nodes",
    }
    for alert, command in expected.items():
        assert command in section(alert), alert
