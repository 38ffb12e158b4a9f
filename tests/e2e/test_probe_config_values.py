"""config_values end to end on the loopback lab: the lab's own config files as its services load them.

Healthy, keystone.conf, placement.conf, glance-api.conf and the nova.conf of the controller and
of each compute give no WARNING or CRITICAL (the lab's `[api] auth_strategy = keystone`, removed
in nova 32.0.0, is INFO: nova 34 behaves that way anyway). The `config-typos` fault writes the
notes' typos into a nova file no process loads; `compute-bad-value` puts
`report_interval = abc` into lab-compute2's own file and restarts that nova-compute: it exits
at start, which the probe says before the restart.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from checks.config_values import M_FILE, M_PROBLEMS, ConfigValuesProbe
from healthd.model import Severity, Status
from tests.helpers.probes import make_backends, run_probe

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def lab_files(paths: dict[str, Any]) -> list[str]:
    files = [paths["keystone_conf"], paths["placement_conf"], paths["glance_conf"], paths["nova_conf"]]
    files += [p for p in paths["compute_confs"].values() if Path(p).exists()]
    return files


def by_option(findings: list[Any], severity: Severity) -> dict[str, str]:
    return {f.subject.split(" ", 1)[1]: f.message for f in findings if f.severity is severity}


def probe(files: list[str]) -> ConfigValuesProbe:
    return ConfigValuesProbe(ConfigValuesProbe.Settings(files=files))


@pytest.fixture(scope="module")
def lab_paths(request: pytest.FixtureRequest, lab_api: Any) -> dict[str, Any]:
    """The lab's paths. The file checks need only the files the lab's templates wrote (its first
    `up`), not its running services: with a lab dir whose files exist, they are used as they are
    (the shared MariaDB's connection limit can keep `up` from finishing); otherwise the lab is
    brought up."""
    handle = lab_api.Lab()
    paths = handle.state.get("paths") or {}
    if paths and all(Path(paths[k]).exists() for k in ("nova_conf", "keystone_conf", "placement_conf",
                                                       "glance_conf")):
        return paths
    return request.getfixturevalue("lab")["paths"]


@pytest.fixture(scope="module")
def nova_compute(lab_api: Any) -> Path:
    """The lab's real nova-compute 34.0.0 (its venv, installed if missing; no database needed)."""
    handle = lab_api.Lab()
    handle.ensure_venv()
    return handle.bin / "nova-compute"


@pytest.mark.parametrize(("extra", "option", "exits"), [
    ("[DEFAULT]\nreport_interval = abc\n", "report_interval", True),
    # the fake driver never reads virt_type: only log_opt_values at start does
    ("[libvirt]\nvirt_type = kvmm\n", "virt_type", True),
    ("[DEFAULT]\nlog_options = false\n[libvirt]\nvirt_type = kvmm\n", "virt_type", False),
])
def test_what_the_real_nova_compute_does(nova_compute: Path, tmp_path: Path, extra: str, option: str,
                                         exits: bool) -> None:
    """The nova-compute binary itself, started with a file holding an invalid value and a broker
    that refuses (127.0.0.1:1): it either exits at start with oslo.config's ConfigFileValueError
    (nova/cmd/compute.py main -> CONF.log_opt_values) or keeps running, retrying the broker, with
    the invalid value in its file. The probe's finding says which, before anyone restarts it."""
    conf = tmp_path / "nova-compute.conf"
    conf.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\ntransport_url = rabbit://u:p@127.0.0.1:1/\n"
                    f"compute_driver = fake.FakeDriver\n[oslo_concurrency]\nlock_path = {tmp_path}\n" + extra)
    proc = subprocess.Popen([str(nova_compute), "--config-file", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=40)
        exited = True
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        exited = False
    said = [line for line in out.splitlines() if "ConfigFileValueError" in line]
    print(f"nova-compute with {extra!r}: {'exit ' + str(proc.returncode) if exited else 'running after 40 s'}"
          f" {said[-1:] if said else ''}")
    assert exited is exits
    if exits:
        assert proc.returncode == 1 and any(f"Value for option {option}" in line for line in said)
        assert "log_opt_values" in out
    run = run_probe(probe([str(conf)]), make_backends())
    [finding] = run.about(option, Severity.CRITICAL)
    assert ("so the service exits at its next start" in finding.message) is exits


def test_the_labs_own_files_do_not_page(lab_paths: dict[str, Any]) -> None:
    files = lab_files(lab_paths)
    run = run_probe(probe(files), make_backends())
    assert run.status is Status.OK, [f.as_dict() for f in run.findings]
    assert [f for f in run.findings if f.severity >= Severity.WARNING] == []
    for path in files:
        assert run.value(M_FILE, file=path, project=Path(path).name.split(".")[0].split("-")[0]) == 1, path
        assert run.value(M_PROBLEMS, file=path, severity="critical") == 0
    assert "nova 34.0.0" in run.summary and "keystone 30.0.0" in run.summary
    assert "glance 33.0.0" in run.summary and "placement 16.0.0" in run.summary


def test_cost_on_the_labs_nova_conf(lab_paths: dict[str, Any]) -> None:
    """Load (import, option data, keystoneauth's plugins) and check time for the lab's nova.conf,
    in a fresh interpreter as the daemon starts."""
    code = (
        "import time; t0 = time.perf_counter()\n"
        "from checks.config_values import check_path\n"
        "from healthd.openstack import optdata\n"
        "t1 = time.perf_counter(); optdata.load('nova'); t2 = time.perf_counter()\n"
        f"r = check_path({lab_paths['nova_conf']!r}, 'nova'); t3 = time.perf_counter()\n"
        f"r = check_path({lab_paths['nova_conf']!r}, 'nova'); t4 = time.perf_counter()\n"
        "print(f'import={t1 - t0:.3f} data={t2 - t1:.3f} first={t3 - t2:.3f} again={t4 - t3:.3f} '"
        "f'values={r.checked}')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    print("config_values on the lab's nova.conf:", out.stdout.strip())
    figures = dict(item.split("=") for item in out.stdout.split())
    assert float(figures["again"]) < 1.0
    assert int(figures["values"]) > 30


def test_config_typos_fault(lab: dict[str, Any], lab_api: Any) -> None:
    info = lab_api.inject("config-typos")
    try:
        path = info["path"]
        run = run_probe(probe([path]), make_backends())
        assert run.status is Status.CRITICAL
        critical = by_option(run.findings, Severity.CRITICAL)
        assert "but found 'kvmm'" in critical["[libvirt] virt_type"]
        assert "'abc'" in critical["[DEFAULT] report_interval"]
        assert "did you mean 'password'" in critical["[placement] auth_type"]
        assert "[placement] password" in critical
        warning = by_option(run.findings, Severity.WARNING)
        assert "did you mean enabled_filters?" in warning["[filter_scheduler] enabled_filter"]
        assert "removed in nova 32.0.0" in warning["[DEFAULT] auth_strategy"]
        assert "[vnc] enabled" in warning["[DEFAULT] vnc_enabled"]
        assert info["password"] not in run.everything()
    finally:
        lab_api.revert("config-typos")
    assert not Path(info["path"]).exists()
    again = run_probe(probe([info["path"], *lab_files(lab["paths"])]), make_backends())
    assert [f.severity for f in again.findings if f.severity >= Severity.WARNING] == [Severity.WARNING]
    assert again.about("file does not exist")


def test_a_compute_restarted_with_an_invalid_value(lab: dict[str, Any], lab_api: Any) -> None:
    conf = lab["paths"]["compute_confs"]["lab-compute2"]
    try:
        info = lab_api.inject("compute-bad-value")
        print("nova-compute lab-compute2 with report_interval = abc:",
              "exited" if info["exited"] else "still running", info["log"])
        # what nova 34 really does: oslo.config raises ConfigFileValueError when the service reads
        # the option at start, and nova-compute exits
        assert info["exited"] is True
        assert any("report_interval" in line and "abc" in line for line in info["log"]), info["log"]
        run = run_probe(probe([conf]), make_backends())
        assert run.status is Status.CRITICAL
        [finding] = run.about("report_interval", Severity.CRITICAL)
        assert "invalid literal for int() with base 10: 'abc'" in finding.message
    finally:
        lab_api.revert("compute-bad-value")
    started = time.time()
    run = run_probe(probe([conf]), make_backends())
    assert [f for f in run.findings if f.severity >= Severity.WARNING] == []
    assert time.time() - started < 10


def test_a_compute_that_starts_with_an_invalid_value(lab: dict[str, Any], lab_api: Any) -> None:
    """With [DEFAULT] log_options = false nothing reads [libvirt] virt_type at start and the lab's
    fake driver never does: nova-compute runs with `virt_type = kvmm` in its file. The probe says
    so (CRITICAL all the same: the next start with log_options on, or a libvirt host, fails)."""
    conf = lab["paths"]["compute_confs"]["lab-compute2"]
    try:
        info = lab_api.inject("compute-wrong-value")
        print("nova-compute lab-compute2 with virt_type = kvmm, log_options = false:",
              "exited" if info["exited"] else "running")
        assert info["exited"] is False
        run = run_probe(probe([conf]), make_backends())
        [finding] = run.about("virt_type", Severity.CRITICAL)
        assert "but found 'kvmm'" in finding.message
        assert "[DEFAULT] log_options is off" in finding.message
    finally:
        lab_api.revert("compute-wrong-value")
    run = run_probe(probe([conf]), make_backends())
    assert [f for f in run.findings if f.severity >= Severity.WARNING] == []
