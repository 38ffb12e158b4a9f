"""config/healthd.yaml validates and shows every option of every built-in check."""

from __future__ import annotations

from pathlib import Path

import yaml

from healthd.config import load
from healthd.registry import discover

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "healthd.yaml"


def test_example_validates(tmp_path, monkeypatch):
    for name in ("nova_api_db", "keystone_db"):
        (tmp_path / name).write_text("example-password\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("HEALTHD_PLACEMENT_DB_PASSWORD", "example-password")
    config = load(EXAMPLE, discover())
    assert config.server.port == 9730


def test_example_lists_every_setting_with_its_default():
    checks = yaml.safe_load(EXAMPLE.read_text())["checks"]
    for name, cls in discover().items():
        if not cls.__module__.startswith("checks."):
            continue
        assert name in checks, f"config/healthd.yaml lacks checks.{name}"
        for field in cls.Settings.model_fields:
            assert field in checks[name], f"config/healthd.yaml lacks checks.{name}.{field}"
        defaults = cls.Settings().model_dump()
        for key, value in checks[name].items():
            if key not in ("interval", "timeout"):
                assert value == defaults[key], f"checks.{name}.{key}: example differs from the default"
        assert checks[name]["interval"] == cls.default_interval
        assert checks[name]["timeout"] == cls.default_timeout
