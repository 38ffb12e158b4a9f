"""API endpoints through their VIP, and each real backend behind it.

The failure this probe exists for: an API answers through its load balancer
(HAProxy in front of two or three API hosts) while one backend behind it is
dead, or never bound its port (the seed: keystone's ``AH00072: make_sock:
could not bind to address [::]:5000``). Clients see nothing yet; the cloud lost
capacity and its next failure is an outage. The opposite also happens: every
backend answers, but the VIP does not (HAProxy, keepalived or the VIP itself).

Per run:

- the endpoints of the catalog of a token (what clients see; one Keystone call),
  identical URLs of several interfaces probed once, optionally one region only,
  plus the endpoints listed in ``endpoints``;
- the backends of each service: a static list in the config, and/or HAProxy's
  own list read from its stats socket (``show stat``) or its stats page
  (``;csv``): HAProxy's view of each server (UP / DOWN / MAINT / DRAIN, its
  check status, seconds since the last change) is reported next to healthd's;
- every endpoint and backend is probed directly, in parallel under the run's
  deadline (each with its own ``request_timeout``): TCP connect, TLS handshake
  (chain verified as configured; days until the peer certificate expires), and
  one unauthenticated ``GET``: the service's version document, or its
  ``/healthcheck`` (oslo.middleware) where the service wires one. No token is
  sent, so the probe does not test Keystone again for every service.

Judging (``judge``, plain data): the VIP down is CRITICAL (clients fail now); a
backend down while the VIP answers is a WARNING (capacity lost); every backend of
a service down is CRITICAL; a certificate expiring within
``cert_warning_days`` / ``cert_critical_days`` is a WARNING / CRITICAL; a
server an operator put in MAINT or DRAIN, and a ``/healthcheck`` that answers
503 because of oslo.middleware's ``disable_by_file`` (maintenance), are INFO.
"""

from __future__ import annotations

import csv
import http.client
import io
import re
import socket
import ssl
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from healthd.config import Secret
from healthd.connections import split_host_port
from healthd.deadline import Deadline
from healthd.errors import BackendUnavailable, NotConfigured, from_os_error
from healthd.model import MetricSpec, Report, Severity
from healthd.openstack.service_types import same_type  # os-service-types aliases
from healthd.probe import Context, Probe, ProbeSettings
from healthd.redact import describe_error, register_secret

Interface = Literal["public", "internal", "admin"]
INTERFACES: tuple[str, ...] = ("public", "internal", "admin")

M_EP_UP = "healthd_api_backends_endpoint_up"
M_EP_LATENCY = "healthd_api_backends_endpoint_latency_seconds"
M_EP_CERT = "healthd_api_backends_endpoint_cert_expiry_timestamp_seconds"
M_BE_UP = "healthd_api_backends_backend_up"
M_BE_LATENCY = "healthd_api_backends_backend_latency_seconds"
M_BE_CERT = "healthd_api_backends_backend_cert_expiry_timestamp_seconds"
M_BE_MAINT = "healthd_api_backends_backend_maintenance"
M_SVC_BACKENDS = "healthd_api_backends_service_backends"
M_SVC_BACKENDS_UP = "healthd_api_backends_service_backends_up"
M_HA_UP = "healthd_api_backends_haproxy_up"
M_HA_SERVER_UP = "healthd_api_backends_haproxy_server_up"
M_HA_SERVER_MAINT = "healthd_api_backends_haproxy_server_maintenance"
M_HA_SERVER_CHANGE = "healthd_api_backends_haproxy_server_last_change_seconds"

EP_LABELS = ("service", "region", "url")
BE_LABELS = ("service", "address")
HA_LABELS = ("lb", "backend", "server")

BODY_LIMIT = 65536  # bytes of a response body read (a version document is < 2 KiB)


