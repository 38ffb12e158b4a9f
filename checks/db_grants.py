"""db_grants: do the services' database users have the grants their services need?

Failure mode: a DBA revokes a grant, a new controller's address is not in the
user's host pattern, a role is granted but never made the default, an
anonymous account on a more specific host shadows the service's account. The
service keeps running on its pooled connections and fails on the next one:
``(1044, "Access denied for user 'nova'@'%' to database 'nova_api'")`` and
nova-api answers 500.

Where the users come from: ``[database] connection``, ``[api_database] connection``
and ``[placement_database] connection`` of the service config files (read with
oslo.config, healthd/openstack/oslo_ini.py; passwords registered as secrets) and
every cell's ``nova_api.cell_mappings.database_connection`` (what nova-api and
the conductors really use, nova/context.py set_target_cell).

How it decides, without the services' passwords: healthd's own audit account reads
the grant tables, never a password hash (column grants on mysql.user, see
deploy/mysql/grants.sql), and the probe applies MariaDB's own rules (sql/sql_acl.cc
and sql/sql_acl_getsort.ic of MariaDB 10.11; each rule measured on 10.11.19):

- login: the account is the FIRST row of mysql.user, sorted most specific host
  first (get_magic_sort: literal hosts and netmasks, then patterns by how much they
  match, '%' last), a named user before the anonymous '' on the same host, whose host
  matches the client and whose user is the client's or '' (find_user_or_anon). So
  ``''@'127.0.0.3'`` beats ``'nova'@'%'`` for a client at 127.0.0.3: the login fails
  with 1045 whatever the password.
- database privileges: global privileges of the account (mysql.user), OR the FIRST
  mysql.db row (sorted host, db, user; a '' user matches every user) whose host matches
  the client, whose Db pattern (``%``, ``_``, ``\\_``) matches the database, for the
  account's user (acl_get: the first match wins, rows are not added up), OR the same
  for the account's default role and the roles granted to it (mysql.roles_mapping;
  a role that is not the default is not active for a service, which never runs SET ROLE).
- table and column grants (mysql.tables_priv) only cover the tables they name: the
  service fails on every other table and on the tables the next db sync creates.

Which host the services connect from is a setting (``client_hosts``); a URL on a
loopback address means the service runs on the database host. Without either, every
host pattern that could match is judged: each of the user's account rows, and each
anonymous row or db row more specific than one of them.

Statements: five on the audit connection, one on nova_api for the cells, whatever the
number of services or hosts; ``login_as_service`` adds one short read-only login per
distinct (user, database) and never runs SHOW GRANTS (it shows the password hash).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from oslo_config import cfg
from pydantic import Field

from healthd.dburl import DbTarget, parse_db_url
from healthd.errors import AccessDenied, AuthFailed, BackendUnavailable
from healthd.model import MetricSpec, Report
from healthd.openstack import oslo_ini
from healthd.openstack.cells import cells as nova_cells
from healthd.openstack.cells import register_url_secrets
from healthd.probe import Context, Probe, ProbeSettings
from healthd.redact import describe_error

# The privileges healthd reads, as the grant tables name them.
PRIVS = ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "INDEX", "ALTER")
USER_COLUMNS = {p: f"{p.capitalize()}_priv" for p in PRIVS}

# What a service does with its database at run time: oslo.db sessions (SQLAlchemy ORM)
# read and write rows: nova/db/main/api.py and nova/db/api/api.py (model_query, save,
# soft_delete = UPDATE, archive_deleted_rows = INSERT into shadow tables + DELETE),
# placement/objects/*.py (allocations replaced with DELETE + INSERT), keystone/*/backends/sql.py,
# glance/db/sqlalchemy/api.py. The install guides grant ALL PRIVILEGES on the database
# (e.g. docs.openstack.org/nova/latest/install/controller-install-ubuntu.html,
# `GRANT ALL PRIVILEGES ON nova_api.* TO 'nova'@'%'`).
RUNTIME = ("SELECT", "INSERT", "UPDATE", "DELETE")
# What `nova-manage api_db sync` / `db sync`, `placement-manage db sync`, `keystone-manage
# db_sync`, `glance-manage db_sync` need on top: their alembic migrations create and alter
# tables and indexes and drop them (nova/db/main/migrations/versions/*.py op.create_table,
# op.add_column, op.create_index, op.drop_table; the same in placement, keystone, glance).
SYNC = ("CREATE", "ALTER", "INDEX", "DROP")
# What each service needs, by the name its config file has (oslo_ini.service_of). A service
# not listed gets the same runtime set (every oslo.db service reads and writes its rows).
NEEDS: dict[str, tuple[str, ...]] = {
    svc: RUNTIME for svc in ("nova", "placement", "keystone", "glance", "neutron", "cinder")
}
# The options that name a service's database: oslo_db/options.py database_opts (connection,
# secret, no deprecated names in oslo.db 17), nova/conf/database.py api_db_opts (a deep copy of
# those, group api_database), placement/conf/database.py placement_db_opts (connection, secret).
# Keystone's migrations create triggers on PostgreSQL only (27e647c0fad4_initial_version.py), so
# no TRIGGER privilege is needed on MariaDB.
URL_OPTIONS = (("database", "connection"), ("api_database", "connection"),
               ("placement_database", "connection"))

USERS_SQL = ("SELECT Host, User, {cols}, is_role, default_role FROM mysql.user "
             "WHERE User IN ({marks}) OR User = '' OR is_role = 'Y'")
ROLE_USERS = "SELECT User FROM mysql.user WHERE is_role = 'Y'"
DB_SQL = ("SELECT Host, Db, User, {cols} FROM mysql.db WHERE User IN ({marks}) OR User = '' "
          f"OR User IN ({ROLE_USERS})")
TABLES_SQL = ("SELECT Host, Db, User, Table_name, Table_priv, Column_priv FROM mysql.tables_priv "
              f"WHERE Db IN ({{dbs}}) AND (User IN ({{marks}}) OR User = '' OR User IN ({ROLE_USERS}))")
ROLES_SQL = "SELECT Host, User, Role FROM mysql.roles_mapping"
STATUS_SQL = ("SELECT @@skip_name_resolve AS skip_name_resolve, (SELECT VARIABLE_VALUE FROM "
              "information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'ACCESS_DENIED_ERRORS') AS denied")

STATE_DENIED = "access_denied_errors"
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


class DbGrantsProbe(Probe):
    name = "db_grants"
    description = ("The database users of the services' config files and the cell mappings have the "
                   "grants their services need, for the hosts they connect from.")
    default_interval = 300.0
    default_timeout = 30.0
    requires = ("db:mysql",)
    privileges = (
        "column SELECT on mysql.user (Host, User, the *_priv columns read, is_role, default_role); "
        "SELECT on mysql.db, mysql.tables_priv, mysql.roles_mapping (no password hashes); SELECT on "
        "nova_api.cell_mappings; read access to the service config files"
    )
    metrics = (
        MetricSpec("healthd_db_grants_checks", "(user, database, client host) combinations judged."),
        MetricSpec("healthd_db_grants_ok",
                   "1 if the service's user has what the service needs on the database from that "
                   "client host (an address, or a host pattern judged for any host it matches; '*' when "
                   "the user has no account at all), 0 if not.",
                   ("service", "user", "database", "host")),
        MetricSpec("healthd_db_grants_status",
                   "Verdict per (service, user, database, host): 0 has what the service needs, 1 doubtful "
                   "(WARNING: table-level grants only, or a shadow on a host pattern the services may not "
                   "use), 2 missing (CRITICAL).", ("service", "user", "database", "host")),
        MetricSpec("healthd_db_grants_access_denied_errors",
                   "The server's Access_denied_errors status counter (every denied login or statement, "
                   "of any user, since the server started)."),
        MetricSpec("healthd_db_grants_access_denied_increase",
                   "Increase of Access_denied_errors since the previous run (0 on the first run or "
                   "after a server restart)."),
        MetricSpec("healthd_db_grants_login_up",
                   "login_as_service: 1 if the service's own credentials logged in to its database "
                   "from healthd's host and ran SELECT 1, 0 if not.", ("user", "database")),
    )

    class Settings(ProbeSettings):
        config_files: list[str] = Field(
            default_factory=list, description="service config files (globs allowed) whose "
            "[database], [api_database] and [placement_database] connection are judged")
        audit_database: str = Field(
            "mysql", description="backends.databases entry of healthd's audit account on the database "
            "server the services use (grants: deploy/mysql/grants.sql)")
        cells: bool = Field(True, description="also judge each cell's database_connection from "
                            "nova_api.cell_mappings (needs backends.databases.nova_api)")
        client_hosts: list[str] = Field(
            default_factory=list, description="addresses (or names, with name resolution on) the "
            "services connect from, as the database server sees them; empty: every host row that "
            "could match is judged (a URL on a loopback address is judged from localhost)")
        server_aliases: list[str] = Field(
            default_factory=list, description="other HOST[:PORT] names of the audited server (a VIP, "
            "the Galera nodes): URLs naming them are judged too; others are INFO")
        login_as_service: bool = Field(
            False, description="also log in with each service's own credentials (read-only session, "
            "SELECT 1) from healthd's host; SHOW GRANTS is never run")
        denied_increase_warning: int = Field(
            5, ge=0, description="WARNING when Access_denied_errors rose by at least this much since "
            "the previous run (0: never). Not 1: a person's mistyped password must not warn; a "
            "service refused on every request rises far faster")
        ignore: list[str] = Field(default_factory=list, description="USER@DATABASE pairs not judged")
        max_parallel: int = Field(4, ge=1, description="logins at once (login_as_service)")

    settings: Settings

    def run(self, ctx: Context, report: Report) -> None:
        s = self.settings
        uses, notes = service_databases(ctx, s)
        grants = load_grants(ctx, s.audit_database, uses)
        audit = audit_target(ctx, s.audit_database)
        logins = load_logins(ctx, uses, s) if s.login_as_service else {}
        judge(report, uses, notes, grants, audit, s, logins, ctx.state)


# == plain data ==========================================================================


@dataclass(frozen=True)
class Use:
    """One database a service uses with one user: where it is configured."""

    service: str
    user: str
    database: str
    server: str  # host:port of the URL (or the socket path)
    where: str  # "<file> [database] connection" or "cell cell1 (nova_api.cell_mappings)"
    url: str = field(default="", repr=False, compare=False)  # carries the password
    # mysqlclient (mysql://, mysql+mysqldb://) reaches host "localhost" through the unix socket
    # (libmysqlclient mysql_real_connect); PyMySQL always dials TCP.
    socket: bool = False

    @property
    def loopback(self) -> bool:
        return _loopback_server(self.server)


@dataclass(frozen=True)
class Account:
    host: str
    user: str
    privs: frozenset[str] = frozenset()
    is_role: bool = False
    default_role: str = ""


@dataclass(frozen=True)
class DbRow:
    host: str
    db: str
    user: str
    privs: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TableRow:
    host: str
    db: str
    user: str
    table: str
    privs: frozenset[str] = frozenset()
    columns: frozenset[str] = frozenset()  # privileges granted on some columns only


@dataclass
class Grants:
    accounts: list[Account] = field(default_factory=list)
    dbs: list[DbRow] = field(default_factory=list)
    tables: list[TableRow] = field(default_factory=list)
    roles: list[Note] = field(default_factory=list)  # (Host, User, Role)
    skip_name_resolve: bool = True
    denied: int | None = None


@dataclass(frozen=True)
class Client:
    """A client as the server sees it: an address and names, or a host pattern standing for
    "any host of this pattern" (``generic``) when the services' hosts are not configured."""

    label: str
    ip: str | None = None
    names: tuple[str, ...] = ()
    generic: str | None = None
    own: bool = True  # a host (pattern) the services use or the user's own account is for


