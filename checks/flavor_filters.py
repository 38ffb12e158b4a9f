"""flavor_filters: flavors that no enabled, up compute host can take, judged as nova 34 judges them.

A flavor whose extra specs no host satisfies is found today only when a user's
server goes to ERROR with "No valid host was found". The probe reads the
flavors (disabled and private ones too), the aggregates, every cell's compute
nodes and nova-compute services, placement's inventories and traits, and the
scheduler's ``[filter_scheduler] enabled_filters``, and evaluates, per flavor
and host, what nova's scheduler evaluates:

- placement (nova/scheduler/utils.py ResourceRequest.from_request_spec /
  _process_extra_specs, placement/objects/research_context.py
  _capacity_check_clause): the flavor's VCPU (or PCPU with hw:cpu_policy=dedicated),
  MEMORY_MB and DISK_GB, ``resources[S]:RC=N`` and ``trait[S]:T=required|forbidden``
  against the static inventories (max_unit, min_unit, step_size, capacity) and traits of
  the host's provider tree (and sharing providers); unknown traits and custom resource
  classes, and several numbered groups without group_policy, make placement answer 400,
  which nova reports as "No valid host";
- ComputeCapabilitiesFilter (nova/scheduler/filters/compute_capabilities_filter.py):
  ``capabilities:`` keys against the HostState, and unscoped keys only where the HostState
  has such an attribute or stats key (since Newton);
- AggregateInstanceExtraSpecsFilter (nova/scheduler/filters/aggregate_instance_extra_specs.py):
  unscoped and ``aggregate_instance_extra_specs:`` keys against the host's aggregates' metadata;
- with extra_specs_ops.match's operators, exactly.

Only the filters in enabled_filters count. Capabilities that change with load (free RAM and
disk, instance counts) are not judged: that is capacity, not configuration. Hosts that are
down, disabled, not reported yet or in a disabled cell are counted apart; a flavor only they
could take is a WARNING, not a misconfigured flavor. Constant cost: four statements on
nova_api, two per cell, four on placement, whatever the number of hosts and flavors.
"""

from __future__ import annotations

import contextlib
import json
import math
import operator
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from oslo_config import cfg
from pydantic import Field

from healthd.model import MetricSpec, Report, Severity
from healthd.openstack import oslo_ini
from healthd.openstack.cells import cell_db, cells
from healthd.probe import BackendUnavailable, Context, Probe, ProbeSettings

CCF = "ComputeCapabilitiesFilter"
AIESF = "AggregateInstanceExtraSpecsFilter"
PLACEMENT = "placement"
# nova/conf/scheduler.py filter_scheduler_opts enabled_filters default (nova 34.0.0).
DEFAULT_FILTERS = ("ComputeFilter", "ComputeCapabilitiesFilter", "ImagePropertiesFilter",
                   "ServerGroupAntiAffinityFilter", "ServerGroupAffinityFilter")
FILTERS_OPT = cfg.ListOpt("enabled_filters", default=list(DEFAULT_FILTERS))

# == extra_specs_ops, as nova 34 has it (nova/scheduler/filters/extra_specs_ops.py) ==========

OP_METHODS = {
    "=": lambda x, y: float(x) >= float(y),
    "<in>": lambda x, y: y in x,
    "<all-in>": lambda x, y: all(val in x for val in y),
    "==": lambda x, y: float(x) == float(y),
    "!=": lambda x, y: float(x) != float(y),
    ">=": lambda x, y: float(x) >= float(y),
    "<=": lambda x, y: float(x) <= float(y),
    "s==": operator.eq,
    "s!=": operator.ne,
    "s<": operator.lt,
    "s<=": operator.le,
    "s>": operator.gt,
    "s>=": operator.ge,
}


def match(value: Any, req: str) -> bool:
    """extra_specs_ops.match, line for line: a value that starts with no operator is compared
    as a string; the numeric operators call float() and raise ValueError on a non-number, a
    bare ``<or>`` raises IndexError (the filter then raises and the scheduling request fails)."""
    words = req.split()
    op = method = None
    if words:
        op = words.pop(0)
        method = OP_METHODS.get(op)
    if op != "<or>" and not method:
        return value == req
    if value is None:
        return False
    if op == "<or>":
        while True:
            if words.pop(0) == value:
                return True
            if not words:
                break
            words.pop(0)
            if not words:
                break
        return False
    if words:
        if op == "<all-in>":
            return bool(method(value, words))  # type: ignore[misc]
        return bool(method(value, words[0]))  # type: ignore[misc]
    return False


# == the HostState nova's filters see (nova/scheduler/host_manager.py HostState) ===========

# Attributes HostState.__init__ / update / _update_from_compute_node set from a compute node:
# the ones healthd can rebuild from compute_nodes (static configuration of the host) ...
STATIC_ATTRS = frozenset({
    "host", "nodename", "uuid", "hypervisor_type", "hypervisor_version", "hypervisor_hostname",
    "cpu_info", "host_ip", "supported_instances", "total_usable_ram_mb", "total_usable_disk_gb",
    "vcpus_total", "cpu_allocation_ratio", "ram_allocation_ratio", "disk_allocation_ratio",
    "cell_uuid", "stats",
})
# ... the ones that change with load or are objects healthd does not rebuild: a key on them
# is not judged (the host is given the benefit of the doubt).
DYNAMIC_ATTRS = frozenset({
    "free_ram_mb", "free_disk_mb", "disk_mb_used", "vcpus_used", "num_instances", "num_io_ops",
    "failed_builds", "updated", "instances", "allocation_candidates", "numa_topology", "pci_stats",
    "metrics", "limits", "aggregates", "service", "_lock_name",
    # methods and the object's own attributes: hasattr() is true for them too
    "update", "consume_from_request", "_update_from_compute_node", "_locked_consume_from_request",
    *dir(object), "__dict__", "__weakref__", "__module__",
})
# nova/compute/stats.py Stats: the resource tracker's counters in compute_nodes.stats.
DYNAMIC_STATS = frozenset({"io_workload", "failed_builds"})


def dynamic_stat(key: str) -> bool:
    return key.startswith("num_") or key in DYNAMIC_STATS


class NotJudged(Exception):
    """The capability changes with load or is an object healthd does not rebuild."""


