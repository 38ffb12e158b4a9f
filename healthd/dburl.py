"""Parse SQLAlchemy-style MySQL URLs (as nova.conf and cell_mappings store them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from healthd.redact import register_secret


@dataclass(frozen=True)
class DbTarget:
    host: str
    port: int
    user: str
    database: str
    password: str | None = field(default=None, repr=False)
    unix_socket: str | None = None

    def describe(self) -> str:
        """Where it points, without the password."""
        where = self.unix_socket or f"{self.host}:{self.port}"
        return f"{self.user}@{where}/{self.database}"


def parse_db_url(url: str) -> DbTarget:
    """mysql+pymysql://user:pass@host:port/db?charset=utf8 -> DbTarget.

    Errors never quote the URL, which may carry a password.
    """
    parts = urlsplit(url)
    if not parts.scheme.startswith("mysql"):
        raise ValueError("database URL must use a mysql scheme (mysql+pymysql://...)")
    password = unquote(parts.password) if parts.password else None
    register_secret(password)
    try:
        port = parts.port or 3306
    except ValueError:
        raise ValueError("database URL has an invalid port") from None
    database = parts.path.lstrip("/")
    if not database:
        raise ValueError("database URL names no database")
    socket = parse_qs(parts.query).get("unix_socket", [None])[0]
    if not parts.hostname and not socket:
        raise ValueError("database URL names no host")
    return DbTarget(
        host=parts.hostname or "localhost",
        port=port,
        user=unquote(parts.username or ""),
        database=database,
        password=password,
        unix_socket=socket,
    )
