"""Option data of the OpenStack projects as their code declares it, and oslo.config Opts rebuilt from it.

``<project>.json.gz`` is written by ``scripts/gen_optdata.py`` (never by hand) from the
pinned releases named in ``VERSIONS``: the options ``oslo-config-generator --format yaml``
lists for the project's own namespace list, with the parameters of each option's
``oslo_config.types`` object (the YAML keeps only "list value", "integer value", ...;
the data keeps the list's item type, the regex, the URI schemes, the IP version, ...).
Nothing of nova, keystone, ... is imported at run time.

Per option: ``t`` type spec, ``s`` secret, ``m`` multi, ``r`` deprecated_for_removal (with
``since`` and ``why``), ``d`` deprecated [group, name] aliases, ``dest`` when it differs
from the name (keystoneauth's dashed names: the file key is the dest).
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oslo_config import cfg, types

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class OptInfo:
    group: str
    name: str  # the key a file writes (the option's dest)
    spec: dict[str, Any] = field(repr=False, hash=False, compare=False)

    @property
    def secret(self) -> bool:
        return bool(self.spec.get("s"))

    @property
    def multi(self) -> bool:
        return bool(self.spec.get("m"))

    @property
    def removal(self) -> bool:
        return bool(self.spec.get("r"))

    @property
    def type_name(self) -> str:
        return describe(self.spec["t"])

    def opt(self, name: str | None = None) -> cfg.Opt:
        """An oslo.config Opt of this option's type, registered under ``name`` (the key as written)."""
        return make_opt(name or self.name, build_type(self.spec["t"]), self.multi, self.secret)


@dataclass
class Project:
    project: str
    version: str
    oslo_config: str
    # group -> key (dest) -> OptInfo
    groups: dict[str, dict[str, OptInfo]]
    # (group, key) of a deprecated alias -> the current option
    aliases: dict[tuple[str, str], OptInfo]
    # group -> driver option name -> {driver: [keys]} (dynamic groups, glance stores)
    drivers: dict[str, tuple[str, dict[str, list[str]]]]

    @property
    def release(self) -> str:
        return f"{self.project} {self.version}"

    def find(self, group: str, key: str) -> OptInfo | None:
        return self.groups.get(group, {}).get(key)


def _key(name: str, spec: dict[str, Any]) -> str:
    return spec.get("dest") or name.replace("-", "_")


@functools.cache
def load(project: str) -> Project:
    """The shipped data of one project (cached for the process). Raises FileNotFoundError."""
    path = HERE / f"{project}.json.gz"
    with gzip.open(path, "rb") as fh:
        data = json.loads(fh.read())
    groups: dict[str, dict[str, OptInfo]] = {}
    aliases: dict[tuple[str, str], OptInfo] = {}
    drivers: dict[str, tuple[str, dict[str, list[str]]]] = {}
    for gname, g in data["groups"].items():
        opts = groups.setdefault(gname, {})
        for name, spec in g["opts"].items():
            info = OptInfo(gname, _key(name, spec), spec)
            opts[info.name] = info
        if g.get("driver_option") and g.get("driver_opts"):
            drivers[gname] = (g["driver_option"], g["driver_opts"])
    for gname, opts in groups.items():
        for info in opts.values():
            for dgroup, dname in info.spec.get("d", ()):
                key = (dgroup or gname, dname.replace("-", "_"))
                if key not in groups.get(key[0], {}):  # a current option wins over an alias
                    aliases.setdefault(key, info)
    return Project(data["project"], data["version"], data.get("oslo.config", ""), groups, aliases, drivers)


def projects() -> list[str]:
    return sorted(p.name.removesuffix(".json.gz") for p in HERE.glob("*.json.gz"))


def versions() -> dict[str, str]:
    """VERSIONS as {distribution: version} (plus 'generated')."""
    found: dict[str, str] = {}
    for line in (HERE / "VERSIONS").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "==" in line:
            dist, _, version = line.partition("==")
        else:
            dist, _, version = line.partition("=")
        found[dist.strip()] = version.strip()
    return found


def make_opt(name: str, type_: Any, multi: bool = False, secret: bool = False) -> cfg.Opt:
    """cfg.Opt / cfg.MultiOpt as the project declares it (MultiStrOpt is MultiOpt with String items)."""
    if multi:
        return cfg.MultiOpt(name, item_type=type_, secret=secret)
    return cfg.Opt(name, type=type_, secret=secret)


# == type specs -> oslo_config.types ================================================


def build_type(t: dict[str, Any]) -> types.ConfigType:
    """The oslo_config.types object the spec describes (gen_optdata.py WALKER tspec)."""
    kind = t.get("k")
    if kind == "bool":
        return types.Boolean()
    if kind == "int":
        return types.Integer(min=t.get("min"), max=t.get("max"), choices=t.get("c"))
    if kind == "port":
        return types.Port(min=t.get("min"), max=t.get("max"), choices=t.get("c"))
    if kind == "float":
        return types.Float(min=t.get("min"), max=t.get("max"))
    if kind == "uri":
        return types.URI(max_length=t.get("max_length"), schemes=t.get("schemes") or None)
    if kind == "hostdomain":
        return types.HostDomain()
    if kind == "hostaddr":
        return types.HostAddress(version=t.get("version"))
    if kind == "hostname":
        return types.Hostname()
    if kind == "ip":
        return types.IPAddress(version=t.get("version"))
    if kind == "range":
        return types.Range(min=t.get("min"), max=t.get("max"), inclusive=t.get("inclusive", True))
    if kind == "list":
        return types.List(item_type=build_type(t.get("item") or {"k": "str"}), bounds=bool(t.get("bounds")))
    if kind == "dict":
        return types.Dict(value_type=build_type(t.get("value") or {"k": "str"}), bounds=bool(t.get("bounds")),
                          key_value_separator=t.get("sep") or ":")
    if kind == "py":  # a Python builtin as the type (keystoneauth plugin options): int('x') raises too
        return {"int": int, "float": float, "bool": bool}.get(t.get("f", ""), str)  # type: ignore[return-value]
    if kind == "str":
        regex = t.get("re")
        if regex is not None:
            regex = re.compile(regex, re.IGNORECASE if t.get("re_i") else 0)
        return types.String(choices=t.get("c"), quotes=bool(t.get("q")), regex=regex,
                            ignore_case=bool(t.get("ic")), max_length=t.get("max_length"))
    return types.String()  # "unknown": a project's own type class, checked as a string


def describe(t: dict[str, Any]) -> str:
    kind = t.get("k")
    if kind == "list":
        return f"list of {describe(t.get('item') or {'k': 'str'})}"
    if kind == "dict":
        return f"dict of KEY:{describe(t.get('value') or {'k': 'str'})}"
    if kind == "py":
        kind = {"int": "int", "float": "float"}.get(t.get("f", ""), "str")
    names = {"bool": "boolean", "int": "integer", "port": "port number", "float": "floating point number",
             "uri": "URI", "hostdomain": "host domain", "hostaddr": "host address (IP or host name)",
             "hostname": "host name", "ip": "IP address", "range": "range N-M", "str": "string"}
    text = names.get(kind or "", "string")
    if kind == "ip" and t.get("version"):
        text = f"IPv{t['version']} address"
    bounds = []
    if t.get("min") is not None:
        bounds.append(f">= {t['min']}")
    if t.get("max") is not None:
        bounds.append(f"<= {t['max']}")
    if bounds:
        text += f" ({', '.join(bounds)})"
    if t.get("c"):
        text += f", one of {', '.join(str(c) for c in t['c'])}"
    return text
