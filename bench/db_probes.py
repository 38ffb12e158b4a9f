"""Benchmark: the database probes against a synthetic nova deployment at cluster scale.

Builds, in the shared MariaDB (127.0.0.1:3306), a deployment with nova 34's and
placement 16's real schemas (tests/schemas): nova_api, cell0 and two cells,
N compute hosts (service + compute node + host mapping + placement provider
with DISK_GB inventory), nova-conductor/scheduler services, and 20 instances
per host with their placement allocations. A few faults are sprinkled in so
that the finding paths run too: 1 % unmapped hosts, 0.5 % nodes with negative
free disk, 0.5 % instances building (half of them stuck), 0.2 % instances
resizing (source share held by the migration uuid), 1 % hosts with an
allocation for a consumer nova does not have (placement_allocations), and 1,000
flavors with extra specs, 3 % of them unschedulable (flavor_filters, add_flavors).

Then it runs cell_mapping, disk_overcommit and (if present) nova_services with
source=db, one after the other as one pass, and reports the wall time (median
of --runs) and the SQL statements each probe issued (Backends.sql_statements).

Usage: .venv/bin/python bench/db_probes.py [--hosts 100 10000] [--runs 5]
Databases use a unique prefix and are dropped at the end, also on failure.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from checks.cell_connections import CellConnectionsProbe  # noqa: E402
from checks.cell_mapping import CellMappingProbe  # noqa: E402
from checks.disk_overcommit import DiskOvercommitProbe  # noqa: E402
from checks.flavor_filters import FlavorFiltersProbe  # noqa: E402
from checks.placement_allocations import PlacementAllocationsProbe  # noqa: E402
from healthd.config import BackendsConfig  # noqa: E402
from healthd.connections import Backends  # noqa: E402
from healthd.probe import Probe  # noqa: E402
from healthd.scheduler import execute, run_once  # noqa: E402
from tests.helpers.novadb import DISK_GB_ID, Deployment, NovaDB, utcnow  # noqa: E402

INSTANCES_PER_HOST = 20
BATCH = 5000
VCPU_ID, MEMORY_MB_ID = 0, 1


def bulk(novadb: NovaDB, db: str, table: str, rows: list[dict[str, Any]]) -> None:
    """Multi-row INSERTs (pymysql turns executemany into INSERT ... VALUES (...), (...))."""
    if not rows:
        return
    cols = list(rows[0])
    sql = (f"INSERT INTO `{db}`.`{table}` ({', '.join(f'`{c}`' for c in cols)}) "
           f"VALUES ({', '.join(['%s'] * len(cols))})")
    conn = novadb._root
    with conn.cursor() as cur:
        for i in range(0, len(rows), BATCH):
            cur.executemany(sql, [tuple(r[c] for c in cols) for r in rows[i:i + BATCH]])


def build(novadb: NovaDB, hosts: int, rng: random.Random) -> Deployment:
    dep = Deployment(novadb, with_placement=True)
    dep.add_cell0()
    cells = [dep.add_cell("cell1"), dep.add_cell("cell2")]
    now = utcnow()
    week_ago = now - timedelta(days=7)
    project = uuid.uuid4().hex
    user = uuid.uuid4().hex
    mappings, providers, inventories, allocations = [], [], [], []
    inst_mappings: list[dict[str, Any]] = []  # placement_allocations: nova_api.instance_mappings
    strays = random.Random(7)  # its own generator: the other probes' faults stay where they were
    rp_id = 0
    for index, cell in enumerate(cells):
        names = [f"compute-{i:05d}" for i in range(index, hosts, len(cells))]
        services, nodes, instances = [], [], []
        migrations: list[dict[str, Any]] = []
        # Control-plane services: the conductors of the cell, schedulers in cell1 (as with a
        # single [database] connection on the controllers).
        for ctl in range(3):
            for binary in ("nova-conductor", "nova-scheduler") if index == 0 else ("nova-conductor",):
                services.append(_service(f"ctl-{index}-{ctl}", binary, week_ago, now))
        for host in names:
            services.append(_service(host, "nova-compute", week_ago, now))
            node_uuid = str(uuid.uuid4())
            used = INSTANCES_PER_HOST * 20
            local = 2000 if rng.random() > 0.005 else 300  # 0.5 %: overcommitted (free < 0)
            nodes.append(_node(host, node_uuid, local, used, week_ago, now))
            if rng.random() > 0.01:  # 1 %: never discovered
                mappings.append({"created_at": week_ago, "cell_id": cell.id, "host": host})
            rp_id += 1
            providers.append({"id": rp_id, "created_at": week_ago, "uuid": node_uuid, "name": host,
                              "generation": 5, "root_provider_id": rp_id})
            for rc, total in ((VCPU_ID, 64), (MEMORY_MB_ID, 262144), (DISK_GB_ID, local)):
                inventories.append({"created_at": week_ago, "resource_provider_id": rp_id,
                                    "resource_class_id": rc, "total": total, "reserved": 0, "min_unit": 1,
                                    "max_unit": total, "step_size": 1, "allocation_ratio": 1.0})
            for _ in range(INSTANCES_PER_HOST):
                inst = _instance(host, project, user, rng, now)
                instances.append(inst)
                for rc, amount in ((VCPU_ID, 2), (MEMORY_MB_ID, 4096), (DISK_GB_ID, 20)):
                    allocations.append({"created_at": inst["created_at"], "resource_provider_id": rp_id,
                                        "consumer_id": inst["uuid"], "resource_class_id": rc,
                                        "used": amount})
                inst_mappings.append({"created_at": inst["created_at"], "instance_uuid": inst["uuid"],
                                      "cell_id": cell.id, "project_id": project, "queued_for_delete": 0})
                if strays.random() < 0.002:  # 0.2 %: a resize in progress, source share on the migration
                    mig = str(uuid.uuid4())
                    migrations.append({"created_at": now, "updated_at": now, "uuid": mig,
                                       "instance_uuid": inst["uuid"], "status": "finished",
                                       "migration_type": "resize", "source_compute": host,
                                       "source_node": host, "dest_compute": host, "dest_node": host,
                                       "deleted": 0, "hidden": 0})
                    allocations.append({"created_at": now, "resource_provider_id": rp_id, "consumer_id": mig,
                                        "resource_class_id": VCPU_ID, "used": 2})
            if strays.random() < 0.01:  # 1 % of hosts: an allocation for a consumer nova does not have
                allocations.append({"created_at": week_ago, "resource_provider_id": rp_id,
                                    "consumer_id": str(uuid.uuid4()), "resource_class_id": VCPU_ID,
                                    "used": 1})
        bulk(novadb, cell.db, "services", services)
        bulk(novadb, cell.db, "compute_nodes", nodes)
        bulk(novadb, cell.db, "instances", instances)
        bulk(novadb, cell.db, "migrations", migrations)
    bulk(novadb, dep.api, "host_mappings", mappings)
    bulk(novadb, dep.api, "instance_mappings", inst_mappings)
    # Four availability zones (host aggregates with availability_zone metadata) over all computes.
    zones = [novadb.insert(dep.api, "aggregates", {"created_at": week_ago, "uuid": str(uuid.uuid4()),
                                                   "name": f"rack-{z}"}) for z in range(4)]
    bulk(novadb, dep.api, "aggregate_metadata", [
        {"created_at": week_ago, "aggregate_id": agg, "key": "availability_zone", "value": f"az{z}"}
        for z, agg in enumerate(zones)])
    bulk(novadb, dep.api, "aggregate_hosts", [
        {"created_at": week_ago, "host": f"compute-{i:05d}", "aggregate_id": zones[i % 4]}
        for i in range(hosts)])
    placement = dep.placement or ""
    bulk(novadb, placement, "resource_providers", providers)
    bulk(novadb, placement, "inventories", inventories)
    bulk(novadb, placement, "allocations", allocations)
    add_flavors(novadb, dep, rp_id, week_ago)  # flavor_filters
    return dep


FLAVORS = 1000


def add_flavors(novadb: NovaDB, dep: Deployment, providers: int, created: Any) -> None:
    """flavor_filters: 1,000 flavors (nova/objects/flavor.py _flavor_create, extra specs and
    project access as the API writes them), every provider with two traits
    (placement/objects/trait.py _set_traits). Most flavors are fine; 1 % each ask for
    hypervisor_type=ironic (ComputeCapabilitiesFilter), more VCPU than max_unit (64), a trait
    placement does not know; 10 % are private, 2 % disabled."""
    placement = dep.placement or ""
    rng = random.Random(9)
    traits = ["HW_CPU_X86_AVX2", "COMPUTE_STATUS_DISABLED", "CUSTOM_SSD"]
    bulk(novadb, placement, "traits", [{"created_at": created, "id": i + 1, "name": t}
                                       for i, t in enumerate(traits)])
    bulk(novadb, placement, "resource_provider_traits", [
        {"created_at": created, "trait_id": t, "resource_provider_id": rp}
        for rp in range(1, providers + 1) for t in (1, 3)])
    flavors, specs, access = [], [], []
    for i in range(1, FLAVORS + 1):
        roll = rng.random()
        vcpus = 512 if roll < 0.01 else rng.choice((1, 2, 4, 8, 16))
        flavors.append({"created_at": created, "id": i, "name": f"bench-{i:04d}", "memory_mb": 2048 * vcpus,
                        "vcpus": vcpus, "swap": 0, "flavorid": f"fl-{i:04d}", "rxtx_factor": 1.0,
                        "root_gb": 20, "ephemeral_gb": 0, "disabled": int(rng.random() < 0.02),
                        "is_public": int(rng.random() >= 0.1)})
        extra = {"hw:cpu_policy": "shared", "quota:disk_read_iops_sec": "1000"}
        if roll < 0.02 and roll >= 0.01:
            extra["capabilities:hypervisor_type"] = "ironic"
        elif 0.02 <= roll < 0.03:
            extra["trait:CUSTOM_GPU_A100"] = "required"
        elif roll < 0.5:
            extra["capabilities:hypervisor_type"] = "QEMU"
            extra["trait:CUSTOM_SSD"] = "required"
        for key, value in extra.items():
            specs.append({"created_at": created, "flavor_id": i, "key": key, "value": value})
        if not flavors[-1]["is_public"]:
            access.append({"created_at": created, "flavor_id": i, "project_id": uuid.uuid4().hex})
    bulk(novadb, dep.api, "flavors", flavors)
    bulk(novadb, dep.api, "flavor_extra_specs", specs)
    bulk(novadb, dep.api, "flavor_projects", access)


def _service(host: str, binary: str, created: Any, now: Any) -> dict[str, Any]:
    """nova/objects/service.py Service.create + the db servicegroup heartbeat."""
    return {"created_at": created, "updated_at": now, "host": host, "binary": binary,
            "topic": binary.removeprefix("nova-"), "report_count": 60000, "disabled": 0, "deleted": 0,
            "last_seen_up": now, "forced_down": 0, "version": 74, "uuid": str(uuid.uuid4())}


def _node(host: str, node_uuid: str, local: int, used: int, created: Any, now: Any) -> dict[str, Any]:
    """nova/compute/resource_tracker.py _init_compute_node / _update_usage."""
    return {"created_at": created, "updated_at": now, "vcpus": 64, "memory_mb": 262144,
            "local_gb": local, "vcpus_used": 40, "memory_mb_used": 81920, "local_gb_used": used,
            "hypervisor_type": "QEMU", "hypervisor_version": 8002000, "cpu_info": "{}",
            "disk_available_least": local - used // 2, "free_ram_mb": 180224, "free_disk_gb": local - used,
            "current_workload": 0, "running_vms": INSTANCES_PER_HOST, "hypervisor_hostname": host,
            "deleted": 0, "host_ip": "127.0.0.1", "host": host, "uuid": node_uuid,
            "ram_allocation_ratio": 1.0, "cpu_allocation_ratio": 4.0, "disk_allocation_ratio": 1.0,
            "mapped": 1}


def _instance(host: str, project: str, user: str, rng: random.Random, now: Any) -> dict[str, Any]:
    """What nova/compute/api.py _provision_instances + the compute's build leave in `instances`."""
    building = rng.random() < 0.005
    age = timedelta(seconds=rng.randint(30, 3600)) if building else timedelta(days=rng.randint(1, 300))
    created = now - age
    return {"uuid": str(uuid.uuid4()), "created_at": created, "updated_at": created + timedelta(seconds=5),
            "host": None if building else host, "node": None if building else host,
            "vm_state": "building" if building else "active",
            "task_state": "scheduling" if building else None, "power_state": 0 if building else 1,
            "launched_at": None if building else created + timedelta(seconds=30), "deleted": 0,
            "project_id": project, "user_id": user, "hostname": "vm", "display_name": "vm",
            "instance_type_id": 1, "root_gb": 20, "ephemeral_gb": 0, "memory_mb": 4096, "vcpus": 2,
            "availability_zone": "nova", "cleaned": 0, "locked": 0}