class Target(BaseModel):
    """What to GET on a service, relative to its root (the catalog URL without its version)."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field("", description="'' = the version document at the root; "
                      "'healthcheck' = oslo.middleware's")
    expect: list[int] = Field(default_factory=lambda: [200, 300], min_length=1)


# The unauthenticated request per service type, as each service answers it at the lab's
# releases. Any other type: its root, 200 or 300 (kolla-ansible's blackbox module
# os_endpoint expects [200, 300] of every API root).
DEFAULT_TARGETS: dict[str, Target] = {
    # keystone/server/flask/application.py application_factory (keystone 30): the app is
    # dispatched with oslo_middleware's Healthcheck.app_factory at /healthcheck (no paste
    # config involved; options from keystone.conf [healthcheck]);
    # keystone/api/discovery.py get_versions answers the root with 300 MULTIPLE CHOICES.
    "identity": Target(path="healthcheck", expect=[200]),
    # glance 33 etc/glance-api-paste.ini: every [composite:glance-api*] maps
    # "/healthcheck: healthcheck" ([app:healthcheck]: oslo_middleware, backends
    # disable_by_file, disable_by_file_path /etc/glance/healthcheck_disable); the root
    # answers 300 (glance/api/versions.py Controller.index, MULTIPLE_CHOICES unless explicit).
    "image": Target(path="healthcheck", expect=[200]),
    # nova 34 etc/nova/api-paste.ini has no healthcheck; its root (the "oscomputeversions"
    # app, nova/api/openstack/compute/versions.py Versions.index) is 200 and outside the
    # keystone pipeline ([composite:osapi_compute] "/: oscomputeversions").
    "compute": Target(path="", expect=[200]),
    # placement 16 placement/auth.py: PlacementKeystoneAuthProtocol.__call__ passes
    # PATH_INFO "/" or "" past auth_token (and NoAuthMiddleware lets "/" through);
    # placement/handlers/root.py home answers 200. No healthcheck middleware.
    "placement": Target(path="", expect=[200]),
    # swift: the catalog URL is .../v1/AUTH_%(project_id)s and the proxy has no version
    # document at its root; etc/proxy-server.conf-sample's pipeline carries the healthcheck
    # filter (swift/common/middleware/healthcheck.py: 200 "OK", 503 "DISABLED BY FILE").
    # Ceph RGW registered as object-store has neither: override it with targets.
    "object-store": Target(path="healthcheck", expect=[200]),
}

# OpenStack project names as load balancers name their backends (kolla-ansible
# "keystone_internal", "nova_api", "placement_api", "glance_api"; OpenStack-Ansible
# "keystone_service-back", "nova_api_os_compute-back") -> service type.
PROJECTS = {
    "keystone": "identity", "nova": "compute", "glance": "image", "placement": "placement",
    "neutron": "network", "cinder": "volumev3", "heat": "orchestration", "swift": "object-store",
    "barbican": "key-manager", "octavia": "load-balancer", "designate": "dns",
    "manila": "shared-file-system", "ironic": "baremetal", "magnum": "container-infra",
    "aodh": "alarming", "gnocchi": "metric", "masakari": "instance-ha", "trove": "database",
    "cyborg": "accelerator", "zun": "container", "blazar": "reservation",
}

# HAProxy's server status (doc/management.txt, "show stat" field 17): states an operator
# chose. "MAINT (resolution)" is a failed DNS resolution, not a choice.
_ON_PURPOSE = re.compile(r"^(MAINT|DRAIN|NOLB)( \(via [^)]*\))?$")
_VERSION = re.compile(r"^v\d+(\.\d+)?$")
_TEMPLATE = re.compile(r"[$%]\(")


class StaticEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service: str = Field(description="service type, e.g. identity")
    url: str = Field(description="the URL clients use, e.g. https://api.example.com:5000/v3")
    region: str = ""

    @model_validator(mode="after")
    def _url(self) -> StaticEndpoint:
        if not _usable_url(self.url):
            raise ValueError(f"endpoint URL {self.url!r} is not http(s)://HOST[:PORT]/...")
        return self


class StaticBackends(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service: str = Field(description="service type whose VIP these servers are behind")
    servers: list[str] = Field(min_length=1, description="HOST:PORT of each backend")
    scheme: Literal["http", "https"] = "http"

    @model_validator(mode="after")
    def _servers(self) -> StaticBackends:
        for server in self.servers:
            if _address(server) is None:
                raise ValueError(f"backend {server!r} is not HOST:PORT (IPv6: [ADDR]:PORT)")
        return self


class HAProxyBackend(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service: str = Field("", description="service type; '' = not an API of the catalog (ignored)")
    scheme: Literal["http", "https"] | None = None


class HAProxySource(Secret):
    """One load balancer's stats: its socket (``show stat``) or its stats page (CSV)."""

    name: str = Field("", description="label of this load balancer; default: the socket or URL's host:port")
    socket: str | None = Field(None, description="stats socket: a path, or HOST:PORT of a TCP stats socket")
    url: str | None = Field(None, description="stats page, e.g. http://10.0.0.5:1984/stats;csv")
    username: str | None = Field(None, description="stats auth user (the password: password/_env/_file)")
    verify: bool = True
    scheme: Literal["http", "https"] = Field("http", description="how healthd reaches the servers")
    backends: dict[str, HAProxyBackend | str] = Field(
        default_factory=dict,
        description="HAProxy backend name -> service type (or {service, scheme}); '' ignores it. "
        "Unlisted backends are matched by their servers' port and name",
    )

    @model_validator(mode="after")
    def _one_way(self) -> HAProxySource:
        if bool(self.socket) == bool(self.url):
            raise ValueError("give exactly one of socket and url")
        return self

    @property
    def csv_url(self) -> str:
        """The stats page's CSV export (HAProxy: the stats URI followed by ";csv")."""
        url = self.url or ""
        if ";csv" in url:
            return url
        return url + ";csv" if urlsplit(url).path.strip("/") else url.rstrip("/") + "/;csv"

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.socket:
            return self.socket
        parts = urlsplit(self.url or "")
        return parts.netloc.rpartition("@")[2]

    def mapping(self, backend: str) -> HAProxyBackend | None:
        entry = self.backends.get(backend)
        if entry is None:
            return None
        return HAProxyBackend(service=entry) if isinstance(entry, str) else entry


# == plain data ===================================================================


@dataclass(frozen=True)
class Endpoint:
    """One distinct URL of the catalog (several interfaces may share it)."""

    service: str  # type
    region: str
    url: str  # as in the catalog
    interfaces: tuple[str, ...]
    root: str  # scheme://netloc/prefix/ (the URL without its version)
    path: str  # what is GET (relative to root)
    expect: tuple[int, ...]

    @property
    def probe_url(self) -> str:
        return self.root + self.path

    @property
    def labels(self) -> dict[str, str]:
        return {"service": self.service, "region": self.region, "url": self.url}


@dataclass(frozen=True)
class ServerView:
    """HAProxy's view of one server (a row of ``show stat``)."""

    lb: str
    backend: str
    server: str
    address: str
    status: str  # UP, DOWN, MAINT, DRAIN, NOLB, "no check", "UP 1/3", ...
    check_status: str = ""
    last_change: float | None = None  # seconds since the last status change (lastchg)
    check_desc: str = ""

    @property
    def up(self) -> bool:
        return self.status.startswith(("UP", "no check", "OPEN"))

    @property
    def on_purpose(self) -> bool:
        return bool(_ON_PURPOSE.match(self.status))

    def describe(self) -> str:
        check = f", check {self.check_status}" if self.check_status else ""
        desc = f" ({self.check_desc})" if self.check_desc else ""
        since = f" for {_duration(self.last_change)}" if self.last_change is not None else ""
        return f"{self.lb} {self.backend}/{self.server}: {self.status}{since}{check}{desc}"


@dataclass(frozen=True)
class Backend:
    service: str
    address: str  # host:port
    scheme: str
    path: str  # root path + target path
    expect: tuple[int, ...]
    views: tuple[ServerView, ...] = ()
    sources: tuple[str, ...] = ()  # "static", "haproxy <lb> <backend>"

    @property
    def key(self) -> tuple[str, str]:
        return (self.service, self.address)

    @property
    def probe_url(self) -> str:
        return f"{self.scheme}://{self.address}{self.path}"

    @property
    def on_purpose(self) -> bool:
        return bool(self.views) and all(v.on_purpose for v in self.views)


