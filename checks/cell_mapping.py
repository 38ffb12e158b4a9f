"""cell_mapping: compute hosts that nova cannot route to because no cell claims them.

With cells v2 the API and the conductor find a compute host's cell through a
row in nova_api.host_mappings (host -> cell). A new nova-compute registers its
service and compute node in its cell database and starts reporting, so it
looks healthy, but until someone runs `nova-manage cell_v2 discover_hosts`
(or the scheduler's periodic discovery is enabled) nothing maps it. The
scheduler does not need the mapping: placement offers the host's resource
provider and the scheduler reads compute nodes from the cell databases
(nova/scheduler/host_manager.py _get_computes_for_cells), so it may pick the
host; the conductor then finds no mapping and the build fails
(nova/conductor/manager.py schedule_and_build_instances: "No host-to-cell
mapping found for selected host ... Setup is incomplete.", the server buried
in cell0 in ERROR with "Host 'x' is not mapped to any cell"). The reverse also
happens: a host removed or moved to another cell keeps its old mapping, which
points the API at a cell that no longer has the host.

Per cell (cell0 holds no hosts) the probe reads the nova-compute services and
compute nodes of the cell database and compares them with host_mappings:

- unmapped: the host lives in the cell but has no mapping. CRITICAL when it
  has a compute node and its service is up and enabled; WARNING when it is
  down/disabled or only half registered; INFO while younger than
  ``grace_seconds`` (discovery may simply not have run yet).
- misplaced: mapped to another cell than the one it reports in (CRITICAL).
- stale: the mapping points at a cell where the host is in no table (WARNING).

A cell whose database cannot be read is UNKNOWN on its own (a WARNING naming
it, healthd_cell_mapping_cell_up{cell} 0): the other cells are still judged,
and only when no cell can be read is the probe UNKNOWN.

Queries: one for cell_mappings, one for host_mappings, one per cell; never
one per host.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from healthd.model import MetricSpec, Report, Severity
from healthd.openstack.cells import Cell, cell_db, cells
from healthd.probe import BackendUnavailable, Context, Probe, ProbeSettings

# One statement per cell: services and compute nodes together, folded to one
# row per host by the server (the GROUP BY compares names case-insensitively,
# as MySQL does when nova looks a mapping up). Ages come from the database
# clock, the same clock nova's UTC timestamps were compared with.
CELL_HOSTS_SQL = """
SELECT host, SUM(kind = 'service') AS services, SUM(kind = 'node') AS nodes,
       MIN(age_s) AS age_s, MIN(silent_s) AS silent_s, MAX(disabled) AS disabled,
       MAX(forced_down) AS forced_down, MAX(mapped) AS mapped, MAX(service_uuid) AS service_uuid
  FROM (SELECT 'service' AS kind, host, uuid AS service_uuid,
               TIMESTAMPDIFF(SECOND, created_at, UTC_TIMESTAMP()) AS age_s,
               TIMESTAMPDIFF(SECOND, COALESCE(last_seen_up, updated_at, created_at), UTC_TIMESTAMP())
                 AS silent_s,
               disabled, forced_down, NULL AS mapped
          FROM services WHERE `binary` = 'nova-compute' AND deleted = 0 AND host IS NOT NULL
        UNION ALL
        SELECT 'node', host, NULL, TIMESTAMPDIFF(SECOND, created_at, UTC_TIMESTAMP()), NULL, NULL, NULL,
               mapped
          FROM compute_nodes WHERE deleted = 0 AND host IS NOT NULL) t
 GROUP BY host
"""

HOST_MAPPINGS_SQL = """
SELECT hm.host, cm.uuid AS cell_uuid, cm.name AS cell_name
  FROM host_mappings hm JOIN cell_mappings cm ON cm.id = hm.cell_id