# == MariaDB's matching rules ===============================================================


def like(pattern: str, text: str, case_insensitive: bool = False) -> bool:
    """wild_compare / wild_case_compare: '%' any run, '_' one character, '\\' escapes the next."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    flags = re.S | (re.I if case_insensitive else 0)
    return re.fullmatch("".join(out), text, flags) is not None


def covers(pattern: str, other: str) -> bool:
    """Whether every host matching ``other`` matches ``pattern`` (a '%' of ``other`` can only
    be absorbed by a '%' of ``pattern``; a '_' by a '_' or a '%')."""
    if pattern in ("%", ""):
        return True
    out = []
    for ch in pattern:
        out.append(".*" if ch == "%" else "[^%]" if ch == "_" else re.escape(ch))
    return re.fullmatch("".join(out), other, re.I) is not None


def _netmask(pattern: str, ip: str) -> bool | None:
    """'10.0.0.0/255.255.255.0' (sql_acl.cc update_hostname ip/ip_mask); None if not that form."""
    if "/" not in pattern:
        return None
    net, _, mask = pattern.partition("/")
    try:
        n, m, a = (int(ipaddress.IPv4Address(v)) for v in (net, mask, ip))
    except ValueError:
        return False
    return a & m == n


def host_matches(pattern: str, client: Client) -> bool:
    """compare_hostname: the pattern against the client's address, or its names (case-insensitive)."""
    if client.generic is not None:
        return covers(pattern, client.generic)
    if pattern in ("", "%"):
        return True
    if client.ip:
        masked = _netmask(pattern, client.ip)
        if masked is not None:
            return masked
        if like(pattern, client.ip):
            return True
    return any(like(pattern, name, case_insensitive=True) for name in client.names)