@dataclass
class Host:
    """One compute node as the scheduler sees it, with where it stands."""

    host: str
    node: str
    uuid: str
    cell: str
    state: str = "eligible"  # eligible, down, disabled, not_reported, disabled_cell
    attrs: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    aggregates: dict[str, set[str]] = field(default_factory=dict)  # key -> values (split at ',')


def host_from_row(row: dict[str, Any], cell_uuid: str, cell: str) -> Host:
    """HostState._update_from_compute_node on a compute_nodes row (ComputeNode's field types)."""
    stats = _json(row.get("stats")) or {}
    stats = {str(k): (None if v is None else str(v)) for k, v in stats.items()} \
        if isinstance(stats, dict) else {}
    specs = _json(row.get("supported_instances")) or []
    host = Host(row["host"] or "", row["hypervisor_hostname"] or "", row["uuid"] or "", cell, stats=stats)
    host.attrs = {
        "host": row["host"], "nodename": row["hypervisor_hostname"], "uuid": row["uuid"],
        "hypervisor_type": row["hypervisor_type"],
        "hypervisor_version": _int(row["hypervisor_version"]),
        "hypervisor_hostname": row["hypervisor_hostname"], "cpu_info": row["cpu_info"],
        "host_ip": row["host_ip"],
        # HVSpec.to_list: [arch, hv_type, vm_mode]
        "supported_instances": [list(s) for s in specs if isinstance(s, list)],
        "total_usable_ram_mb": _int(row["memory_mb"]), "total_usable_disk_gb": _int(row["local_gb"]),
        "vcpus_total": _int(row["vcpus"]),
        "cpu_allocation_ratio": _float(row["cpu_allocation_ratio"]),
        "ram_allocation_ratio": _float(row["ram_allocation_ratio"]),
        "disk_allocation_ratio": _float(row["disk_allocation_ratio"]),
        "cell_uuid": cell_uuid, "stats": stats,
    }
    if row.get("free_disk_gb") is None:  # _update_from_compute_node ignores it: no usage yet
        host.state = "not_reported"
    return host


def _json(text: Any) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _has_attr(host: Host, key: str) -> bool:
    return key in STATIC_ATTRS or key in DYNAMIC_ATTRS


def get_capability(host: Host, scope: list[str]) -> Any:
    """ComputeCapabilitiesFilter._get_capabilities: attributes, then stats, then into JSON."""
    cap: Any = host
    for part in scope:
        if isinstance(cap, str):
            try:
                cap = json.loads(cap)
            except ValueError:
                return None
        if isinstance(cap, Host):
            if part in DYNAMIC_ATTRS:
                raise NotJudged(part)
            value = cap.attrs.get(part)
            if value is None:
                if dynamic_stat(part) and part in cap.stats:
                    raise NotJudged(part)
                value = cap.stats.get(part)
            cap = value
        elif not isinstance(cap, dict):
            value = getattr(cap, part, None)
            if value is None:
                return None  # cap.stats -> AttributeError -> None in nova
            cap = value
        else:
            if cap is host.stats and dynamic_stat(part):
                raise NotJudged(part)
            cap = cap.get(part)
        if cap is None:
            return None
    return cap


def ccf_keys(specs: dict[str, str]) -> dict[str, str]:
    """The keys ComputeCapabilitiesFilter looks at, after its hw:maxphysaddr_bits rewrite."""
    especs = dict(specs)
    bits = especs.get("hw:maxphysaddr_bits")
    if bits is not None:
        especs["capabilities:cpu_info:maxphysaddr:bits"] = ">= " + bits
        del especs["hw:maxphysaddr_bits"]
    return especs


def ccf_verdict(host: Host, key: str, req: str) -> bool | None:
    """ComputeCapabilitiesFilter._satisfies_extra_specs for one key: True/False, None when the
    filter ignores the key on this host. Raises NotJudged, or what nova's code raises."""
    scope = key.split(":")
    if len(scope) == 1:
        if not (_has_attr(host, key) or key in host.stats):
            return None  # not a HostState attribute nor a stats key: ignored since Newton
    elif scope[0] != "capabilities":
        return None
    else:
        del scope[0]
    cap = get_capability(host, scope)
    if cap is None:
        return False
    return match(str(cap), req)


def aiesf_scope(key: str) -> str | None:
    """The aggregate metadata key AggregateInstanceExtraSpecsFilter checks, or None (ignored)."""
    scope = key.split(":", 1)
    if len(scope) > 1:
        return scope[1] if scope[0] == "aggregate_instance_extra_specs" else None
    return scope[0]


def aiesf_verdict(host: Host, key: str, req: str) -> bool | None:
    """AggregateInstanceExtraSpecsFilter.host_passes for one key (metadata from
    filters/utils.py aggregate_metadata_get_by_host: values split at ',' and stripped)."""
    name = aiesf_scope(key)
    if name is None:
        return None
    values = host.aggregates.get(name)
    if not values:
        return False
    return any(match(v, req) for v in sorted(values))


# == placement: what the flavor asks for (nova/scheduler/utils.py ResourceRequest) ==========

XS_KEYPAT = re.compile(r"^(resources|trait)([a-zA-Z0-9_-]{1,64})?:(.*)$")
# os_resource_classes.STANDARDS (os-resource-classes 1.1.0, what nova 34 installs): the classes
# RequestGroup.add_resource accepts besides CUSTOM_*.
STANDARD_CLASSES = frozenset({
    "VCPU", "MEMORY_MB", "DISK_GB", "PCI_DEVICE", "SRIOV_NET_VF", "NUMA_SOCKET", "NUMA_CORE",
    "NUMA_THREAD", "NUMA_MEMORY_MB", "IPV4_ADDRESS", "VGPU", "VGPU_DISPLAY_HEAD",
    "NET_BW_EGR_KILOBIT_PER_SEC", "NET_BW_IGR_KILOBIT_PER_SEC", "PCPU", "MEM_ENCRYPTION_CONTEXT",
    "FPGA", "PGPU", "NET_PACKET_RATE_KILOPACKET_PER_SEC", "NET_PACKET_RATE_EGR_KILOPACKET_PER_SEC",
    "NET_PACKET_RATE_IGR_KILOPACKET_PER_SEC",
})
SHARING_TRAIT = "MISC_SHARES_VIA_AGGREGATE"


