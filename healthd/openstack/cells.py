"""Nova's cells v2: the cells of nova_api.cell_mappings and a session on each cell's database.

nova/objects/cell_mapping.py: cell0 has the fixed uuid 00000000-0000-0000-0000-000000000000
and holds only instances that failed to schedule, never hosts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from healthd.connections import Database
from healthd.dburl import parse_db_url
from healthd.errors import NotConfigured
from healthd.probe import Context

CELL0_UUID = "00000000-0000-0000-0000-000000000000"
CELLS_SQL = "SELECT uuid, name, database_connection FROM cell_mappings ORDER BY id"


@dataclass(frozen=True)
class Cell:
    uuid: str
    name: str
    url: str = field(default="", repr=False)  # cell_mappings.database_connection (may carry a password)

    @property
    def label(self) -> str:
        return self.name or self.uuid

    @property
    def is_cell0(self) -> bool:
        return self.uuid == CELL0_UUID

    @property
    def override_names(self) -> tuple[str, ...]:
        """backends.databases entries that replace the mapped URL (e.g. it does not reach from here)."""
        return tuple(f"cells.{key}" for key in (self.name, self.uuid) if key)


def cells(ctx: Context, include_cell0: bool = False) -> list[Cell]:
    """The cells of nova_api.cell_mappings, in id order (one statement)."""
    with ctx.db("nova_api") as api:
        rows = api.query(CELLS_SQL)
    found = [Cell(row["uuid"], row["name"] or "", row["database_connection"] or "") for row in rows]
    for cell in found:  # registers each URL's password with the redactor before anything is said
        with contextlib.suppress(ValueError):
            parse_db_url(cell.url)
    return [cell for cell in found if include_cell0 or not cell.is_cell0]


def cell_db(ctx: Context, cell: Cell) -> contextlib.AbstractContextManager[Database]:
    """A read-only session on the cell's database: the config's override, else the mapped URL."""
    for name in cell.override_names:
        if ctx.has_db(name):
            return ctx.db(name)
    if not cell.url:
        raise NotConfigured(f"cell {cell.label}: cell_mappings.database_connection is empty; "
                            f"configure backends.databases.cells.{cell.label}")
    return ctx.db_at(cell.url, f"cell {cell.label}", f"cells.{cell.label}")
