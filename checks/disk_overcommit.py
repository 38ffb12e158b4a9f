"""disk_overcommit: compute nodes whose local disk is committed beyond what nova and placement allow.

Nova keeps two views of a compute node's disk in compute_nodes:

- free_disk_gb = local_gb - local_gb_used, the control plane's view.
  local_gb_used is reserved_host_disk_mb plus the flavour disks (root +
  ephemeral + swap) of the instances the resource tracker counts on the host
  (nova/compute/resource_tracker.py _update_usage_from_instances starts from
  CONF.reserved_host_disk_mb, _update_usage adds each flavour). "free ram and
  disk may be negative, depending on policy": with disk_allocation_ratio > 1
  placement hands out up to (total - reserved) * ratio of DISK_GB, so a
  negative free_disk_gb within that is overcommit by policy, not a fault.
- disk_available_least, the hypervisor's own view: the free space of the
  instances filesystem minus what sparse (qcow2/thin) disks may still grow by.
  Below zero, the filesystem runs full once the guests write their disks.

What really fails, and pages:
- placement usage above its capacity: placement refuses every new DISK_GB
  allocation on the provider (placement/objects/allocation.py
  _check_capacity_exceeded, capacity = (total - reserved) * allocation_ratio),
  which happens when the ratio or the inventory is lowered after instances
  landed (an inventory update only logs it,
  placement/objects/resource_provider.py _update_inventory_for_provider);
- disk_available_least < 0;
- instances beyond what placement allows: free_disk_gb < 0 while the ratio
  in force is 1.0 or less, or local_gb_used above local_gb x ratio.

Ironic nodes report local_gb = 0 and hypervisor_type "ironic"
(nova/virt/ironic/driver.py _node_resource): their disks are not nova's to
judge, and they get no series.

The hypervisors API no longer carries disk fields (removed in microversion
2.88), so the probe reads the databases: one query per cell, one for placement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import Field

from healthd.model import MetricSpec, Report
from healthd.openstack.cells import cell_db, cells
from healthd.probe import BackendUnavailable, Context, Probe, ProbeSettings

GIB = 2**30

NODES_SQL = """
SELECT host, hypervisor_hostname, uuid, hypervisor_type, local_gb, local_gb_used,
       free_disk_gb, disk_available_least, disk_allocation_ratio
  FROM compute_nodes WHERE deleted = 0
"""

# Standard resource classes are synced into resource_classes by placement at
# start-up (ids follow os_resource_classes.STANDARDS), so join by name. The
# per-provider sum is a correlated subquery: it reads only the covering index
# (resource_provider_id, resource_class_id, used) of each provider, 3x faster
# at 10,000 providers than a GROUP BY over the whole allocations table.
PLACEMENT_SQL = """
SELECT rp.uuid, rp.name, inv.total, inv.reserved, inv.allocation_ratio,
       (SELECT COALESCE(SUM(a.used), 0) FROM allocations a
         WHERE a.resource_provider_id = inv.resource_provider_id
           AND a.resource_class_id = inv.resource_class_id) AS used
  FROM inventories inv
  JOIN resource_classes rc ON rc.id = inv.resource_class_id AND rc.name = 'DISK_GB'
  JOIN resource_providers rp ON rp.id = inv.resource_provider_id