def probes() -> list[Probe]:
    found: list[Probe] = [CellMappingProbe(), DiskOvercommitProbe(), PlacementAllocationsProbe(),
                          CellConnectionsProbe(),
                          # heartbeats are written once, when the deployment is built (see below)
                          FlavorFiltersProbe(FlavorFiltersProbe.Settings(service_down_time=3600))]
    if importlib.util.find_spec("checks.nova_services"):
        from checks.nova_services import NovaServicesProbe

        # Heartbeats are written once, when the deployment is built (about a
        # minute at 10,000 hosts): a long service_down_time keeps them "up".
        found.append(NovaServicesProbe(NovaServicesProbe.Settings(source="db", service_down_time=3600)))
    return found


def measure(dep: Deployment, runs: int) -> dict[str, Any]:
    config = BackendsConfig.model_validate(dep.backends_config())
    out: dict[str, Any] = {"statements": {}, "status": {}, "findings": {}, "per_probe": {}}
    passes = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for probe in probes():
            backends = Backends(config)
            p0 = time.perf_counter()
            result = execute(probe, backends)
            out["per_probe"].setdefault(probe.name, []).append(time.perf_counter() - p0)
            out["statements"][probe.name] = sum(backends.sql_statements.values())
            out["status"][probe.name] = f"{result.status.name} ({result.summary})"
            out["findings"][probe.name] = len(result.findings)
        passes.append(time.perf_counter() - t0)
    out["wall"] = statistics.median(passes)
    # The same three probes run together, as the daemon's scheduler runs them.
    together = []
    for _ in range(runs):
        t0 = time.perf_counter()
        results = run_once({p.name: p for p in probes()}, Backends(config), workers=3)
        together.append(time.perf_counter() - t0)
        assert all(r.completed for r in results.values()), results
    out["together"] = statistics.median(together)
    out["per_probe"] = {k: statistics.median(v) for k, v in out["per_probe"].items()}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[100, 10000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(42)
    for hosts in args.hosts:
        novadb = NovaDB(prefix=f"hdbench_{uuid.uuid4().hex[:8]}")
        try:
            t0 = time.perf_counter()
            dep = build(novadb, hosts, rng)
            built = time.perf_counter() - t0
            res = measure(dep, args.runs)
        finally:
            novadb.close()
        print(f"\n== {hosts} compute hosts, 2 cells, {hosts * INSTANCES_PER_HOST} instances "
              f"(built in {built:.1f} s)")
        print(f"one pass, one probe after the other, median of {args.runs}: {res['wall']:.3f} s")
        print(f"one pass, together (scheduler, 3 workers), median of {args.runs}: {res['together']:.3f} s")
        for name, statements in res["statements"].items():
            print(f"  {name:22} {res['per_probe'][name]:.3f} s  {statements:3d} SQL statements  "
                  f"{res['findings'][name]:4d} findings  {res['status'][name][:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