@dataclass
class Group:
    resources: dict[str, int] = field(default_factory=dict)
    required: set[str] = field(default_factory=set)
    forbidden: set[str] = field(default_factory=set)
    keys: dict[str, str] = field(default_factory=dict)  # "RC"/"+T"/"-T" -> the extra spec key


@dataclass
class Request:
    groups: dict[str | None, Group]
    group_policy: str | None = None
    cpu_modelled: bool = True


def placement_request(flavor: Flavor) -> Request:
    """ResourceRequest.from_request_spec for an image-booted server of this flavor (no image
    properties, no ports): _process_extra_specs, the pinning translation, then the flavor's
    VCPU / MEMORY_MB / DISK_GB where the extra specs do not override them, strip_zeros."""
    groups: dict[str | None, Group] = {}
    policy = None

    def group(suffix: str | None) -> Group:
        return groups.setdefault(suffix, Group())

    for key, val in flavor.specs.items():
        if key == "group_policy":
            if val in ("none", "isolate"):  # _add_group_policy: anything else is ignored
                policy = val
            continue
        m = XS_KEYPAT.match(key)
        if not m:
            continue
        prefix, suffix, name = m.groups()
        if prefix == "resources":
            # objects/request_spec.py RequestGroup.add_resource: standard or CUSTOM_ classes,
            # non-negative integers; anything else is dropped with a warning.
            if not (name.startswith("CUSTOM_") or name in STANDARD_CLASSES):
                continue
            try:
                amount = int(val)
                if amount < 0:
                    raise ValueError
            except ValueError:
                continue
            group(suffix).resources[name] = amount
            group(suffix).keys[name] = key
        else:  # RequestGroup.add_trait: 'required' or 'forbidden', anything else is ignored
            if val == "required":
                group(suffix).required.add(name)
                group(suffix).keys["+" + name] = key
            elif val == "forbidden":
                group(suffix).forbidden.add(name)
                group(suffix).keys["-" + name] = key
    req = Request(groups, policy)
    cpu_policy = flavor.specs.get("hw:cpu_policy")
    thread = flavor.specs.get("hw:cpu_thread_policy")
    trait = {"isolate": "forbidden", "require": "required"}.get(thread or "")
    if cpu_policy == "dedicated":
        pcpus = flavor.vcpus + (1 if flavor.specs.get("hw:emulator_threads_policy") == "isolate" else 0)
        group(None).resources["PCPU"] = pcpus
        group(None).keys["PCPU"] = "hw:cpu_policy"
    elif cpu_policy == "mixed":
        req.cpu_modelled = False  # the split depends on masks: not judged
    if trait:
        (group(None).forbidden if trait == "forbidden" else group(None).required).add("HW_CPU_HYPERTHREADING")
        group(None).keys[("-" if trait == "forbidden" else "+") + "HW_CPU_HYPERTHREADING"] = \
            "hw:cpu_thread_policy"
    merged: Counter[str] = Counter()
    for g in groups.values():
        merged.update(g.resources.keys())
    if "VCPU" not in merged and "PCPU" not in merged and req.cpu_modelled:
        group(None).resources["VCPU"] = flavor.vcpus
        group(None).keys["VCPU"] = "vcpus"
    if "MEMORY_MB" not in merged:
        group(None).resources["MEMORY_MB"] = flavor.memory_mb
        group(None).keys["MEMORY_MB"] = "ram"
    if "DISK_GB" not in merged:
        # compute_utils.convert_mb_to_ceil_gb(swap) + ephemeral + root (not boot-from-volume)
        disk = flavor.ephemeral_gb + math.ceil(flavor.swap / 1024) + flavor.root_gb
        if disk:
            group(None).resources["DISK_GB"] = disk
            group(None).keys["DISK_GB"] = "disk"
    for suffix in list(groups):  # strip_zeros
        g = groups[suffix]
        g.resources = {rc: n for rc, n in g.resources.items() if n}
        if not (g.resources or g.required or g.forbidden):
            del groups[suffix]
    return req


@dataclass(frozen=True)
class Inventory:
    total: int
    reserved: int
    min_unit: int
    max_unit: int
    step_size: int
    allocation_ratio: float

    def fits(self, amount: int) -> bool:
        """research_context.py _capacity_check_clause, on static capacity: without current usage,
        and without `reserved`, which nova's ironic driver sets to the total while a node is
        in use or unavailable (nova/virt/ironic/driver.py update_provider_tree): counting it
        would call a baremetal flavor unschedulable whenever its nodes are busy."""
        return (self.min_unit <= amount <= self.max_unit and amount % (self.step_size or 1) == 0
                and amount <= self.total * self.allocation_ratio)


@dataclass
class Provider:
    uuid: str
    root: str
    inventories: dict[str, Inventory] = field(default_factory=dict)
    traits: set[str] = field(default_factory=set)


@dataclass
class Placement:
    providers: dict[str, Provider]  # uuid -> provider
    traits: set[str]  # every trait placement knows
    classes: set[str]  # every resource class placement knows
    trees: dict[str, list[Provider]] = field(default_factory=dict)  # root uuid -> providers
    sharing: list[Provider] = field(default_factory=list)

    def __post_init__(self) -> None:
        for p in self.providers.values():
            self.trees.setdefault(p.root, []).append(p)
            if SHARING_TRAIT in p.traits:
                self.sharing.append(p)

    def candidates(self, root: str) -> list[Provider]:
        return self.trees.get(root, []) + [p for p in self.sharing if p.root != root]


def request_errors(req: Request, pl: Placement) -> list[tuple[str, str]]:
    """Reasons placement answers 400 to the whole request (handlers/allocation_candidate.py):
    (extra spec key, why)."""
    out = []
    numbered = [s for s, g in req.groups.items() if s is not None and g.resources]
    if len(numbered) > 1 and req.group_policy is None:
        out.append(("group_policy", "the flavor has several numbered resource groups and no valid "
                    "group_policy: placement answers 400 'The \"group_policy\" parameter is required'"))
    for g in req.groups.values():
        for rc, key in ((k, v) for k, v in g.keys.items() if k[0] not in "+-"):
            if rc in g.resources and rc not in pl.classes:
                out.append((key, f"placement has no resource class {rc}: it answers 400 "
                                 "'Invalid resource class in resources parameter'"))
        for name in sorted(g.required | g.forbidden):
            if name not in pl.traits:
                key = g.keys.get("+" + name) or g.keys.get("-" + name) or name
                out.append((key, f"placement has no trait {name}: it answers 400 'No such trait(s)'"))
    return out