@dataclass
class Answer:
    """What one direct request found."""

    url: str
    ok: bool = False
    failure: str = ""  # refused, timeout, resolve, tls, http, maintenance, protocol, deadline
    detail: str = ""
    code: int | None = None
    latency: float | None = None
    cert_expiry: float | None = None  # unix time the peer certificate expires
    tls_error: str = ""  # chain or host name not verified

    @property
    def maintenance(self) -> bool:
        return self.failure == "maintenance"


@dataclass
class LbStats:
    lb: str
    views: list[ServerView] = field(default_factory=list)
    error: str = ""
    unmapped: list[str] = field(default_factory=list)
    # Servers of mapped backends whose address HAProxy does not show (a stats socket below
    # `level operator`, a stats page without `stats show-legends`): HAProxy's view only.
    hidden: list[tuple[str, ServerView]] = field(default_factory=list)


@dataclass
class Observation:
    endpoints: list[Endpoint]
    backends: list[Backend]
    answers: dict[str, Answer]  # probe key -> answer ("ep:<url>", "be:<service>:<address>")
    lbs: list[LbStats] = field(default_factory=list)


def ep_key(ep: Endpoint) -> str:
    return f"ep:{ep.probe_url}"


def be_key(be: Backend) -> str:
    return f"be:{be.service}:{be.address}"


# == the probe ====================================================================


class ApiBackendsProbe(Probe):
    name = "api_backends"
    description = ("API endpoints through the VIP and each backend behind it: up, latency, "
                   "TLS certificate expiry.")
    default_interval = 60.0
    default_timeout = 20.0
    requires = ("openstack",)
    privileges = (
        "Keystone: any role on a project (the catalog of a project-scoped token; no admin). "
        "TCP/HTTP(S) access to every endpoint and backend. HAProxy: a stats socket at "
        "`level operator` (server addresses; it cannot change server states) or the stats page "
        "with `stats show-legends` (stats auth). No database access."
    )
    metrics = (
        MetricSpec(M_EP_UP, "1 if the endpoint (VIP) answered the unauthenticated request as expected.",
                   EP_LABELS),
        MetricSpec(M_EP_LATENCY, "Seconds for TCP connect, TLS handshake and the response headers.",
                   EP_LABELS),
        MetricSpec(M_EP_CERT, "Unix time the endpoint's TLS certificate expires (notAfter).", EP_LABELS),
        MetricSpec(M_BE_UP, "1 if the backend answered the unauthenticated request directly.", BE_LABELS),
        MetricSpec(M_BE_LATENCY, "Seconds for TCP connect, TLS handshake and the response headers.",
                   BE_LABELS),
        MetricSpec(M_BE_CERT, "Unix time the backend's TLS certificate expires (notAfter).", BE_LABELS),
        MetricSpec(M_BE_MAINT, "1 if the backend is out on purpose (HAProxy MAINT/DRAIN, healthcheck "
                   "disabled by file).", BE_LABELS),
        MetricSpec(M_SVC_BACKENDS, "Backends known for the service (static list and HAProxy).", ("service",)),
        MetricSpec(M_SVC_BACKENDS_UP, "Backends of the service that answered directly.", ("service",)),
        MetricSpec(M_HA_UP, "1 if the load balancer's stats could be read.", ("lb",)),
        MetricSpec(M_HA_SERVER_UP, "HAProxy's own view: 1 if it marks the server UP (or has no check).",
                   HA_LABELS),
        MetricSpec(M_HA_SERVER_MAINT, "HAProxy's own view: 1 if the server is in MAINT, DRAIN or NOLB.",
                   HA_LABELS),
        MetricSpec(M_HA_SERVER_CHANGE, "Seconds since HAProxy last changed the server's status (lastchg).",
                   HA_LABELS),
    )

    class Settings(ProbeSettings):
        catalog: bool = Field(True, description="probe the endpoints of the Keystone catalog")
        region: str | None = Field(None, description="only this region's endpoints (default: all)")
        interfaces: list[Interface] = Field(default_factory=lambda: list(INTERFACES))
        endpoints: list[StaticEndpoint] = Field(default_factory=list,
                                                description="endpoints probed besides the catalog's")
        skip_services: list[str] = Field(default_factory=list, description="service types not probed")
        targets: dict[str, Target] = Field(
            default_factory=dict, description="per service type: path and expected codes (overrides "
            "the defaults: identity and image /healthcheck, others their version document)")
        static_backends: list[StaticBackends] = Field(default_factory=list)
        haproxy: list[HAProxySource] = Field(default_factory=list)
        tls_verify: bool = Field(True, description="verify certificate chains (and VIP host names)")
        ca_file: Path | None = Field(None, description="CA bundle to verify with (default: system store)")
        backend_check_hostname: bool = Field(
            False, description="also check backend certificates against the address dialled")
        cert_warning_days: float = Field(30, gt=0)
        cert_critical_days: float = Field(7, gt=0)
        request_timeout: float = Field(5.0, gt=0, description="seconds per endpoint or backend")
        max_parallel: int = Field(8, ge=1, le=64)

        @model_validator(mode="after")
        def _ordered(self) -> ApiBackendsProbe.Settings:
            if self.cert_critical_days > self.cert_warning_days:
                raise ValueError("cert_critical_days must be <= cert_warning_days")
            return self

    settings: Settings

    def run(self, ctx: Context, report: Report) -> None:
        s = self.settings
        endpoints = load_endpoints(ctx, s)
        lbs = [read_haproxy(ctx, src, s.request_timeout) for src in s.haproxy]
        backends = build_backends(endpoints, s, lbs)
        if not endpoints and not backends:
            raise NotConfigured("no endpoint to probe: the catalog has none in scope and "
                                "checks.api_backends.endpoints / static_backends are empty")
        tls = TlsContexts(s)
        jobs: dict[str, tuple[str, str, int, str, str, bool]] = {}
        for ep in endpoints:
            parts = urlsplit(ep.probe_url)
            host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
            jobs[ep_key(ep)] = (parts.scheme, host, port, _path(parts), parts.netloc, True)
        for be in backends:
            host, port = split_host_port(be.address, 443 if be.scheme == "https" else 80)
            jobs[be_key(be)] = (be.scheme, host, port, be.path, be.address, s.backend_check_hostname)

        def one(key: str) -> Answer:
            scheme, host, port, path, host_header, check_name = jobs[key]
            expect = _expect_of(key, endpoints, backends)
            return request(ctx, scheme, host, port, path, host_header, expect, tls.get(check_name),
                           s.request_timeout)

        late = "no answer before the check's deadline"
        answers = ctx.map_parallel(
            one, list(jobs), s.max_parallel,
            on_deadline=lambda k: Answer(_url_of(jobs[k]), failure="deadline", detail=late))
        judge(Observation(endpoints, backends, answers, lbs), s, report, time.time())