def magic(pattern: str, maxlen: int) -> int:
    """sql_acl_getsort.ic get_magic_sort for one pattern: smaller is more specific."""
    n = m = k = p = 0
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%":
            if not k and not m:
                p = n
            k += 1
            while i + 1 < len(pattern) and pattern[i + 1] == "%":
                i += 1
        elif ch == "_":
            if not k and not m:
                p = n
            m += 1
        else:
            if ch == "\\" and i + 1 < len(pattern):
                i += 1
            n += 1
        i += 1
    k, m = min(k, 31), min(m, 31)
    length = maxlen - n - m if k else 0
    d, d1 = maxlen + 1, min(maxlen + 1, 32)
    if length > m:
        return (((length * 2 + 1) * d + k) * d1 + m) * d + p
    return (((m * 2) * d + length) * d1 + k) * d + p


HOST_LEN, DB_LEN = 255, 64


def _host_key(host: str) -> int:
    return magic(host or "%", HOST_LEN)  # '' (any host) sorts with '%'


def login_account(accounts: list[Account], user: str, client: Client) -> Account | None:
    """find_user_or_anon over acl_users sorted by (host specificity, named before anonymous)."""
    candidates = [a for a in accounts if not a.is_role and a.user in (user, "")
                  and host_matches(a.host, client)]
    candidates.sort(key=lambda a: (_host_key(a.host), a.user == ""))
    return candidates[0] if candidates else None