def placement_keys(req: Request, pl: Placement, root: str) -> dict[str, bool]:
    """Per requirement key, whether the host's provider tree (and sharing providers) could
    ever satisfy it on its own (static inventory and traits; current usage is capacity)."""
    provs = pl.candidates(root)
    out: dict[str, bool] = {}
    for suffix, g in req.groups.items():
        if suffix is None:
            # get_trees_matching_all: each class from some provider of the tree that has none
            # of the forbidden traits; the required traits on the providers of the tree.
            for rc, n in g.resources.items():
                out[g.keys[rc]] = any(rc in p.inventories and p.inventories[rc].fits(n)
                                      and not (p.traits & g.forbidden) for p in provs)
            for t in g.required:
                out[g.keys["+" + t]] = any(t in p.traits for p in provs)
            for t in g.forbidden:
                out[g.keys["-" + t]] = any(t not in p.traits for p in provs)
        else:
            # a numbered group: one provider gives all of it (use_same_provider)
            def ok(p: Provider, g: Group = g) -> bool:
                return (all(rc in p.inventories and p.inventories[rc].fits(n)
                            for rc, n in g.resources.items())
                        and g.required <= p.traits and not (p.traits & g.forbidden))
            good = any(ok(p) for p in provs)
            for key in g.keys.values():
                out[key] = out.get(key, True) and good
    return out


# == the data ==================================================================


@dataclass
class Flavor:
    id: int
    flavorid: str
    name: str
    vcpus: int
    memory_mb: int
    root_gb: int
    ephemeral_gb: int = 0
    swap: int = 0
    is_public: bool = True
    disabled: bool = False
    projects: int = 0  # flavor_projects rows (private flavors)
    specs: dict[str, str] = field(default_factory=dict)

    @property
    def visibility(self) -> str:
        """public, private (some project has access), admin_only (private, no project), disabled."""
        if self.disabled:
            return "disabled"
        if self.is_public:
            return "public"
        return "private" if self.projects else "admin_only"


@dataclass
class SchedulerFiles:
    """enabled_filters as the scheduler's nova.conf files give it."""

    lists: dict[str, tuple[str, ...]] = field(default_factory=dict)  # path -> filters
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    missing: list[str] = field(default_factory=list)
    ignored_old: list[str] = field(default_factory=list)  # files with only the pre-Pike option

    @property
    def enabled(self) -> set[str]:
        """The union over the files (a build that lands on any scheduler may meet a filter);
        nova's default list when no file was given or none could be read."""
        if not self.lists:
            return set(DEFAULT_FILTERS)
        return {f for lst in self.lists.values() for f in lst}

    @property
    def agree(self) -> bool:
        return len(set(self.lists.values())) <= 1


@dataclass
class View:
    flavors: list[Flavor]
    hosts: list[Host]
    placement: Placement | None
    scheduler: SchedulerFiles
    unreadable: dict[str, str] = field(default_factory=dict)  # cell label -> why
    placement_skipped: str = ""


# == loading ====================================================================

FLAVORS_SQL = """
SELECT f.id, f.flavorid, f.name, f.vcpus, f.memory_mb, f.root_gb, f.ephemeral_gb, f.swap,
       f.is_public, f.disabled, s.`key`, s.value,
       (SELECT COUNT(*) FROM flavor_projects p WHERE p.flavor_id = f.id) AS projects
  FROM flavors f LEFT JOIN flavor_extra_specs s ON s.flavor_id = f.id
 ORDER BY f.id, s.id
"""
# nova/scheduler/host_manager.py _get_aggregates_info: every aggregate with its hosts and metadata.
AGGREGATES_SQL = """
SELECT ah.host, am.`key`, am.value
  FROM aggregate_hosts ah JOIN aggregate_metadata am ON am.aggregate_id = ah.aggregate_id
"""
# host_manager.py refresh_cells_caches: cells with disabled=1 are not scheduled to.
DISABLED_CELLS_SQL = "SELECT uuid FROM cell_mappings WHERE disabled = 1"
NODES_SQL = """
SELECT uuid, host, hypervisor_hostname, hypervisor_type, hypervisor_version, cpu_info, host_ip,
       stats, supported_instances, vcpus, memory_mb, local_gb, free_disk_gb,
       cpu_allocation_ratio, ram_allocation_ratio, disk_allocation_ratio
  FROM compute_nodes WHERE deleted = 0
"""
# nova/servicegroup/drivers/db.py is_up: last_seen_up (or created_at) within service_down_time.
SERVICES_SQL = """
SELECT host, disabled, forced_down,
       TIMESTAMPDIFF(MICROSECOND, COALESCE(last_seen_up, created_at), UTC_TIMESTAMP(6)) / 1e6 AS age
  FROM services WHERE deleted = 0 AND `binary` = 'nova-compute'
"""
PROVIDERS_SQL = "SELECT id, uuid, COALESCE(root_provider_id, id) AS root_id FROM resource_providers"
INVENTORIES_SQL = """
SELECT i.resource_provider_id AS rp_id, rc.name, i.total, i.reserved, i.min_unit, i.max_unit,
       i.step_size, i.allocation_ratio
  FROM inventories i JOIN resource_classes rc ON rc.id = i.resource_class_id
"""
PROVIDER_TRAITS_SQL = """
SELECT rpt.resource_provider_id AS rp_id, t.name
  FROM resource_provider_traits rpt JOIN traits t ON t.id = rpt.trait_id
"""
NAMES_SQL = "SELECT 'trait' AS kind, name FROM traits UNION ALL SELECT 'rc', name FROM resource_classes"