def _path(parts: Any) -> str:
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _url_of(job: tuple[str, str, int, str, str, bool]) -> str:
    scheme, host, port, path, _, _ = job
    return f"{scheme}://{host}:{port}{path}"


def _expect_of(key: str, endpoints: list[Endpoint], backends: list[Backend]) -> tuple[int, ...]:
    for ep in endpoints:
        if ep_key(ep) == key:
            return ep.expect
    for be in backends:
        if be_key(be) == key:
            return be.expect
    return (200,)


# == loading: the catalog =========================================================


def service_root(url: str) -> str:
    """The catalog URL without its version and what follows (keystoneauth's discovery does
    the same to find the version document): http://h:8774/v2.1 -> http://h:8774/,
    http://h/identity/v3 -> http://h/identity/, http://h:9292 -> http://h:9292/."""
    parts = urlsplit(url)
    kept: list[str] = []
    for segment in [p for p in parts.path.split("/") if p]:
        if _VERSION.match(segment) or _TEMPLATE.search(segment):
            break
        kept.append(segment)
    path = "/" + "".join(f"{p}/" for p in kept)
    return f"{parts.scheme}://{parts.netloc}{path}"


def target_for(service: str, s: ApiBackendsProbe.Settings) -> Target:
    return s.targets.get(service) or DEFAULT_TARGETS.get(service) or Target()


def endpoints_from(catalog: Iterable[dict[str, Any]], s: ApiBackendsProbe.Settings) -> list[Endpoint]:
    """Token catalog entries ({type, endpoints: [{url, interface, region_id}]}) -> distinct
    endpoints in scope, identical URLs of one service merged across interfaces."""
    merged: dict[tuple[str, str, str], set[str]] = {}
    for entry in catalog:
        stype = str(entry.get("type") or "")
        if not stype or stype in s.skip_services:
            continue
        for raw in entry.get("endpoints") or []:
            iface = str(raw.get("interface") or "")
            region = str(raw.get("region_id") or raw.get("region") or "")
            url = str(raw.get("url") or "")
            if iface not in s.interfaces or not _usable_url(url):
                continue  # a URL keystone cannot substitute is the catalog check's finding
            if s.region is not None and region != s.region:
                continue
            merged.setdefault((stype, region, url), set()).add(iface)
    for static in s.endpoints:
        if static.service not in s.skip_services:
            merged.setdefault((static.service, static.region, static.url), set()).add("configured")
    out = []
    seen: set[str] = set()
    for (stype, region, url), ifaces in sorted(merged.items()):
        target = target_for(stype, s)
        ep = Endpoint(stype, region, url, tuple(sorted(ifaces)), service_root(url), target.path.lstrip("/"),
                      tuple(target.expect))
        if ep.probe_url in seen:
            continue  # e.g. public .../v3 and internal .../v3/ reach the same document
        seen.add(ep.probe_url)
        out.append(ep)
    return out


def load_endpoints(ctx: Context, s: ApiBackendsProbe.Settings) -> list[Endpoint]:
    """One Keystone call: the catalog of the token healthd gets (what every client sees)."""
    catalog: list[dict[str, Any]] = []
    if s.catalog:
        conn = ctx.openstack()
        with ctx.api_call("Keystone token (catalog)"):
            access = conn.session.auth.get_access(conn.session)
        catalog = list(getattr(access, "service_catalog", None).catalog or [])
    return endpoints_from(catalog, s)


# == loading: HAProxy's stats =====================================================


