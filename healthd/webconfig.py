"""TLS and basic auth for the HTTP server, configured like Prometheus exporters.

The file format is the exporter-toolkit ``--web.config.file`` format, so an
operator can reuse the file they already have for node_exporter::

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_ca_file: ca.crt            # optional: mutual TLS
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12
    basic_auth_users:
      prometheus: $2b$12$...            # bcrypt hash, never the password

Failure modes handled here: a typo'd key silently ignored (so TLS is not on
although the operator thinks it is) is rejected by name; an error message
never echoes a hash or password; bcrypt costs ~50-100 ms of CPU per check,
so a Prometheus scraping every 15 s would burn a core under many scrapers:
successful verifications are cached under a sha256 of user, password and
hash (a changed hash or password misses the cache).
Relative paths are resolved against the web config file's directory, as
exporter-toolkit does.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml


class WebConfigError(ValueError):
    """The web config file is unusable; the message names the file and the key."""


_TOP_KEYS = {"tls_server_config", "basic_auth_users"}
_TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version"}
# exporter-toolkit keys we know but do not implement: say so instead of "unknown".
_UNSUPPORTED = {
    "http_server_config": "HTTP/2 and custom headers are not supported by healthd",
    "rate_limit": "rate limiting is not supported by healthd",
    "cipher_suites": "cipher suites come from the system OpenSSL policy",
    "curve_preferences": "curve preferences come from the system OpenSSL policy",
    "prefer_server_cipher_suites": "cipher order comes from the system OpenSSL policy",
    "client_allowed_sans": "SAN filtering of client certificates is not supported",
    "cert": "inline certificates are not supported; use cert_file",
    "key": "inline keys are not supported; use key_file",
}
_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Python's ssl module cannot ask for a client certificate without verifying
# it, so the two "accept any certificate" modes of exporter-toolkit are refused.
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_CACHE_MAX = 1024
# A real bcrypt hash (of a random string) checked when the user is unknown, so
# that "no such user" costs the same time as "wrong password".
_DUMMY_HASH = bcrypt.hashpw(b"healthd-no-such-user", bcrypt.gensalt(rounds=10))


@dataclass
class BasicAuth:
    users: dict[str, bytes]
    _ok: set[bytes] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, user: str, password: str) -> bool:
        hashed = self.users.get(user)
        if hashed is None:
            bcrypt.checkpw(password.encode(), _DUMMY_HASH)  # equal cost, always False
            return False
        key = hashlib.sha256(b"\0".join((user.encode(), password.encode(), hashed))).digest()
        with self._lock:
            # The key is a sha256 of the secret, so the timing of a set lookup says
            # nothing about the password; bcrypt.checkpw compares in constant time.
            if key in self._ok:
                return True
        try:
            ok = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:
            return False
        if ok:
            with self._lock:
                if len(self._ok) >= _CACHE_MAX:
                    self._ok.clear()
                self._ok.add(key)
        return ok


@dataclass
class WebConfig:
    source: Path
    ssl_context: ssl.SSLContext | None = None
    auth: BasicAuth | None = None


def load(path: Path | str) -> WebConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise WebConfigError(f"{path}: cannot read web config: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise WebConfigError(f"{path}: not valid YAML: {_yaml_where(exc)}") from None
    if not isinstance(raw, dict):
        raise WebConfigError(f"{path}: must be a mapping with tls_server_config and/or basic_auth_users")
    _check_keys(path, "", raw, _TOP_KEYS)
    config = WebConfig(source=path)
    if raw.get("tls_server_config") is not None:
        config.ssl_context = _tls(path, _mapping(path, "tls_server_config", raw["tls_server_config"]))
    if raw.get("basic_auth_users") is not None:
        config.auth = _users(path, _mapping(path, "basic_auth_users", raw["basic_auth_users"]))
    return config


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    # Never the offending text: it may be a password hash.
    return f"line {mark.line + 1}" if mark else "parse error"


def _mapping(path: Path, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WebConfigError(f"{path}: {key} must be a mapping")
    return value


def _check_keys(path: Path, prefix: str, raw: dict[str, Any], allowed: set[str]) -> None:
    for key in raw:
        if key in allowed:
            continue
        name = f"{prefix}{key}"
        why = _UNSUPPORTED.get(str(key))
        hint = why or f"unknown key (allowed: {', '.join(sorted(allowed))})"
        raise WebConfigError(f"{path}: {name}: {hint}")


def _file(path: Path, key: str, value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise WebConfigError(f"{path}: tls_server_config.{key} must be a file path")
    resolved = (path.parent / value) if not Path(value).is_absolute() else Path(value)
    if not resolved.is_file():
        raise WebConfigError(f"{path}: tls_server_config.{key}: no such file {resolved}")
    return resolved


def _tls(path: Path, tls: dict[str, Any]) -> ssl.SSLContext:
    _check_keys(path, "tls_server_config.", tls, _TLS_KEYS)
    for key in ("cert_file", "key_file"):
        if key not in tls:
            raise WebConfigError(f"{path}: tls_server_config.{key} is required")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _version(path, "min_version", tls.get("min_version", "TLS12"))
    if "max_version" in tls:
        ctx.maximum_version = _version(path, "max_version", tls["max_version"])
    try:
        cert = _file(path, "cert_file", tls["cert_file"])
        ctx.load_cert_chain(cert, _file(path, "key_file", tls["key_file"]))
    except ssl.SSLError as exc:
        raise WebConfigError(f"{path}: tls_server_config.cert_file/key_file: {exc.reason}") from None
    _client_auth(path, ctx, tls)
    return ctx


def _version(path: Path, key: str, value: Any) -> ssl.TLSVersion:
    if value not in _VERSIONS:
        raise WebConfigError(f"{path}: tls_server_config.{key}: must be one of {', '.join(_VERSIONS)}")
    return _VERSIONS[value]


def _client_auth(path: Path, ctx: ssl.SSLContext, tls: dict[str, Any]) -> None:
    ca = tls.get("client_ca_file")
    default = "RequireAndVerifyClientCert" if ca else "NoClientCert"
    mode = tls.get("client_auth_type", default)
    if mode not in _CLIENT_AUTH:
        raise WebConfigError(
            f"{path}: tls_server_config.client_auth_type: {mode!s} is not supported "
            f"(use one of {', '.join(_CLIENT_AUTH)})"
        )
    if mode != "NoClientCert":
        if not ca:
            raise WebConfigError(f"{path}: tls_server_config.client_ca_file is required for {mode}")
        try:
            ctx.load_verify_locations(cafile=str(_file(path, "client_ca_file", ca)))
        except ssl.SSLError as exc:
            raise WebConfigError(f"{path}: tls_server_config.client_ca_file: {exc.reason}") from None
    ctx.verify_mode = _CLIENT_AUTH[mode]


def _users(path: Path, users: dict[Any, Any]) -> BasicAuth:
    parsed: dict[str, bytes] = {}
    for user, hashed in users.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise WebConfigError(f"{path}: basic_auth_users: user names must be non-empty and without ':'")
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            # Do not print the value: an operator may have pasted a password here.
            raise WebConfigError(f"{path}: basic_auth_users.{user}: must be a bcrypt hash ($2b$...)")
        parsed[user] = hashed.encode()
    return BasicAuth(parsed)