class FlavorFiltersProbe(Probe):
    name = "flavor_filters"
    description = "Flavors no enabled, up compute host can take with the scheduler's filters and placement."
    default_interval = 600.0
    default_timeout = 60.0
    requires = ("db:nova_api", "cells")  # db:placement optional
    privileges = (
        "SELECT on nova_api.flavors, flavor_extra_specs, flavor_projects, aggregate_hosts, "
        "aggregate_metadata and cell_mappings; SELECT on compute_nodes and services of every cell "
        "database; optionally SELECT on placement.resource_providers, inventories, resource_classes, "
        "resource_provider_traits and traits; read access to the scheduler's nova.conf files"
    )
    metrics = (
        MetricSpec("healthd_flavor_filters_flavors", "Flavors judged, by visibility (public, private: "
                   "some project has access, admin_only: private without project, disabled).",
                   ("visibility",)),
        MetricSpec("healthd_flavor_filters_unschedulable", "Flavors no enabled, up compute host can "
                   "take, by visibility (not those only down or disabled hosts could take).",
                   ("visibility",)),
        MetricSpec("healthd_flavor_filters_too_large", "Flavors larger (vcpus, ram or disk) than "
                   "every compute node's placement inventory can take, by visibility (not counted in "
                   "unschedulable).", ("visibility",)),
        MetricSpec("healthd_flavor_filters_hosts", "Compute nodes by scheduling state (eligible, down, "
                   "disabled, not_reported, disabled_cell).", ("state",)),
        MetricSpec("healthd_flavor_filters_flavor_hosts", "Enabled, up compute nodes that can take the "
                   "flavor (flavor id; unschedulable ones first, bounded by max_flavor_series).",
                   ("flavor",)),
        MetricSpec("healthd_flavor_filters_filter_enabled", "1 if enabled_filters turns the filter on, "
                   "0 if not (the filters healthd models).", ("filter",)),
        MetricSpec("healthd_flavor_filters_scheduler_files_agree", "1 if every scheduler nova.conf "
                   "read gives the same enabled_filters, else 0."),
        MetricSpec("healthd_flavor_filters_placement_checked", "1 if placement's inventories and "
                   "traits were read and judged, 0 if skipped."),
        MetricSpec("healthd_flavor_filters_cells_unread", "Cell databases that could not be read this "
                   "run (their hosts are not counted)."),
    )

    class Settings(ProbeSettings):
        scheduler_files: list[str] = Field(
            default_factory=list,
            description="the nova-scheduler hosts' nova.conf files (globs); empty: nova's default "
                        "enabled_filters")
        service_down_time: float = Field(
            60.0, gt=0, description="nova.conf [DEFAULT] service_down_time: seconds without heartbeat "
                                    "before a compute is down")
        ignore_flavors: list[str] = Field(
            default_factory=list, description="flavor ids or names not judged (e.g. for hardware "
                                              "not racked yet)")
        max_flavor_series: int = Field(
            200, ge=0, description="cap on healthd_flavor_filters_flavor_hosts series per run")
        max_findings: int = Field(
            50, ge=1, description="unschedulable flavors reported one by one; the rest in one finding")

    settings: Settings

    def run(self, ctx: Context, report: Report) -> None:
        judge(load(ctx, self.settings), self.settings, report)


def read_scheduler_files(patterns: list[str]) -> SchedulerFiles:
    """[filter_scheduler] enabled_filters of each file, read with oslo.config as nova does."""
    out = SchedulerFiles()
    if not patterns:
        return out
    missing, files = oslo_ini.read_all(patterns)
    out.missing = [m.pattern for m in missing]
    for cf in files:
        if cf.conf is None:
            out.problems.append((cf.path, cf.error or "cannot be read"))
            continue
        with contextlib.suppress(cfg.DuplicateOptError):
            cf.conf.register_opt(FILTERS_OPT, group="filter_scheduler")
        try:
            value = cf.value("filter_scheduler", "enabled_filters")
        except oslo_ini.OptionError as exc:
            out.problems.append((cf.path, f"[filter_scheduler] enabled_filters: {exc}"))
            continue
        out.lists[cf.path] = tuple(v.strip() for v in value or [] if v.strip())
        # [DEFAULT] scheduler_default_filters was enabled_filters' deprecated name; nova 34's
        # option (nova/conf/scheduler.py) has no deprecated name left: the file's list is ignored.
        if cf.has("DEFAULT", "scheduler_default_filters") and \
                not cf.has("filter_scheduler", "enabled_filters"):
            out.ignored_old.append(cf.path)
    return out


def load(ctx: Context, s: FlavorFiltersProbe.Settings) -> View:
    """4 statements on nova_api (cell_mappings twice), 2 per cell, 4 on placement."""
    scheduler = read_scheduler_files(s.scheduler_files)
    all_cells = cells(ctx)
    with ctx.db("nova_api") as api:
        flavor_rows = api.query(FLAVORS_SQL)
        agg_rows = api.query(AGGREGATES_SQL)
        disabled_cells = {r["uuid"] for r in api.query(DISABLED_CELLS_SQL)}
    flavors = flavors_from_rows(flavor_rows)
    aggregates: dict[str, dict[str, set[str]]] = {}
    for r in agg_rows:  # filters/utils.py aggregate_metadata_get_by_host: split at ',', stripped
        meta = aggregates.setdefault(r["host"], {})
        meta.setdefault(r["key"], set()).update(x.strip() for x in str(r["value"] or "").split(","))
    hosts: list[Host] = []
    unreadable: dict[str, str] = {}
    failures: list[BackendUnavailable] = []
    for cell in all_cells:
        try:
            with cell_db(ctx, cell) as db:
                nodes = db.query(NODES_SQL)
                services = db.query(SERVICES_SQL)
        except BackendUnavailable as exc:
            unreadable[cell.label] = str(exc)
            failures.append(exc)
            continue
        hosts.extend(hosts_of_cell(nodes, services, cell.uuid, cell.label, s.service_down_time,
                                   cell.uuid in disabled_cells, aggregates))
    if failures and len(failures) == len(all_cells):
        raise failures[0]
    placement = None
    skipped = ""
    if ctx.has_db("placement"):
        with ctx.db("placement") as db:
            placement = placement_from_rows(db.query(PROVIDERS_SQL), db.query(INVENTORIES_SQL),
                                            db.query(PROVIDER_TRAITS_SQL), db.query(NAMES_SQL))
    else:
        skipped = "backends.databases.placement is not configured"
    return View(flavors, hosts, placement, scheduler, unreadable, skipped)