def parse_stat_csv(text: str, lb: str) -> list[ServerView]:
    """``show stat`` / ``;csv`` output -> one ServerView per server row.

    HAProxy's management guide (doc/management.txt, 9.1 "CSV format"): the first line is
    "# pxname,svname,..." naming the fields; FRONTEND/BACKEND rows are aggregates
    (field `type` 0/1, servers are 2, listeners 3). Fields used: pxname, svname, status,
    check_status, lastchg, addr (1.7+), check_desc. Fields are read by name, so a newer
    HAProxy's extra columns are fine.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("# "):
        raise ValueError("not HAProxy's stats CSV (no '# pxname,svname,...' header)")
    reader = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
    if not reader.fieldnames or "pxname" not in reader.fieldnames or "svname" not in reader.fieldnames:
        raise ValueError("HAProxy stats CSV without pxname/svname columns")
    views = []
    for row in reader:
        kind = (row.get("type") or "").strip()
        svname = (row.get("svname") or "").strip()
        if kind and kind != "2":
            continue
        if not kind and svname in ("FRONTEND", "BACKEND"):
            continue
        lastchg = (row.get("lastchg") or "").strip()
        views.append(ServerView(
            lb=lb, backend=(row.get("pxname") or "").strip(), server=svname,
            address=(row.get("addr") or "").strip(), status=(row.get("status") or "").strip(),
            check_status=(row.get("check_status") or "").strip().lstrip("* "),
            last_change=float(lastchg) if lastchg.isdigit() else None,
            check_desc=(row.get("check_desc") or "").strip(),
        ))
    return views


def read_haproxy(ctx: Context, src: HAProxySource, timeout: float) -> LbStats:
    """One read per load balancer; a failure is reported, the rest of the run goes on."""
    stats = LbStats(src.label)
    try:
        text = _stats_socket(ctx, src.socket, timeout) if src.socket else _stats_page(ctx, src, timeout)
        stats.views = parse_stat_csv(text, src.label)
    except BackendUnavailable as exc:
        stats.error = str(exc)
    except ValueError as exc:
        stats.error = f"HAProxy stats {src.label}: {exc}"
    return stats


def _stats_socket(ctx: Context, where: str, timeout: float) -> str:
    label = f"HAProxy stats socket {where}"
    tcp = not where.startswith("/") and ":" in where
    sock = socket.socket(socket.AF_INET if tcp else socket.AF_UNIX, socket.SOCK_STREAM)
    token = None
    try:
        sock.settimeout(ctx.remaining(timeout))
        try:
            sock.connect(split_host_port(where, 0) if tcp else where)
            token = ctx.deadline.guard(sock)
            sock.sendall(b"show stat\n")  # HAProxy answers and closes (non-interactive mode)
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except FileNotFoundError:
            raise NotConfigured(f"{label}: no such socket") from None
        except PermissionError:
            raise BackendUnavailable(f"{label}: permission denied (add healthd to the socket's group)") \
                from None
        except OSError as exc:
            raise from_os_error(label, exc, ctx.deadline.expired) from None
        return b"".join(chunks).decode("utf-8", "replace")
    finally:
        sock.close()
        ctx.deadline.release(token)


def _stats_page(ctx: Context, src: HAProxySource, timeout: float) -> str:
    import base64

    parts = urlsplit(src.csv_url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    netloc = parts.netloc.rpartition("@")[2]  # user info in the URL is credentials, not a host
    headers = {}
    try:
        password = src.resolve() if (src.password or src.password_env or src.password_file) \
            else parts.password
    except ValueError as exc:
        raise NotConfigured(f"HAProxy stats page {src.label}: {exc}") from None
    register_secret(password)
    username = src.username or parts.username
    if username:
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    tls = _tls_context(src.verify, None, True) if parts.scheme == "https" else None
    answer = request(ctx, parts.scheme, host, port, _path(parts), netloc, (200,), tls, timeout,
                     headers=headers, keep_body=True)
    label = f"HAProxy stats page {parts.scheme}://{netloc}"
    if answer.code == 401:
        raise BackendUnavailable(f"{label}: credentials refused (HTTP 401): set username and password")
    if not answer.ok:
        raise BackendUnavailable(f"{label}: {answer.detail or answer.failure}")
    return answer.detail


# == the backends of each service =================================================


def build_backends(endpoints: list[Endpoint], s: ApiBackendsProbe.Settings,
                   lbs: list[LbStats]) -> list[Backend]:
    """Static backends and HAProxy's servers, each mapped to a catalog service."""
    by_service: dict[str, list[Endpoint]] = defaultdict(list)
    for ep in endpoints:
        by_service[ep.service].append(ep)
    found: dict[tuple[str, str], dict[str, Any]] = {}

    def add(service: str, address: str, scheme: str, source: str, view: ServerView | None) -> None:
        entry = found.setdefault((service, address), {"scheme": scheme, "views": [], "sources": []})
        if view is not None:
            entry["views"].append(view)
        if source not in entry["sources"]:
            entry["sources"].append(source)

    for static in s.static_backends:
        for server in static.servers:
            add(static.service, _address(server) or server, static.scheme, "static", None)
    sources = {src.label: src for src in s.haproxy}
    for lb in lbs:
        src = sources.get(lb.lb)
        by_backend: dict[str, list[ServerView]] = defaultdict(list)
        for view in lb.views:
            by_backend[view.backend].append(view)
        for name, views in by_backend.items():
            explicit = src.mapping(name) if src else None
            if explicit is not None:
                service = explicit.service
                scheme = explicit.scheme or (src.scheme if src else "http")
            else:
                service = match_backend(name, views, by_service)
                scheme = src.scheme if src else "http"
            if not service:
                lb.unmapped.append(name)
                continue
            for view in views:
                address = _address(view.address) if view.address else None
                if address:
                    add(service, address, scheme, f"haproxy {lb.lb} {name}", view)
                else:
                    lb.hidden.append((service, view))
    out = []
    for (service, address), entry in found.items():
        port = address.rpartition(":")[2]
        eps = by_service.get(service, [])
        # The path prefix of the endpoint on the same port (a backend serves the path HAProxy
        # forwards unchanged), else the first endpoint's.
        same_port = [ep for ep in eps if str(urlsplit(ep.url).port or "") == port]
        ep = (same_port or eps or [None])[0]
        target = target_for(service, s)
        root_path = urlsplit(ep.root).path if ep else "/"
        out.append(Backend(service, address, entry["scheme"], root_path + target.path.lstrip("/"),
                           tuple(target.expect), tuple(entry["views"]), tuple(entry["sources"])))
    return sorted(out, key=lambda b: (b.service, b.address))


