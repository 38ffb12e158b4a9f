"""api_backends against a real HAProxy (Debian's package) on free loopback ports.

HAProxy balances a "keystone" VIP over two private HTTP servers of this test that answer as
keystone 30 does without a token: GET / -> 300 with the versions document, GET /healthcheck
-> 200 "OK" (oslo.middleware's Healthcheck), 503 "DISABLED BY FILE" while the
disable_by_file file exists. One of them may speak TLS with a certificate from a test CA
that expires tomorrow. Faults are made the real way: a backend process stopped (its port
closed), HAProxy stopped (the VIP down), a server put in MAINT through HAProxy's stats
socket, a peer that accepts and never answers, Keystone's port with nobody listening.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from checks.api_backends import ApiBackendsProbe
from healthd.model import Severity, Status
from tests.helpers import certs, hung
from tests.helpers.probes import ProbeRun, make_backends, run_probe
from tests.helpers.servers import free_port
from tests.helpers.waiting import wait_for

# Debian's package (scripts/setup.sh installs it); missing, the tests fail rather than skip.
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

VERSIONS = {"versions": {"values": [{"id": "v3.14", "status": "stable"}]}}


class ApiServer:
    """A private HTTP(S) server answering like keystone's unauthenticated paths."""

    def __init__(self, tmp: Path, tls: certs.ServerCert | None = None) -> None:
        self.port = free_port()
        self.tls = tls
        self.disable_file = tmp / f"disable-{self.port}"
        self.requests: list[str] = []
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(f"{self.path} token={self.headers.get('X-Auth-Token')}")
                if self.path.rstrip("/").endswith("/healthcheck"):
                    if server.disable_file.exists():
                        self._send(503, b"DISABLED BY FILE", "text/plain")
                    else:
                        self._send(200, b"OK", "text/plain")
                elif self.path in ("/", ""):
                    self._send(300, json.dumps(VERSIONS).encode(), "application/json")
                else:
                    self._send(401, b'{"error": "unauthorized"}', "application/json")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda *args: None  # HAProxy's checks hang up early: routine
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                         name=f"api-server-{self.port}").start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


