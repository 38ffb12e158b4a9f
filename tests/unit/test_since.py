"""Findings keep the time their subject was first reported, across consecutive runs."""

from __future__ import annotations

from typing import Any

from healthd.model import MetricSpec, Report, Result, unknown
from healthd.scheduler import with_since

SPECS = (MetricSpec("healthd_t_value", "A value."),)


def run(started_at: float, *subjects: str) -> Result:
    report = Report("t", SPECS)
    for subject in subjects:
        report.critical(subject, "broken", "fix it")
    return report.result(started_at=started_at, duration=0.1)


def since(result: Result) -> dict[str, float]:
    return {f.subject: f.since for f in result.findings}


def test_a_finding_keeps_its_first_time_while_it_lasts() -> None:
    state: dict[str, Any] = {}
    assert since(with_since(run(100.0, "host a"), state)) == {"host a": 100.0}
    assert since(with_since(run(160.0, "host a", "host b"), state)) == {"host a": 100.0, "host b": 160.0}
    assert since(with_since(run(220.0, "host a", "host b"), state)) == {"host a": 100.0, "host b": 160.0}


def test_it_starts_again_after_the_finding_cleared() -> None:
    state: dict[str, Any] = {}
    with_since(run(100.0, "host a"), state)
    with_since(run(160.0), state)  # a completed run without it: cleared
    assert since(with_since(run(220.0, "host a"), state)) == {"host a": 220.0}


def test_a_run_that_could_not_tell_changes_nothing() -> None:
    state: dict[str, Any] = {}
    with_since(run(100.0, "host a"), state)
    assert with_since(unknown("t", "database down", 160.0), state).findings == ()
    assert since(with_since(run(220.0, "host a"), state)) == {"host a": 100.0}


def test_findings_sharing_a_subject_share_the_time_and_as_dict_shows_it() -> None:
    state: dict[str, Any] = {}
    with_since(run(100.0, "host a"), state)
    report = Report("t", SPECS)
    report.critical("host a", "one thing", "fix")
    report.warning("host a", "another", "fix")
    result = with_since(report.result(started_at=200.0, duration=0.1), state)
    assert [f.since for f in result.findings] == [100.0, 100.0]
    assert result.as_dict()["findings"][0]["since"] == 100.0