def _address(address: str) -> str | None:
    """HOST:PORT, [V6]:PORT or HAProxy's V6:PORT -> normalized HOST:PORT ([V6]:PORT); None if
    there is no numeric port."""
    address = address.strip()
    if not address.startswith("[") and address.count(":") > 1:
        host, _, port = address.rpartition(":")
    else:
        try:
            host, num = split_host_port(address, 0)
        except ValueError:
            return None
        port = str(num)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _usable_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def match_backend(name: str, views: list[ServerView], by_service: dict[str, list[Endpoint]]) -> str:
    """The catalog service an unlisted HAProxy backend serves, or '' when unsure.

    The servers' port must be the port of one of the service's catalog URLs (kolla-ansible
    and OpenStack-Ansible run the backends on the VIP's port): that keeps nova_metadata
    (8775) and nova_novncproxy (6080) away from compute (8774). When several services share
    the port, the backend's name must name the project (keystone_internal -> identity)."""
    ports = {v.address.rpartition(":")[2] for v in views if v.address}
    candidates = [svc for svc, eps in by_service.items()
                  if any(str(urlsplit(ep.url).port or (443 if ep.url.startswith("https") else 80)) in ports
                         for ep in eps)]

    tokens = set(re.split(r"[^a-z0-9]+", name.lower()))

    def names(svc: str) -> bool:
        return svc in tokens or any(t in PROJECTS and same_type(PROJECTS[t], svc) for t in tokens)

    named = [svc for svc in candidates if names(svc)]
    if len(named) == 1:
        return named[0]
    if len(candidates) == 1 and not any(t in PROJECTS and not same_type(PROJECTS[t], candidates[0])
                                        for t in tokens):
        return candidates[0]
    return ""


# == one direct request ===========================================================


class TlsContexts:
    def __init__(self, s: ApiBackendsProbe.Settings) -> None:
        self._checked = _tls_context(s.tls_verify, s.ca_file, True)
        self._unchecked = _tls_context(s.tls_verify, s.ca_file, False)

    def get(self, check_hostname: bool) -> ssl.SSLContext:
        return self._checked if check_hostname else self._unchecked