"""

DISCOVER = "nova-manage cell_v2 discover_hosts --cell_uuid {uuid} --verbose"
DISCOVER_BY_SERVICE = "nova-manage cell_v2 discover_hosts --cell_uuid {uuid} --by-service --verbose"
DELETE_HOST = "nova-manage cell_v2 delete_host --cell_uuid {uuid} --host {host}"


class CellMappingProbe(Probe):
    name = "cell_mapping"
    description = "Compute hosts missing from nova_api.host_mappings, stale or misplaced host mappings."
    default_interval = 300.0
    default_timeout = 30.0
    requires = ("db:nova_api", "cells")
    privileges = (
        "SELECT on nova_api.cell_mappings and nova_api.host_mappings; "
        "SELECT on <cell db>.services and <cell db>.compute_nodes of every cell"
    )
    metrics = (
        MetricSpec("healthd_cell_mapping_cells", "Cells in nova_api.cell_mappings, cell0 excluded."),
        MetricSpec("healthd_cell_mapping_cell_up",
                   "1 if the cell's database could be read this run, 0 if not (its hosts are not judged).",
                   ("cell",)),
        MetricSpec("healthd_cell_mapping_mapped_hosts",
                   "Compute hosts of the cell correctly mapped to it in host_mappings.", ("cell",)),
        MetricSpec("healthd_cell_mapping_unmapped_hosts",
                   "Compute hosts of the cell (service or node) without any host mapping.", ("cell",)),
        MetricSpec("healthd_cell_mapping_misplaced_hosts",
                   "Compute hosts of the cell mapped to a different cell.", ("cell",)),
        MetricSpec("healthd_cell_mapping_stale_mappings",
                   "Host mappings pointing at the cell for hosts that are in no cell.", ("cell",)),
        MetricSpec("healthd_cell_mapping_host_unmapped",
                   "1 for each unmapped compute host (bounded by max_host_series).", ("cell", "host")),
    )

    class Settings(ProbeSettings):
        grace_seconds: float = Field(
            300.0, ge=0, description="an unmapped host younger than this is only INFO (discovery pending)"
        )
        service_down_seconds: float = Field(
            60.0, gt=0, description="nova's service_down_time: a service silent longer is down"
        )
        max_host_series: int = Field(
            200, ge=0, description="cap on healthd_cell_mapping_host_unmapped series per run"
        )

    settings: Settings

    def run(self, ctx: Context, report: Report) -> None:
        judge(load(ctx), self.settings, report)


# -- loading: nova_api and each cell database -> CellView ------------------------


@dataclass(frozen=True)
class HostInCell:
    """What one cell database knows about one host: one row of CELL_HOSTS_SQL (NULL is None)."""

    host: str
    services: int = 0  # nova-compute service rows
    nodes: int = 0  # compute node rows
    age_s: float | None = None  # since its newest row (service or node) was created
    silent_s: float | None = None  # since the service last reported (last_seen_up, updated_at, created_at)
    disabled: bool = False
    forced_down: bool = False
    mapped: bool = False  # compute_nodes.mapped=1: plain discover_hosts skips the node for good
    service_uuid: str | None = None

    @property
    def has_service(self) -> bool:
        return bool(self.services)

    @property
    def has_node(self) -> bool:
        return bool(self.nodes)

    @property
    def age(self) -> float:
        return float("inf") if self.age_s is None else self.age_s

    def service_up(self, down_after: float) -> bool:
        return self.has_service and not self.forced_down and (self.silent_s or 0) <= down_after


@dataclass(frozen=True)
class Mapping:
    """One row of nova_api.host_mappings."""

    host: str
    cell_uuid: str
    cell_name: str | None = None

    @property
    def cell_label(self) -> str:
        return self.cell_name or self.cell_uuid


@dataclass
class CellView:
    cells: list[Cell]  # nova_api.cell_mappings in id order, cell0 included
    mappings: list[Mapping]  # nova_api.host_mappings
    hosts: dict[str, list[HostInCell]]  # cell uuid -> compute hosts of its database (not cell0)
    unreadable: dict[str, str] = field(default_factory=dict)  # cell uuid -> why it could not be read


def load(ctx: Context) -> CellView:
    """One statement for cell_mappings, one for host_mappings, one per cell; never one per host."""
    all_cells = cells(ctx, include_cell0=True)
    with ctx.db("nova_api") as api:
        mappings = [Mapping(r["host"], r["cell_uuid"], r["cell_name"]) for r in api.query(HOST_MAPPINGS_SQL)]
    hosts: dict[str, list[HostInCell]] = {}
    unreadable: dict[str, str] = {}
    failures: list[BackendUnavailable] = []
    for cell in all_cells:
        if cell.is_cell0:
            continue
        try:
            with cell_db(ctx, cell) as db:
                hosts[cell.uuid] = [_host(row) for row in db.query(CELL_HOSTS_SQL)]
        except BackendUnavailable as exc:  # that cell is UNKNOWN; the others are still judged
            unreadable[cell.uuid] = str(exc)
            failures.append(exc)
    if failures and not hosts:
        raise failures[0]  # no cell could be read: the probe itself is UNKNOWN, naming the first
    return CellView(all_cells, mappings, hosts, unreadable)


def _host(row: dict[str, Any]) -> HostInCell:
    def number(value: Any) -> float | None:
        return None if value is None else float(value)

    return HostInCell(row["host"], int(row["services"] or 0), int(row["nodes"] or 0), number(row["age_s"]),
                      number(row["silent_s"]), bool(row["disabled"]), bool(row["forced_down"]),
                      bool(row["mapped"]), row["service_uuid"])


# -- judging: plain data in, findings and metrics out -----------------------------


def judge(view: CellView, settings: CellMappingProbe.Settings, report: Report) -> None:
    real_cells = [c for c in view.cells if not c.is_cell0]
    report.metric("healthd_cell_mapping_cells", len(real_cells))
    _check_cell_setup(view.cells, report)
    # MySQL compares host names case-insensitively, as nova's lookups of a mapping do.
    mappings = {m.host.lower(): m for m in view.mappings}
    unread = [c for c in real_cells if c.uuid in view.unreadable]
    _unreadable(unread, view, mappings, report)
    readable = [c for c in real_cells if c.uuid not in view.unreadable]
    for cell in real_cells:
        report.metric("healthd_cell_mapping_cell_up", 0 if cell in unread else 1, cell=cell.label)
    located = {c.uuid: {h.host.lower(): h for h in view.hosts.get(c.uuid, ()) if h.host} for c in readable}
    counts = _classify(readable, located, mappings, {c.uuid: c.label for c in unread}, settings, report)
    report.summary = _summary(len(real_cells), counts)
    if unread:
        report.summary += f"; cell(s) not read: {', '.join(c.label for c in unread)}"


def _unreadable(unread: list[Cell], view: CellView, mappings: dict[str, Mapping], report: Report) -> None:
    for cell in unread:
        pointing = sum(1 for m in mappings.values() if m.cell_uuid == cell.uuid)
        report.warning(
            f"cell {cell.label}",
            f"the database of cell {cell.label} could not be read, so its compute hosts and the "
            f"{pointing} host mapping(s) that name it are not judged (the other cells are): "
            f"{view.unreadable[cell.uuid]}",
            f"check healthd's access to cell {cell.label}'s database (nova_api.cell_mappings."
            f"database_connection, or its override backends.databases.cells.{cell.label}; SELECT on "
            "services and compute_nodes, deploy/mysql/grants.sql)",
        )


# -- cell setup (nova-status "Cells v2" check) ----------------------------------


def _check_cell_setup(all_cells: list[Cell], report: Report) -> None:
    if not any(c.is_cell0 for c in all_cells):
        report.critical(
            "cell0", "nova_api.cell_mappings has no cell0: instances that fail to schedule have "
            "nowhere to be recorded and nova-status upgrade check fails",
            "nova-manage cell_v2 map_cell0 --database_connection <cell0 DB URL>",
        )
    if not any(not c.is_cell0 for c in all_cells):
        report.critical(
            "cell_mappings", "no cell besides cell0 is mapped: no compute host can be mapped or used",
            "nova-manage cell_v2 create_cell --name cell1 --verbose, then "
            "nova-manage cell_v2 discover_hosts --verbose",
        )


# -- host classification: unmapped, misplaced, stale -----------------------------


def _classify(cells: list[Cell], located: dict[str, dict[str, HostInCell]], mappings: dict[str, Mapping],
              unread: dict[str, str], settings: CellMappingProbe.Settings, report: Report) -> dict[str, int]:
    """cells: the cells that were read; unread: uuid -> label of those that could not be."""
    by_uuid = {c.uuid: c for c in cells}
    counts: dict[str, int] = defaultdict(int)
    series = 0
    for cell in cells:
        n = {"mapped": 0, "unmapped": 0, "misplaced": 0}
        for key, here in sorted(located[cell.uuid].items()):
            mapping = mappings.get(key)
            if mapping is None:
                n["unmapped"] += 1
                if series < settings.max_host_series:
                    report.metric("healthd_cell_mapping_host_unmapped", 1, cell=cell.label, host=here.host)
                    series += 1
                _unmapped(cell, here, settings, report)
            elif mapping.cell_uuid == cell.uuid:
                n["mapped"] += 1
            else:
                n["misplaced"] += 1
                there = located.get(mapping.cell_uuid, {})
                also_there = None if mapping.cell_uuid in unread else key in there
                _misplaced(cell, here, mapping, also_there, report)
        for kind, value in n.items():
            report.metric(f"healthd_cell_mapping_{kind}_hosts", value, cell=cell.label)
            counts[kind] += value
    counts["stale"] = _stale(by_uuid, located, mappings, unread, report)
    counts["series"] = series
    return counts


def _unmapped(cell: Cell, here: HostInCell, settings: CellMappingProbe.Settings, report: Report) -> None:
    subject = f"host {here.host} (cell {cell.label})"
    command = (DISCOVER_BY_SERVICE if here.mapped or not here.has_node else DISCOVER).format(
        uuid=cell.uuid)
    why = (" Its compute node is flagged mapped=1 (the mapping was removed afterwards), so plain "
           "discover_hosts skips it; --by-service maps it from the service row."
           if here.mapped else "")
    if here.age < settings.grace_seconds:
        report.finding(Severity.INFO, subject,
                       f"new compute host ({int(here.age)} s old) not mapped to a cell yet; "
                       "fine if host discovery runs shortly.", f"on a controller: {command}")
        return
    if not here.has_node:
        report.warning(
            subject, "nova-compute is registered but has no compute node and no host mapping: "
            "discover_hosts (by compute node) will not map it. The virt driver may have failed "
            "to start; for ironic, hosts are mapped by service.",
            f"check the nova-compute log on {here.host}; for ironic, on a controller: {command}")
        return
    usable = here.service_up(settings.service_down_seconds) and not here.disabled
    # nova 34: placement offers the host's resource provider and the scheduler reads compute nodes
    # from the cell databases (nova/scheduler/host_manager.py _get_computes_for_cells), with no
    # host mapping involved; nova/conductor/manager.py schedule_and_build_instances then finds no
    # HostMapping, logs "No host-to-cell mapping found for selected host ... Setup is incomplete."
    # and buries the server in cell0 in ERROR (_bury_in_cell0). nova/compute/api.py
    # _validate_host_or_node refuses `--host` (2.74) with ComputeHostNotFound, and
    # nova/conductor/tasks/live_migrate.py _get_destination_cell_mapping refuses it as a target.
    state = ("its nova-compute is up and reporting, so the scheduler may pick it (placement offers "
             "its resources and the scheduler reads compute nodes from the cell database, no mapping "
             "needed)" if usable else
             "its nova-compute is down, disabled or missing; once it is up and enabled the scheduler "
             "may pick it (placement offers its resources)")
    message = (f"host has a compute node in cell {cell.label} but no row in nova_api.host_mappings; "
               f"{state}. A build sent to it then fails in nova-conductor (\"No host-to-cell mapping "
               f"found for selected host {here.host}. Setup is incomplete.\") and the server goes to "
               f"ERROR in cell0 with \"Host '{here.host}' is not mapped to any cell\"; `openstack server "
               f"create --host {here.host}` is refused (compute host not found) and migrations to it "
               f"fail.{why}")
    remedy = (f"on a controller: {command} (or set [scheduler] discover_hosts_in_cells_interval "
              "to discover hosts periodically)")
    report.finding(Severity.CRITICAL if usable else Severity.WARNING, subject, message, remedy)


def _misplaced(cell: Cell, here: HostInCell, mapping: Mapping, also_there: bool | None,
               report: Report) -> None:
    subject = f"host {here.host} (cell {cell.label})"
    if also_there is None:  # the mapped cell could not be read: leftovers here, or a wrong mapping
        report.warning(
            subject, f"host reports in cell {cell.label} but nova_api.host_mappings maps it to cell "
            f"{mapping.cell_label}, whose database could not be read: either the rows here are "
            f"leftovers of a move to {mapping.cell_label}, or the mapping names the wrong cell",
            f"once cell {mapping.cell_label} can be read this probe tells which; if {here.host} really "
            f"runs in cell {cell.label}: {DELETE_HOST.format(uuid=mapping.cell_uuid, host=here.host)}, "
            f"then {DISCOVER_BY_SERVICE.format(uuid=cell.uuid)}",
        )
        return
    if also_there:  # rows in both cells, mapped to the other: these are leftovers
        service = here.service_uuid
        # Deleting a nova-compute service also destroys HostMapping.get_by_host(service.host),
        # whichever cell that mapping names (nova/api/openstack/compute/services.py delete, nova
        # 34): the good mapping goes with the leftover, so the fix maps the host again after.
        remap = DISCOVER_BY_SERVICE.format(uuid=mapping.cell_uuid)
        report.warning(
            subject, f"host also has rows in cell {mapping.cell_label}, where it is mapped; the "
            f"nova-compute service/compute node rows left in cell {cell.label} are leftovers of a move",
            f"openstack compute service delete {service} (service in cell {cell.label}); nova then "
            f"also deletes the host mapping of {here.host}, so map it again in cell "
            f"{mapping.cell_label} at once: {remap}" if service
            else f"remove the leftover compute node rows of {here.host} in cell {cell.label}",
        )
        return
    report.critical(
        subject, f"host reports in cell {cell.label} but nova_api.host_mappings maps it to cell "
        f"{mapping.cell_label}: the scheduler and API look for it in the wrong cell database",
        f"on a controller: {DELETE_HOST.format(uuid=mapping.cell_uuid, host=here.host)}, then "
        f"{DISCOVER_BY_SERVICE.format(uuid=cell.uuid)}",
    )


def _stale(by_uuid: dict[str, Cell], located: dict[str, dict[str, HostInCell]],
           mappings: dict[str, Mapping], unread: dict[str, str], report: Report) -> int:
    anywhere = {key for hosts in located.values() for key in hosts}
    stale: dict[str, int] = {uuid: 0 for uuid in by_uuid}
    labels = {uuid: c.label for uuid, c in by_uuid.items()}
    maybe = (f" (cell(s) {', '.join(sorted(unread.values()))} could not be read: if the host is there, "
             "this mapping names the wrong cell, and deleting it is the first step of the fix too)"
             if unread else "")
    for key, mapping in sorted(mappings.items()):
        if key in anywhere or mapping.cell_uuid in unread:  # the cell it names is not judged
            continue
        stale[mapping.cell_uuid] = stale.get(mapping.cell_uuid, 0) + 1
        labels.setdefault(mapping.cell_uuid, mapping.cell_label)
        report.warning(
            f"host mapping {mapping.host} (cell {mapping.cell_label})",
            f"nova_api.host_mappings maps {mapping.host} to cell {mapping.cell_label}, but no cell has "
            f"a nova-compute service or compute node for it (host removed or moved){maybe}",
            f"on a controller: {DELETE_HOST.format(uuid=mapping.cell_uuid, host=mapping.host)} "
            "(it refuses while instances remain on the host: migrate or delete them first)",
        )
    for uuid, value in stale.items():
        report.metric("healthd_cell_mapping_stale_mappings", value, cell=labels[uuid])
    return sum(stale.values())


def _summary(cells: int, counts: dict[str, int]) -> str:
    total = counts["mapped"] + counts["unmapped"] + counts["misplaced"]
    text = (f"{total} compute hosts in {cells} cells: {counts['unmapped']} unmapped, "
            f"{counts['misplaced']} misplaced, {counts['stale']} stale mappings")
    if counts["series"] < counts["unmapped"]:
        text += f" (only {counts['series']} unmapped hosts exported as series)"
    return text
