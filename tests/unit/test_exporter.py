"""The exposition joined from the result store, parsed back with prometheus_client."""

from __future__ import annotations

import dataclasses
import gzip
import json
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from healthd.exporter import SELF_METRICS, Exposition, SpecError, checks_document, validate_specs
from healthd.model import MetricSpec, MetricType, Report, Result, Status, unknown
from healthd.store import ResultStore

DISK = (
    MetricSpec("healthd_disk_free_bytes", "Free disk per host", ("host", "cell")),
    MetricSpec("healthd_disk_errors_total", "Disk errors seen", ("host",), MetricType.COUNTER),
    MetricSpec("healthd_disk_version_info", "Disk tool version", ("version",), MetricType.INFO),
    MetricSpec("healthd_disk_hosts", "Hosts checked"),
)
NET = (MetricSpec("healthd_net_up", "Network reachable", ("target",)),)


def parse(body: bytes) -> dict[str, list]:
    """family name (as parsed, i.e. without _total/_info) -> samples."""
    return {fam.name: fam.samples for fam in text_string_to_metric_families(body.decode())}


def value(families: dict[str, list], family: str, **labels: str) -> float:
    matches = [s.value for s in families[family] if s.labels == labels]
    assert len(matches) == 1, (family, labels, families[family])
    return matches[0]


def completed(check: str, specs: tuple[MetricSpec, ...], fill) -> Result:
    report = Report(check, specs)
    fill(report)
    return report.result(started_at=time.time(), duration=0.25)


@pytest.fixture
def store() -> ResultStore:
    store = ResultStore()
    store.reset([("disk", DISK), ("net", NET)])
    return store


@pytest.fixture
def exposition(store: ResultStore):
    exp = Exposition(store)
    exp.start()
    yield exp
    exp.stop()


def publish(store: ResultStore, exposition: Exposition, result: Result) -> dict[str, list]:
    store.publish(result)
    assert exposition.wait_for(store.snapshot().version)
    return parse(exposition.current().body)


def test_self_metrics_for_every_probe_before_first_run(exposition: Exposition) -> None:
    fams = parse(exposition.current().body)
    for check in ("disk", "net"):
        assert value(fams, "healthd_check_status", check=check) == Status.UNKNOWN
        assert value(fams, "healthd_check_up", check=check) == 0
        assert value(fams, "healthd_check_last_run_timestamp_seconds", check=check) == 0
        for severity in ("warning", "critical", "info"):
            assert value(fams, "healthd_check_findings", check=check, severity=severity) == 0
    assert value(fams, "healthd_build_info", version=__import__("healthd").__version__) == 1
    # Declared families exist (HELP/TYPE) but carry no samples before a run.
    assert fams["healthd_disk_free_bytes"] == []
    assert fams["healthd_net_up"] == []
    checks = json.loads(exposition.current().checks_json)
    assert [c["summary"] for c in checks["checks"]] == ["not run yet", "not run yet"]


def test_help_says_values_are_cached(exposition: Exposition) -> None:
    text = exposition.current().body.decode()
    assert "# HELP healthd_check_status Status of the last run" in text
    assert "cached between runs" in text
    help_line = "# HELP healthd_disk_free_bytes Free disk per host. Cached from the last run of check disk."
    assert help_line in text


def test_probe_samples_after_a_published_result(store: ResultStore, exposition: Exposition) -> None:
    def fill(r: Report) -> None:
        r.metric("healthd_disk_free_bytes", 1e9, host="compute-1", cell="cell1")
        r.metric("healthd_disk_free_bytes", 0, host="compute-2", cell="cell1")
        r.metric("healthd_disk_errors_total", 3, host="compute-2")
        r.metric("healthd_disk_version_info", 1, version="2.1")
        r.metric("healthd_disk_hosts", 2)
        r.critical("host compute-2", "disk full", "free space on compute-2")

    fams = publish(store, exposition, completed("disk", DISK, fill))
    assert value(fams, "healthd_disk_free_bytes", host="compute-1", cell="cell1") == 1e9
    assert value(fams, "healthd_disk_errors", host="compute-2") == 3  # parsed name drops _total
    assert value(fams, "healthd_disk_version_info", version="2.1") == 1  # info is exposed as a gauge
    assert value(fams, "healthd_disk_hosts") == 2
    assert value(fams, "healthd_check_status", check="disk") == Status.CRITICAL
    assert value(fams, "healthd_check_up", check="disk") == 1
    assert value(fams, "healthd_check_duration_seconds", check="disk") == 0.25
    assert value(fams, "healthd_check_last_run_timestamp_seconds", check="disk") > 0
    assert value(fams, "healthd_check_findings", check="disk", severity="critical") == 1
    assert value(fams, "healthd_check_findings", check="disk", severity="warning") == 0
    # The other probe is untouched.
    assert value(fams, "healthd_check_status", check="net") == Status.UNKNOWN
    assert "# TYPE healthd_disk_errors_total counter" in exposition.current().body.decode()


