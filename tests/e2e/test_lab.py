"""The lab is a real OpenStack, and each fault is real: seen through the real
APIs (the `openstack` client), nova-manage, the databases and memcached, and
gone again after the revert."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import healthd_lab as L
import pytest

pytestmark = pytest.mark.e2e


# ------------------------------------------------------------------ helpers --

def _env(lab):
    env = dict(os.environ)
    env["OS_CLIENT_CONFIG_FILE"] = lab["paths"]["clouds_yaml"]
    env["OS_CLOUD"] = "healthd-lab"
    return env


def osc(lab, *args, parse=True):
    """Run the lab venv's `openstack` client; JSON-decoded output."""
    argv = [str(Path(lab["paths"]["venv"]) / "bin" / "openstack"), *args]
    if parse:
        argv += ["-f", "json"]
    res = subprocess.run(argv, capture_output=True, text=True, env=_env(lab),
                         timeout=300)
    assert res.returncode == 0, f"{' '.join(args)}\n{res.stdout}{res.stderr}"
    return json.loads(res.stdout) if parse and res.stdout.strip() else res.stdout


def nova_manage(lab, *args):
    argv = [str(Path(lab["paths"]["venv"]) / "bin" / "nova-manage"),
            "--config-file", lab["paths"]["nova_conf"], *args]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    return res.returncode, res.stdout + res.stderr


def reader_sql(lab, db, sql):
    """Query as healthd's SELECT-only DB user (password from the secrets file)."""
    pw = Path(lab["paths"]["db_password_file"]).read_text().strip()
    res = subprocess.run(
        ["mysql", "-h", "127.0.0.1", "-P", "3306", "-u", L.READER_DB_USER,
         "-p" + pw, "-N", "-B", "-D", db, "-e", sql],
        capture_output=True, text=True, timeout=60)
    return res.returncode, res.stdout, res.stderr


def compute_services(lab):
    return {s["Host"]: s for s in osc(lab, "compute", "service", "list",
                                      "--service", "nova-compute")}


