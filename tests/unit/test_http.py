"""The HTTP server over real sockets on 127.0.0.1: routes, gzip, TLS, basic auth, redaction."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from healthd import webconfig
from healthd.config import ServerConfig
from healthd.exporter import Exposition
from healthd.http import HealthdServer, accepts_gzip, serve
from healthd.model import MetricSpec, Report
from healthd.redact import register_secret
from healthd.store import ResultStore
from tests.helpers.certs import issue

SPECS = (MetricSpec("healthd_web_up", "Web target answered.", ("target",)),)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Alive:
    def __init__(self) -> None:
        self.value = True

    def __call__(self) -> bool:
        return self.value


class Env:
    def __init__(self, web_config: Path | None = None, address: str = "127.0.0.1") -> None:
        self.store = ResultStore()
        self.store.reset([("web", SPECS)])
        self.exposition = Exposition(self.store)
        self.exposition.start()
        self.alive = Alive()
        config = ServerConfig(listen_address=address, port=free_port(), web_config_file=web_config)
        self.server: HealthdServer = serve(config, self.exposition, self.alive)
        self.probe_runs = 0

    def run_probe(self, **targets: float) -> None:
        """What the scheduler does: run the probe once and publish its result."""
        self.probe_runs += 1
        report = Report("web", SPECS)
        for target, value in targets.items():
            report.metric("healthd_web_up", value, target=target)
        self.store.publish(report.result(started_at=time.time(), duration=0.01))
        assert self.exposition.wait_for(self.store.snapshot().version)

    def get(
        self, path: str, headers: dict[str, str] | None = None, method: str = "GET", context=None
    ) -> tuple[int, dict[str, str], bytes]:
        host, port = self.server.server_address[:2]
        if context is not None:
            conn = http.client.HTTPSConnection(host, port, timeout=10, context=context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def close(self) -> None:
        self.server.shutdown()
        self.exposition.stop()


@pytest.fixture
def env() -> Iterator[Env]:
    env = Env()
    yield env
    env.close()


def test_metrics_served_from_cache_without_running_the_probe(env: Env) -> None:
    env.run_probe(a=1)
    renders = env.exposition.renders
    for _ in range(20):
        status, headers, body = env.get("/metrics")
        assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert env.probe_runs == 1  # scrapes never ran the probe...
    assert env.exposition.renders == renders  # ...nor rendered
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"healthd_web_up", "healthd_check_status"} <= names
    assert b'healthd_web_up{target="a"} 1.0' in body


def test_gzip_negotiation(env: Env) -> None:
    env.run_probe(a=1, b=0)
    _, plain_headers, plain = env.get("/metrics")
    assert "content-encoding" not in plain_headers
    status, headers, zipped = env.get("/metrics", {"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert headers["vary"] == "Accept-Encoding"
    assert gzip.decompress(zipped) == plain
    _, refused_headers, _ = env.get("/metrics", {"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused_headers


def test_accepts_gzip_parsing() -> None:
    assert accepts_gzip("gzip")
    assert accepts_gzip("deflate, gzip;q=0.5")
    assert accepts_gzip("*")
    assert not accepts_gzip("identity")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("")


def test_healthz_follows_the_scheduler(env: Env) -> None:
    assert env.get("/healthz")[:1] == (200,)
    assert env.get("/healthz")[2] == b"ok\n"
    env.alive.value = False
    status, _, body = env.get("/healthz")
    assert status == 503
    assert b"stalled" in body


def test_checks_json(env: Env) -> None:
    status, headers, body = env.get("/checks")
    assert status == 200
    assert headers["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc["status"] == "UNKNOWN"
    assert doc["checks"][0]["check"] == "web"
    assert doc["checks"][0]["summary"] == "not run yet"
    env.run_probe(a=1)
    doc = json.loads(env.get("/checks")[2])
    assert doc["status"] == "OK"
    assert doc["checks"][0]["completed"] is True


def test_index_404_and_head(env: Env) -> None:
    status, headers, body = env.get("/")
    assert status == 200
    assert b'href="/metrics"' in body
    assert env.get("/nope")[0] == 404
    assert env.get("/metrics/extra")[0] == 404
    assert env.get("/metrics?x=1")[0] == 200
    status, headers, body = env.get("/metrics", method="HEAD")
    assert status == 200
    assert body == b""
    assert int(headers["content-length"]) == len(env.exposition.current().body)


def test_keep_alive_serves_several_requests_on_one_connection(env: Env) -> None:
    host, port = env.server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        for path in ("/metrics", "/checks", "/healthz", "/metrics"):
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
        assert conn.sock is not None  # never reconnected
    finally:
        conn.close()


def test_a_silent_client_does_not_block_others(env: Env) -> None:
    host, port = env.server.server_address[:2]
    with socket.create_connection((host, port)) as silent:
        silent.sendall(b"GET /metr")  # and then nothing
        assert env.get("/metrics")[0] == 200


def test_shutdown_stops_listening(env: Env) -> None:
    host, port = env.server.server_address[:2]
    env.server.shutdown()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=2).close()


def test_listen_backlog_is_large() -> None:
    assert HealthdServer.request_queue_size >= 128
    assert HealthdServer.daemon_threads


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    try:
        env = Env(address="::1")
    except OSError as exc:
        pytest.skip(f"cannot bind ::1: {exc}")
    try:
        assert env.server.url.startswith("http://[::1]:")
        assert env.get("/healthz")[0] == 200
    finally:
        env.close()


def test_canary_secret_never_reaches_metrics_or_checks(env: Env) -> None:
    canary = "canary-Pw-7f3a9c1e"
    register_secret(canary)
    report = Report("web", SPECS)
    report.metric("healthd_web_up", 0, target=f"mysql://nova:{canary}@db1/nova")
    report.critical(f"db {canary}", f"login failed with password {canary}", f"reset {canary}")
    report.summary = f"connect failed: mysql://nova:{canary}@db1"
    env.store.publish(report.result(started_at=time.time(), duration=0.01))
    assert env.exposition.wait_for(env.store.snapshot().version)
    metrics = env.get("/metrics")[2]
    checks = env.get("/checks")[2]
    assert canary.encode() not in metrics
    assert canary.encode() not in checks
    assert canary.encode() not in gzip.decompress(env.get("/metrics", {"Accept-Encoding": "gzip"})[2])
    assert b"***" in checks and b"***" in metrics


# ----------------------------------------------------------------------------- TLS and basic auth


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


PASSWORD = "s3cret-scrape-pw"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture
def tls_env(tmp_path: Path) -> Iterator[tuple[Env, ssl.SSLContext]]:
    cert = issue(tmp_path)  # server.crt / server.key, signed by server-ca.crt
    # Relative paths: resolved against the web config's directory, as exporter-toolkit does.
    web = tmp_path / "web.yml"
    web.write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\n"
        f"basic_auth_users:\n  prometheus: '{HASH}'\n"
    )
    env = Env(web_config=web)
    yield env, ssl.create_default_context(cafile=str(cert.ca_file))
    env.close()


def test_tls_with_cert_from_a_trusted_ca(tls_env: tuple[Env, ssl.SSLContext]) -> None:
    env, trusted = tls_env
    assert env.server.url.startswith("https://127.0.0.1:")
    status, _, body = env.get("/metrics", basic("prometheus", PASSWORD), context=trusted)
    assert status == 200
    assert b"healthd_check_status" in body
    with pytest.raises(ssl.SSLCertVerificationError):
        env.get("/metrics", context=ssl.create_default_context())  # not trusted by the system store


def test_plain_http_to_tls_port_is_dropped(tls_env: tuple[Env, ssl.SSLContext]) -> None:
    env, trusted = tls_env
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        env.get("/metrics")
    assert env.get("/healthz", basic("prometheus", PASSWORD), context=trusted)[0] == 200


def test_basic_auth(tls_env: tuple[Env, ssl.SSLContext]) -> None:
    env, ctx = tls_env
    assert env.get("/metrics", basic("prometheus", PASSWORD), context=ctx)[0] == 200
    for headers in (
        basic("prometheus", "wrong"),
        basic("nobody", PASSWORD),
        {},
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Bearer abc"},
    ):
        status, resp_headers, _ = env.get("/metrics", headers, context=ctx)
        assert status == 401, headers
        assert resp_headers["www-authenticate"] == 'Basic realm="healthd"'
    # Every path is protected, /healthz included (as exporter-toolkit does).
    assert env.get("/healthz", context=ctx)[0] == 401
    assert env.get("/checks", context=ctx)[0] == 401


def test_auth_cache_only_remembers_successes() -> None:
    auth = webconfig.BasicAuth({"u": HASH.encode()})
    assert auth.check("u", PASSWORD)
    assert len(auth._ok) == 1
    assert auth.check("u", PASSWORD)  # served from the cache
    assert not auth.check("u", PASSWORD + "x")
    assert not auth.check("v", PASSWORD)
    assert len(auth._ok) == 1
    assert PASSWORD.encode() not in b"".join(auth._ok)  # keys are digests


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return path


def test_web_config_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "tls_server_config:\n  cert_file: a\n  key_file: b\n  cert_fiel: c\n")
    with pytest.raises(webconfig.WebConfigError) as err:
        webconfig.load(path)
    assert str(path) in str(err.value)
    assert "tls_server_config.cert_fiel" in str(err.value)
    with pytest.raises(webconfig.WebConfigError, match="basic_auth_user: unknown key"):
        webconfig.load(write(tmp_path, "basic_auth_user:\n  u: x\n"))
    with pytest.raises(webconfig.WebConfigError, match="http_server_config: HTTP/2"):
        webconfig.load(write(tmp_path, "http_server_config:\n  http2: false\n"))


def test_web_config_errors_never_echo_secrets(tmp_path: Path) -> None:
    with pytest.raises(webconfig.WebConfigError) as err:
        webconfig.load(write(tmp_path, f"basic_auth_users:\n  prometheus: {PASSWORD}\n"))
    assert "basic_auth_users.prometheus: must be a bcrypt hash" in str(err.value)
    assert PASSWORD not in str(err.value)
    with pytest.raises(webconfig.WebConfigError) as err:
        webconfig.load(write(tmp_path, f"basic_auth_users: [{PASSWORD}\n"))
    assert PASSWORD not in str(err.value)


def test_web_config_missing_files_and_bad_modes(tmp_path: Path) -> None:
    with pytest.raises(webconfig.WebConfigError, match="cert_file: no such file"):
        webconfig.load(write(tmp_path, "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n"))
    issue(tmp_path)
    base = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
    with pytest.raises(webconfig.WebConfigError, match="RequireAnyClientCert is not supported"):
        webconfig.load(write(tmp_path, base + "  client_auth_type: RequireAnyClientCert\n"))
    with pytest.raises(webconfig.WebConfigError, match="client_ca_file is required"):
        webconfig.load(write(tmp_path, base + "  client_auth_type: RequireAndVerifyClientCert\n"))
    with pytest.raises(webconfig.WebConfigError, match="min_version: must be one of"):
        webconfig.load(write(tmp_path, base + "  min_version: SSL3\n"))
    config = webconfig.load(write(tmp_path, base + "  client_ca_file: server-ca.crt\n"))
    assert config.ssl_context is not None
    assert config.ssl_context.verify_mode == ssl.CERT_REQUIRED


def test_mutual_tls(tmp_path: Path) -> None:
    cert = issue(tmp_path)  # one CA signs the server cert, also presented as the client cert
    web = write(
        tmp_path,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_ca_file: server-ca.crt\n",
    )
    env = Env(web_config=web)
    try:
        with_cert = ssl.create_default_context(cafile=str(cert.ca_file))
        with_cert.load_cert_chain(cert.cert_file, cert.key_file)
        assert env.get("/healthz", context=with_cert)[0] == 200
        without = ssl.create_default_context(cafile=str(cert.ca_file))
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            env.get("/healthz", context=without)
    finally:
        env.close()


def test_server_keeps_serving_after_failed_handshakes(tls_env: tuple[Env, ssl.SSLContext]) -> None:
    env, ctx = tls_env
    host, port = env.server.server_address[:2]
    for _ in range(3):
        with socket.create_connection((host, port)) as raw:
            raw.sendall(b"\x16\x03\x01garbage")
            time.sleep(0.01)
    assert env.get("/healthz", basic("prometheus", PASSWORD), context=ctx)[0] == 200