def test_unknown_run_hides_the_samples_of_an_older_completed_run(
    store: ResultStore, exposition: Exposition
) -> None:
    publish(store, exposition, completed("net", NET, lambda r: r.metric("healthd_net_up", 1, target="a")))
    fams = publish(store, exposition, unknown("net", "backend down: connection refused", time.time()))
    assert fams["healthd_net_up"] == []
    assert value(fams, "healthd_check_status", check="net") == Status.UNKNOWN
    assert value(fams, "healthd_check_up", check="net") == 0
    assert value(fams, "healthd_check_last_run_timestamp_seconds", check="net") > 0


def test_duplicates_never_reach_the_exposition(store: ResultStore, exposition: Exposition) -> None:
    def fill(r: Report) -> None:
        r.metric("healthd_net_up", 1, target="a")
        r.metric("healthd_net_up", 0, target="b")
        r.metric("healthd_net_up", 0, target="a")  # the same series again: the last value wins

    fams = publish(store, exposition, completed("net", NET, fill))  # the parser raises on invalid text
    assert [(s.labels, s.value) for s in fams["healthd_net_up"]] == [
        ({"target": "a"}, 0), ({"target": "b"}, 0)
    ]
    assert value(fams, "healthd_exporter_duplicate_samples") == 1
    fams = publish(store, exposition, unknown("disk", "down", time.time()))
    assert value(fams, "healthd_exporter_duplicate_samples") == 1  # counted once per result


def test_undeclared_metric_or_wrong_labels_fail_loudly() -> None:
    report = Report("net", NET)
    with pytest.raises(ValueError, match="undeclared metric healthd_net_nope"):
        report.metric("healthd_net_nope", 1)
    with pytest.raises(ValueError, match="needs labels"):
        report.metric("healthd_net_up", 1, host="a")


def test_label_values_are_escaped(store: ResultStore, exposition: Exposition) -> None:
    nasty = 'we"ird\\host\nname'
    fams = publish(
        store, exposition, completed("net", NET, lambda r: r.metric("healthd_net_up", 1, target=nasty))
    )
    assert value(fams, "healthd_net_up", target=nasty) == 1


def test_removed_probe_disappears(store: ResultStore, exposition: Exposition) -> None:
    store.reset([("net", NET)])
    assert exposition.wait_for(store.snapshot().version)
    fams = parse(exposition.current().body)
    assert "healthd_disk_free_bytes" not in fams
    assert {s.labels["check"] for s in fams["healthd_check_status"]} == {"net"}


def test_a_published_result_is_joined_not_rendered_again(store: ResultStore, exposition: Exposition) -> None:
    disk = completed("disk", DISK, lambda r: r.metric("healthd_disk_hosts", 7))
    publish(store, exposition, disk)
    publish(store, exposition, completed("net", NET, lambda r: r.metric("healthd_net_up", 1, target="x")))
    body = exposition.current().body
    assert disk.exposition in body  # the probe's own bytes, as Report made them
    assert body.count(b"# TYPE healthd_disk_hosts gauge") == 1


def test_gzip_is_the_body(store: ResultStore, exposition: Exposition) -> None:
    for i in range(3):
        result = completed("net", NET, lambda r, i=i: r.metric("healthd_net_up", i, target="x"))
        publish(store, exposition, result)
        rendered = exposition.current()
        assert gzip.decompress(rendered.gzipped) == rendered.body


def fill_everything(r: Report) -> None:
    for i in range(50):
        r.metric("healthd_disk_free_bytes", i * 1.5e10, host=f'h"{i}\\\n', cell="c1")
        r.metric("healthd_disk_errors_total", i, host=f"h{i}")
    r.metric("healthd_disk_free_bytes", float("inf"), host="inf", cell="c")
    r.metric("healthd_disk_free_bytes", float("nan"), host="nan", cell="c")
    r.metric("healthd_disk_free_bytes", -0.000001, host="neg", cell="c")
    for i, v in enumerate((1234567.0, 123456.0, 0.1, 1e-7, -1e300, 1e22, 12345678, float("-inf"))):
        r.metric("healthd_disk_free_bytes", v, host=f"v{i}", cell="c")
    r.metric("healthd_disk_version_info", 1, version="9")
    r.metric("healthd_disk_hosts", 123456789012)


