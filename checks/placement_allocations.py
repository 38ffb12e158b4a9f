"""placement_allocations: allocations in placement that nova no longer accounts for.

Every server holds allocations in placement (consumer = the instance uuid) on
the compute node's resource provider, and a move holds the source's share
under the migration's uuid. When a delete, a move or a compute's cleanup goes
wrong, allocations stay behind: the capacity is used in placement and by no
server, the scheduler sees the host as fuller than it is ("No valid host"),
and the compute's resource tracker logs at each periodic run "Instance <uuid>
has allocations against this compute host but is not found in the database."
(nova/compute/resource_tracker.py _remove_deleted_instances_allocations), and
never removes them.

The probe does what ``nova-manage placement audit`` does (nova/cmd/manage.py
PlacementCommands.audit / _check_orphaned_allocations_for_provider, nova
34.0.0) without its O(hosts) API calls: three statements on the
placement database, two on nova_api, three per cell, joined in Python. A consumer with
allocations of nova's resource classes on a compute node tree is judged:

- an in-progress migration's uuid on its source or destination: fine;
- an instance on its own host/node: fine; on another host while a migration of
  it is in progress: fine;
- a build in flight (build request, mapping without a cell yet, instance being
  scheduled/spawned without a host), or anything younger than
  ``grace_seconds``: in flight, not judged;
- otherwise a stray, by kind: ``no_mapping`` (no instance mapping and no
  instance: the seed's message), ``not_in_cell`` (mapped to a cell that has no
  such instance), ``deleted`` (the instance is deleted), ``no_cell`` (mapping
  with no cell and no build request), ``finished_migration`` (a migration uuid
  whose migration is over), ``wrong_host`` (a live instance holding
  allocations on another host with no migration in progress),
  ``evacuated_source`` (left on the source of a finished evacuation until
  its nova-compute starts again).

A cell whose database cannot be read leaves its consumers unjudged (counted,
never called strays); if no cell can be read the probe is UNKNOWN.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from healthd.model import MetricSpec, Report
from healthd.openstack.cells import Cell, cell_db, cells
from healthd.probe import BackendUnavailable, Context, Probe, ProbeSettings

# nova/cmd/manage.py _check_orphaned_allocations_for_provider NOVA_RCS: the audit only
# judges consumers holding *any* of these (ironic's CUSTOM_* classes, cyborg's
# accelerators and neutron's other classes are not nova's to judge).
NOVA_RCS = ("VCPU", "MEMORY_MB", "DISK_GB", "VGPU", "NET_BW_EGR_KILOBIT_PER_SEC",
            "NET_BW_IGR_KILOBIT_PER_SEC", "PCPU", "MEM_ENCRYPTION_CONTEXT")

# nova/db/main/api.py migration_get_in_progress_by_host_and_node: a migration is in
# progress unless its status is one of these ('finished' is a resize waiting for
# confirm/revert: still in progress).
MIGRATION_DONE = ("confirmed", "reverted", "error", "failed", "completed", "cancelled", "done")

# Three statements on placement: allocations folded per (consumer, provider) by the server,
# then the providers (their root: the root provider's uuid is the compute node's uuid, the
# audit looks provider["root_provider_uuid"] up as a ComputeNode) and the resource classes;
# joined in Python (cheaper than joining 600,000 rows in SQL, bench/README.md). Allocations
# are replaced as a whole on each PUT /allocations/{consumer} (placement/objects/allocation.py
# _set_allocations deletes then inserts), so created_at is the last write.
ALLOCATIONS_SQL = """
SELECT consumer_id, resource_provider_id AS rp_id,
       GROUP_CONCAT(resource_class_id, '=', used) AS resources,
       TIMESTAMPDIFF(SECOND, MAX(created_at), UTC_TIMESTAMP()) AS age_s
  FROM allocations
 GROUP BY consumer_id, resource_provider_id
