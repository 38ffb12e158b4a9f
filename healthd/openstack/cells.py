"""Nova's cells v2: the cells of nova_api.cell_mappings and a session on each cell's database.

nova/objects/cell_mapping.py: cell0 has the fixed uuid 00000000-0000-0000-0000-000000000000
and holds only instances that failed to schedule, never hosts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse, urlsplit

from healthd.connections import Database
from healthd.dburl import parse_db_url
from healthd.errors import NotConfigured
from healthd.openstack import oslo_ini
from healthd.probe import Context
from healthd.redact import register_secret

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


# -- the URLs cell_mappings store (templates since nova 24) ---------------------


def register_url_secrets(url: str | None) -> None:
    """Passwords of both URL kinds, also the later hosts of a multi-host transport_url."""
    for part in urlsplit(url).netloc.split(",") if url and "://" in url else ():
        userinfo = part.rpartition("@")[0]
        if ":" in userinfo:
            secret = userinfo.split(":", 1)[1]
            register_secret(secret)
            register_secret(unquote(secret))


def _parse_netloc(netloc: str) -> dict[str, Any]:
    """nova/objects/cell_mapping.py _parse_netloc (user:pass@host:port, not unquoted)."""
    userpass, _, hostport = netloc.rpartition("@") if "@" in netloc else ("", "", netloc)
    host, port = oslo_ini._parse_host_port(hostport)
    these: dict[str, Any] = {"username": None, "password": None, "hostname": host, "port": port}
    if ":" in userpass:
        these["username"], these["password"] = userpass.split(":", 1)
    else:
        these["username"] = userpass
    return these


def format_url(url: str, default: str) -> str:
    """nova/objects/cell_mapping.py CellMapping._format_url: fill a template from nova's own URL."""
    base = urlparse(default)
    subs: dict[str, Any] = {
        "username": base.username, "password": base.password, "hostname": base.hostname,
        "port": base.port, "scheme": base.scheme, "query": base.query, "fragment": base.fragment,
        "path": base.path.lstrip("/"),
    }
    if "," in base.netloc:
        for index, netloc in enumerate(base.netloc.split(","), start=1):
            for key, value in _parse_netloc(netloc).items():
                subs[f"{key}{index}"] = value
    return url.format(**subs)