def flavors_from_rows(rows: list[dict[str, Any]]) -> list[Flavor]:
    by_id: dict[int, Flavor] = {}
    for r in rows:
        fl = by_id.get(int(r["id"]))
        if fl is None:
            fl = by_id[int(r["id"])] = Flavor(
                int(r["id"]), str(r["flavorid"]), str(r["name"]), int(r["vcpus"]), int(r["memory_mb"]),
                int(r["root_gb"] or 0), int(r["ephemeral_gb"] or 0), int(r["swap"] or 0),
                bool(r["is_public"]), bool(r["disabled"]), int(r.get("projects") or 0))
        if r.get("key") is not None:
            fl.specs[str(r["key"])] = "" if r["value"] is None else str(r["value"])
    return list(by_id.values())


def hosts_of_cell(nodes: list[dict[str, Any]], services: list[dict[str, Any]], cell_uuid: str,
                  label: str, down_time: float, cell_disabled: bool,
                  aggregates: dict[str, dict[str, set[str]]]) -> list[Host]:
    """Compute nodes with their service's state, as HostManager and ComputeFilter see them."""
    svc = {r["host"]: r for r in services}
    out = []
    for row in nodes:
        host = host_from_row(row, cell_uuid, label)
        host.aggregates = aggregates.get(host.host, {})
        s = svc.get(host.host)
        if cell_disabled:
            host.state = "disabled_cell"
        elif s is None:
            host.state = "down"  # HostManager skips nodes without a service
        elif s["disabled"]:
            host.state = "disabled"
        elif s["forced_down"] or s["age"] is None or abs(float(s["age"])) > down_time:
            host.state = "down"
        out.append(host)
    return out


def placement_from_rows(providers: list[dict[str, Any]], inventories: list[dict[str, Any]],
                        traits: list[dict[str, Any]], names: list[dict[str, Any]]) -> Placement:
    by_id: dict[int, Provider] = {}
    uuid_of = {int(r["id"]): r["uuid"] for r in providers}
    for r in providers:
        by_id[int(r["id"])] = Provider(r["uuid"], uuid_of.get(int(r["root_id"]), r["uuid"]))
    for r in inventories:
        p = by_id.get(int(r["rp_id"]))
        if p is not None:
            p.inventories[r["name"]] = Inventory(int(r["total"]), int(r["reserved"]), int(r["min_unit"]),
                                                 int(r["max_unit"]), int(r["step_size"]),
                                                 float(r["allocation_ratio"]))
    for r in traits:
        p = by_id.get(int(r["rp_id"]))
        if p is not None:
            p.traits.add(r["name"])
    known = {"trait": set(), "rc": set()}  # type: dict[str, set[str]]
    for r in names:
        kind = r["kind"].decode() if isinstance(r["kind"], bytes) else r["kind"]
        known.setdefault(kind, set()).add(r["name"])
    return Placement({p.uuid: p for p in by_id.values()}, known["trait"], known["rc"])


# == judging ======================================================================


@dataclass
class Verdict:
    flavor: Flavor
    eligible_ok: int = 0  # eligible hosts that take it
    other_ok: Counter[str] = field(default_factory=Counter)  # hosts in other states that would
    blockers: list[tuple[str, str, str]] = field(default_factory=list)  # (key, filter, why)
    raises: tuple[str, str, str] | None = None  # (key, filter, error)
    not_judged: set[str] = field(default_factory=set)


SEVERITY = {"public": Severity.CRITICAL, "private": Severity.WARNING, "admin_only": Severity.INFO,
            "disabled": Severity.INFO}
VISIBILITIES = ("public", "private", "admin_only", "disabled")


@dataclass
class HostGroup:
    """Hosts the flavors cannot tell apart: same state, same values of every capability,
    stats key and aggregate metadata key some flavor names, same provider tree."""

    host: Host  # a representative
    count: int


def group_hosts(hosts: list[Host], flavors: list[Flavor], pl: Placement | None) -> list[HostGroup]:
    """Evaluating 1,000 flavors on 10,000 hosts one by one is 10 million evaluations; hosts of
    the same hardware and aggregates answer every flavor alike, so each flavor is evaluated
    once per group (bench/README.md)."""
    cap_keys: set[str] = set()
    agg_keys: set[str] = set()
    for fl in flavors:
        for key in ccf_keys(fl.specs):
            scope = key.split(":")
            if len(scope) == 1:
                cap_keys.add(key)
            elif scope[0] == "capabilities" and len(scope) > 1:
                cap_keys.add(scope[1])
        for key in fl.specs:
            name = aiesf_scope(key)
            if name is not None:
                agg_keys.add(name)
    groups: dict[Any, HostGroup] = {}
    for h in hosts:
        if h.state not in ("eligible", "down", "disabled"):
            continue
        sig = (
            h.state,
            json.dumps({k: h.attrs.get(k) for k in sorted(cap_keys)}, default=str, sort_keys=True),
            json.dumps({k: h.stats.get(k, "\x00absent") for k in sorted(cap_keys)}, sort_keys=True),
            tuple((k, tuple(sorted(h.aggregates.get(k, ())))) for k in sorted(agg_keys)),
            _tree_signature(pl, h.uuid) if pl is not None else (),
        )
        group = groups.get(sig)
        if group is None:
            groups[sig] = HostGroup(h, 1)
        else:
            group.count += 1
    return list(groups.values())


def _tree_signature(pl: Placement, root: str) -> tuple[Any, ...]:
    return tuple(sorted(
        (tuple(sorted((rc, inv.total, inv.reserved, inv.min_unit, inv.max_unit, inv.step_size,
                       inv.allocation_ratio) for rc, inv in p.inventories.items())),
         tuple(sorted(p.traits)), p.uuid == root)
        for p in pl.trees.get(root, [])))


