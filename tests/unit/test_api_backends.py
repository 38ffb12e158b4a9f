"""api_backends: HAProxy's CSV, catalog URLs, the automatic backend match, and judge() on plain data."""

from __future__ import annotations

import pytest

from checks.api_backends import (
    Answer,
    ApiBackendsProbe,
    Backend,
    Endpoint,
    LbStats,
    Observation,
    ServerView,
    be_key,
    endpoints_from,
    ep_key,
    judge,
    match_backend,
    parse_stat_csv,
    service_root,
)
from healthd.model import Report, Severity, Status

# `show stat` of Debian's HAProxy 2.6.12 (ctl3 put in MAINT with `set server nova_api/ctl3
# state maint`; nothing listens behind ctl1/ctl2, so their checks fail with L4CON).
SHOW_STAT = (
    '# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,\n'  # noqa: E501
    'nova_api_front,FRONTEND,,,0,0,9984,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,0,,,,0,0,0,0,0,0,,0,0,0,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,0,0,0,0,0,0,0,,,0,0,,,,,,,0,,,,,,,,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,\n'
    'nova_api,ctl1,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,1,1,2,2,,1,3,1,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,1,1,0,,,,127.0.0.1:18775,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n'  # noqa: E501
    'nova_api,ctl2,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,1,1,2,2,,1,3,2,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,1,1,0,,,,127.0.0.1:18776,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n'  # noqa: E501
    'nova_api,ctl3,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,1,1,2,2,,1,3,3,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:18777,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n'
    'nova_api,BACKEND,0,0,0,0,999,0,0,0,0,0,,0,0,0,0,DOWN,0,0,0,,1,2,2,,1,3,0,,0,,1,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,0,0,0,0,,,0,0,0,0,0,,,,,0,0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,27,27,0,0,0,0,\n'
)

NOW = 1_800_000_000.0


def settings(**kw: object) -> ApiBackendsProbe.Settings:
    return ApiBackendsProbe.Settings(**kw)


def report() -> Report:
    return Report("api_backends", ApiBackendsProbe.metrics)


def value(rep: Report, name: str, **labels: str) -> float | None:
    want = tuple(labels.items())
    for s in rep.samples:
        if s.name == name and dict(s.labels) == dict(want):
            return s.value
    return None


# -- parsing --------------------------------------------------------------------------


def test_parse_real_show_stat() -> None:
    views = parse_stat_csv(SHOW_STAT, "lb1")
    assert [(v.backend, v.server, v.status, v.check_status, v.address) for v in views] == [
        ("nova_api", "ctl1", "DOWN", "L4CON", "127.0.0.1:18775"),
        ("nova_api", "ctl2", "DOWN", "L4CON", "127.0.0.1:18776"),
        ("nova_api", "ctl3", "MAINT", "", "127.0.0.1:18777"),
    ]
    assert views[0].last_change == 2.0
    assert not views[0].up and not views[0].on_purpose
    assert views[2].on_purpose and not views[2].up


def test_parse_rejects_what_is_not_stats() -> None:
    with pytest.raises(ValueError, match="pxname"):
        parse_stat_csv("<html>login</html>", "lb1")
    with pytest.raises(ValueError):
        parse_stat_csv("", "lb1")


@pytest.mark.parametrize(("status", "up", "on_purpose"), [
    ("UP", True, False), ("UP 1/3", True, False), ("no check", True, False),
    ("DOWN", False, False), ("DOWN 1/2", False, False), ("MAINT", False, True),
    ("DRAIN", False, True), ("NOLB", False, True), ("MAINT (via nova_api/ctl1)", False, True),
    ("MAINT (resolution)", False, False),
])
def test_haproxy_states(status: str, up: bool, on_purpose: bool) -> None:
    view = ServerView("lb", "b", "s", "10.0.0.1:5000", status)
    assert (view.up, view.on_purpose) == (up, on_purpose)


# -- catalog URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "root"), [
    ("http://10.0.0.5:8774/v2.1", "http://10.0.0.5:8774/"),
    ("http://10.0.0.5:8774/v2.1/$(project_id)s", "http://10.0.0.5:8774/"),
    ("https://api.example.com/identity/v3", "https://api.example.com/identity/"),
    ("http://10.0.0.5:9292", "http://10.0.0.5:9292/"),
    ("http://10.0.0.5:8778/", "http://10.0.0.5:8778/"),
    ("http://ctl/compute/v2.1", "http://ctl/compute/"),
    ("http://ctl:8776/v3/%(tenant_id)s", "http://ctl:8776/"),
])
def test_service_root(url: str, root: str) -> None:
    assert service_root(url) == root


