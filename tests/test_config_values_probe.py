"""config_values through the engine (healthd.scheduler execute): files on disk, no server at all.

The probe reads files only: it runs with no backend configured (its least privilege: read access
to the files, no database grant, no network). A file that cannot be read is its "backend down":
UNKNOWN with the reason, and WARNING when other files were checked.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from checks.config_values import M_FILE, M_PROBLEMS, ConfigValuesProbe
from healthd.model import Severity, Status
from tests.helpers.probes import make_backends, run_probe

CANARY = "Canary-cv-$f3a917"


def probe(*files: object, **settings: object) -> ConfigValuesProbe:
    return ConfigValuesProbe(ConfigValuesProbe.Settings(files=list(files), **settings))


def test_healthy_then_broken_file_without_any_backend(tmp_path: Path) -> None:
    conf = tmp_path / "nova.conf"
    conf.write_text("[DEFAULT]\nreport_interval = 10\nmy_ip = 10.0.0.5\n[vnc]\nserver_listen = $my_ip\n"
                    "[placement]\nauth_type = password\nusername = nova\npassword = Pw-ok-1\n")
    backends = make_backends()
    run = run_probe(probe(str(tmp_path / "*.conf")), backends)
    assert run.status is Status.OK, run.findings
    assert run.value(M_FILE, file=str(conf), project="nova") == 1
    assert "data: nova 34.0.0" in run.summary

    conf.write_text(conf.read_text().replace("= 10\n", "= 10s\n").replace("Pw-ok-1", CANARY))
    broken = run_probe(probe(str(conf)), backends)
    assert broken.status is Status.CRITICAL
    assert {f.subject for f in broken.findings} == {f"{conf} [DEFAULT] report_interval",
                                                   f"{conf} [placement] password"}
    assert broken.value(M_PROBLEMS, file=str(conf), severity="critical") == 2
    assert CANARY not in broken.everything() and "f3a917" not in broken.everything()


def test_no_readable_file_is_unknown_with_the_reason(tmp_path: Path) -> None:
    backends = make_backends()
    none = run_probe(probe(), backends)
    assert none.status is Status.UNKNOWN and "no service config files configured" in none.summary
    missing = run_probe(probe(str(tmp_path / "nova.conf")), backends)
    assert missing.status is Status.UNKNOWN
    assert "nova.conf: file does not exist" in missing.summary
    (tmp_path / "dir.conf").mkdir()
    good = tmp_path / "keystone.conf"
    good.write_text("[DEFAULT]\ndebug = true\n")
    mixed = run_probe(probe(str(tmp_path / "dir.conf"), str(good), str(tmp_path / "none-*.conf")), backends)
    assert mixed.status is Status.WARNING
    assert [f.severity for f in mixed.about("dir.conf")] == [Severity.WARNING]
    assert mixed.about("none-*.conf")[0].message.startswith("matches no file")


def test_a_file_the_healthd_user_cannot_read(tmp_path: Path) -> None:
    conf = tmp_path / "nova.conf"
    conf.write_text("[DEFAULT]\ndebug = true\n")
    conf.chmod(0o600)
    pid = os.fork()
    if pid == 0:  # a child that drops to nobody, as healthd runs unprivileged
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            run = run_probe(probe(str(conf)), make_backends())
            code = 0 if run.status is Status.UNKNOWN and "permission denied" in run.summary else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


def test_cost_of_a_large_nova_conf(tmp_path: Path) -> None:
    """One read and two parses per file: a 130-value kolla-style nova.conf in well under a second."""
    from tests.unit.test_config_values import KOLLA

    for i in range(20):
        (tmp_path / f"nova-{i}.conf").write_text(KOLLA["nova.conf"])
    p, backends = probe(str(tmp_path / "nova-*.conf")), make_backends()
    run_probe(p, backends)  # the data and keystoneauth's plugin list, loaded once per process
    started = time.monotonic()
    run = run_probe(p, backends)
    elapsed = time.monotonic() - started
    assert run.status is Status.OK, run.findings  # INFO only
    assert elapsed < 10, elapsed
    print(f"config_values: 20 kolla nova.conf files in {elapsed * 1000:.0f} ms")


def test_the_deadline_ends_the_run_with_unknown(tmp_path: Path) -> None:
    """Many files and a deadline shorter than reading them: UNKNOWN naming the setting, no crash."""
    from tests.unit.test_config_values import KOLLA

    for i in range(200):
        (tmp_path / f"nova-{i:03}.conf").write_text(KOLLA["nova.conf"])
    run = run_probe(probe(str(tmp_path / "nova-*.conf"), timeout=0.3), make_backends())
    assert run.status is Status.UNKNOWN, run.summary
    assert "raise checks.config_values.timeout" in run.summary