def db_row(rows: list[DbRow], user: str, client: Client | None, database: str) -> DbRow | None:
    """acl_get: the first mysql.db row, sorted (host, db, user), for this user (or ''), host, db.
    ``client`` None: a role's rows (Host '')."""
    found = [r for r in rows
             if (r.user == user or r.user == "")
             and (r.host == "" if client is None else host_matches(r.host, client))
             and like(r.db, database)]
    found.sort(key=lambda r: (_host_key(r.host), magic(r.db, DB_LEN), r.user == ""))
    return found[0] if found else None


def active_roles(account: Account, grants: Grants) -> list[str]:
    """The default role and every role granted to it, transitively (roles_mapping)."""
    if not account.default_role:
        return []
    granted = {(h, u, r) for h, u, r in grants.roles}
    if (account.host, account.user, account.default_role) not in granted:
        return []  # a default role no longer granted is not activated
    seen: list[str] = []
    todo = [account.default_role]
    while todo:
        role = todo.pop()
        if role in seen:
            continue
        seen.append(role)
        todo += [r for h, u, r in grants.roles if u == role and h == ""]
    return seen


@dataclass
class Verdict:
    """What one (user, database) has from one client host."""

    client: Client
    account: Account | None = None
    have: frozenset[str] = frozenset()  # from global, database and role grants
    sources: list[str] = field(default_factory=list)  # how they were found, for the message
    tables: list[TableRow] = field(default_factory=list)  # table/column grants on the database
    shadowed_by: Account | None = None  # the anonymous account a login lands on
    narrower: DbRow | None = None  # a more specific db row that wins over a broader one

    @property
    def grantee(self) -> str:
        return f"'{self.account.user}'@'{self.account.host}'" if self.account else ""


def evaluate(grants: Grants, user: str, database: str, client: Client) -> Verdict:
    verdict = Verdict(client)
    account = login_account(grants.accounts, user, client)
    if account is None:
        return verdict
    if account.user == "":
        verdict.shadowed_by = account
        return verdict
    verdict.account = account
    have = set(account.privs)
    if account.privs:
        verdict.sources.append(f"global ({', '.join(sorted(account.privs))} ON *.*)")
    row = db_row(grants.dbs, user, client, database)
    if row is not None:
        have |= row.privs
        verdict.sources.append(f"mysql.db row '{row.user}'@'{row.host}' ON `{row.db}`.*")
        broader = [r for r in grants.dbs if r is not row and r.user in (user, "") and like(r.db, database)
                   and host_matches(r.host, client) and r.privs - row.privs]
        if broader:
            verdict.narrower = row
    for role in active_roles(account, grants):
        role_acc = next((a for a in grants.accounts if a.is_role and a.user == role), None)
        if role_acc and role_acc.privs:
            have |= role_acc.privs
            verdict.sources.append(f"role {role} (global)")
        rrow = db_row([r for r in grants.dbs if r.user == role], role, None, database)
        if rrow is not None:
            have |= rrow.privs
            verdict.sources.append(f"role {role} ON `{rrow.db}`.*")
    verdict.have = frozenset(have)
    names = {user, "", *active_roles(account, grants)}
    verdict.tables = [t for t in grants.tables if t.user in names and t.db == database
                      and (t.host == "" if t.user not in (user, "") else host_matches(t.host, client))]
    return verdict