def _tls_context(verify: bool, ca_file: Path | None, check_hostname: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.check_hostname = check_hostname
    return ctx


_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE


def cert_not_after(der: bytes | None) -> float | None:
    if not der:
        return None
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    return cert.not_valid_after_utc.timestamp()


def request(ctx: Context, scheme: str, host: str, port: int, path: str, host_header: str,
            expect: tuple[int, ...], tls: ssl.SSLContext | None, timeout: float,
            headers: dict[str, str] | None = None, keep_body: bool = False) -> Answer:
    """TCP connect, TLS handshake, one GET without a token; never raises for the peer's failures.

    The whole exchange is bounded by ``timeout`` and by the run's deadline (a peer that
    trickles one byte a second defeats per-read timeouts, not these)."""
    url = f"{scheme}://{host_header}{path}"
    answer = Answer(url)
    limit = Deadline(min(timeout, ctx.remaining()))
    tokens: list[socket.socket | None] = []
    t0 = time.monotonic()
    try:
        sock = _connect(ctx, limit, host, port, timeout, tokens)
        if isinstance(sock, Answer):
            sock.url = url
            return sock
        if scheme == "https":
            context = tls or _INSECURE
            try:
                sock = _handshake(ctx, limit, sock, context, host_header, host)
            except ssl.SSLCertVerificationError as exc:
                # Clients that verify fail here; look on (without verifying) for the expiry date
                # and whether the service itself answers.
                answer.tls_error = exc.verify_message or describe_error(exc)
                retry = _connect(ctx, limit, host, port, timeout, tokens)
                if isinstance(retry, Answer):
                    retry.url, retry.tls_error = url, answer.tls_error
                    return retry
                sock = _handshake(ctx, limit, retry, _INSECURE, host_header, host)
            answer.cert_expiry = cert_not_after(sock.getpeercert(binary_form=True))
        conn = http.client.HTTPConnection(host, port, timeout=ctx.remaining(timeout))
        conn.sock = sock
        try:
            conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", host_header)
            conn.putheader("Accept", "application/json, text/plain, */*")
            conn.putheader("User-Agent", "healthd-api-backends")
            conn.putheader("Connection", "close")
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            conn.endheaders()
            resp = conn.getresponse()
            answer.latency = time.monotonic() - t0
            answer.code = resp.status
            body = resp.read(BODY_LIMIT)
        finally:
            conn.close()
        if limit.expired or ctx.deadline.expired:
            # A cut socket reads as EOF: headers "complete" by the cut are no answer.
            raise TimeoutError("cut at the time limit")
        text = body.decode("utf-8", "replace")
        if resp.status in expect and not answer.tls_error:
            answer.ok = True
            if keep_body:
                answer.detail = text
        elif resp.status == 503 and "DISABLED BY FILE" in text.upper():
            # oslo_middleware/healthcheck/disable_by_file.py: reason "DISABLED BY FILE",
            # status 503, while an operator's file exists: maintenance on purpose.
            answer.failure, answer.detail = "maintenance", "healthcheck disabled by file (503)"
        elif resp.status not in expect:
            answer.failure = "http"
            answer.detail = f"HTTP {resp.status} {resp.reason}, expected {'/'.join(map(str, expect))}"
            snippet = " ".join(text.split())[:120]
            if snippet:
                answer.detail += f": {snippet}"
        else:
            answer.failure = "tls"
            answer.detail = f"TLS certificate not trusted: {answer.tls_error}"
    except ssl.SSLCertVerificationError as exc:
        answer.failure, answer.detail = "tls", f"TLS certificate not trusted: {exc.verify_message}"
    except ssl.SSLError as exc:
        answer.failure = "deadline" if ctx.deadline.expired else "tls"
        answer.detail = f"TLS handshake failed: {exc.reason or describe_error(exc)}"
    except (OSError, http.client.HTTPException) as exc:
        if ctx.deadline.expired or limit.expired:
            answer.failure = "timeout"
            answer.detail = f"no complete answer within {min(timeout, ctx.timeout):g} s"
        else:
            answer.failure = "protocol"
            answer.detail = f"no HTTP answer ({describe_error(exc) or type(exc).__name__})"
    finally:
        for token in tokens:
            ctx.deadline.release(token)
        limit.close()
    if answer.latency is None and answer.failure in ("", "maintenance"):
        answer.latency = time.monotonic() - t0
    return answer


def _connect(ctx: Context, limit: Deadline, host: str, port: int, timeout: float,
             tokens: list[socket.socket | None]) -> socket.socket | Answer:
    try:
        sock = socket.create_connection((host, port), ctx.remaining(timeout))
    except OSError as exc:
        err = from_os_error(f"{host}:{port}", exc, ctx.deadline.expired)
        kind = {"Refused": "refused", "TimedOut": "timeout", "Unresolvable": "resolve"}.get(
            type(err).__name__, "protocol")
        return Answer("", failure=kind, detail=str(err))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(ctx.remaining(timeout))
    # Cut by whichever comes first: this request's own limit or the run's deadline; the
    # request releases the run's guard and closes its own limit when it ends.
    tokens.append(ctx.deadline.guard(sock))
    limit.guard(sock)
    return sock


def _handshake(ctx: Context, limit: Deadline, sock: socket.socket, context: ssl.SSLContext,
               host_header: str, host: str) -> ssl.SSLSocket:
    name = urlsplit(f"//{host_header}").hostname or host
    try:
        return context.wrap_socket(sock, server_hostname=name)
    except BaseException:
        sock.close()
        raise


# == judging: plain data -> findings and metrics (no I/O) =========================


def judge(obs: Observation, s: ApiBackendsProbe.Settings, report: Report, now: float) -> None:
    backends_of: dict[str, list[Backend]] = defaultdict(list)
    for be in obs.backends:
        backends_of[be.service].append(be)
    eps_of: dict[str, list[Endpoint]] = defaultdict(list)
    for ep in obs.endpoints:
        eps_of[ep.service].append(ep)

    for lb in obs.lbs:
        _judge_lb(lb, report)

    # Backends first: the VIP's message says what its backends do.
    up_of: dict[str, int] = {}
    for service, bes in sorted(backends_of.items()):
        ups = [be for be in bes if obs.answers[be_key(be)].ok]
        up_of[service] = len(ups)
        report.metric(M_SVC_BACKENDS, len(bes), service=service)
        report.metric(M_SVC_BACKENDS_UP, len(ups), service=service)
        vip_up = any(obs.answers[ep_key(ep)].ok for ep in eps_of.get(service, []))
        _judge_backends(service, bes, obs.answers, vip_up, report, s, now)

    for ep in obs.endpoints:
        _judge_endpoint(ep, obs.answers[ep_key(ep)], backends_of.get(ep.service, []), up_of, report, s, now)

    eps_up = sum(1 for ep in obs.endpoints if obs.answers[ep_key(ep)].ok)
    bes_up = sum(up_of.values())
    report.summary = f"{eps_up} of {len(obs.endpoints)} endpoints and {bes_up} of {len(obs.backends)} " \
                     "backends answering"
    unmapped = sorted({f"{lb.lb} {name}" for lb in obs.lbs for name in lb.unmapped})
    if unmapped:
        report.summary += f"; {len(unmapped)} HAProxy backend(s) not matched to the catalog"


def _judge_lb(lb: LbStats, report: Report) -> None:
    report.metric(M_HA_UP, 0 if lb.error else 1, lb=lb.lb)
    if lb.error:
        report.warning(f"load balancer {lb.lb}", f"cannot read HAProxy's stats: {lb.error}. The backends "
                       "it balances are not known to healthd this run (static_backends still are).",
                       "check that HAProxy runs and that its stats socket/page is reachable by healthd "
                       "(`stats socket /run/haproxy/healthd.sock mode 660 level operator group healthd` "
                       "or `stats uri` with `stats show-legends`)")
    for view in lb.views:
        labels = {"lb": view.lb, "backend": view.backend, "server": view.server}
        report.metric(M_HA_SERVER_UP, 1 if view.up else 0, **labels)
        report.metric(M_HA_SERVER_MAINT, 1 if view.on_purpose else 0, **labels)
        if view.last_change is not None:
            report.metric(M_HA_SERVER_CHANGE, view.last_change, **labels)
    if lb.views and not any(v.address for v in lb.views):
        # HAProxy fills `addr` only for "show-legends" readers (stats.c: STAT_SHLGNDS): a CLI
        # socket at level operator or admin, a stats page with `stats show-legends`.
        report.info(f"load balancer {lb.lb}",
                    "HAProxy's stats show no server addresses at this access level: its servers "
                    "are judged by HAProxy's own view only, not probed directly, and backends "
                    "can only be matched to services through checks.api_backends.haproxy[].backends.",
                    "give healthd a stats socket at `level operator` (read-mostly: it cannot change "
                    "server states) or add `stats show-legends` to the stats page")
    for service, view in lb.hidden:
        subject = f"server {view.lb} {view.backend}/{view.server} ({service})"
        if view.on_purpose:
            report.info(subject, f"out of rotation on purpose ({view.describe()}).")
        elif not view.up:
            report.warning(subject, f"HAProxy marks it down ({view.describe()}): capacity lost "
                           "(healthd cannot reach it directly: no address in the stats).",
                           f"look at the {service} API on that server (systemctl status, its log, "
                           "`ss -ltnp` for its port)")


def _judge_backends(service: str, bes: list[Backend], answers: dict[str, Answer], vip_up: bool,
                    report: Report, s: ApiBackendsProbe.Settings, now: float) -> None:
    down = []
    for be in bes:
        answer = answers[be_key(be)]
        labels = {"service": service, "address": be.address}
        report.metric(M_BE_UP, 1 if answer.ok else 0, **labels)
        report.metric(M_BE_MAINT, 1 if (be.on_purpose or answer.maintenance) else 0, **labels)
        if answer.latency is not None:
            report.metric(M_BE_LATENCY, answer.latency, **labels)
        if answer.cert_expiry is not None:
            report.metric(M_BE_CERT, answer.cert_expiry, **labels)
            _judge_cert(f"backend {be.address} ({service})", answer, s, now, report, vip=False)
        views = "; ".join(v.describe() for v in be.views)
        haproxy = f" HAProxy's view: {views}." if views else ""
        if be.on_purpose:
            report.info(f"backend {be.address} ({service})",
                        f"out of rotation on purpose ({views}); healthd's direct request: "
                        f"{'answers' if answer.ok else answer.detail or answer.failure}.",
                        _enable_cmd(be))
            continue
        if answer.maintenance:
            report.info(f"backend {be.address} ({service})",
                        f"{answer.url} answers 503 DISABLED BY FILE: oslo.middleware's disable_by_file "
                        "(maintenance on purpose); load balancers that check it stop sending "
                        f"traffic.{haproxy}",
                        "remove the file named by [healthcheck] disable_by_file_path on that host when "
                        "the maintenance is over")
            continue
        if answer.ok:
            hap_down = [v for v in be.views if not v.up]
            if hap_down:
                report.warning(
                    f"backend {be.address} ({service})",
                    f"answers healthd directly ({answer.url}, HTTP {answer.code}) but HAProxy marks it "
                    f"down: {'; '.join(v.describe() for v in hap_down)}. HAProxy sends it no traffic: "
                    "capacity lost.",
                    "compare HAProxy's health check (`option httpchk`, its port and path) with what the "
                    "service answers, and check the network from the load balancer to the backend")
            continue
        down.append((be, answer, haproxy))
    live = [be for be in bes if not be.on_purpose and not answers[be_key(be)].maintenance]
    if down and len(down) == len(live):
        listing = "; ".join(f"{be.address}: {a.detail or a.failure}" for be, a, _ in down)
        report.critical(
            f"service {service}",
            f"all {len(down)} backend(s) of {service} are down ({listing})"
            + ("; the VIP still answers (from a backend healthd does not know of?)." if vip_up
               else ": the API is unavailable."),
            f"start the {service} API on its hosts: systemctl status / journalctl -u <its unit> on each "
            "(look for 'could not bind to address' or 'Address already in use': `ss -ltnp sport = :PORT` "
            "shows who holds the port)")
        return
    for be, answer, haproxy in down:
        tail = ("The VIP still answers through the others: capacity lost, the next failure is an outage."
                if vip_up else "")
        hap_up = [v for v in be.views if v.up]
        if hap_up:
            tail += " HAProxy still marks it UP (its check may be TCP only): clients routed to it fail."
        report.warning(
            f"backend {be.address} ({service})",
            f"does not answer directly ({answer.url}): {answer.detail or answer.failure}."
            f"{haproxy} {tail}".strip(),
            f"on {be.address.rpartition(':')[0]}: systemctl status / journalctl -u <the {service} API unit>; "
            f"`ss -ltnp sport = :{be.address.rpartition(':')[2]}` (a service that could not bind its port "
            "exits at start: free the port, then restart it)")


def _enable_cmd(be: Backend) -> str:
    cmds = [f"echo 'set server {v.backend}/{v.server} state ready' | socat stdio <{v.lb}'s stats socket>"
            for v in be.views]
    return "when the work is done: " + "; ".join(cmds) if cmds else ""


def _judge_endpoint(ep: Endpoint, answer: Answer, bes: list[Backend], up_of: dict[str, int],
                    report: Report, s: ApiBackendsProbe.Settings, now: float) -> None:
    labels = ep.labels
    report.metric(M_EP_UP, 1 if answer.ok or answer.maintenance else 0, **labels)
    if answer.latency is not None:
        report.metric(M_EP_LATENCY, answer.latency, **labels)
    if answer.cert_expiry is not None:
        report.metric(M_EP_CERT, answer.cert_expiry, **labels)
        _judge_cert(f"endpoint {ep.url}", answer, s, now, report, vip=True)
    subject = f"endpoint {ep.url}"
    where = f"{ep.service} ({', '.join(ep.interfaces)}{f', region {ep.region}' if ep.region else ''})"
    if answer.ok:
        return
    if answer.maintenance:
        report.info(subject, f"{answer.url} answers 503 DISABLED BY FILE: the backend HAProxy chose is in "
                    "maintenance (oslo.middleware disable_by_file); API calls still work.",
                    "remove the disable_by_file file when the maintenance is over")
        return
    if answer.failure == "tls" and answer.code is not None and answer.code in ep.expect:
        report.critical(subject, f"{where}: the service answers but its TLS certificate does not verify "
                        f"({answer.tls_error}): clients that verify certificates fail now.",
                        "install a certificate for this name issued by a CA the clients trust (or set "
                        "checks.api_backends.ca_file to the cloud's CA)")
        return
    if bes:
        n_up = up_of.get(ep.service, 0)
        context = (f" {n_up} of {len(bes)} backend(s) answer directly: the load balancer, keepalived or the "
                   "VIP is at fault." if n_up else f" None of its {len(bes)} backend(s) answer either.")
    else:
        context = ""
    fix = ("check HAProxy and keepalived on the load balancers (systemctl status haproxy keepalived; "
           "`ip -br addr` shows which node holds the VIP; `echo 'show stat' | socat stdio "
           "/run/haproxy/admin.sock`)")
    if bes and not up_of.get(ep.service, 0):
        fix = f"start the {ep.service} API on its hosts (see the service's finding), then " + fix
    report.critical(subject, f"{where} does not answer ({answer.url}): {answer.detail or answer.failure}: "
                    f"clients fail now.{context}", fix)


def _judge_cert(subject: str, answer: Answer, s: ApiBackendsProbe.Settings, now: float, report: Report,
                vip: bool) -> None:
    assert answer.cert_expiry is not None
    days = (answer.cert_expiry - now) / 86400
    if days >= s.cert_warning_days:
        return
    when = f"expired {-days:.1f} days ago" if days < 0 else f"expires in {days:.1f} days"
    severity = Severity.CRITICAL if days < s.cert_critical_days else Severity.WARNING
    who = "clients" if vip else "the load balancer (when it verifies backends) and clients"
    report.finding(severity, subject, f"the TLS certificate {when} "
                   f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(answer.cert_expiry))}); "
                   f"then {who} fail the TLS handshake.",
                   "renew the certificate and reload the service or load balancer that serves it "
                   "(kolla-ansible: kolla-ansible certificates / reconfigure; OpenStack-Ansible: "
                   "the haproxy_server role's certificate tasks)")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


__all__ = ["ApiBackendsProbe", "judge", "parse_stat_csv", "service_root"]