CATALOG = [
    {"type": "identity", "name": "keystone", "endpoints": [
        {"interface": "public", "region_id": "RegionOne", "url": "https://api.example.com:5000/v3"},
        {"interface": "internal", "region_id": "RegionOne", "url": "http://10.0.0.5:5000/v3"},
        {"interface": "admin", "region_id": "RegionOne", "url": "http://10.0.0.5:5000/v3"},
        {"interface": "public", "region_id": "RegionTwo", "url": "https://two.example.com:5000/v3"},
    ]},
    {"type": "compute", "name": "nova", "endpoints": [
        {"interface": "public", "region_id": "RegionOne", "url": "http://10.0.0.5:8774/v2.1"},
        {"interface": "internal", "region_id": "RegionOne", "url": "http://10.0.0.5:8774/v2.1/"},
    ]},
    {"type": "placement", "name": "placement", "endpoints": [
        {"interface": "public", "region_id": "RegionOne", "url": "http://10.0.0.5:8778"},
    ]},
]


def test_endpoints_dedupe_filter_and_targets() -> None:
    eps = endpoints_from(CATALOG, settings(region="RegionOne"))
    got = {(e.service, e.url): (e.interfaces, e.probe_url, e.expect) for e in eps}
    # identical URLs of the internal and admin interfaces: one endpoint
    assert got[("identity", "http://10.0.0.5:5000/v3")] == (
        ("admin", "internal"), "http://10.0.0.5:5000/healthcheck", (200,))
    public = got[("identity", "https://api.example.com:5000/v3")]
    assert public[1] == "https://api.example.com:5000/healthcheck"
    # .../v2.1 and .../v2.1/ reach the same version document: probed once
    assert [k for k in got if k[0] == "compute"] == [("compute", "http://10.0.0.5:8774/v2.1")]
    assert got[("compute", "http://10.0.0.5:8774/v2.1")][1:] == ("http://10.0.0.5:8774/", (200,))
    assert got[("placement", "http://10.0.0.5:8778")][1:] == ("http://10.0.0.5:8778/", (200,))
    assert not any(e.region == "RegionTwo" for e in eps)
    assert len(endpoints_from(CATALOG, settings())) == 5
    only_public = endpoints_from(CATALOG, settings(interfaces=["public"], skip_services=["placement"]))
    assert {e.url for e in only_public} == {"https://api.example.com:5000/v3", "http://10.0.0.5:8774/v2.1",
                                            "https://two.example.com:5000/v3"}
    custom = endpoints_from(CATALOG, settings(targets={"identity": {"path": "", "expect": [300]}}))
    assert {e.probe_url for e in custom if e.service == "identity"} >= {"http://10.0.0.5:5000/"}


def test_automatic_backend_match_by_port_and_name() -> None:
    eps = endpoints_from(CATALOG, settings(region="RegionOne"))
    by_service: dict[str, list[Endpoint]] = {}
    for ep in eps:
        by_service.setdefault(ep.service, []).append(ep)

    def view(port: int) -> list[ServerView]:
        return [ServerView("lb", "x", "ctl1", f"10.0.0.11:{port}", "UP")]

    assert match_backend("keystone_internal", view(5000), by_service) == "identity"  # kolla-ansible
    assert match_backend("keystone_service-back", view(5000), by_service) == "identity"  # OSA
    assert match_backend("nova_api", view(8774), by_service) == "compute"
    assert match_backend("be_8778", view(8778), by_service) == "placement"  # port alone, no other name
    assert match_backend("nova_metadata", view(8775), by_service) == ""  # not an API of the catalog
    assert match_backend("nova_novncproxy", view(6080), by_service) == ""
    assert match_backend("glance_api", view(8774), by_service) == ""  # names another project
    # os-service-types aliases: a cinder backend serves a catalog that calls it block-storage
    cinder = {"block-storage": [Endpoint("block-storage", "", "http://10.0.0.5:8776/v3/%(project_id)s",
                                         ("public",), "http://10.0.0.5:8776/", "", (200, 300))]}
    assert match_backend("cinder_api", view(8776), cinder) == "block-storage"


# -- judging --------------------------------------------------------------------------


EP = Endpoint("identity", "RegionOne", "https://vip:5000/v3", ("public",), "https://vip:5000/", "healthcheck",
              (200,))


def backend(address: str, *views: ServerView) -> Backend:
    return Backend("identity", address, "http", "/healthcheck", (200,), views, ("haproxy lb1 keystone",))


def hview(server: str, address: str, status: str = "UP", check: str = "L7OK") -> ServerView:
    return ServerView("lb1", "keystone_internal", server, address, status, check, 30.0)


OK = Answer("x", ok=True, code=200, latency=0.01)