def clients_for(use: Use, grants: Grants, hosts: list[str]) -> list[Client]:
    """The client hosts to judge a use from (see the module docstring)."""
    if hosts:
        return [_concrete(h, grants.skip_name_resolve) for h in hosts]
    if use.loopback:
        if use.server.startswith("/") or use.socket:  # a unix socket: the server sees 'localhost'
            return [Client("localhost", None, ("localhost",))]
        return [_concrete("127.0.0.1", grants.skip_name_resolve)]
    own = [a.host for a in grants.accounts if a.user == use.user and not a.is_role]
    patterns = list(dict.fromkeys(own))
    # More specific rows that take a client of one of the user's patterns away from it.
    for host in [a.host for a in grants.accounts if a.user == "" and not a.is_role] + \
            [r.host for r in grants.dbs if r.user in (use.user, "") and like(r.db, use.database)]:
        if host in patterns:
            continue
        if any(covers(p, host) and _host_key(host) < _host_key(p) for p in own):
            patterns.append(host)
    return [_generic(p, own=p in own) for p in patterns]


def _generic(pattern: str, own: bool) -> Client:
    if "%" in pattern or "_" in pattern or "/" in pattern or pattern == "":
        return Client(pattern or "%", generic=pattern or "%", own=own)
    try:
        ipaddress.ip_address(pattern)
        return Client(pattern, ip=pattern, own=own)
    except ValueError:
        return Client(pattern, names=(pattern,), own=own)


def _concrete(host: str, skip_name_resolve: bool) -> Client:
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        return Client(host, None, (host,))
    names: tuple[str, ...] = ()
    if not skip_name_resolve and ipaddress.ip_address(ip).is_loopback:
        names = ("localhost",)  # the server resolves the loopback address to localhost
    return Client(host, ip, names)


# == loading ==================================================================================


def _register_url_options(cf: oslo_ini.ConfigFile) -> None:
    if cf.conf is None:
        return
    for section, option in URL_OPTIONS:
        with contextlib.suppress(cfg.DuplicateOptError):  # registered by an earlier run
            cf.conf.register_opt(cfg.StrOpt(option, secret=True), group=section)


Note = tuple[str, str, str]  # (severity, subject, message)


def service_databases(ctx: Context, s: DbGrantsProbe.Settings) -> tuple[list[Use], list[Note]]:
    """Every (service, user, database) the files and the cell mappings name, and notes
    (severity, subject, message) about what cannot be judged."""
    uses: list[Use] = []
    notes: list[Note] = []
    missing, files = oslo_ini.read_all(s.config_files)
    for miss in missing:
        notes.append(("info", f"config files {miss.pattern}", "no file matches this pattern"))
    for cf in files:
        for section, option in URL_OPTIONS:  # secrets first: raw values, before anything is said
            register_url_secrets(cf.get(section, option))
    for cf in files:
        if cf.error:
            notes.append(("warning", cf.path, f"not read: {cf.error}"))
            continue
        _register_url_options(cf)
        for section, option in URL_OPTIONS:
            if not cf.has(section, option):
                continue
            place = f"{cf.path} [{section}] {option}"
            try:
                url = cf.value(section, option)
            except oslo_ini.OptionError as exc:
                notes.append(("info", place, f"not judged: {exc}"))
                continue
            _add_use(uses, notes, cf.service, str(url or ""), place)
    if s.cells:
        if ctx.has_db("nova_api"):
            try:
                found = nova_cells(ctx, include_cell0=True)
            except BackendUnavailable as exc:  # the files are still judged
                notes.append(("warning", "cell mappings",
                              f"not read, the cells' users are not judged: {exc}"))
                found = []
            for cell in found:
                _add_use(uses, notes, "nova", cell.url,
                         f"cell {cell.label} (nova_api.cell_mappings.database_connection)")
        elif not files or any(cf.service == "nova" for cf in files):
            notes.append(("info", "cell mappings", "not read: backends.databases.nova_api is not "
                                                   "configured (or set cells: false)"))
    return uses, notes