"""
PROVIDERS_SQL = "SELECT id, uuid, name, COALESCE(root_provider_id, id) AS root_id FROM resource_providers"
CLASSES_SQL = "SELECT id, name FROM resource_classes"

# One statement on nova_api: every instance mapping, its cell and whether a build request
# is still there (nova/compute/api.py _provision_instances creates the build request and
# the mapping with cell_id NULL; nova/conductor/manager.py schedule_and_build_instances
# creates the instance in the cell, sets the mapping's cell and deletes the build request).
API_SQL = """
SELECT im.instance_uuid, cm.uuid AS cell_uuid, im.queued_for_delete,
       (br.id IS NOT NULL) AS building
  FROM instance_mappings im
  LEFT JOIN cell_mappings cm ON cm.id = im.cell_id
  LEFT JOIN build_requests br ON br.instance_uuid = im.instance_uuid
"""

# Per cell: live instances and those deleted within the window (not yet archived),
# migrations in progress or finished within the window, and compute nodes.
INSTANCES_SQL = """
SELECT uuid, host, node, deleted, hidden, vm_state, task_state,
       TIMESTAMPDIFF(SECOND, deleted_at, UTC_TIMESTAMP()) AS deleted_s
  FROM instances
 WHERE deleted = 0 OR deleted_at > UTC_TIMESTAMP() - INTERVAL %s SECOND
"""
MIGRATIONS_SQL = """
SELECT uuid, instance_uuid, status, migration_type, source_compute, source_node,
       dest_compute, dest_node
  FROM migrations
 WHERE deleted = 0 AND uuid IS NOT NULL
   AND (status NOT IN ({done}) OR updated_at > UTC_TIMESTAMP() - INTERVAL %s SECOND)