"""

M_FREE = "healthd_disk_overcommit_free_disk_bytes"
M_LEAST = "healthd_disk_overcommit_disk_available_least_bytes"
M_LOCAL = "healthd_disk_overcommit_local_bytes"
M_USED = "healthd_disk_overcommit_used_bytes"
M_RATIO = "healthd_disk_overcommit_allocation_ratio"
M_P_CAP = "healthd_disk_overcommit_placement_capacity_bytes"
M_P_USE = "healthd_disk_overcommit_placement_usage_bytes"
M_P_RATIO = "healthd_disk_overcommit_placement_allocation_ratio"
NODE = ("cell", "host", "node")

# nova/conf/compute.py initial_disk_allocation_ratio: what a ratio of 0.0/NULL means
# unless the compute sets [DEFAULT] disk_allocation_ratio (which healthd cannot see).
INITIAL_DISK_ALLOCATION_RATIO = 1.0


class DiskOvercommitProbe(Probe):
    name = "disk_overcommit"
    description = ("Compute nodes whose disk is committed beyond what placement allows, or whose "
                   "disk_available_least is negative; overcommit by policy is only a warning.")
    default_interval = 300.0
    default_timeout = 30.0
    requires = ("db:nova_api", "cells")  # db:placement is optional
    privileges = (
        "SELECT on nova_api.cell_mappings; SELECT on <cell db>.compute_nodes of every cell; optional: "
        "SELECT on placement.resource_providers, placement.inventories, placement.allocations, "
        "placement.resource_classes"
    )
    metrics = (
        MetricSpec(M_FREE, "compute_nodes.free_disk_gb in bytes: local disk minus reserved disk and the "
                   "flavour disks of the instances (negative: committed beyond the disk).", NODE),
        MetricSpec(M_LEAST, "compute_nodes.disk_available_least in bytes: free space minus what "
                   "sparse disks may still grow by (hypervisor view).", NODE),
        MetricSpec(M_LOCAL, "compute_nodes.local_gb in bytes: local disk capacity.", NODE),
        MetricSpec(M_USED, "compute_nodes.local_gb_used in bytes: reserved_host_disk_mb plus the "
                   "flavour disks of the instances.", NODE),
        MetricSpec(M_RATIO, "DISK_GB allocation ratio in force for the node: placement's, else "
                   "compute_nodes.disk_allocation_ratio as nova reads it (0.0 or NULL: 1.0).", NODE),
        MetricSpec(M_P_CAP, "Placement DISK_GB capacity in bytes: (total - reserved) * allocation_ratio.",
                   ("provider",)),
        MetricSpec(M_P_USE, "Placement DISK_GB allocated in bytes.", ("provider",)),
        MetricSpec(M_P_RATIO, "Placement DISK_GB allocation_ratio.", ("provider",)),
    )

    class Settings(ProbeSettings):
        committed_warning_ratio: float = Field(
            0.9, gt=0, le=1,
            description="WARNING when local_gb_used exceeds this share of what the ratio allows "
            "(local_gb x allocation ratio); 1.0: only beyond it",
        )

    settings: Settings

    def run(self, ctx: Context, report: Report) -> None:
        judge(load(ctx), self.settings, report)


# -- loading: each cell's compute_nodes and placement's DISK_GB -> DiskView ----------


@dataclass(frozen=True)
class Node:
    """One compute_nodes row; NULL is None (a node that never reported)."""

    cell: str  # the cell's label
    host: str | None
    hypervisor_hostname: str | None = None
    uuid: str | None = None
    local_gb: int | None = None
    local_gb_used: int | None = None
    free_disk_gb: int | None = None
    disk_available_least: int | None = None
    disk_allocation_ratio: float | None = None
    hypervisor_type: str | None = None

    @property
    def ironic(self) -> bool:
        return (self.hypervisor_type or "").lower() == "ironic"


@dataclass(frozen=True)
class Provider:
    """A placement resource provider's DISK_GB inventory and the sum of its allocations."""

    uuid: str
    name: str
    total: int
    reserved: int
    ratio: float
    used: int

    @property
    def capacity_gb(self) -> float:
        # placement/objects/allocation.py _check_capacity_exceeded
        return (self.total - self.reserved) * self.ratio

    @property
    def over_capacity(self) -> bool:
        return self.used > self.capacity_gb


@dataclass
class DiskView:
    cells: int  # cells read (cell0 excluded)
    nodes: list[Node]
    providers: list[Provider] | None = None  # None: placement not configured
    placement_error: str = ""  # why placement could not be read this run


def load(ctx: Context) -> DiskView:
    """One statement for cell_mappings, one per cell, one for placement."""
    all_cells = cells(ctx)
    nodes: list[Node] = []
    for cell in all_cells:  # an unreachable cell raises BackendUnavailable naming it: UNKNOWN
        with cell_db(ctx, cell) as db:
            nodes += [Node(cell.label, **row) for row in db.query(NODES_SQL)]
    view = DiskView(len(all_cells), nodes)
    if not ctx.has_db("placement"):
        return view
    try:
        with ctx.db("placement") as db:
            rows = db.query(PLACEMENT_SQL)
    except BackendUnavailable as exc:  # the compute nodes' own view is still worth reporting
        view.providers, view.placement_error = [], str(exc)
        return view
    view.providers = [Provider(row["uuid"], row["name"] or row["uuid"], row["total"], row["reserved"],
                               float(row["allocation_ratio"]), int(row["used"])) for row in rows]
    return view


# -- judging: plain data in, findings and metrics out -----------------------------


@dataclass
class Tally:
    nodes: int = 0
    ironic: int = 0
    beyond: int = 0  # committed beyond what placement / the ratio allows
    by_policy: int = 0  # negative free disk within the ratio
    negative_least: int = 0
    high: int = 0
    providers: int = 0
    over_capacity: int = 0
    notes: list[str] = field(default_factory=list)


