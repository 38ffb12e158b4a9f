"""Per-run nova / placement databases built from the real schemas in tests/schemas.

The dumps come from the projects' own migrations (tests/schemas/make_schemas.sh),
so the probes are tested against the tables nova 34 and placement 16 really
have. Every database and user gets a unique per-run prefix and is dropped by
``NovaDB.close()``; nothing else on the shared MariaDB is touched.

Rows are written the way nova and placement write them; each helper names the
code path it imitates.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymysql

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
HOST = "127.0.0.1"
PORT = 3306
CELL0_UUID = "00000000-0000-0000-0000-000000000000"
DISK_GB_ID = 2  # os_resource_classes.STANDARDS.index("DISK_GB"), as placement syncs it


def server(database: str | None = None) -> pymysql.Connection:
    """A root connection to the shared test server (root, empty password)."""
    return pymysql.connect(
        host=HOST, port=PORT, user="root", password="", database=database,
        autocommit=True, charset="utf8mb4", cursorclass=pymysql.cursors.DictCursor,
    )


def schema_statements(kind: str) -> Iterator[str]:
    """The statements of tests/schemas/<kind>.sql, in order.

    Versioned comments (/*!40014 SET FOREIGN_KEY_CHECKS=0 */) are real statements
    and are kept; only mariadb-dump's client-side sandbox marker is removed.
    """
    text = re.sub(r"/\*M!999999\\- enable the sandbox mode \*/", "", (SCHEMAS / f"{kind}.sql").read_text())
    # --no-data dumps hold no routines or triggers, so ";\n" ends every statement.
    for stmt in text.split(";\n"):
        if stmt.strip():
            yield stmt


def utcnow() -> datetime:
    """Naive UTC, as oslo_utils.timeutils.utcnow() stores it in nova's DATETIME columns."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