def down(detail: str = "10.0.0.12:5000: cannot connect: connection refused") -> Answer:
    return Answer("x", failure="refused", detail=detail)


def observe(ep_answer: Answer, answers: dict[str, Answer], *backends: Backend,
            lbs: list[LbStats] | None = None) -> Observation:
    all_answers = {ep_key(EP): ep_answer, **{be_key(b): answers[b.address] for b in backends}}
    return Observation([EP], list(backends), all_answers, lbs or [])


def test_all_healthy() -> None:
    b1, b2 = backend("10.0.0.11:5000", hview("ctl1", "10.0.0.11:5000")), backend("10.0.0.12:5000")
    rep = report()
    ok_cert = Answer("x", ok=True, code=200, latency=0.02, cert_expiry=NOW + 90 * 86400)
    judge(observe(ok_cert, {b1.address: OK, b2.address: OK}, b1, b2), settings(), rep, NOW)
    assert rep.status() is Status.OK and not rep.findings
    labels = {"service": "identity", "region": "RegionOne", "url": "https://vip:5000/v3"}
    assert value(rep, "healthd_api_backends_endpoint_up", **labels) == 1
    expiry = value(rep, "healthd_api_backends_endpoint_cert_expiry_timestamp_seconds", **labels)
    assert expiry == NOW + 90 * 86400
    assert value(rep, "healthd_api_backends_service_backends_up", service="identity") == 2


def test_one_backend_down_while_the_vip_answers_is_a_warning() -> None:
    b1 = backend("10.0.0.11:5000", hview("ctl1", "10.0.0.11:5000"))
    b2 = backend("10.0.0.12:5000", hview("ctl2", "10.0.0.12:5000", "DOWN", "L4CON"))
    rep = report()
    judge(observe(OK, {b1.address: OK, b2.address: down()}, b1, b2), settings(), rep, NOW)
    assert rep.status() is Status.WARNING
    [f] = rep.findings
    assert f.subject == "backend 10.0.0.12:5000 (identity)"
    assert "capacity lost" in f.message and "keystone_internal/ctl2: DOWN" in f.message
    assert "ss -ltnp sport = :5000" in f.remediation


def test_haproxy_still_up_for_a_dead_backend_says_so() -> None:
    b1 = backend("10.0.0.11:5000", hview("ctl1", "10.0.0.11:5000"))
    b2 = backend("10.0.0.12:5000", hview("ctl2", "10.0.0.12:5000", "UP", "L4OK"))
    rep = report()
    judge(observe(OK, {b1.address: OK, b2.address: Answer("x", failure="http", detail="HTTP 500")}, b1, b2),
          settings(), rep, NOW)
    [f] = rep.findings
    assert f.severity is Severity.WARNING and "HAProxy still marks it UP" in f.message


def test_haproxy_down_but_backend_answers() -> None:
    b1 = backend("10.0.0.11:5000", hview("ctl1", "10.0.0.11:5000", "DOWN", "L7STS"))
    rep = report()
    judge(observe(OK, {b1.address: OK}, b1), settings(), rep, NOW)
    [f] = rep.findings
    assert f.severity is Severity.WARNING and "HAProxy marks it down" in f.message


def test_vip_down_backends_up_blames_the_load_balancer() -> None:
    b1, b2 = backend("10.0.0.11:5000"), backend("10.0.0.12:5000")
    rep = report()
    judge(observe(down("vip:5000: cannot connect: connection refused"), {b1.address: OK, b2.address: OK},
                  b1, b2), settings(), rep, NOW)
    [f] = rep.findings
    assert f.severity is Severity.CRITICAL and f.subject == "endpoint https://vip:5000/v3"
    assert "clients fail now" in f.message and "2 of 2 backend(s) answer directly" in f.message
    assert "keepalived" in f.remediation


def test_all_backends_down() -> None:
    b1, b2 = backend("10.0.0.11:5000"), backend("10.0.0.12:5000")
    rep = report()
    judge(observe(Answer("x", failure="http", code=503, detail="HTTP 503"), {b1.address: down(),
                                                                             b2.address: down()}, b1, b2),
          settings(), rep, NOW)
    subjects = {f.subject: f.severity for f in rep.findings}
    assert subjects == {"service identity": Severity.CRITICAL,
                        "endpoint https://vip:5000/v3": Severity.CRITICAL}
    assert value(rep, "healthd_api_backends_service_backends_up", service="identity") == 0