def effective_ratio(node: Node, provider: Provider | None) -> tuple[float, str]:
    """The DISK_GB ratio in force, and where it comes from (for the message).

    Placement's inventory is what the scheduler obeys (the compute writes it:
    nova/virt/driver.py _get_allocation_ratios). Without it, the node's column as nova
    reads it: nova/objects/compute_node.py _from_db_object turns 0.0 or NULL (rows of old
    releases) into [DEFAULT] disk_allocation_ratio or initial_disk_allocation_ratio.
    """
    if provider is not None:
        return provider.ratio, f"placement's DISK_GB allocation_ratio {provider.ratio:g}"
    ratio = node.disk_allocation_ratio
    if not ratio:
        return INITIAL_DISK_ALLOCATION_RATIO, (
            f"disk_allocation_ratio {'0.0' if ratio == 0 else 'NULL'} in compute_nodes, which nova reads "
            f"as the compute's [DEFAULT] disk_allocation_ratio or initial_disk_allocation_ratio "
            f"({INITIAL_DISK_ALLOCATION_RATIO:g} by default)")
    return ratio, f"disk_allocation_ratio {ratio:g}"


def judge(view: DiskView, settings: DiskOvercommitProbe.Settings, report: Report) -> None:
    tally = Tally()
    providers = _placement(view, report, tally)
    matched: set[str] = set()
    for node in view.nodes:
        provider = providers.get(node.uuid or "")
        if provider is not None:
            matched.add(provider.uuid)
        _node(node, provider, settings, report, tally)
    for provider in providers.values():
        if provider.uuid not in matched and provider.over_capacity:
            # a provider without a compute node here (a sharing DISK_GB provider, or a
            # node of a cell that was not read): placement's own refusal still holds
            report.critical(f"resource provider {provider.name} ({provider.uuid})",
                            _capacity_text(provider), _capacity_fix(provider))
    report.summary = _summary(view.cells, tally)


# -- placement (optional) ---------------------------------------------------------


def _placement(view: DiskView, report: Report, tally: Tally) -> dict[str, Provider]:
    if view.providers is None:
        tally.notes.append("placement not configured")
        return {}
    if view.placement_error:
        report.warning("placement database", f"placement view missing from this run: {view.placement_error}",
                       "check backends.databases.placement and the placement database")
    providers = {}
    for p in view.providers:
        providers[p.uuid] = p
        tally.providers += 1
        report.metric(M_P_CAP, p.capacity_gb * GIB, provider=p.name)
        report.metric(M_P_USE, p.used * GIB, provider=p.name)
        report.metric(M_P_RATIO, p.ratio, provider=p.name)
        if p.over_capacity:
            tally.over_capacity += 1
    return providers


def _capacity_text(p: Provider) -> str:
    return (f"placement has {p.used} GiB DISK_GB allocated against a capacity of {_gib(p.capacity_gb)} GiB "
            f"((total {p.total} - reserved {p.reserved}) x ratio {p.ratio:g}): placement refuses every "
            "new DISK_GB allocation here, moves and resizes included, and the instances already "
            "there hold more disk than the policy allows; usually the ratio or the inventory was "
            "lowered after they landed.")


def _capacity_fix(p: Provider) -> str:
    return (f"openstack resource provider usage show {p.uuid}; openstack resource provider inventory list "
            f"{p.uuid}; migrate instances off (openstack server migrate --live-migration <server uuid>) "
            "or restore the disk_allocation_ratio / reserved_host_disk_mb the instances were placed with")


# -- compute nodes -------------------------------------------------------------------