@dataclass
class NovaDB:
    """A set of databases (and MariaDB users) that belong to one test run."""

    prefix: str = field(default_factory=lambda: f"hdt_{uuidlib.uuid4().hex[:10]}")
    databases: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._root = server()

    # -- lifecycle ---------------------------------------------------------
    def create(self, kind: str, name: str) -> str:
        """Create `<prefix>_<name>` and load the real <kind> schema into it."""
        db = f"{self.prefix}_{name}"
        self.exec(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
        self.databases.append(db)
        with server(db) as conn, conn.cursor() as cur:
            for stmt in schema_statements(kind):
                cur.execute(stmt)
        return db

    def create_user(self, name: str, password: str, grants: Sequence[str]) -> str:
        """A user with exactly the given grants, e.g. 'SELECT ON `db`.`services`'."""
        user = f"{self.prefix}_{name}"[:80]
        self.exec(f"CREATE USER '{user}'@'{HOST}' IDENTIFIED BY %s", (password,))
        self.users.append(user)
        for grant in grants:
            self.exec(f"GRANT {grant} TO '{user}'@'{HOST}'")
        return user

    def close(self) -> None:
        for db in self.databases:
            self.exec(f"DROP DATABASE IF EXISTS `{db}`")
        for user in self.users:
            self.exec(f"DROP USER IF EXISTS '{user}'@'{HOST}'")
        self.databases.clear()
        self.users.clear()
        self._root.close()

    # -- plumbing ----------------------------------------------------------
    def exec(self, sql: str, args: Sequence[Any] | None = None) -> int:
        with self._root.cursor() as cur:
            return cur.execute(sql, args)

    def insert(self, db: str, table: str, row: dict[str, Any]) -> int:
        cols = ", ".join(f"`{c}`" for c in row)
        marks = ", ".join(["%s"] * len(row))
        with self._root.cursor() as cur:
            cur.execute(f"INSERT INTO `{db}`.`{table}` ({cols}) VALUES ({marks})", list(row.values()))
            return cur.lastrowid

    def query(self, sql: str, args: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        with self._root.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    @staticmethod
    def url(db: str, user: str = "root", password: str = "", port: int = PORT) -> str:
        auth = f"{user}:{password}" if password else user
        return f"mysql+pymysql://{auth}@{HOST}:{port}/{db}?charset=utf8"


@dataclass
class Cell:
    id: int
    uuid: str
    name: str
    db: str


class Deployment:
    """A nova deployment in miniature: an API database, cells, optionally placement."""

    def __init__(self, novadb: NovaDB, with_placement: bool = True) -> None:
        self.novadb = novadb
        self.api = novadb.create("nova_api", "nova_api")
        self.placement = novadb.create("placement", "placement") if with_placement else None
        self.cells: dict[str, Cell] = {}
        if self.placement:
            self._sync_resource_classes()

    # -- nova_api ----------------------------------------------------------
    def add_cell0(self) -> Cell:
        """`nova-manage cell_v2 map_cell0` (nova/cmd/manage.py CellV2Commands.map_cell0)."""
        return self._map_cell("cell0", CELL0_UUID, self.novadb.create("nova", "nova_cell0"))

    def add_cell(self, name: str, connection: str | None = None) -> Cell:
        """`nova-manage cell_v2 create_cell --name <name>` on a cell DB synced with `db sync`.

        CellV2Commands.create_cell writes cell_mappings(uuid, name, transport_url,
        database_connection, disabled=False).
        """
        db = self.novadb.create("nova", f"nova_{name}")
        return self._map_cell(name, str(uuidlib.uuid4()), db, connection)

    def _map_cell(self, name: str, cell_uuid: str, db: str, connection: str | None = None) -> Cell:
        now = utcnow()
        row_id = self.novadb.insert(self.api, "cell_mappings", {
            "created_at": now, "uuid": cell_uuid, "name": name,
            "transport_url": "rabbit://guest:guest@127.0.0.1:5672/" if name != "cell0" else "none:///",
            "database_connection": connection or NovaDB.url(db), "disabled": 0,
        })
        cell = Cell(row_id, cell_uuid, name, db)
        self.cells[name] = cell
        return cell

    def map_host(self, cell: Cell, host: str) -> None:
        """What `nova-manage cell_v2 discover_hosts` does for one host.

        nova/objects/host_mapping.py _check_and_create_node_host_mappings: create
        host_mappings(host, cell_id), then set compute_nodes.mapped = 1.
        """
        self.novadb.insert(self.api, "host_mappings", {
            "created_at": utcnow(), "cell_id": cell.id, "host": host,
        })
        self.novadb.exec(
            f"UPDATE `{cell.db}`.compute_nodes SET mapped = 1 WHERE host = %s AND deleted = 0", (host,)
        )

    def unmap_host(self, host: str) -> None:
        """`nova-manage cell_v2 delete_host` minus the node update: drops the mapping only."""
        self.novadb.exec(f"DELETE FROM `{self.api}`.host_mappings WHERE host = %s", (host,))

    # -- cell databases ----------------------------------------------------
    def add_compute(
        self,
        cell: Cell,
        host: str,
        *,
        node: bool = True,
        age: timedelta = timedelta(hours=1),
        local_gb: int = 100,
        local_gb_used: int = 20,
        disk_available_least: int | None = 70,
        disk_allocation_ratio: float = 1.0,
        hypervisor_hostname: str | None = None,
    ) -> dict[str, Any]:
        """A nova-compute that started and reported, as nova 34 writes it.

        Service row: nova/service.py Service.start -> objects.Service.create
        (binary, host, topic='compute', report_count, version, uuid); the report
        loop (servicegroup/drivers/db.py) bumps report_count, updated_at and
        last_seen_up. Node row: compute/resource_tracker.py _init_compute_node ->
        ComputeNode.create with mapped=0, then _update_usage sets
        local_gb_used / free_disk_gb = local_gb - local_gb_used.
        """
        created = utcnow() - age
        now = utcnow()
        service_id = self.novadb.insert(cell.db, "services", {
            "created_at": created, "updated_at": now, "host": host, "binary": "nova-compute",
            "topic": "compute", "report_count": 10, "disabled": 0, "deleted": 0,
            "last_seen_up": now, "forced_down": 0, "version": 74, "uuid": str(uuidlib.uuid4()),
        })
        out: dict[str, Any] = {"service_id": service_id}
        if node:
            node_uuid = str(uuidlib.uuid4())
            self.novadb.insert(cell.db, "compute_nodes", {
                "created_at": created, "updated_at": now, "service_id": service_id,
                "vcpus": 8, "memory_mb": 16384, "local_gb": local_gb, "vcpus_used": 0,
                "memory_mb_used": 512, "local_gb_used": local_gb_used, "hypervisor_type": "QEMU",
                "hypervisor_version": 8002000, "cpu_info": "{}",
                "disk_available_least": disk_available_least, "free_ram_mb": 15872,
                "free_disk_gb": local_gb - local_gb_used, "current_workload": 0, "running_vms": 0,
                "hypervisor_hostname": hypervisor_hostname or host, "deleted": 0,
                "host_ip": "127.0.0.1", "host": host, "uuid": node_uuid,
                "ram_allocation_ratio": 1.5, "cpu_allocation_ratio": 4.0,
                "disk_allocation_ratio": disk_allocation_ratio, "mapped": 0,
            })
            out["node_uuid"] = node_uuid
        return out

    def add_service(
        self,
        cell: Cell,
        binary: str,
        host: str,
        *,
        version: int = 74,
        silent: timedelta = timedelta(0),
        age: timedelta = timedelta(hours=1),
        **columns: Any,
    ) -> dict[str, Any]:
        """A service row as nova writes it: Service.create (nova/service.py Service.start:
        binary, host, topic = binary minus 'nova-', version = the code's SERVICE_VERSION, uuid),
        then the report loop (nova/servicegroup/drivers/db.py) bumping report_count and
        last_seen_up; ``silent`` is how long ago the last report was. Other columns (disabled,
        disabled_reason, forced_down, ...) override. Returns {"id", "uuid"}."""
        now = utcnow()
        row = {
            "created_at": now - age, "updated_at": now - silent, "host": host, "binary": binary,
            "topic": binary.removeprefix("nova-"), "report_count": 10, "disabled": 0, "deleted": 0,
            "last_seen_up": now - silent, "forced_down": 0, "version": version,
            "uuid": str(uuidlib.uuid4()), **columns,
        }
        row_id = self.novadb.insert(cell.db, "services", row)
        return {"id": row_id, "uuid": row["uuid"]}

    def delete_service(self, cell: Cell, row_id: int) -> None:
        """What nova's service delete leaves in the cell: the row soft-deleted
        (nova/db/main/api.py service_destroy: soft_delete sets deleted = id)."""
        self.novadb.exec(
            f"UPDATE `{cell.db}`.services SET deleted = id, deleted_at = %s WHERE id = %s", (utcnow(), row_id)
        )

    def set_disk_usage(self, cell: Cell, host: str, local_gb_used: int,
                       disk_available_least: int | None) -> None:
        """The resource tracker's periodic update (ResourceTracker._update_usage)."""
        self.novadb.exec(
            f"UPDATE `{cell.db}`.compute_nodes SET local_gb_used = %s, free_disk_gb = local_gb - %s, "
            "disk_available_least = %s, updated_at = %s WHERE host = %s AND deleted = 0",
            (local_gb_used, local_gb_used, disk_available_least, utcnow(), host),
        )

    # -- placement ---------------------------------------------------------
    def _sync_resource_classes(self) -> None:
        """placement/objects/resource_class.py _resource_classes_sync, DISK_GB only."""
        self.novadb.exec(
            "SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_AUTO_VALUE_ON_ZERO')"
        )
        for rc_id, name in ((0, "VCPU"), (1, "MEMORY_MB"), (DISK_GB_ID, "DISK_GB")):
            self.novadb.insert(self.placement or "", "resource_classes", {"id": rc_id, "name": name})

    def add_provider(self, name: str, provider_uuid: str, total: int, reserved: int = 0,
                     allocation_ratio: float = 1.0) -> int:
        """The compute's report client: POST /resource_providers, PUT .../inventories.

        placement/objects/resource_provider.py _create_in_db (root_provider_id =
        own id) and inventory.py _add_inventory_to_provider.
        """
        assert self.placement
        now = utcnow()
        rp_id = self.novadb.insert(self.placement, "resource_providers", {
            "created_at": now, "uuid": provider_uuid, "name": name, "generation": 1,
        })
        self.novadb.exec(
            f"UPDATE `{self.placement}`.resource_providers SET root_provider_id = id WHERE id = %s", (rp_id,)
        )
        self.novadb.insert(self.placement, "inventories", {
            "created_at": now, "resource_provider_id": rp_id, "resource_class_id": DISK_GB_ID,
            "total": total, "reserved": reserved, "min_unit": 1, "max_unit": total, "step_size": 1,
            "allocation_ratio": allocation_ratio,
        })
        return rp_id

    def allocate(self, rp_id: int, used: int) -> str:
        """PUT /allocations/{consumer}: placement/objects/allocation.py _set_allocations."""
        assert self.placement
        consumer = str(uuidlib.uuid4())
        self.novadb.insert(self.placement, "allocations", {
            "created_at": utcnow(), "resource_provider_id": rp_id, "consumer_id": consumer,
            "resource_class_id": DISK_GB_ID, "used": used,
        })
        return consumer

    # -- config --------------------------------------------------------------
    def backends_config(self, **cell_overrides: Any) -> dict[str, Any]:
        """The `backends` section of healthd.yaml for this deployment."""
        dbs: dict[str, Any] = {"nova_api": {"url": NovaDB.url(self.api)}}
        if self.placement:
            dbs["placement"] = {"url": NovaDB.url(self.placement)}
        if cell_overrides:
            dbs["cells"] = cell_overrides
        return {"databases": dbs}
