"""The status page at /: what is on it, in what order, and what never is."""

from __future__ import annotations

import html.parser
from typing import Any

from healthd.model import MetricSpec, Report, unknown
from healthd.redact import register_secret
from healthd.scheduler import with_since
from healthd.statuspage import render
from healthd.store import ResultStore

SPECS = (MetricSpec("healthd_t_up", "Up."),)
NOW = 1_800_000_000.0


class Text(html.parser.HTMLParser):
    """The page as a person reads it (text only) and the well-formedness of its tags."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag not in ("meta", "br", "html", "head", "body", "link"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("html", "head", "body"):
            return
        assert self.open and self.open[-1] == tag, (tag, self.open[-5:])
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def page(store: ResultStore, now: float = NOW) -> tuple[str, str]:
    raw = render(store.snapshot(), now).decode()
    parser = Text()
    parser.feed(raw)
    assert parser.open == [], parser.open
    return raw, " ".join(" ".join(parser.text).split())


def store_with(*results: Any) -> ResultStore:
    store = ResultStore()
    store.reset([(r.check, SPECS) for r in results])
    for r in results:
        store.publish(r)
    return store


def test_findings_sorted_by_severity_with_subject_fix_and_how_long() -> None:
    state: dict[str, Any] = {}
    first = Report("nova_services", SPECS)
    first.critical("nova-compute on compute-2", "down while enabled", "systemctl restart nova-compute")
    with_since(first.result(NOW - 3 * 3600 - 720, 0.1), state)
    report = Report("nova_services", SPECS)
    report.warning("nova-scheduler on ctl-1", "one of two down", "restart it")
    report.critical("nova-compute on compute-2", "down while enabled", "systemctl restart nova-compute")
    report.info("memcached 10.0.0.5:11211", "note")
    result = with_since(report.result(NOW - 60, 0.5), state)
    raw, text = page(store_with(result))
    assert text.index("CRITICAL nova-compute on compute-2") < text.index("WARNING nova-scheduler on ctl-1")
    assert text.index("WARNING nova-scheduler") < text.index("INFO memcached 10.0.0.5:11211")
    assert "Fix: systemctl restart nova-compute" in text
    assert "failing for 3 h 12 min" in text  # first reported by the run 3 h 12 min before this one
    assert "failing for 60 s" in text  # the scheduler finding is new in this run
    assert '<header class="status-critical" data-status="CRITICAL">' in raw
    assert 'http-equiv=refresh' in raw and "width=device-width" in raw
    assert "<script" not in raw and "http://" not in raw and "https://" not in raw  # nothing fetched


def test_checks_table_puts_the_urgent_first_and_says_why_unknown() -> None:
    ok = Report("memcached", SPECS).result(NOW - 5, 0.02)
    down = unknown("cell_mapping", "database nova_api at healthd@db:3306/nova_api: timed out", NOW - 30, 15.0)
    _, text = page(store_with(ok, down))
    assert text.index("cell_mapping UNKNOWN") < text.index("memcached OK")
    assert "database nova_api at healthd@db:3306/nova_api: timed out" in text
    assert "30 s ago" in text and "15.00 s" in text
    assert "No findings." in text


def test_text_is_escaped_and_secrets_masked() -> None:
    canary = "canary-Page-pw-51f0"
    register_secret(canary)
    report = Report("service_config", SPECS)
    report.critical("<script>alert(1)</script>", f"login to rabbit://nova:{canary}@mq1 failed",
                    f"set the password {canary} again & restart")
    raw, text = page(store_with(report.result(NOW, 0.1)))
    assert "<script>" not in raw and "&lt;script&gt;" in raw
    assert canary not in raw
    assert "***" in text and "&amp; restart" in raw


def test_a_check_not_run_yet_is_shown_as_such() -> None:
    store = ResultStore()
    store.reset([("catalog", SPECS)])
    raw, text = page(store)
    assert "catalog UNKNOWN not run yet" in text
    assert 'data-status="UNKNOWN"' in raw