def _add_use(uses: list[Use], notes: list[Note], service: str, url: str, where: str) -> None:
    if not url:
        return
    register_url_secrets(url)
    scheme = urlsplit(url).scheme
    if scheme and not scheme.startswith("mysql"):
        notes.append(("info", where, f"{scheme.split('+')[0]} databases are not judged (MySQL/MariaDB only)"))
        return
    if "{" in url:
        notes.append(("info", where, "a templated URL (nova fills it from its own [database] connection): "
                                     "not judged"))
        return
    try:
        target = parse_db_url(url)
    except ValueError as exc:
        notes.append(("critical", where, f"cannot be parsed: {exc}; the service cannot connect"))
        return
    driver = scheme.partition("+")[2] or "mysqldb"  # SQLAlchemy's default MySQL driver
    socket = target.host == "localhost" and driver == "mysqldb"
    uses.append(Use(service, target.user, target.database, _server(target), where, url, socket))


def _server(target: DbTarget) -> str:
    if target.unix_socket:
        return target.unix_socket
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{host}:{target.port}"


def audit_target(ctx: Context, name: str) -> str:
    cfg_ = ctx.backends.database_config(name)
    try:
        return _server(parse_db_url(cfg_.url)) if cfg_ else ""
    except ValueError:
        return ""


def load_grants(ctx: Context, audit_db: str, uses: list[Use]) -> Grants:
    """Five statements on the audit connection (status, users, db, tables_priv, roles_mapping),
    however many services and hosts."""
    users = sorted({u.user for u in uses}) or [""]
    dbs = sorted({u.database for u in uses}) or [""]
    marks = ", ".join(["%s"] * len(users))
    dmarks = ", ".join(["%s"] * len(dbs))
    cols = ", ".join(USER_COLUMNS.values())
    with ctx.db(audit_db) as db:
        status = db.query(STATUS_SQL)[0]
        users_rows = db.query(USERS_SQL.format(cols=cols, marks=marks), users)
        db_rows = db.query(DB_SQL.format(cols=cols, marks=marks), users)
        table_rows = db.query(TABLES_SQL.format(dbs=dmarks, marks=marks), [*dbs, *users])
        role_rows = db.query(ROLES_SQL)
    return grants_from_rows(users_rows, db_rows, table_rows, role_rows, status)


def _privs(row: dict[str, Any]) -> frozenset[str]:
    return frozenset(p for p, col in USER_COLUMNS.items() if str(row.get(col, "N")).upper() == "Y")


def _set(value: Any) -> frozenset[str]:
    items = value if isinstance(value, set | frozenset) else str(value or "").split(",")
    return frozenset(str(v).strip().upper() for v in items if str(v).strip())


def grants_from_rows(users: list[dict[str, Any]], dbs: list[dict[str, Any]], tables: list[dict[str, Any]],
                     roles: list[dict[str, Any]], status: dict[str, Any] | None = None) -> Grants:
    status = status or {}
    denied = status.get("denied")
    return Grants(
        accounts=[Account(r["Host"], r["User"], _privs(r), str(r.get("is_role", "N")).upper() == "Y",
                          r.get("default_role") or "") for r in users],
        dbs=[DbRow(r["Host"], r["Db"], r["User"], _privs(r)) for r in dbs],
        tables=[TableRow(r["Host"], r["Db"], r["User"], r["Table_name"], _set(r["Table_priv"]),
                         _set(r["Column_priv"])) for r in tables],
        roles=[(r["Host"], r["User"], r["Role"]) for r in roles],
        skip_name_resolve=bool(int(status.get("skip_name_resolve", 1) or 0)),
        denied=int(denied) if denied is not None and str(denied).isdigit() else None,
    )


@dataclass(frozen=True)
class Login:
    ok: bool
    kind: str = ""  # auth, denied, unreachable
    error: str = ""


Key = tuple[str, str, str]  # (server, user, database)


def load_logins(ctx: Context, uses: list[Use], s: DbGrantsProbe.Settings) -> dict[Key, Login]:
    """One read-only login per distinct (server, user, database) with the service's own URL."""
    by_key: dict[tuple[str, str, str], Use] = {}
    for use in uses:
        by_key.setdefault((use.server, use.user, use.database), use)

    def attempt(key: tuple[str, str, str]) -> Login:
        use = by_key[key]
        try:
            with ctx.db_at(use.url, f"{use.database} as {use.user}") as db:
                db.query("SELECT 1")
            return Login(True)
        except AuthFailed as exc:
            return Login(False, "auth", str(exc))
        except AccessDenied as exc:
            return Login(False, "denied", str(exc))
        except BackendUnavailable as exc:
            return Login(False, "unreachable", str(exc))
        except Exception as exc:  # pymysql edge cases: reported, never a crash
            return Login(False, "unreachable", describe_error(exc))

    return ctx.map_parallel(attempt, list(by_key), s.max_parallel,
                            lambda key: Login(False, "unreachable", "not tried before the run's deadline"))