def evaluate(flavor: Flavor, groups: list[HostGroup], filters: set[str], pl: Placement | None) -> Verdict:
    """Which hosts take the flavor, and which key stops it where none does."""
    v = Verdict(flavor)
    specs = flavor.specs
    req = placement_request(flavor) if pl else None
    errors = request_errors(req, pl) if req is not None and pl is not None else []
    # per key: how many eligible hosts pass it alone
    passes: dict[tuple[str, str], int] = {}
    for group in groups:
        host = group.host
        ok = not errors
        results: list[tuple[str, str, bool]] = []
        if req is not None and pl is not None:
            for key, good in placement_keys(req, pl, host.uuid).items():
                results.append((key, PLACEMENT, good))
        if CCF in filters:
            for key, value in ccf_keys(specs).items():
                try:
                    res = ccf_verdict(host, key, value)
                except NotJudged:
                    v.not_judged.add(key)
                    continue
                except Exception as exc:  # nova's filter raises the same: the request fails
                    if host.state == "eligible" and v.raises is None:
                        v.raises = (key, CCF, type(exc).__name__)
                    res = False
                if res is not None:
                    results.append((key, CCF, res))
        if AIESF in filters and specs:
            for key, value in specs.items():
                try:
                    res = aiesf_verdict(host, key, value)
                except Exception as exc:
                    if host.state == "eligible" and v.raises is None:
                        v.raises = (key, AIESF, type(exc).__name__)
                    res = False
                if res is not None:
                    results.append((key, AIESF, res))
        for key, flt, good in results:
            if host.state == "eligible":
                passes[(key, flt)] = passes.get((key, flt), 0) + (group.count if good else 0)
            ok = ok and good
        if ok:
            if host.state == "eligible":
                v.eligible_ok += group.count
            else:
                v.other_ok[host.state] += group.count
    for key, why in errors:
        v.blockers.append((key, PLACEMENT, why))
    if v.eligible_ok == 0 and not errors:
        for (key, flt), n in passes.items():
            if n == 0:
                v.blockers.append((key, flt, ""))
    return v


SIZES = ("vcpus", "ram", "disk")


def too_large(v: Verdict) -> bool:
    """Stopped only by its size (vcpus, ram, disk beyond every provider's max_unit or
    capacity): a capacity question, not a typo. devstack's default m1.xlarge on a small VM is
    such a flavor, and a large root disk does not stop a boot from volume (nova/scheduler/
    utils.py resources_from_request_spec requests no root DISK_GB when is_bfv): so it warns
    (INFO for disk alone) and stays out of the unschedulable count the critical alert uses."""
    return (v.raises is None and not v.other_ok and bool(v.blockers)
            and all(flt == PLACEMENT and key in SIZES for key, flt, _ in v.blockers))


def _ignored(flavor: Flavor, ignore: list[str]) -> bool:
    return flavor.flavorid in ignore or flavor.name in ignore


def judge(view: View, s: FlavorFiltersProbe.Settings, report: Report) -> None:
    filters = view.scheduler.enabled
    modelled = sorted(f for f in (CCF, AIESF) if f in filters)
    for flt in (CCF, AIESF):
        report.metric("healthd_flavor_filters_filter_enabled", 1 if flt in filters else 0, filter=flt)
    report.metric("healthd_flavor_filters_scheduler_files_agree", 1 if view.scheduler.agree else 0)
    report.metric("healthd_flavor_filters_placement_checked", 1 if view.placement is not None else 0)
    report.metric("healthd_flavor_filters_cells_unread", len(view.unreadable))
    _judge_files(view.scheduler, report)
    states = Counter(h.state for h in view.hosts)
    for state in ("eligible", "down", "disabled", "not_reported", "disabled_cell"):
        report.metric("healthd_flavor_filters_hosts", states[state], state=state)
    if view.placement is None:
        report.info("placement", f"placement checks skipped ({view.placement_skipped}): flavors wider "
                    "than every host's max_unit and traits no host has are not looked for",
                    "configure backends.databases.placement (SELECT on resource_providers, inventories, "
                    "resource_classes, resource_provider_traits, traits)")
    for label, why in sorted(view.unreadable.items()):
        report.warning(f"cell {label}", f"the database of cell {label} could not be read, so its "
                       f"hosts are not counted: a flavor only they take would look unschedulable: {why}",
                       f"check healthd's access to cell {label}'s database (SELECT on compute_nodes "
                       "and services, deploy/mysql/grants.sql)")
    flavors = [f for f in view.flavors if not _ignored(f, s.ignore_flavors)]
    by_vis = Counter(f.visibility for f in flavors)
    for vis in VISIBILITIES:
        report.metric("healthd_flavor_filters_flavors", by_vis[vis], visibility=vis)
    if states["eligible"] == 0:
        for vis in VISIBILITIES:
            report.metric("healthd_flavor_filters_unschedulable", 0, visibility=vis)
        report.warning("compute hosts", f"no compute node is enabled and up ({dict(states)}), so no "
                       f"flavor can be scheduled and none is judged",
                       "see the nova_services check: start or enable nova-compute")
        report.summary = f"{len(flavors)} flavors not judged: no enabled, up compute host"
        return
    groups = group_hosts(view.hosts, flavors, view.placement)
    verdicts = [evaluate(f, groups, filters, view.placement) for f in flavors]
    bad = [v for v in verdicts if v.eligible_ok == 0 or v.raises is not None]
    # A flavor only down or disabled hosts could take is the hosts' fault (nova_services), not
    # counted here: the alert on this metric is about the flavor.
    bad_vis = Counter(v.flavor.visibility for v in bad
                      if (v.raises is not None or not v.other_ok) and not too_large(v))
    large_vis = Counter(v.flavor.visibility for v in bad if too_large(v))
    for vis in VISIBILITIES:
        report.metric("healthd_flavor_filters_unschedulable", bad_vis[vis], visibility=vis)
        report.metric("healthd_flavor_filters_too_large", large_vis[vis], visibility=vis)
    order = sorted(verdicts, key=lambda v: (v.eligible_ok > 0 and v.raises is None, v.flavor.flavorid))
    for v in order[:s.max_flavor_series]:
        report.metric("healthd_flavor_filters_flavor_hosts", v.eligible_ok, flavor=v.flavor.flavorid)
    bad.sort(key=lambda v: (-SEVERITY[v.flavor.visibility], v.flavor.flavorid))
    for v in bad[:s.max_findings]:
        _finding(v, states["eligible"], view, report)
    rest = bad[s.max_findings:]
    if rest:
        report.warning("flavors", f"{len(rest)} more unschedulable flavor(s) not listed one by one: "
                       + ", ".join(v.flavor.flavorid for v in rest[:20]),
                       "raise checks.flavor_filters.max_findings to list them")
    report.summary = (f"{len(flavors)} flavors on {states['eligible']} enabled, up compute node(s) "
                      f"(filters: {', '.join(modelled) or 'none modelled'}"
                      f"{', placement' if view.placement else ''}): {sum(bad_vis.values())} unschedulable"
                      + (f" ({', '.join(f'{k}: {n}' for k, n in sorted(bad_vis.items()))})"
                         if bad_vis else "")
                      + (f", {sum(large_vis.values())} too large for every node" if large_vis else ""))


