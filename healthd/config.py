"""YAML configuration, validated strictly.

Every error names the file, the key path and the reason, and never echoes a
value (a value may be a password). Unknown keys are rejected by name, so a
typo cannot silently disable a threshold.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from healthd.dburl import parse_db_url
from healthd.redact import register_secret


class ProbeClass(Protocol):
    """What the config needs of a probe class: its settings model (healthd.probe.Probe has it)."""

    Settings: type[ProbeSettings]

DEFAULT_PATH = "/etc/healthd/healthd.yaml"


class ConfigError(Exception):
    """The config cannot be used; the message is safe to print."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProbeSettings(_Strict):
    """Per-probe config (``checks.<name>``); probes subclass it to add thresholds."""

    enabled: bool = True
    interval: float | None = Field(None, gt=0, description="seconds between runs")
    timeout: float | None = Field(None, gt=0, description="seconds before the run is UNKNOWN")


class Secret(_Strict):
    """A password given inline, from an environment variable or from a file."""

    password: str | None = Field(None, repr=False)
    password_env: str | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        given = [k for k in ("password", "password_env", "password_file") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"give only one of {', '.join(given)}")
        return self

    def resolve(self) -> str | None:
        if self.password_env:
            if self.password_env not in os.environ:
                raise ValueError(f"environment variable {self.password_env} is not set")
            value = os.environ[self.password_env]
        elif self.password_file:
            # ${CREDENTIALS_DIRECTORY}/name works with systemd's LoadCredential=.
            path = Path(os.path.expandvars(str(self.password_file)))
            try:
                value = path.read_text().strip()
            except OSError as exc:
                raise ValueError(f"cannot read password_file: {exc.strerror}") from None
        else:
            value = self.password
        register_secret(value)
        return value


class DatabaseConfig(Secret):
    url: str = Field(description="mysql+pymysql://user@host:port/database")
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(20.0, gt=0)

    @model_validator(mode="after")
    def _mysql_url(self) -> DatabaseConfig:
        parse_db_url(self.url)  # raises ValueError with a secret-free reason
        return self


def _flatten_groups(value: Any) -> Any:
    """``{cells: {cell1: {url: ...}}}`` -> ``{"cells.cell1": {url: ...}}``: one level of grouping.

    Probes name databases freely (``nova_api``, ``cells.cell1``); a mapping without ``url``
    is a group of named databases (e.g. overrides that a probe looks up by a prefix).
    """
    if not isinstance(value, Mapping):
        return value
    flat: dict[str, Any] = {}
    for name, entry in value.items():
        if isinstance(entry, Mapping) and "url" not in entry and entry and all(
            isinstance(v, Mapping) for v in entry.values()
        ):
            flat.update({f"{name}.{member}": cfg for member, cfg in entry.items()})
        elif isinstance(entry, Mapping) and not entry:
            continue  # an empty group (cells: {})
        else:
            flat[str(name)] = entry
    return flat


# Named MySQL/MariaDB databases: backends.databases.<name>, or .<group>.<name>.
DatabasesConfig = Annotated[dict[str, DatabaseConfig], BeforeValidator(_flatten_groups)]


class OpenStackConfig(_Strict):
    cloud: str | None = Field(None, description="cloud name in clouds.yaml")
    clouds_yaml: Path | None = None
    auth: dict[str, Any] | None = Field(None, repr=False, description="explicit auth block")
    auth_type: str | None = None
    region_name: str | None = None
    interface: Literal["public", "internal", "admin"] = "public"
    verify: bool | str = True
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(20.0, gt=0)

    @model_validator(mode="after")
    def _source(self) -> OpenStackConfig:
        if not self.cloud and not self.auth:
            raise ValueError("give either cloud (a name in clouds.yaml) or auth")
        for key, value in (self.auth or {}).items():
            if "password" in key or "secret" in key:
                register_secret(str(value))
        return self