class HAProxy:
    """Debian's haproxy in the foreground (-db) with a config of our own; stopped after."""

    def __init__(self, tmp: Path, servers: list[ApiServer], tls_servers: tuple[str, ...] = ()) -> None:
        self.tmp = tmp
        self.vip = free_port()
        self.stats_port = free_port()
        self.socket = tmp / "haproxy.sock"  # level admin: the test's own `set server` commands
        self.user_socket = tmp / "haproxy-user.sock"  # level user: what healthd needs (read-only)
        self.password = "st4ts-" + os.urandom(4).hex()
        lines = []
        for i, srv in enumerate(servers, 1):
            ssl_opts = " ssl verify none" if srv.address in tls_servers else ""
            lines.append(f"    server ks{i} {srv.address} check{ssl_opts}")
        self.config = tmp / "haproxy.cfg"
        self.config.write_text(
            "global\n"
            f"    stats socket {self.socket} mode 600 level admin\n"
            f"    stats socket {self.user_socket} mode 600 level user\n"
            "defaults\n"
            "    mode http\n"
            "    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n"
            "frontend keystone_vip\n"
            f"    bind 127.0.0.1:{self.vip}\n"
            "    default_backend keystone_api\n"
            "backend keystone_api\n"
            "    option httpchk GET /healthcheck\n"
            "    default-server inter 200 fall 2 rise 1\n"
            + "\n".join(lines) + "\n"
            "listen stats\n"
            f"    bind 127.0.0.1:{self.stats_port}\n"
            "    stats enable\n    stats uri /stats\n    stats show-legends\n"
            f"    stats auth healthd:{self.password}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> HAProxy:
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        wait_for("haproxy listening", lambda: _open(self.vip) and self.socket.exists(), 10, [])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def command(self, line: str) -> str:
        return _command(self.socket, line)

    def status(self, server: str) -> str:
        for row in self.command("show stat").splitlines():
            fields = row.split(",")
            if len(fields) > 17 and fields[0] == "keystone_api" and fields[1] == server:
                return fields[17]
        return ""


def _command(path: Path, line: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.sendall(line.encode() + b"\n")
        return b"".join(iter(lambda: s.recv(65536), b"")).decode()


def _open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def wait_until_status(lb: HAProxy, server: str, prefix: str) -> None:
    wait_for(f"HAProxy marks {server} {prefix}", lambda: lb.status(server).startswith(prefix), 10, [])


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[list[ApiServer], HAProxy]]:
    servers = [ApiServer(tmp_path).start(), ApiServer(tmp_path).start()]
    lb = HAProxy(tmp_path, servers).start()
    try:
        wait_until_status(lb, "ks1", "UP")
        wait_until_status(lb, "ks2", "UP")
        yield servers, lb
    finally:
        lb.stop()
        for srv in servers:
            srv.stop()


def probe_for(lb: HAProxy, **extra: object) -> ApiBackendsProbe:
    settings = {
        "catalog": False,
        "endpoints": [{"service": "identity", "url": f"http://127.0.0.1:{lb.vip}/v3"}],
        "haproxy": [{"name": "lb1", "socket": str(lb.socket), "backends": {"keystone_api": "identity"}}],
        "request_timeout": 2.0,
        **extra,
    }
    return ApiBackendsProbe(ApiBackendsProbe.Settings(timeout=10, **settings))


def run(probe: ApiBackendsProbe) -> ProbeRun:
    return run_probe(probe, make_backends())


def test_healthy_vip_and_backends_both_views(lab: tuple[list[ApiServer], HAProxy]) -> None:
    servers, lb = lab
    result = run(probe_for(lb))
    assert result.status is Status.OK, result.findings
    url = f"http://127.0.0.1:{lb.vip}/v3"
    assert result.value("healthd_api_backends_endpoint_up", service="identity", region="", url=url) == 1
    for i, srv in enumerate(servers, 1):
        assert result.value("healthd_api_backends_backend_up", service="identity", address=srv.address) == 1
        assert result.value("healthd_api_backends_haproxy_server_up", lb="lb1", backend="keystone_api",
                            server=f"ks{i}") == 1
        latency = result.value("healthd_api_backends_backend_latency_seconds", service="identity",
                               address=srv.address)
        assert latency is not None and 0 < latency < 2
        # keystone's /healthcheck, asked without a token
        assert "/healthcheck token=None" in srv.requests
    assert result.value("healthd_api_backends_service_backends_up", service="identity") == 2
    assert "1 of 1 endpoints and 2 of 2 backends answering" in result.summary


def test_stats_page_csv_with_auth(lab: tuple[list[ApiServer], HAProxy]) -> None:
    servers, lb = lab
    source = {"name": "lb1", "url": f"http://127.0.0.1:{lb.stats_port}/stats", "username": "healthd",
              "password": lb.password, "backends": {"keystone_api": "identity"}}
    result = run(probe_for(lb, haproxy=[source]))
    assert result.status is Status.OK, result.findings
    assert result.value("healthd_api_backends_haproxy_up", lb="lb1") == 1
    # `stats show-legends`: the page lists the servers' addresses, so they are probed too
    address = servers[1].address
    assert result.value("healthd_api_backends_backend_up", service="identity", address=address) == 1
    assert result.value("healthd_api_backends_haproxy_server_up", lb="lb1", backend="keystone_api",
                        server="ks2") == 1
    assert lb.password not in result.everything()
    wrong = {**source, "password": "not-the-password"}
    result = run(probe_for(lb, haproxy=[wrong]))
    assert result.value("healthd_api_backends_haproxy_up", lb="lb1") == 0
    assert result.about("401", Severity.WARNING)
    assert "not-the-password" not in result.everything()


def test_one_backend_stopped_is_a_warning_and_both_views_say_so(lab: tuple[list[ApiServer], HAProxy]) -> None:
    servers, lb = lab
    servers[1].stop()  # the keystone process on the second host is gone
    wait_until_status(lb, "ks2", "DOWN")
    result = run(probe_for(lb))
    assert result.status is Status.WARNING, result.findings
    [finding] = result.about(servers[1].address, Severity.WARNING)
    assert "connection refused" in finding.message
    assert "capacity lost" in finding.message
    assert "keystone_api/ks2: DOWN" in finding.message  # HAProxy's view, next to healthd's
    address = servers[1].address
    assert result.value("healthd_api_backends_backend_up", service="identity", address=address) == 0
    assert result.value("healthd_api_backends_haproxy_server_up", lb="lb1", backend="keystone_api",
                        server="ks2") == 0
    assert result.value("healthd_api_backends_service_backends_up", service="identity") == 1
    assert result.value("healthd_api_backends_endpoint_up", service="identity", region="",
                        url=f"http://127.0.0.1:{lb.vip}/v3") == 1
    # revert: the process is back, HAProxy and healthd see it
    servers[1].start()  # same port
    wait_until_status(lb, "ks2", "UP")
    assert run(probe_for(lb)).status is Status.OK


def test_all_backends_down_and_the_vip_fails(lab: tuple[list[ApiServer], HAProxy]) -> None:
    servers, lb = lab
    for srv in servers:
        srv.stop()
    wait_until_status(lb, "ks1", "DOWN")
    wait_until_status(lb, "ks2", "DOWN")
    result = run(probe_for(lb))
    assert result.status is Status.CRITICAL
    [service] = result.about("service identity", Severity.CRITICAL)
    assert "all 2 backend(s)" in service.message
    [vip] = result.about(f"endpoint http://127.0.0.1:{lb.vip}/v3", Severity.CRITICAL)
    assert "503" in vip.message  # HAProxy's own answer with no server left
    assert "None of its 2 backend(s) answer" in vip.message


def test_vip_down_while_backends_answer(lab: tuple[list[ApiServer], HAProxy]) -> None:
    servers, lb = lab
    url = f"http://127.0.0.1:{lb.vip}/v3"
    static = [{"service": "identity", "servers": [s.address for s in servers]}]
    lb.stop()  # the load balancer is gone; the keystones run on
    result = run(probe_for(lb, haproxy=[], static_backends=static))
    assert result.status is Status.CRITICAL
    [vip] = result.about(f"endpoint {url}", Severity.CRITICAL)
    assert "connection refused" in vip.message
    assert "2 of 2 backend(s) answer directly: the load balancer, keepalived or the VIP is at fault" \
        in vip.message
    assert "haproxy keepalived" in vip.remediation
    assert result.value("healthd_api_backends_endpoint_up", service="identity", region="", url=url) == 0
    assert not result.about("service identity")
    # with HAProxy's socket configured too, the unreadable stats are their own warning
    result = run(probe_for(lb, static_backends=static))
    assert result.about("load balancer lb1", Severity.WARNING)
    assert result.value("healthd_api_backends_haproxy_up", lb="lb1") == 0


def test_maintenance_on_purpose_is_info(lab: tuple[list[ApiServer], HAProxy]) -> None:
    servers, lb = lab
    lb.command("set server keystone_api/ks2 state maint")
    servers[1].stop()  # the operator works on the host
    result = run(probe_for(lb))
    assert result.status is Status.OK, result.findings
    [info] = result.about(servers[1].address, Severity.INFO)
    assert "MAINT" in info.message and "on purpose" in info.message
    assert result.value("healthd_api_backends_backend_maintenance", service="identity",
                        address=servers[1].address) == 1
    assert result.value("healthd_api_backends_haproxy_server_maintenance", lb="lb1", backend="keystone_api",
                        server="ks2") == 1


def test_healthcheck_disabled_by_file_is_info(lab: tuple[list[ApiServer], HAProxy]) -> None:
    servers, lb = lab
    servers[0].disable_file.write_text("")  # disable_by_file: the operator's maintenance switch
    wait_until_status(lb, "ks1", "DOWN")  # HAProxy's httpchk sees the 503 and takes it out
    result = run(probe_for(lb))
    assert result.status is Status.OK, result.findings
    [info] = result.about(servers[0].address, Severity.INFO)
    assert "DISABLED BY FILE" in info.message
    assert result.value("healthd_api_backends_backend_maintenance", service="identity",
                        address=servers[0].address) == 1


def test_tls_backend_certificate_about_to_expire(tmp_path: Path) -> None:
    cert = certs.issue(tmp_path, prefix="ks-tls")  # valid until tomorrow
    plain, tls = ApiServer(tmp_path).start(), ApiServer(tmp_path, cert).start()
    lb = HAProxy(tmp_path, [plain, tls], tls_servers=(tls.address,)).start()
    try:
        wait_until_status(lb, "ks2", "UP")
        mapping = {"keystone_api": {"service": "identity", "scheme": "http"}}
        source = {"name": "lb1", "socket": str(lb.socket), "backends": mapping}
        static = [{"service": "identity", "servers": [tls.address], "scheme": "https"}]
        result = run(probe_for(lb, haproxy=[source], static_backends=static, ca_file=str(cert.ca_file)))
        # the TLS backend answers (chain verified with the test CA), its certificate expires tomorrow
        assert result.value("healthd_api_backends_backend_up", service="identity", address=tls.address) == 1
        expiry = result.value("healthd_api_backends_backend_cert_expiry_timestamp_seconds",
                              service="identity", address=tls.address)
        assert expiry is not None and 0 < expiry - time.time() < 86400 + 60
        [crit] = result.about(f"backend {tls.address}", Severity.CRITICAL)
        assert "expires in 1.0 days" in crit.message or "expires in 0.9 days" in crit.message
        assert result.status is Status.CRITICAL
        # a longer-lived warning threshold only: still CRITICAL under 7 days; with critical at
        # 0.5 days it is a WARNING
        result = run(probe_for(lb, haproxy=[source], static_backends=static, ca_file=str(cert.ca_file),
                               cert_critical_days=0.5))
        assert result.about(f"backend {tls.address}", Severity.WARNING)
        # without the cloud's CA the chain does not verify: the backend is not up for healthd
        result = run(probe_for(lb, haproxy=[source], static_backends=static))
        [warn] = result.about(f"backend {tls.address}", Severity.WARNING)
        assert "not trusted" in warn.message or "certificate verify failed" in warn.message
        assert result.value("healthd_api_backends_backend_cert_expiry_timestamp_seconds",
                            service="identity", address=tls.address) == expiry  # read all the same
    finally:
        lb.stop()
        plain.stop()
        tls.stop()


def test_hung_backend_gives_a_result_within_the_timeout(lab: tuple[list[ApiServer], HAProxy]) -> None:
    _, lb = lab
    with hung.trickle(hung.HTTP) as peer, hung.silent() as mute:
        static = [{"service": "identity", "servers": [peer.server, mute.server]}]
        probe = probe_for(lb, static_backends=static, request_timeout=1.5)
        t0 = time.monotonic()
        result = run(probe)
        elapsed = time.monotonic() - t0
        assert elapsed < 4, elapsed
        assert result.status is Status.WARNING, result.findings
        assert result.about(peer.server, Severity.WARNING), result.findings
        assert "no complete answer within 1.5 s" in result.about(peer.server)[0].message
        assert result.about(mute.server, Severity.WARNING)
        assert peer.accepted and mute.accepted
        # the run's deadline bounds it too, with a request_timeout longer than the run
        probe = ApiBackendsProbe(ApiBackendsProbe.Settings(
            timeout=2, catalog=False, request_timeout=30, static_backends=static,
            endpoints=[{"service": "identity", "url": f"http://127.0.0.1:{lb.vip}/v3"}]))
        t0 = time.monotonic()
        result = run(probe)
        assert time.monotonic() - t0 < 4
        # only the two hung servers as backends this time: all of identity's backends are down
        [service] = result.about("service identity", Severity.CRITICAL)
        assert "all 2 backend(s)" in service.message and "deadline" in service.message


def auth(url: str) -> dict[str, str]:
    return {"auth_url": url, "username": "healthd", "password": "s3cret-pw", "project_name": "admin",
            "user_domain_name": "Default", "project_domain_name": "Default"}


def test_keystone_down_is_unknown_with_the_reason() -> None:
    port = free_port()  # nobody listens there: Keystone is down
    probe = ApiBackendsProbe(ApiBackendsProbe.Settings(timeout=10))
    backends = make_backends(openstack={"auth": auth(f"http://127.0.0.1:{port}/v3")})
    result = run_probe(probe, backends)
    assert result.status is Status.UNKNOWN
    assert "Keystone token (catalog)" in result.summary
    assert "refused" in result.summary
    assert "s3cret-pw" not in result.everything()


def test_keystone_hung_is_unknown_within_the_timeout() -> None:
    with hung.silent() as peer:
        probe = ApiBackendsProbe(ApiBackendsProbe.Settings(timeout=3))
        backends = make_backends(openstack={"auth": auth(f"{peer.url}/v3")})
        t0 = time.monotonic()
        result = run_probe(probe, backends)
        assert time.monotonic() - t0 < 6
        assert result.status is Status.UNKNOWN
        assert peer.accepted


def test_stats_socket_at_level_user_hides_addresses(lab: tuple[list[ApiServer], HAProxy]) -> None:
    """Least privilege: at `level user` HAProxy answers `show stat` but leaves `addr` empty
    (and refuses `set server`): HAProxy's view only, said so; level operator is needed to
    probe its servers directly."""
    servers, lb = lab
    assert "Permission denied" in _command(lb.user_socket, "set server keystone_api/ks1 state maint")
    source = {"name": "lb1", "socket": str(lb.user_socket), "backends": {"keystone_api": "identity"}}
    result = run(probe_for(lb, haproxy=[source]))
    assert result.status is Status.OK, result.findings
    [info] = result.about("load balancer lb1", Severity.INFO)
    assert "level operator" in info.remediation
    assert result.value("healthd_api_backends_haproxy_server_up", lb="lb1", backend="keystone_api",
                        server="ks2") == 1
    assert result.values("healthd_api_backends_backend_up") == []
    servers[1].stop()
    wait_until_status(lb, "ks2", "DOWN")
    result = run(probe_for(lb, haproxy=[source]))
    assert result.status is Status.WARNING
    [warn] = result.about("server lb1 keystone_api/ks2 (identity)", Severity.WARNING)
    assert "HAProxy marks it down" in warn.message