def mc_request(port, cmd=b"version\r\n", timeout=2.0):
    """Reply of memcached on a new connection ('' if closed, None on timeout,
    'refused' if the connect was refused)."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except ConnectionRefusedError:
        return "refused"
    with s:
        s.settimeout(timeout)
        try:
            s.sendall(cmd)
            return s.recv(65536).decode(errors="replace")
        except TimeoutError:
            return None
        except OSError:
            return ""


def wait_for(pred, timeout=60, interval=1.0, what="condition"):
    deadline = time.time() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


# -------------------------------------------------------------------- tests --

def test_lab_status_is_clean(lab, lab_api):
    ok, report = lab_api.status()
    assert ok, report
    assert "lab-compute1" in report and "lab-compute2" in report


def test_catalog_has_the_services_with_three_interfaces(lab):
    services = osc(lab, "service", "list")
    types = sorted(s["Type"] for s in services)
    for t in ("compute", "identity", "image", "network", "placement"):
        assert types.count(t) == 1, types
    endpoints = osc(lab, "endpoint", "list")
    for t in ("compute", "identity", "image", "network", "placement"):
        ifaces = sorted(e["Interface"] for e in endpoints if e["Service Type"] == t)
        assert ifaces == ["admin", "internal", "public"], (t, ifaces)
        assert all("127.0.0.1" in e["URL"] for e in endpoints)


def test_healthd_yaml_shape(lab):
    text = Path(lab["healthd_yaml"]).read_text()
    p = lab["paths"]
    for needle in ("listen_address: 127.0.0.1", f"port: {lab['ports']['healthd']}",
                   "cloud: healthd-lab", "clouds_yaml: " + p["clouds_yaml"],
                   "region_name: RegionOne", "interface: public",
                   *[f"mysql+pymysql://{L.READER_DB_USER}@127.0.0.1:3306/{L.DBS[d]}"
                     for d in ("keystone", "nova_api", "placement")],
                   f"127.0.0.1:{lab['ports']['memcached']}",
                   f"127.0.0.1:{lab['ports']['memcached_sat']}",
                   p["keystone_conf"]):
        assert needle in text, needle
    try:
        import yaml
    except ImportError:
        return
    cfg = yaml.safe_load(text)
    assert set(cfg) == {"server", "logging", "backends", "checks"}
    assert set(cfg["backends"]) == {"openstack", "databases", "memcached"}
    # mysql: db_grants' audit connection (the reader has SELECT on the grant tables, no hash)
    assert set(cfg["backends"]["databases"]) == {"keystone", "nova_api", "placement", "mysql"}
    # One glob covers the controller's nova.conf, the computes' configs and,
    # while bad-config-hosts is injected, the bad copy.
    import fnmatch
    nova_glob = cfg["checks"]["service_config"]["files"][0]
    for path in (p["nova_conf"], p["nova_bad_conf"], *p["compute_confs"].values()):
        assert fnmatch.fnmatch(path, nova_glob), (path, nova_glob)
    assert oct(os.stat(p["db_password_file"]).st_mode & 0o777) == "0o600"


def test_reader_db_user_is_select_only(lab):
    rc, out, err = reader_sql(lab, L.DBS["nova_api"],
                              "SELECT name, database_connection FROM cell_mappings")
    assert rc == 0, err
    assert "cell0" in out and "cell1" in out and L.DBS["nova_cell1"] in out
    rc, _, err = reader_sql(lab, L.DBS["nova_api"],
                            "DELETE FROM cell_mappings WHERE name = 'nope'")
    assert rc != 0 and "denied" in err.lower()


def test_server_boots_active_on_fake_driver(lab):
    name = f"e2e-boot-{os.getpid()}"
    t0 = time.time()
    server = osc(lab, "server", "create", "--flavor", "lab-tiny", "--image",
                 "lab-image", "--nic", "none", "--wait", name)
    try:
        assert server["status"] == "ACTIVE"
        assert server["OS-EXT-SRV-ATTR:host"] in ("lab-compute1", "lab-compute2")
        print(f"server ACTIVE after {time.time() - t0:.1f}s (including client start-up)")
    finally:
        osc(lab, "server", "delete", "--wait", server["id"] if server else name,
            parse=False)
    assert name not in [s["Name"] for s in osc(lab, "server", "list", "--all-projects")]


def test_fault_duplicate_service(lab, lab_api):
    info = lab_api.inject("duplicate-service")
    try:
        net = osc(lab, "service", "list", "--long")
        net = [s for s in net if s["Type"] == "network"]
        assert len(net) == 2, net
        assert {s["Name"] for s in net} == {"neutron"}
        eps = osc(lab, "endpoint", "list", "--service", info["service_id"])
        assert eps == []
        ok, report = lab_api.status()
        assert not ok and "2 services of type network" in report
    finally:
        lab_api.revert("duplicate-service")
    net = [s for s in osc(lab, "service", "list") if s["Type"] == "network"]
    assert len(net) == 1 and net[0]["ID"] != info["service_id"]


def test_fault_unmapped_compute(lab, lab_api):
    lab_api.inject("unmapped-compute")
    try:
        svcs = compute_services(lab)
        assert svcs["lab-compute3"]["State"] == "up"
        rc, out = nova_manage(lab, "cell_v2", "list_hosts")
        assert rc == 0, out
        assert "lab-compute1" in out and "lab-compute3" not in out
        rc, out, err = reader_sql(
            lab, L.DBS["nova_cell1"],
            "SELECT host FROM compute_nodes WHERE deleted = 0 AND host = 'lab-compute3'")
        assert rc == 0 and out.strip() == "lab-compute3", err
        ok, report = lab_api.status()
        assert not ok and "lab-compute3 has no host mapping" in report
    finally:
        lab_api.revert("unmapped-compute")
    assert set(compute_services(lab)) == {"lab-compute1", "lab-compute2"}
    rc, out = nova_manage(lab, "cell_v2", "list_hosts")
    assert "lab-compute3" not in out
    ok, report = lab_api.status()
    assert ok, report


def test_fault_compute_down(lab, lab_api):
    lab_api.inject("compute-down")
    try:
        svcs = compute_services(lab)
        assert svcs["lab-compute2"]["State"] == "down"
        assert svcs["lab-compute1"]["State"] == "up"
    finally:
        lab_api.revert("compute-down")
    assert compute_services(lab)["lab-compute2"]["State"] == "up"


def test_fault_disk_overcommit(lab, lab_api):
    info = lab_api.inject("disk-overcommit")
    try:
        rc, out, err = reader_sql(
            lab, L.DBS["nova_cell1"],
            "SELECT free_disk_gb, disk_allocation_ratio FROM compute_nodes "
            "WHERE host = 'lab-compute1' AND deleted = 0")
        assert rc == 0, err
        free, ratio = out.split()
        assert int(free) < 0 and float(ratio) > 1.0
        servers = osc(lab, "server", "list", "--all-projects", "--long")
        ours = [s for s in servers if s["ID"] in info["servers"]]
        assert len(ours) == len(info["servers"]) >= 2
        assert all(s["Status"] == "ACTIVE" and s["Host"] == "lab-compute1" for s in ours)
        conf = Path(lab["paths"]["compute_confs"]["lab-compute1"]).read_text()
        assert "disk_allocation_ratio = 16.0" in conf
    finally:
        lab_api.revert("disk-overcommit")
    rc, out, err = reader_sql(
        lab, L.DBS["nova_cell1"],
        "SELECT free_disk_gb, disk_allocation_ratio FROM compute_nodes "
        "WHERE host = 'lab-compute1' AND deleted = 0")
    free, ratio = out.split()
    assert int(free) >= 0 and float(ratio) == 1.0
    assert not [s for s in osc(lab, "server", "list", "--all-projects")
                if s["ID"] in info["servers"]]
    conf = Path(lab["paths"]["compute_confs"]["lab-compute1"]).read_text()
    assert "disk_allocation_ratio" not in conf


def test_fault_memcached_saturation(lab, lab_api):
    port = lab["ports"]["memcached_sat"]
    assert "VERSION" in (mc_request(port) or "")
    info = lab_api.inject("memcached-saturation")
    try:
        reply = mc_request(port)
        # memcached 1.6 (maxconns_fast) answers and closes; a listener that is
        # disabled leaves the client hanging; either way no VERSION.
        assert reply is None or "VERSION" not in reply, reply
        status = json.loads(Path(info["status_file"]).read_text())
        stats = status["stats"]
        assert int(stats["rejected_connections"]) > 0 or int(stats["listen_disabled_num"]) > 0
        assert int(stats["max_connections"]) == 16
        # the lab's main memcached is unaffected
        assert "VERSION" in mc_request(lab["ports"]["memcached"])
    finally:
        lab_api.revert("memcached-saturation")
    assert "VERSION" in wait_for(lambda: mc_request(port), 15, 0.5, "memcached free again")
    stats = mc_request(port, b"stats\r\n")
    assert "STAT curr_connections" in stats


def test_fault_bad_config_hosts(lab, lab_api):
    bad = Path(lab["paths"]["nova_bad_conf"])
    assert not bad.exists()
    info = lab_api.inject("bad-config-hosts")
    try:
        text = bad.read_text()
        assert f"@127.0.0.1:{info['rabbit_port']}/" in text
        assert f"memcache_servers = 127.0.0.1:{info['memcached_port']}" in text
        assert f"memcached_servers = 127.0.0.1:{lab['ports']['memcached']}" in text
        for port in (info["rabbit_port"], info["memcached_port"]):
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        lab_api.revert("bad-config-hosts")
    assert not bad.exists()


def test_all_faults_together_then_clean(lab, lab_api):
    t0 = time.time()
    try:
        lab_api.inject("all")  # inside: a fault that fails to inject still gets the others reverted
        ok, report = lab_api.status()
        assert not ok
        for needle in ("2 services of type network", "lab-compute3 has no host mapping",
                       "lab-compute2 is down", "free_disk_gb", "nova-bad.conf exists"):
            assert needle in report, report
    finally:
        lab_api.revert("all")
    ok, report = lab_api.status()
    assert ok, report
    print(f"inject all + revert all: {time.time() - t0:.0f}s")
