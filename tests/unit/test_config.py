"""Config validation: errors name the file and the key, and never echo a value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from healthd import registry
from healthd.config import ConfigError, load
from tests.conftest import subprocess_env

CANARY = "canary-Pa55-wOrd-7731"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "healthd.yaml"
    path.write_text(text)
    return path


def errors_for(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text), registry.discover())
    return str(err.value)


def test_defaults_load(tmp_path):
    config = load(write(tmp_path, ""), registry.discover())
    assert config.server.port == 9730
    assert config.probe_settings["t_echo"].enabled


def test_typo_in_a_section_key_is_named(tmp_path):
    msg = errors_for(tmp_path, "server:\n  listen_adress: 0.0.0.0\n")
    assert f"{tmp_path}/healthd.yaml: server.listen_adress: unknown key" in msg


def test_typo_in_a_check_threshold_is_named(tmp_path):
    msg = errors_for(tmp_path, "checks:\n  t_echo:\n    valeu: 3\n")
    assert "checks.t_echo.valeu: unknown key" in msg


def test_unknown_check_lists_the_known_ones(tmp_path):
    msg = errors_for(tmp_path, "checks:\n  t_ehco: {}\n")
    assert "checks.t_ehco: unknown check" in msg and "t_echo" in msg


def test_types_and_ranges(tmp_path):
    msg = errors_for(tmp_path, "server:\n  port: 70000\nchecks:\n  t_echo:\n    interval: -1\n")
    assert "server.port:" in msg and "checks.t_echo.interval:" in msg


def test_password_never_echoed(tmp_path):
    text = f"backends:\n  databases:\n    nova_api:\n      url: 'postgres://u:{CANARY}@h/db'\n"
    msg = errors_for(tmp_path, text)
    assert "backends.databases.nova_api" in msg and "mysql scheme" in msg
    assert CANARY not in msg


def test_two_password_sources_rejected(tmp_path):
    text = ("backends:\n  databases:\n    keystone:\n      url: mysql+pymysql://ks@127.0.0.1/keystone\n"
            f"      password: {CANARY}\n      password_env: KS_PW\n")
    msg = errors_for(tmp_path, text)
    assert "only one of password, password_env" in msg and CANARY not in msg


def test_password_file_and_env(tmp_path, monkeypatch):
    secret = tmp_path / "pw"
    secret.write_text(CANARY + "\n")
    monkeypatch.setenv("HD_TEST_PW", CANARY)
    text = ("backends:\n  databases:\n"
            f"    keystone: {{url: 'mysql+pymysql://ks@127.0.0.1/keystone', password_file: {secret}}}\n"
            "    nova_api: {url: 'mysql+pymysql://n@127.0.0.1/nova_api', password_env: HD_TEST_PW}\n"
            "    placement: {url: 'mysql+pymysql://p@127.0.0.1/placement', password_env: HD_MISSING}\n")
    msg = errors_for(tmp_path, text)
    assert "backends.databases.placement: environment variable HD_MISSING is not set" in msg
    assert CANARY not in msg


def test_invalid_yaml_names_the_line(tmp_path):
    msg = errors_for(tmp_path, "server:\n  port: [1\n")
    assert "line" in msg and "invalid YAML" in msg


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "healthd.cli", *args], capture_output=True, text=True,
                          env=subprocess_env(), timeout=60)


def test_validate_config_exit_codes(tmp_path):
    good = write(tmp_path, "checks:\n  t_sleep: {enabled: false}\n")
    ok = run_cli("--config", str(good), "validate-config")
    assert ok.returncode == 0, ok.stderr
    assert "t_sleep" not in ok.stdout.split("enabled:")[1]
    bad = write(tmp_path, "checks:\n  t_echo:\n    intreval: 5\n")
    res = run_cli("--config", str(bad), "validate-config")
    assert res.returncode == 2
    assert "checks.t_echo.intreval: unknown key" in res.stderr


def test_missing_config_file(tmp_path):
    res = run_cli("--config", str(tmp_path / "nope.yaml"), "validate-config")
    assert res.returncode == 2 and "nope.yaml: cannot read" in res.stderr


@pytest.mark.parametrize("order", ["option first", "verb first"])
def test_options_work_before_or_after_the_verb(tmp_path, order):
    good = write(tmp_path, "checks:\n  t_sleep: {enabled: false}\n  t_boom: {enabled: false}\n"
                 "  t_mcping: {enabled: false}\n")
    for verb in (["validate-config"], ["check", "t_echo"]):
        args = ["--config", str(good), "--log-level", "ERROR"]
        argv = [*args, *verb] if order == "option first" else [*verb, *args]
        res = run_cli(*argv)
        assert res.returncode == 0, (argv, res.stderr)
    shown = run_cli("check", "--config", str(good), "t_echo", "--format", "json")
    assert json.loads(shown.stdout)["checks"][0]["check"] == "t_echo"


def test_an_option_after_the_verb_wins_and_defaults_do_not_override(tmp_path, monkeypatch):
    from healthd.cli import build_parser

    args = build_parser().parse_args(["--config", "/a.yaml", "check"])
    assert args.config == "/a.yaml"  # the subcommand's own --config did not reset it to None
    args = build_parser().parse_args(["--config", "/a.yaml", "check", "--config", "/b.yaml"])
    assert args.config == "/b.yaml"