def test_maintenance_on_purpose_is_info() -> None:
    b1 = backend("10.0.0.11:5000", hview("ctl1", "10.0.0.11:5000"))
    b2 = backend("10.0.0.12:5000", hview("ctl2", "10.0.0.12:5000", "MAINT", ""))
    b3 = backend("10.0.0.13:5000")
    rep = report()
    maint = Answer("x", failure="maintenance", code=503, detail="healthcheck disabled by file (503)")
    answers = {b1.address: OK, b2.address: down(), b3.address: maint}
    judge(observe(OK, answers, b1, b2, b3), settings(), rep, NOW)
    assert rep.status() is Status.OK
    assert [f.severity for f in rep.findings] == [Severity.INFO, Severity.INFO]
    assert "state ready" in rep.findings[0].remediation
    assert value(rep, "healthd_api_backends_backend_maintenance", service="identity", address=b2.address) == 1
    assert value(rep, "healthd_api_backends_backend_maintenance", service="identity", address=b3.address) == 1
    assert value(rep, "healthd_api_backends_backend_up", service="identity", address=b1.address) == 1


def test_backends_in_maintenance_are_not_counted_as_all_down() -> None:
    b1 = backend("10.0.0.11:5000", hview("ctl1", "10.0.0.11:5000", "MAINT", ""))
    b2 = backend("10.0.0.12:5000", hview("ctl2", "10.0.0.12:5000", "DOWN", "L4CON"))
    rep = report()
    judge(observe(OK, {b1.address: down(), b2.address: down()}, b1, b2), settings(), rep, NOW)
    # the only backend meant to serve is down: all of them
    assert [f.subject for f in rep.findings if f.severity is Severity.CRITICAL] == ["service identity"]


@pytest.mark.parametrize(("days", "severity"), [
    (90, None), (29, Severity.WARNING), (6, Severity.CRITICAL), (-1, Severity.CRITICAL)])
def test_certificate_expiry(days: float, severity: Severity | None) -> None:
    rep = report()
    answer = Answer("x", ok=True, code=200, latency=0.1, cert_expiry=NOW + days * 86400)
    judge(observe(answer, {}), settings(), rep, NOW)
    found = [f.severity for f in rep.findings]
    assert found == ([severity] if severity else [])
    if days < 0:
        assert "expired 1.0 days ago" in rep.findings[0].message


def test_untrusted_vip_certificate_is_critical() -> None:
    rep = report()
    answer = Answer("x", failure="tls", code=200, detail="TLS certificate not trusted",
                    tls_error="unable to get local issuer certificate", cert_expiry=NOW + 90 * 86400)
    judge(observe(answer, {}), settings(), rep, NOW)
    [f] = rep.findings
    assert f.severity is Severity.CRITICAL and "does not verify" in f.message


def test_unreadable_haproxy_is_a_warning() -> None:
    rep = report()
    judge(observe(OK, {}, lbs=[LbStats("lb1", error="HAProxy stats socket /run/x: connection refused")]),
          settings(), rep, NOW)
    [f] = rep.findings
    assert f.severity is Severity.WARNING and f.subject == "load balancer lb1"
    assert value(rep, "healthd_api_backends_haproxy_up", lb="lb1") == 0


def test_bad_addresses_and_urls() -> None:
    from checks.api_backends import _address

    assert _address("10.0.0.1:5000") == "10.0.0.1:5000"
    assert _address("[2001:db8::1]:5000") == "[2001:db8::1]:5000"
    assert _address("2001:db8::1:5000") == "[2001:db8::1]:5000"  # HAProxy's addr for IPv6
    assert _address("host:abc") is None and _address("host") is None and _address("h:70000") is None
    with pytest.raises(ValueError, match="HOST:PORT"):
        settings(static_backends=[{"service": "identity", "servers": ["ctl1"]}])
    with pytest.raises(ValueError, match="not http"):
        settings(endpoints=[{"service": "identity", "url": "ctl1:5000"}])
    bad = [{"type": "identity", "endpoints": [
        {"interface": "public", "region_id": "R", "url": "http://h:port/v3"},
        {"interface": "public", "region_id": "R", "url": "$(public_endpoint)s/v3"}]}]
    assert endpoints_from(bad, settings()) == []


def test_settings_validate() -> None:
    with pytest.raises(ValueError):
        settings(cert_warning_days=5, cert_critical_days=10)
    with pytest.raises(ValueError):
        settings(haproxy=[{"socket": "/run/haproxy.sock", "url": "http://x/stats"}])
    with pytest.raises(ValueError):
        settings(unknown_key=1)
    src = settings(haproxy=[{"url": "http://10.0.0.5:1984/stats"}]).haproxy[0]
    assert src.csv_url == "http://10.0.0.5:1984/stats;csv" and src.label == "10.0.0.5:1984"
    assert settings(haproxy=[{"url": "http://lb:1984"}]).haproxy[0].csv_url == "http://lb:1984/;csv"