def test_report_text_is_byte_identical_to_prometheus_client() -> None:
    """The one renderer writes what prometheus_client's generate_latest writes for the same data."""
    result = completed("disk", DISK, fill_everything)
    families = []
    for spec in DISK:
        help_text = f"{spec.help}. Cached from the last run of check disk."
        labels = list(spec.labels)
        if spec.type is MetricType.COUNTER:
            family = CounterMetricFamily(spec.name, help_text, labels=labels)
        elif spec.type is MetricType.INFO:
            family = InfoMetricFamily(spec.name.removesuffix("_info"), help_text, labels=labels)
        else:
            family = GaugeMetricFamily(spec.name, help_text, labels=labels)
        for sample in result.samples:
            if sample.name == spec.name:
                values = [dict(sample.labels)[k] for k in spec.labels]
                if spec.type is MetricType.INFO:
                    family.add_metric(values, {})
                else:
                    family.add_metric(values, sample.value)
        families.append(family)

    class Fixed:
        def collect(self):
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    assert result.exposition == generate_latest(registry)


def test_published_result_shares_nothing_mutable_with_its_report() -> None:
    report = Report("net", NET)
    report.metric("healthd_net_up", 1, target="a")
    report.warning("target a", "flapping")
    result = report.result(1.0, 0.1)
    report.metric("healthd_net_up", 0, target="b")
    report.critical("target b", "down")
    assert [f.subject for f in result.findings] == ["target a"]
    assert [dict(s.labels)["target"] for s in result.samples] == ["a"]
    assert b'target="b"' not in result.exposition
    assert isinstance(result.findings, tuple) and isinstance(result.samples, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.status = Status.CRITICAL  # type: ignore[misc]


def test_checks_document_shape(store: ResultStore) -> None:
    store.publish(completed("disk", DISK, lambda r: r.warning("host c1", "80% full", "clean /var/tmp")))
    doc = json.loads(checks_document(store.snapshot()))
    assert doc["status"] == "UNKNOWN"  # net has not run: UNKNOWN outranks WARNING
    disk = next(c for c in doc["checks"] if c["check"] == "disk")
    assert disk["status"] == "WARNING"
    assert disk["findings"] == [
        {"severity": "warning", "subject": "host c1", "message": "80% full", "remediation": "clean /var/tmp",
         "since": None}
    ]
    assert set(disk) >= {"summary", "completed", "last_run", "duration_seconds"}


def test_metric_name_collision_across_probes_is_rejected() -> None:
    other = (MetricSpec("healthd_net_up", "same name, other probe"),)
    with pytest.raises(SpecError, match=r"healthd_net_up.*already declared by probe net"):
        validate_specs({"net": NET, "other": other})


@pytest.mark.parametrize("name", sorted(SELF_METRICS))
def test_collision_with_self_metrics_is_rejected(name: str) -> None:
    kind = MetricType.COUNTER if name.endswith("_total") else MetricType.GAUGE
    with pytest.raises(SpecError, match="already declared by healthd itself"):
        validate_specs({"p": (MetricSpec(name, "x", (), kind),)})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (MetricSpec("healthd_p_errors", "x", (), MetricType.COUNTER), "must end in _total"),
        (MetricSpec("healthd_p_errors_total", "x"), "ends in _total but is a gauge"),
        (MetricSpec("healthd_p_version", "x", (), MetricType.INFO), "must end in _info"),
        (MetricSpec("healthd_p_latency_sum", "x"), "reserved"),
        (MetricSpec("healthd p", "x"), "invalid metric name"),
        (MetricSpec("nova_p", "x"), "invalid metric name"),
        (MetricSpec("healthd_p", "x", ("host", "host")), "repeats a label"),
        (MetricSpec("healthd_p", "x", ("__name",)), "invalid label name"),
    ],
)
def test_badly_named_specs_are_rejected(spec: MetricSpec, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        validate_specs({"p": (spec,)})


def test_valid_specs_pass() -> None:
    validate_specs({"disk": DISK, "net": NET})


# --------------------------------------------------------------------------- forked rendering, gzip


def many_disk_samples(report: Report) -> None:
    for i in range(300):
        report.metric("healthd_disk_free_bytes", i * 1.5e9, host=f"compute-{i}", cell=f"cell{i % 3}")
        report.metric("healthd_disk_errors_total", i, host=f"compute-{i}")
    report.metric("healthd_disk_hosts", 300)


def test_check_interval_is_exported_and_survives_publishes(store: ResultStore) -> None:
    store.reset([("disk", DISK), ("net", NET)], {"disk": 300, "net": 30.5, "removed": 10})
    exp = Exposition(store)
    exp.start()
    try:
        fams = publish(store, exp, completed("net", NET, lambda r: r.metric("healthd_net_up", 1, target="a")))
        assert value(fams, "healthd_check_interval_seconds", check="disk") == 300
        assert value(fams, "healthd_check_interval_seconds", check="net") == 30.5
        assert len(fams["healthd_check_interval_seconds"]) == 2  # only loaded checks
        store.reset([("net", NET)])  # a reload without intervals (e.g. an old caller): no stale values
        assert exp.wait_for(store.snapshot().version)
        assert parse(exp.current().body)["healthd_check_interval_seconds"] == []
    finally:
        exp.stop()