""".format(done=", ".join(f"'{s}'" for s in MIGRATION_DONE))
NODES_SQL = "SELECT uuid, host, hypervisor_hostname FROM compute_nodes WHERE deleted = 0"

KINDS = ("no_mapping", "not_in_cell", "deleted", "no_cell", "finished_migration", "wrong_host",
         "evacuated_source")
IN_FLIGHT = ("building", "migrating", "young", "recently_deleted")


class PlacementAllocationsProbe(Probe):
    name = "placement_allocations"
    description = "Allocations in placement that no nova instance or migration in progress accounts for."
    default_interval = 600.0
    default_timeout = 60.0
    requires = ("db:placement", "db:nova_api", "cells")
    privileges = (
        "SELECT on placement.allocations, placement.resource_providers and "
        "placement.resource_classes; SELECT on nova_api.cell_mappings, nova_api.instance_mappings "
        "and nova_api.build_requests; SELECT on <cell db>.instances, <cell db>.migrations and "
        "<cell db>.compute_nodes of every cell"
    )
    metrics = (
        MetricSpec("healthd_placement_allocations_consumers",
                   "Consumers holding nova resource classes in placement (judged or not)."),
        MetricSpec("healthd_placement_allocations_orphans",
                   "Stray (consumer, provider) allocations, by kind.", ("kind",)),
        MetricSpec("healthd_placement_allocations_in_flight",
                   "Allocations not judged because a build, move or delete is in flight, by kind.",
                   ("kind",)),
        MetricSpec("healthd_placement_allocations_unjudged",
                   "Allocations not judged because a cell database could not be read."),
        MetricSpec("healthd_placement_allocations_cell_up",
                   "1 if the cell's database could be read this run, 0 if not.", ("cell",)),
        MetricSpec("healthd_placement_allocations_orphan",
                   "1 for each stray allocation (bounded by max_consumer_series).",
                   ("consumer", "provider", "kind")),
    )

    class Settings(ProbeSettings):
        grace_seconds: float = Field(
            600.0, ge=0,
            description="allocations written, or instances deleted, less than this ago are in flight")
        history_seconds: float = Field(
            30 * 86400.0, gt=0,
            description="deleted instances and finished migrations this recent are read to name the kind")
        max_consumer_series: int = Field(
            100, ge=0, description="cap on healthd_placement_allocations_orphan series per run")
        max_findings: int = Field(
            50, ge=1, description="stray allocations reported one by one; the rest in one finding")

    settings: Settings

    def run(self, ctx: Context, report: Report) -> None:
        judge(load(ctx, self.settings.history_seconds), self.settings, report)


# -- loading ---------------------------------------------------------------------


@dataclass(frozen=True)
class Allocation:
    """What a consumer holds on one provider tree (ALLOCATIONS_SQL rows folded by root)."""

    consumer: str
    root_uuid: str
    root_name: str
    resources: str
    age_s: float


@dataclass(frozen=True)
class InstanceMapping:
    instance_uuid: str
    cell_uuid: str | None
    queued_for_delete: bool = False
    building: bool = False


@dataclass(frozen=True)
class Instance:
    uuid: str
    host: str | None
    node: str | None
    deleted: bool = False
    hidden: bool = False
    vm_state: str | None = None
    task_state: str | None = None
    deleted_s: float | None = None


@dataclass(frozen=True)
class Migration:
    uuid: str
    instance_uuid: str
    status: str
    migration_type: str | None
    source_compute: str | None
    source_node: str | None
    dest_compute: str | None
    dest_node: str | None

    @property
    def in_progress(self) -> bool:
        return self.status not in MIGRATION_DONE

    def touches(self, node: Node) -> bool:
        return node.at(self.source_compute, self.source_node) or node.at(self.dest_compute, self.dest_node)


@dataclass(frozen=True)
class Node:
    uuid: str
    host: str
    node: str

    def at(self, host: str | None, node: str | None) -> bool:
        """Is (host, node) this compute node? Compared case-insensitively, as MySQL compares them
        when nova looks instances up (InstanceList.get_by_host_and_node in the audit)."""
        return (host or "").lower() == (self.host or "").lower() and \
            (node or "").lower() == (self.node or "").lower()


@dataclass
class CellData:
    instances: list[Instance] = field(default_factory=list)
    migrations: list[Migration] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)


@dataclass
class AllocationView:
    cells: list[Cell]  # cell_mappings, cell0 included
    allocations: list[Allocation]
    mappings: list[InstanceMapping]
    data: dict[str, CellData]  # cell uuid -> what was read
    unreadable: dict[str, str] = field(default_factory=dict)  # cell uuid -> why


def load(ctx: Context, history_seconds: float) -> AllocationView:
    """3 statements on placement, 2 on nova_api, 3 per cell: never one per host or consumer."""
    with ctx.db("placement") as placement:
        rows = placement.query(ALLOCATIONS_SQL)
        providers = placement.query(PROVIDERS_SQL)
        classes = placement.query(CLASSES_SQL)
    allocations = fold_allocations(rows, providers, classes)
    all_cells = cells(ctx, include_cell0=True)
    with ctx.db("nova_api") as api:
        mappings = [InstanceMapping(r["instance_uuid"], r["cell_uuid"], bool(r["queued_for_delete"]),
                                    bool(r["building"])) for r in api.query(API_SQL)]
    data: dict[str, CellData] = {}
    unreadable: dict[str, str] = {}
    failures: list[BackendUnavailable] = []
    window = int(history_seconds)
    for cell in all_cells:
        try:
            with cell_db(ctx, cell) as db:
                instances = [_instance(r) for r in db.query(INSTANCES_SQL, (window,))]
                migrations = [Migration(r["uuid"], r["instance_uuid"], r["status"] or "",
                                        r["migration_type"], r["source_compute"], r["source_node"],
                                        r["dest_compute"], r["dest_node"])
                              for r in db.query(MIGRATIONS_SQL, (window,))]
                nodes = [] if cell.is_cell0 else [
                    Node(r["uuid"], r["host"], r["hypervisor_hostname"]) for r in db.query(NODES_SQL)]
            data[cell.uuid] = CellData(instances, migrations, nodes)
        except BackendUnavailable as exc:  # that cell's consumers are unjudged; the others are judged
            unreadable[cell.uuid] = str(exc)
            failures.append(exc)
    if failures and not any(uuid in data for uuid in (c.uuid for c in all_cells if not c.is_cell0)):
        raise failures[0]
    return AllocationView(all_cells, allocations, mappings, data, unreadable)


def fold_allocations(rows: list[dict[str, Any]], providers: list[dict[str, Any]],
                     classes: list[dict[str, Any]]) -> list[Allocation]:
    """ALLOCATIONS_SQL rows -> one Allocation per (consumer, root provider) holding any of
    NOVA_RCS on that tree (the audit: "any, not all")."""
    rc_names = {int(r["id"]): r["name"] for r in classes}
    rps = {int(r["id"]): r for r in providers}
    held: dict[tuple[str, int], dict[str, int]] = {}
    ages: dict[tuple[str, int], float] = {}
    for row in rows:
        rp = rps.get(int(row["rp_id"]))
        if rp is None:
            continue
        key = (row["consumer_id"], int(rp["root_id"]))
        text = row["resources"]
        text = text.decode() if isinstance(text, bytes) else str(text or "")
        resources = held.setdefault(key, {})
        for item in text.split(","):
            rc_id, _, used = item.partition("=")
            if rc_id:
                name = rc_names.get(int(rc_id), rc_id)
                resources[name] = resources.get(name, 0) + int(used)
        age = float(row["age_s"] or 0)
        ages[key] = min(age, ages.get(key, age))
    out = []
    for (consumer, root_id), resources in held.items():
        if not any(rc in resources for rc in NOVA_RCS):
            continue
        root = rps.get(root_id) or {"uuid": str(root_id), "name": ""}
        text = ",".join(f"{k}={v}" for k, v in sorted(resources.items()))
        out.append(Allocation(consumer, root["uuid"], root["name"] or "", text, ages[(consumer, root_id)]))
    return out


def _instance(r: dict[str, Any]) -> Instance:
    return Instance(r["uuid"], r["host"], r["node"], bool(r["deleted"]), bool(r["hidden"]),
                    r["vm_state"], r["task_state"],
                    None if r["deleted_s"] is None else float(r["deleted_s"]))


# -- judging ---------------------------------------------------------------------


@dataclass(frozen=True)
class Stray:
    allocation: Allocation
    kind: str
    why: str
    cell: str | None = None  # the cell the instance/migration is in, for the fix


def judge(view: AllocationView, settings: PlacementAllocationsProbe.Settings, report: Report) -> None:
    labels = {c.uuid: c.label for c in view.cells}
    mappings = {m.instance_uuid: m for m in view.mappings}
    instances: dict[str, list[tuple[str, Instance]]] = {}
    migrations: dict[str, tuple[str, Migration]] = {}
    moving: dict[str, list[Migration]] = {}
    nodes: dict[str, Node] = {}
    for cell_uuid, data in view.data.items():
        for inst in data.instances:
            instances.setdefault(inst.uuid, []).append((cell_uuid, inst))
        for mig in data.migrations:
            migrations[mig.uuid] = (cell_uuid, mig)
            moving.setdefault(mig.instance_uuid, []).append(mig)
        for node in data.nodes:
            nodes[node.uuid] = node
    for cell in view.cells:
        if not cell.is_cell0:
            report.metric("healthd_placement_allocations_cell_up",
                          0 if cell.uuid in view.unreadable else 1, cell=cell.label)

    strays: list[Stray] = []
    in_flight: Counter[str] = Counter()
    unjudged = 0
    ctx = _Lookup(view, labels, mappings, instances, migrations, moving, nodes, settings)
    for alloc in view.allocations:
        verdict = ctx.classify(alloc)
        if isinstance(verdict, Stray):
            strays.append(verdict)
        elif verdict in IN_FLIGHT:
            in_flight[verdict] += 1
        elif verdict == "unjudged":
            unjudged += 1

    consumers = {a.consumer for a in view.allocations}
    report.metric("healthd_placement_allocations_consumers", len(consumers))
    by_kind = Counter(s.kind for s in strays)
    for kind in KINDS:
        report.metric("healthd_placement_allocations_orphans", by_kind[kind], kind=kind)
    for kind in IN_FLIGHT:
        report.metric("healthd_placement_allocations_in_flight", in_flight[kind], kind=kind)
    report.metric("healthd_placement_allocations_unjudged", unjudged)
    strays.sort(key=lambda s: (KINDS.index(s.kind), s.allocation.consumer, s.allocation.root_uuid))
    for stray in strays[:settings.max_consumer_series]:
        report.metric("healthd_placement_allocations_orphan", 1, consumer=stray.allocation.consumer,
                      provider=stray.allocation.root_uuid, kind=stray.kind)
    for stray in strays[:settings.max_findings]:
        _finding(stray, report)
    rest = strays[settings.max_findings:]
    if rest:
        report.warning(
            "placement allocations",
            f"{len(rest)} more stray allocation(s) not listed one by one "
            f"({', '.join(f'{k}: {n}' for k, n in sorted(Counter(s.kind for s in rest).items()))})",
            "nova-manage placement audit --verbose lists them all; "
            "nova-manage placement audit --delete --verbose removes them",
        )
    for uuid, why in sorted(view.unreadable.items()):
        if uuid in labels:
            report.warning(
                f"cell {labels[uuid]}",
                f"the database of cell {labels[uuid]} could not be read, so the allocations of its "
                f"instances and hosts are not judged (the other cells are): {why}",
                f"check healthd's access to cell {labels[uuid]}'s database (SELECT on instances, "
                "migrations and compute_nodes, deploy/mysql/grants.sql)")
    summary = (f"{len(consumers)} consumers in placement: {len(strays)} stray allocation(s)"
               + (f" ({', '.join(f'{k}: {n}' for k, n in sorted(by_kind.items()))})" if strays else "")
               + f", {sum(in_flight.values())} in flight")
    if unjudged:
        summary += f", {unjudged} not judged (cell not read)"
    report.summary = summary


@dataclass
class _Lookup:
    view: AllocationView
    labels: dict[str, str]
    mappings: dict[str, InstanceMapping]
    instances: dict[str, list[tuple[str, Instance]]]
    migrations: dict[str, tuple[str, Migration]]
    moving: dict[str, list[Migration]]
    nodes: dict[str, Node]
    settings: PlacementAllocationsProbe.Settings

    def classify(self, alloc: Allocation) -> Stray | str:
        young = alloc.age_s < self.settings.grace_seconds
        node = self.nodes.get(alloc.root_uuid)
        any_unread = bool(self.view.unreadable)
        # 1. A migration's uuid: the source's share during a move (resource_tracker.py skips
        # consumers in migration_uuids; the audit counts in-progress migrations of the node).
        found = self.migrations.get(alloc.consumer)
        if found:
            cell_uuid, mig = found
            if mig.in_progress:
                if node is None or mig.touches(node):
                    return "migrating"
                return self._stray(alloc, "wrong_host", cell_uuid,
                                   f"migration {mig.uuid} of instance {mig.instance_uuid} is in progress "
                                   f"({mig.status}) between {mig.source_compute} and "
                                   f"{mig.dest_compute}, not on this host")
            if young:
                return "young"
            return self._stray(alloc, "finished_migration", cell_uuid,
                               f"consumer is migration {mig.uuid} ({mig.migration_type}) of instance "
                               f"{mig.instance_uuid}, which is over (status {mig.status}); a move "
                               "that finishes hands the source's allocations back, so these are left over")
        mapping = self.mappings.get(alloc.consumer)
        copies = self.instances.get(alloc.consumer, [])
        # 2. No mapping (nova/compute/api.py creates it with the build request; only
        # `nova-manage db archive_deleted_rows` removes it with the instance).
        if mapping is None and not copies:
            if young:
                return "young"  # the scheduler may have claimed before the build request shows
            if any_unread:
                return "unjudged"  # it may be a migration in the cell that was not read
            return self._stray(alloc, "no_mapping", None,
                               "no instance mapping, build request, instance or migration in any cell "
                               "has this uuid (deleted and archived, or never nova's); the compute "
                               "logs \"has allocations against this compute host but is not found in "
                               "the database\" and never removes them")
        if mapping is not None and mapping.cell_uuid is None and not copies:
            if mapping.building or young:
                return "building"  # scheduling: conductor has not created the instance yet
            return self._stray(alloc, "no_cell", None,
                               "instance mapping has no cell and there is no build request (the "
                               "build was deleted before it reached a cell)")
        if mapping is not None and mapping.cell_uuid in self.view.unreadable:
            return "unjudged"
        # 3. The instance in the cell its mapping names (or, without a mapping, wherever it is).
        home = mapping.cell_uuid if mapping is not None else None
        here = [inst for cell_uuid, inst in copies if home is None or cell_uuid == home]
        if not here:
            if young:
                return "young"
            if copies:
                elsewhere = ", ".join(sorted(self.labels.get(c, c) for c, _ in copies))
                why = (f"instance mapping names cell {self.labels.get(home or '', home)} but the "
                       f"instance is in cell {elsewhere}")
            else:
                why = (f"instance mapping names cell {self.labels.get(home or '', home)}, which has no "
                       "such instance (archived, or deleted long ago)")
            return self._stray(alloc, "not_in_cell", home, why)
        live = [i for i in here if not i.deleted]
        if not live:
            inst = here[0]
            if (inst.deleted_s or 0) < self.settings.grace_seconds:
                # resource_tracker.py removes allocations of deleted, non-hidden instances on its
                # next periodic run if the compute is up.
                return "recently_deleted"
            return self._stray(alloc, "deleted", home,
                               f"instance was deleted {_ago(inst.deleted_s)} ago; its allocations "
                               "should have gone with it (a local delete while placement or the "
                               "compute was unreachable leaves them)")
        # A cross-cell move leaves a hidden copy (nova ignores hidden=1); prefer the visible one.
        inst = next((i for i in live if not i.hidden), live[0])
        if mapping is not None and mapping.building:
            return "building"
        if node is None:
            # A sharing provider (DISK_GB on shared storage) or a provider nova does not own:
            # the consumer is a live instance, so it is accounted for.
            return "ok" if not any_unread else "unjudged"
        if node.at(inst.host, inst.node):
            return "ok"
        moves = self.moving.get(inst.uuid, [])
        if any(m.in_progress and m.touches(node) for m in moves):
            return "migrating"  # e.g. the destination's share under the instance uuid during a resize
        if inst.host is None and (inst.vm_state == "building" or inst.task_state):
            return "building"
        evacuated = [m for m in moves if m.migration_type == "evacuation" and m.status == "done"
                     and node.at(m.source_compute, m.source_node)]
        if evacuated:
            # nova/compute/manager.py _destroy_evacuated_instances removes them (and marks the
            # migration completed) when nova-compute on the source starts again.
            return self._stray(alloc, "evacuated_source", home,
                               f"instance was evacuated from {node.host} to {inst.host} (migration "
                               f"{evacuated[0].uuid}, status done); the source's allocations go only "
                               f"when nova-compute on {node.host} starts again")
        if young:
            return "young"
        return self._stray(alloc, "wrong_host", home,
                           f"instance runs on {inst.host or 'no host'} ({inst.vm_state}) but holds "
                           f"allocations on {node.host} with no migration in progress")

    def _stray(self, alloc: Allocation, kind: str, cell_uuid: str | None, why: str) -> Stray:
        return Stray(alloc, kind, why, self.labels.get(cell_uuid or "", None))


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "some time"
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{int(seconds)} s"


def _finding(stray: Stray, report: Report) -> None:
    a = stray.allocation
    subject = f"consumer {a.consumer} on {a.root_name or a.root_uuid}"
    message = (f"{stray.kind}: allocations {a.resources} on resource provider {a.root_uuid} "
               f"({a.root_name}) that nova does not account for: {stray.why}. The capacity counts "
               "as used in placement, so the scheduler may answer \"No valid host\".")
    if stray.kind == "evacuated_source":
        remedy = (f"start nova-compute on {a.root_name} (it removes them), or if the host is gone: "
                  f"openstack resource provider allocation delete {a.consumer} (removes all of the "
                  "instance's allocations: then run nova-manage placement heal_allocations "
                  f"--instance {a.consumer})")
        report.warning(subject, message, remedy)
        return
    if stray.kind == "wrong_host":
        remedy = (f"nova-manage placement audit --resource_provider {a.root_uuid} --delete --verbose "
                  "(removes only this provider's share of the consumer's allocations)")
    else:
        remedy = (f"nova-manage placement audit --resource_provider {a.root_uuid} --delete --verbose, "
                  f"or: openstack resource provider allocation delete {a.consumer}")
    report.warning(subject, message, remedy)