# == judging ==================================================================================


def fix_for(use: Use, grantee: str, privs: tuple[str, ...] | None = None) -> str:
    what = "ALL PRIVILEGES" if privs is None else ", ".join(privs)
    return f"GRANT {what} ON `{use.database}`.* TO {grantee};"


def judge(report: Report, uses: list[Use], notes: list[Note], grants: Grants, audit: str,
          s: DbGrantsProbe.Settings, logins: dict[Key, Login],
          state: dict[str, Any]) -> None:
    for severity, subject, message in notes:
        fix = {"info": "", "critical": "correct the file so the service can read it"}.get(
            severity, "check healthd's access (the file's permissions, backends.databases.nova_api)")
        getattr(report, severity)(subject, message, fix)
    _denied(report, grants, s, state)
    aliases = {audit, *s.server_aliases, *(f"{a}:3306" for a in s.server_aliases if ":" not in a)}
    seen: dict[tuple[str, str, str], list[Use]] = {}
    for use in uses:
        seen.setdefault((use.service, use.user, use.database), []).append(use)
    checks = 0
    failing = 0
    for (service, user, database), group in seen.items():
        if f"{user}@{database}" in s.ignore:
            continue
        use = group[0]
        places = "; ".join(u.where for u in group)
        login = logins.get((use.server, user, database))
        if login is not None:
            _report_login(report, use, places, login)
        same_port = use.server.rpartition(":")[2] == audit.rpartition(":")[2]
        if use.server not in aliases and not (use.loopback and _loopback_server(audit) and same_port):
            report.info(f"{user}@{database}", f"{places}: on {use.server}, not the audited server ({audit}): "
                        "not judged", "add the server's name to server_aliases if it is the same server "
                        "(a VIP, a Galera node), or run a healthd with an audit account there")
            continue
        needed = NEEDS.get(service, RUNTIME)
        clients = clients_for(use, grants, s.client_hosts)
        if not clients:
            checks += 1
            failing += 1
            report.metric("healthd_db_grants_ok", 0, service=service, user=user, database=database, host="*")
            report.metric("healthd_db_grants_status", 2, service=service, user=user, database=database,
                          host="*")
            report.critical(f"'{user}'@* on {database}",
                            f"{places}: no account '{user}' exists on the server: {service} cannot log in "
                            "(1045 Access denied)",
                            f"CREATE USER '{user}'@'%' IDENTIFIED BY '...'; "
                            f"{fix_for(use, repr_grantee(user, '%'))}")
            continue
        configured = bool(s.client_hosts) or use.loopback
        for client in clients:
            checks += 1
            level = _judge_one(report, use, service, places, needed,
                               evaluate(grants, user, database, client), configured)
            failing += 1 if level else 0
            report.metric("healthd_db_grants_ok", 0 if level else 1, service=service, user=user,
                          database=database, host=client.label)
            report.metric("healthd_db_grants_status", level, service=service, user=user,
                          database=database, host=client.label)
    report.metric("healthd_db_grants_checks", checks)
    users = len({(user, database) for _, user, database in seen})
    report.summary = (f"{users} service user/database pair(s) from {len(uses)} connection setting(s): "
                      f"{checks} account/host check(s) on {audit}, {failing} short of what the service needs")


def _report_login(report: Report, use: Use, places: str, login: Login) -> None:
    report.metric("healthd_db_grants_login_up", 1 if login.ok else 0, user=use.user, database=use.database)
    if login.ok:
        return
    # A refused login or database is the server's answer; not reaching it may be healthd's network.
    say = report.critical if login.kind in ("auth", "denied") else report.warning
    say(f"{use.user}@{use.database} login", f"{places}: logging in with the service's own credentials "
        f"from healthd's host failed: {login.error} (from the services' hosts another account row may "
        "match; the grant audit judges those)", _login_fix(login, use))


def repr_grantee(user: str, host: str) -> str:
    return f"'{user}'@'{host}'"


def _loopback_server(server: str) -> bool:
    """HOST:PORT (or a socket path) on this host."""
    host = server.rpartition(":")[0].strip("[]") if not server.startswith("/") else "localhost"
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _login_fix(login: Login, use: Use) -> str:
    if login.kind == "auth":
        return (f"set the password the server has for '{use.user}' in {use.where.split(' [')[0]} (or "
                f"ALTER USER '{use.user}'@'<host>' IDENTIFIED BY '...'), then restart the service")
    if login.kind == "denied":  # 1044 names the account the login landed on: 'user'@'host pattern'
        named = re.search(r"for user '([^']*)'@'([^']*)'", login.error)
        return fix_for(use, repr_grantee(use.user, named.group(2) if named else "%"))
    return "check that the database server is reachable from the service's host"