class MemcachedConfig(_Strict):
    servers: list[str] = Field(default_factory=list, description="host:port")
    connect_timeout: float = Field(3.0, gt=0)
    timeout: float = Field(5.0, gt=0)


class BackendsConfig(_Strict):
    openstack: OpenStackConfig | None = None
    databases: DatabasesConfig = Field(default_factory=dict)
    memcached: MemcachedConfig = Field(default_factory=MemcachedConfig)
    # Timeout for probes that dial hosts themselves (AMQP handshakes, TCP checks).
    connect_timeout: float = Field(5.0, gt=0)


class ServerConfig(_Strict):
    listen_address: str = "127.0.0.1"
    port: int = Field(9730, ge=1, le=65535)
    web_config_file: Path | None = Field(
        None, description="TLS and basic auth, as in Prometheus exporter-toolkit"
    )


class SchedulerConfig(_Strict):
    workers: int = Field(4, ge=1, le=64, description="probes running at once")
    jitter: float = Field(0.1, ge=0, le=0.5, description="share of the interval")
    stall_seconds: float = Field(30.0, gt=0, description="/healthz 503 after this")


class LoggingConfig(_Strict):
    format: Literal["plain", "json"] = "plain"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Config(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    backends: BackendsConfig = Field(default_factory=BackendsConfig)
    checks: dict[str, Any] = Field(default_factory=dict)
    source: str = Field("<defaults>", exclude=True)
    # Filled by load(): the validated settings of every known probe.
    probe_settings: dict[str, ProbeSettings] = Field(default_factory=dict, exclude=True)


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _format(source: str, err: ValidationError, prefix: tuple[str, ...] = ()) -> ConfigError:
    lines = []
    for e in err.errors(include_input=False, include_url=False):
        loc = prefix + tuple(p for p in e["loc"] if not str(p).startswith("function-"))
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        msg = msg.removeprefix("Value error, ")
        lines.append(f"{source}: {_key_path(loc)}: {msg}")
    return ConfigError("\n".join(lines))


def parse(data: Any, source: str, probes: Mapping[str, ProbeClass]) -> Config:
    """Validate an already-loaded YAML document; report every error at once."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: (top level): expected a mapping of sections")
    errors: list[str] = []
    config = None
    try:
        config = Config.model_validate({**data, "source": source})
    except ValidationError as err:
        errors.append(str(_format(source, err)))
    checks = data.get("checks") or {}
    settings = _probe_settings(checks if isinstance(checks, dict) else {}, source, probes, errors)
    if errors or config is None:
        raise ConfigError("\n".join(errors))
    _resolve_secrets(config, source)
    return config.model_copy(update={"probe_settings": settings})


def _probe_settings(
    checks: Mapping[str, Any], source: str, probes: Mapping[str, ProbeClass], errors: list[str]
) -> dict[str, ProbeSettings]:
    settings: dict[str, ProbeSettings] = {}
    for name, raw in checks.items():
        if name not in probes:
            known = ", ".join(probes) or "none installed"
            errors.append(f"{source}: checks.{name}: unknown check (known: {known})")
            continue
        try:
            settings[name] = probes[name].Settings.model_validate(raw or {})
        except ValidationError as err:
            errors.append(str(_format(source, err, ("checks", name))))
    for name, cls in probes.items():
        settings.setdefault(name, cls.Settings())
    return settings


def _resolve_secrets(config: Config, source: str) -> None:
    for role, db in config.backends.databases.items():
        try:
            db.resolve()
        except ValueError as exc:
            raise ConfigError(f"{source}: backends.databases.{role}: {exc}") from None


def load(path: str | os.PathLike[str], probes: Mapping[str, ProbeClass]) -> Config:
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(unknown position)"
        raise ConfigError(f"{source}: {where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse(data, source, probes)


def default_path() -> str:
    return os.environ.get("HEALTHD_CONFIG", DEFAULT_PATH)