def _node(node: Node, provider: Provider | None, settings: DiskOvercommitProbe.Settings,
          report: Report, tally: Tally) -> None:
    if node.ironic:
        tally.ironic += 1  # nova/virt/ironic/driver.py reports local_gb 0: no disk of nova's
        return
    tally.nodes += 1
    host = node.host or "?"
    labels = {"cell": node.cell, "host": host, "node": node.hypervisor_hostname or node.uuid or host}
    ratio, ratio_text = effective_ratio(node, provider)
    # A NULL (a node that never reported) skips that metric only.
    for metric, value in ((M_FREE, node.free_disk_gb), (M_LEAST, node.disk_available_least),
                          (M_LOCAL, node.local_gb), (M_USED, node.local_gb_used)):
        if value is not None:
            report.metric(metric, value * GIB, **labels)
    report.metric(M_RATIO, ratio, **labels)
    subject = f"compute node {labels['node']} (host {host}, cell {node.cell})"

    critical: list[str] = []
    warning: list[str] = []
    free, least, local, used = node.free_disk_gb, node.disk_available_least, node.local_gb, node.local_gb_used
    if free is not None and free < 0 and local:
        committed = (f"instances commit {used} GiB (local_gb_used, reserved_host_disk_mb included) on "
                     f"{local} GiB of local disk")
        beyond_ratio = used is not None and used > local * ratio
        if ratio <= 1 or (provider is None and beyond_ratio):
            tally.beyond += 1
            critical.append(
                f"free_disk_gb is {free} GiB: {committed}, more than {ratio_text} allows "
                f"({_gib(local * ratio)} GiB). Placement would not have placed them: they were forced past "
                "it (allocations missing or healed later), or the ratio was lowered after they landed."
                + (f" Placement has {provider.used} GiB allocated of its {_gib(provider.capacity_gb)} GiB "
                   "DISK_GB capacity." if provider is not None else ""))
        elif provider is not None and provider.over_capacity:
            tally.beyond += 1
            critical.append(f"free_disk_gb is {free} GiB: {committed}; " + _capacity_text(provider))
        else:
            tally.by_policy += 1
            allowed = provider.capacity_gb if provider is not None else local * ratio
            warning.append(
                f"free_disk_gb is {free} GiB: overcommitted by policy: {committed}, which {ratio_text} "
                f"allows up to {_gib(allowed)} GiB" + _placement_note(provider)
                + ". Nova computes a negative free_disk_gb by design here; it holds while the guests' "
                "sparse disks stay smaller than the disk: watch disk_available_least"
                + (f" ({least} GiB)." if least is not None else "."))
    elif provider is not None and provider.over_capacity:
        tally.beyond += 1
        critical.append(_capacity_text(provider))
    if least is not None and least < 0:
        tally.negative_least += 1
        critical.append(
            f"disk_available_least is {least} GiB: the hypervisor says its sparse/qcow2 disks can "
            "grow beyond the free space of the instances filesystem (host view); when the guests "
            "fill them the filesystem runs full and guests stop with I/O errors.")
    if critical:
        report.critical(subject, " ".join(critical + warning), _remedy(host, ratio, provider))
        return
    if warning:
        report.warning(subject, " ".join(warning),
                       f"nothing to fix if {ratio:g} is the intended ratio; on {host}: df -h "
                       "/var/lib/nova/instances to follow the real usage")
        return
    allowed_gb = local * ratio if local else 0
    if allowed_gb and used is not None and used / allowed_gb > settings.committed_warning_ratio:
        tally.high += 1
        of_what = f"{local} GiB local disk" if ratio == 1 else \
            f"the {_gib(allowed_gb)} GiB that ratio {ratio:g} allows on {local} GiB local disk"
        report.warning(
            subject, f"{used} GiB committed of {of_what} ({used / allowed_gb:.0%}), above "
            f"{settings.committed_warning_ratio:.0%}: new instances with large disks may not fit.",
            f"plan capacity; check df -h /var/lib/nova/instances on {host}",
        )


def _placement_note(provider: Provider | None) -> str:
    if provider is None:
        return ""
    return (f" (placement: {provider.used} GiB allocated of its {_gib(provider.capacity_gb)} GiB DISK_GB "
            "capacity)")


def _gib(value: float) -> str:
    """A GiB amount as a person reads it: 9600000, 49.5 (never 9.6e+06)."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _remedy(host: str, ratio: float, provider: Provider | None) -> str:
    steps = [f"on {host}: df -h /var/lib/nova/instances (real usage)",
             f"openstack server list --all-projects --host {host}, then move instances off with "
             "openstack server migrate --live-migration <server uuid>"]
    if provider is not None and provider.over_capacity:
        steps.append(f"or restore the DISK_GB capacity the instances were placed with "
                     f"(openstack resource provider inventory list {provider.uuid})")
    if ratio <= 1:
        steps.append("nova-manage placement audit / heal_allocations for instances without allocations")
    steps.append("do not force hosts past the scheduler (--availability-zone nova:HOST on old "
                 "microversions, forced evacuate/live-migrate)")
    return "; ".join(steps)


def _summary(cells: int, t: Tally) -> str:
    text = (f"{t.nodes} compute nodes in {cells} cells: {t.beyond} committed beyond what placement allows, "
            f"{t.by_policy} overcommitted by policy, {t.negative_least} with negative disk_available_least, "
            f"{t.high} highly committed")
    if t.ironic:
        text += f"; {t.ironic} ironic nodes not judged"
    if t.providers:
        text += f"; placement: {t.providers} DISK_GB providers, {t.over_capacity} over capacity"
    text += "".join(f"; {n}" for n in t.notes)
    return text