def _judge_one(report: Report, use: Use, service: str, places: str, needed: tuple[str, ...], v: Verdict,
               configured: bool) -> int:
    """Report one verdict; returns 0 (has what it needs), 1 (WARNING) or 2 (CRITICAL)."""
    user, database, host = use.user, use.database, v.client.label
    subject = f"'{user}'@'{host}' on {database}"
    sev = report.critical if configured else report.warning
    level = 2 if configured else 1
    if v.shadowed_by is not None:
        anon = f"''@'{v.shadowed_by.host}'"
        sev(subject, f"{places}: a client at {host} logs in as the anonymous account {anon}, which is more "
            f"specific than every '{user}' account matching it: {service}'s login from there fails with "
            f"1045 Access denied for user '{user}'@'{host}' whatever its password"
            + ("" if configured else " (if a service connects from there)"),
            f"DROP USER {anon};  -- or CREATE USER '{user}'@'{v.shadowed_by.host}' with the grants of the "
            f"service's other account")
        return level
    if v.account is None:
        sev(subject, f"{places}: no '{user}' account matches a client at {host}: {service} cannot log "
            "in from there (1045 Access denied)",
            f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '...'; {fix_for(use, repr_grantee(user, host))}")
        return level
    missing = tuple(p for p in needed if p not in v.have)
    grantee = v.grantee
    if missing:
        tables = [t for t in v.tables if set(missing) & (t.privs | t.columns)]
        names = ", ".join(sorted(t.table for t in tables)[:5]) + (", ..." if len(tables) > 5 else "")
        detail = (f"; {len(tables)} table-level grant(s) only ({names}): every other table, and the "
                  "tables the next db sync creates, are denied" if tables else "")
        narrower = (f"; the more specific mysql.db row '{v.narrower.user}'@'{v.narrower.host}' ON "
                    f"`{v.narrower.db}`.* wins over broader rows (the first match is used, rows are not "
                    "added up)" if v.narrower else "")
        have = f" (has: {', '.join(v.sources)})" if v.sources else ""
        message = (f"{places}: {grantee} lacks {', '.join(missing)} on `{database}` for a client at {host}"
                   f"{have}{narrower}{detail}: {service} fails with \"Access denied for user "
                   f"'{user}'@'{host}' to database '{database}'\" (1044) or \"command denied\" (1142)")
        fix = fix_for(use, grantee)
        if tables and len(tables) and not [p for p in missing if not any(p in t.privs for t in tables)]:
            report.warning(subject, message, fix)  # table grants may cover what it uses today
            return 1
        if v.client.own or configured:  # the service's own account, or a host it connects from
            report.critical(subject, message, fix)
            return 2
        report.warning(subject, message + " (if a service connects from there)", fix)
        return 1
    sync = tuple(p for p in SYNC if p not in v.have)
    if sync:
        report.info(subject, f"{places}: {grantee} has what {service} needs at run time but lacks "
                    f"{', '.join(sync)} on `{database}`: its db sync (schema upgrade) fails with this user",
                    f"{fix_for(use, grantee)}  -- or run db sync with an account that has them")
    return 0


def _denied(report: Report, grants: Grants, s: DbGrantsProbe.Settings, state: dict[str, Any]) -> None:
    if grants.denied is None:
        return
    report.metric("healthd_db_grants_access_denied_errors", grants.denied)
    before = state.get(STATE_DENIED)
    state[STATE_DENIED] = grants.denied
    rise = grants.denied - before if before is not None and grants.denied >= before else 0
    report.metric("healthd_db_grants_access_denied_increase", rise)
    if s.denied_increase_warning and rise >= s.denied_increase_warning:
        report.warning("database server", f"Access_denied_errors rose by {rise} since the previous run "
                       f"(now {grants.denied}): logins or statements were refused. The counter has every "
                       "user's denials (a wrong password typed by a person, a monitoring user's missing "
                       "grant, a client scanning), not only the services'",
                       "look for \"Access denied\" in the database server's error log (log_warnings >= 2 "
                       "logs failed logins) and in the services' logs; with userstat=1, "
                       "information_schema.USER_STATISTICS.ACCESS_DENIED names the user")
