"""deploy/systemd/healthd.service and the template healthd@.service: systemd accepts them,
and they keep the daemon supervised and confined.

The unit is what keeps healthd alive in production: Type=notify plus a
watchdog restarts a daemon whose scheduler loop hung (a hung monitor looks
healthy from outside while nothing is checked), Restart=on-failure brings back
a crashed one, and the sandboxing keeps a read-only monitor read-only.
`systemd-analyze verify` checks syntax and directives with systemd's own
parser. It insists that ExecStart exists on this machine, so a copy whose
ExecStart points at the venv's healthd is verified; everything else is the
shipped file. The template (one daemon per region: healthd@<name> reads
/etc/healthd/<name>.yaml) is verified through an instance name, which is how
systemd loads it, so %i is expanded the way it will be on a host.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "healthd.service"
TEMPLATE = ROOT / "deploy" / "systemd" / "healthd@.service"
INSTANCE = "healthd@region-one.service"
HEALTHD = ROOT / ".venv" / "bin" / "healthd"
# Messages systemd-analyze prints that depend on this machine, not the unit.
BENIGN = (
    re.compile(r"Failed to resolve (user|group) .?healthd"),  # no healthd account on the test machine
    re.compile(r"Cannot add dependency job .* ignoring"),
    re.compile(r"^\s*$"),
)
HARDENING = (
    "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
    "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups", "RestrictSUIDSGID",
    "RestrictNamespaces", "LockPersonality", "MemoryDenyWriteExecute", "CapabilityBoundingSet",
    "RestrictAddressFamilies", "SystemCallArchitectures",
)


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze not found (package systemd)")
    return path


def service_section(unit: Path = UNIT) -> dict[str, list[str]]:
    """[Service] keys with every value (systemd allows repeated keys)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def local_copy(tmp_path: Path, unit: Path = UNIT) -> Path:
    text = unit.read_text()
    assert re.search(r"(?m)^ExecStart=/opt/healthd/venv/bin/healthd ", text)
    copy = tmp_path / unit.name
    copy.write_text(re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={HEALTHD}", text))
    return copy


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    copy = local_copy(tmp_path)
    done = subprocess.run([systemd_analyze(), "verify", str(copy)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert complaints(copy) == []


def test_the_shipped_file_differs_only_by_the_missing_binary(tmp_path: Path) -> None:
    """Verifying the file as shipped fails for one reason only: /opt/healthd is not installed here."""
    assert all("/opt/healthd/venv/bin/healthd" in line for line in complaints(UNIT)), complaints(UNIT)


def complaints(unit: Path) -> list[str]:
    done = subprocess.run([systemd_analyze(), "verify", str(unit)],
                          capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines()
            if line.strip() and not any(p.search(line) for p in BENIGN)]


def test_verify_catches_a_broken_directive(tmp_path: Path) -> None:
    """systemd-analyze exits 0 on ignored directives, so the test must read its output: show it does."""
    copy = local_copy(tmp_path)
    copy.write_text(copy.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    assert any("restart specifier" in line for line in complaints(copy))


def test_supervision() -> None:
    svc = service_section()
    assert svc["Type"] == ["notify"]
    assert svc["NotifyAccess"] == ["main"]
    assert svc["Restart"] == ["on-failure"]
    assert int(svc["WatchdogSec"][0]) > 0
    assert svc["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "run" in svc["ExecStart"][0].split()
    assert svc["User"] == ["healthd"]


def test_hardening() -> None:
    svc = service_section()
    missing = [k for k in HARDENING if k not in svc]
    assert missing == []
    assert svc["NoNewPrivileges"] == ["yes"]
    assert svc["ProtectSystem"] == ["strict"]
    assert svc["CapabilityBoundingSet"] == [""]  # no capabilities at all


def test_secrets_come_as_credentials() -> None:
    """Database passwords reach the daemon through LoadCredential, never in Environment=."""
    svc = service_section()
    assert svc.get("LoadCredential")
    assert not any(re.search(r"(?i)pass|secret", env) for env in svc.get("Environment", []))


def test_install_section() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(re.sub(r"(?ms)^\[Service\].*?(?=^\[Install\])", "", UNIT.read_text()))
    assert parser["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in parser["Unit"]["After"]


# -- the template: one daemon per region or cloud ------------------------------------------

# What may differ between the template and the main unit: what names the instance.
PER_INSTANCE = {"ExecStart", "LoadCredential", "SyslogIdentifier", "InaccessiblePaths"}


def test_template_instance_verifies(tmp_path: Path) -> None:
    """systemd loads healthd@region-one.service from healthd@.service, expands %i, and accepts it."""
    local_copy(tmp_path, TEMPLATE)
    instance = tmp_path / INSTANCE
    assert not instance.exists()  # systemd-analyze finds the template by the instance's name
    done = subprocess.run([systemd_analyze(), "verify", str(instance)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert complaints(instance) == []


def test_template_shipped_differs_only_by_the_missing_binary(tmp_path: Path) -> None:
    shutil.copy(TEMPLATE, tmp_path / TEMPLATE.name)
    found = complaints(tmp_path / INSTANCE)
    assert found, "the verification did not load the instance"
    assert all(f"{INSTANCE}: Command /opt/healthd/venv/bin/healthd " in line for line in found), found


def test_template_verify_catches_a_broken_directive(tmp_path: Path) -> None:
    copy = local_copy(tmp_path, TEMPLATE)
    copy.write_text(copy.read_text().replace("ProtectSystem=strict", "ProtectSystem=very"))
    assert any("protect system value" in line for line in complaints(tmp_path / INSTANCE))


def test_template_reads_the_instance_config() -> None:
    svc = service_section(TEMPLATE)
    argv = svc["ExecStart"][0].split()
    assert argv[argv.index("--config") + 1] == "/etc/healthd/%i.yaml"
    assert argv[-1] == "run"
    assert "--listen" not in argv  # each config names its own port
    unit = TEMPLATE.read_text()
    assert re.search(r"(?m)^AssertPathExists=/etc/healthd/%i\.yaml$", unit)


def test_template_is_as_supervised_and_confined_as_the_main_unit() -> None:
    """Every directive of healthd.service but the per-instance ones, with the same values."""
    main = {k: v for k, v in service_section(UNIT).items() if k not in PER_INSTANCE}
    template = {k: v for k, v in service_section(TEMPLATE).items() if k not in PER_INSTANCE}
    assert template == main
    unit_lines = [line for line in TEMPLATE.read_text().splitlines() if not line.startswith("#")]
    assert "[Install]" in unit_lines and "WantedBy=multi-user.target" in unit_lines


def test_template_credentials_are_per_instance() -> None:
    """Passwords come from the instance's own folder, as credentials; never in Environment=."""
    svc = service_section(TEMPLATE)
    assert svc["LoadCredential"], "no credentials"
    assert all(value.split(":", 1)[1].startswith("/etc/healthd/credentials/%i")
               for value in svc["LoadCredential"])
    assert not any(re.search(r"(?i)pass|secret", env) for env in svc.get("Environment", []))
    # and no instance reads the credentials folder directly: only its own, through systemd
    assert "-/etc/healthd/credentials" in svc["InaccessiblePaths"]