def _judge_files(sched: SchedulerFiles, report: Report) -> None:
    for pattern in sched.missing:
        report.warning(f"files pattern {pattern}", "matches no file, so the scheduler's enabled_filters "
                       "is not known from it", "fix checks.flavor_filters.scheduler_files in healthd.yaml")
    for path, why in sched.problems:
        report.warning(path, f"enabled_filters cannot be read: {why}",
                       "let healthd read the file (it holds passwords: run healthd in the group that may), "
                       "or fix checks.flavor_filters.scheduler_files")
    for path in sched.ignored_old:
        report.warning(path, "sets [DEFAULT] scheduler_default_filters, which nova 34 no longer reads "
                       "(nova/conf/scheduler.py [filter_scheduler] enabled_filters has no deprecated name "
                       "left): the scheduler runs nova's default filters instead, and flavors are judged "
                       "with those", "move the list to [filter_scheduler] enabled_filters and restart "
                       "nova-scheduler")
    if not sched.agree:
        groups: dict[tuple[str, ...], list[str]] = {}
        for path, lst in sched.lists.items():
            groups.setdefault(lst, []).append(path)
        text = "; ".join(f"{', '.join(paths)}: {', '.join(lst) or '(empty)'}"
                         for lst, paths in groups.items())
        report.warning("[filter_scheduler] enabled_filters",
                       f"the schedulers' files disagree ({text}): the same build passes on one scheduler and "
                       "fails on another; flavors are judged with every filter any of them enables",
                       "write the same [filter_scheduler] enabled_filters on every nova-scheduler host and "
                       "restart nova-scheduler")


def _fix(flavor: Flavor, key: str, flt: str) -> str:
    unset = f"openstack flavor unset --property {key} {flavor.flavorid}"
    if flt == AIESF:
        name = aiesf_scope(key) or key
        value = flavor.specs.get(key, "")
        first = value.split()[0] if value.split() else ""
        plain = value if value and first not in OP_METHODS and first != "<or>" else "VALUE"
        return (f"{unset}, or put the hosts meant for it in an aggregate with that metadata: "
                f"openstack aggregate set --property {name}={plain} AGGREGATE")
    if flt == PLACEMENT and key in ("vcpus", "ram", "disk"):
        return (f"create a smaller flavor (openstack flavor create ...) and retire this one "
                f"(openstack flavor delete {flavor.flavorid}), or raise the hosts' inventory")
    return unset


def _finding(v: Verdict, eligible: int, view: View, report: Report) -> None:
    fl = v.flavor
    subject = f"flavor {fl.flavorid} ({fl.name})"
    sev = SEVERITY[fl.visibility]
    who = {"public": "public flavor", "private": f"private flavor ({fl.projects} project(s) have access)",
           "admin_only": "private flavor no project has access to (admin only)",
           "disabled": "disabled flavor (no new server can use it)"}[fl.visibility]
    unread = f"; cell(s) {', '.join(sorted(view.unreadable))} not read" if view.unreadable else ""
    if view.unreadable and sev == Severity.CRITICAL:
        sev = Severity.WARNING  # the hosts that take it may be in the cell not read
    if v.raises is not None:
        key, flt, err = v.raises
        message = (f"{who}: {flt} raises {err} evaluating {key}={fl.specs.get(key, '')!r} "
                   "(extra_specs_ops.match calls float() on a non-number, or a bare <or>): every build "
                   "with this flavor fails")
        report.finding(sev, subject, message + unread, _fix(fl, key, flt))
        return
    if v.other_ok:
        where = ", ".join(f"{n} {state}" for state, n in sorted(v.other_ok.items()))
        report.finding(min(sev, Severity.WARNING), subject,
                   f"{who}: only compute nodes that are not enabled and up could take it ({where}); "
                   f"builds with it fail with 'No valid host' until one is back{unread}",
                   "start or enable those nova-compute services (see the nova_services check)")
        return
    if not v.blockers:
        shown_specs = ", ".join(f"{k}={fl.specs[k]}" for k in sorted(fl.specs)) or "none"
        message = (f"{who}: no enabled, up compute node ({eligible}) satisfies all its requirements "
                   f"together (extra specs: {shown_specs})")
        report.finding(sev, subject, message + unread, "openstack flavor show " + fl.flavorid +
                   ": unset the property that no host has")
        return
    if too_large(v):
        only_disk = all(key == "disk" for key, _, _ in v.blockers)
        sev = min(sev, Severity.INFO if only_disk else Severity.WARNING)
        who += (" too large for every compute node (capacity, not a typo"
                + ("; a boot from volume requests no root disk and still works)" if only_disk else ")"))
    parts = []
    for key, flt, why in v.blockers:
        value = fl.specs.get(key)
        sizes = {"vcpus": f"vcpus={fl.vcpus}", "ram": f"ram={fl.memory_mb} MB",
                 "disk": f"disk={fl.root_gb + fl.ephemeral_gb} GB + swap {fl.swap} MB"}
        shown = f"{key}={value}" if value is not None else sizes.get(key, key)
        if why:
            parts.append(f"{shown}: {why}")
        elif flt == PLACEMENT:
            parts.append(f"{shown}: no resource provider's inventory or traits can satisfy it "
                         "(max_unit, capacity, required/forbidden traits) in placement")
        elif flt == AIESF:
            parts.append(f"{shown}: {AIESF} finds no aggregate of an enabled, up host with metadata "
                         f"{aiesf_scope(key)} matching it")
        else:
            parts.append(f"{shown}: {CCF} finds no enabled, up host whose capability matches it")
    key, flt, _ = v.blockers[0]
    report.finding(sev, subject, f"{who}: builds fail with 'No valid host' on all {eligible} enabled, up "
               f"compute node(s): " + "; ".join(parts) + unread, _fix(fl, key, flt))
