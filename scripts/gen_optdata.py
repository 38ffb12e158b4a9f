#!/usr/bin/env python3
"""Regenerate healthd/openstack/optdata/: the option data the config_values probe checks files with.

Never written by hand. For each pinned project this script

1. makes a throw-away venv under /tmp (``--venv``, default /tmp/hd-optdata-venv) and installs the
   pinned releases below with pip (the projects' own dependencies bring the oslo libraries,
   keystonemiddleware, os-brick, glance_store, ...; oslo.config is pinned to the lab's 10.7.0);
2. downloads each project's sdist (``pip download --no-binary :all: --no-deps``) and reads the
   namespace list from the project's own generator config (``etc/nova/nova-config-generator.conf``,
   ``config-generator/keystone.conf``, ``etc/placement/config-generator.conf``,
   ``etc/oslo-config-generator/glance-*.conf``, ``etc/oslo-config-generator/neutron.conf``);
3. runs ``oslo-config-generator --format yaml`` with those namespaces (the upstream artifact the
   oslo docs describe for ``oslo-config-validator --opt-data``);
4. walks the same options in the venv with oslo.config's own generator code
   (``generator._list_opts`` + ``_get_groups``, what the CLI runs) to record what the YAML drops:
   the parameters of each type object (list item types, dict value types, regexes, URI schemes,
   IP versions, ranges), which ``_format_type_name`` flattens to "list value" etc.; then checks
   that both views hold exactly the same (group, option) pairs;
5. writes one gzip'ed JSON per project (only what value checking needs) and a VERSIONS file.

Usage: scripts/gen_optdata.py [--venv DIR] [--out DIR] [--keep]
Takes ~5-10 minutes (mostly pip). Not run by the test suite; tests/unit/test_config_values.py
checks that VERSIONS matches lab/requirements.txt.

Neutron is not run by the lab; its release of the same series is 29.0.0: its sdist was built by
the release job on 2026-09-30 like nova 34.0.0, keystone 30.0.0, placement 16.0.0 and glance
33.0.0 (the tarballs' member dates), i.e. the same coordinated series release.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "healthd" / "openstack" / "optdata"

# project -> (pip requirement, sdist name prefix, generator config files in the sdist)
PROJECTS = {
    "nova": ("nova==34.0.0", "nova-34.0.0", ["etc/nova/nova-config-generator.conf"]),
    "keystone": ("keystone==30.0.0", "keystone-30.0.0", ["config-generator/keystone.conf"]),
    "placement": ("openstack-placement==16.0.0", "openstack_placement-16.0.0",
                  ["etc/placement/config-generator.conf"]),
    # glance-api reads glance-api.conf; glance-cache.conf, glance-scrubber.conf,
    # glance-image-import.conf and glance-manage.conf are glance's other files: one profile
    # for all, the union of their namespaces.
    "glance": ("glance==33.0.0", "glance-33.0.0",
               [f"etc/oslo-config-generator/glance-{n}.conf"
                for n in ("api", "cache", "scrubber", "image-import", "manage")]),
    "neutron": ("neutron==29.0.0", "neutron-29.0.0", ["etc/oslo-config-generator/neutron.conf"]),
}
OSLO_CONFIG = "oslo.config==10.7.0"

# Runs inside the throw-away venv: the generator's own walk over the options, with the type
# objects' parameters. Prints JSON {group: {...}} on stdout.
WALKER = r'''
import json, sys, re
from oslo_config import cfg, generator, types

def ipver(t):
    f = getattr(t.version_checker, "__func__", None)
    return 4 if f is types.IPAddress._check_ipv4 else 6 if f is types.IPAddress._check_ipv6 else None

def tspec(t):
    """The parameters of an oslo_config.types object, enough to rebuild it."""
    if t is None or t is str:
        return {"k": "str"}
    if t in (int, float, bool):  # keystoneauth's plugin options: cfg.Opt(type=int) converts with int()
        return {"k": "py", "f": t.__name__}
    if isinstance(t, types.Boolean):
        return {"k": "bool"}
    if isinstance(t, types.Port):
        s = {"k": "port", "min": t.min, "max": t.max}
        if t.choices: s["c"] = list(t.choices)
        return s
    if isinstance(t, types.Integer):
        s = {"k": "int", "min": t.min, "max": t.max}
        if t.choices: s["c"] = list(t.choices)
        return s
    if isinstance(t, types.Float):
        return {"k": "float", "min": t.min, "max": t.max}
    if isinstance(t, types.URI):
        return {"k": "uri", "max_length": t.max_length, "schemes": list(t.schemes or [])}
    if isinstance(t, types.HostDomain):
        return {"k": "hostdomain"}
    if isinstance(t, types.HostAddress):
        return {"k": "hostaddr", "version": ipver(t.ip_address)}
    if isinstance(t, types.Hostname):
        return {"k": "hostname"}
    if isinstance(t, types.IPAddress):
        return {"k": "ip", "version": ipver(t)}
    if isinstance(t, types.Range):
        return {"k": "range", "min": t.min, "max": t.max, "inclusive": t.inclusive}
    if isinstance(t, types.List):
        return {"k": "list", "item": tspec(t.item_type), "bounds": t.bounds}
    if isinstance(t, types.Dict):
        return {"k": "dict", "value": tspec(t.value_type), "bounds": t.bounds,
                "sep": t.key_value_separator}
    if isinstance(t, types.MultiString):
        return {"k": "str"}
    if isinstance(t, types.String):
        s = {"k": "str"}
        if t.choices: s["c"] = list(t.choices)
        if t.regex is not None: s["re"] = t.regex.pattern; s["re_i"] = bool(t.regex.flags & re.I)
        if t.ignore_case: s["ic"] = True
        if t.max_length: s["max_length"] = t.max_length
        if t.quotes: s["q"] = True
        return s
    return {"k": "unknown", "cls": type(t).__name__}

def ospec(opt, group):
    s = {"t": tspec(opt.type)}
    if opt.dest != opt.name: s["dest"] = opt.dest
    if opt.secret: s["s"] = 1
    if opt.multi: s["m"] = 1
    if opt.deprecated_for_removal:
        s["r"] = 1
        if opt.deprecated_since: s["since"] = str(opt.deprecated_since)
        if opt.deprecated_reason: s["why"] = " ".join(str(opt.deprecated_reason).split())[:300]
    dep = [[d.group or group, d.name or opt.name] for d in opt.deprecated_opts
           if not d.name or "-" not in d.name]
    if dep: s["d"] = dep
    return s

namespaces = sys.argv[1:]
groups = generator._get_groups(generator._list_opts(namespaces))
out = {}
for gname, gdata in groups.items():
    g = {"opts": {}}
    obj = gdata["object"]
    if obj is not None:
        data = obj._get_generator_data()
        if data["dynamic_group_owner"]: g["dynamic_owner"] = data["dynamic_group_owner"]
        if data["driver_option"]: g["driver_option"] = data["driver_option"]
        if data["driver_opts"]:
            g["driver_opts"] = {d: [o.name for o in opts] for d, opts in data["driver_opts"].items()}
    for ns, opts in gdata["namespaces"]:
        for opt in opts:
            g["opts"][opt.name] = ospec(opt, gname)
    out[gname] = g
json.dump(out, sys.stdout, sort_keys=True)
'''


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, **kw)


def venv(path: Path) -> Path:
    py = path / "bin" / "python"
    if not py.exists():
        run([sys.executable, "-m", "venv", str(path)])
        run([str(py), "-m", "pip", "install", "-q", "-U", "pip"])
    wanted = [req for req, _, _ in PROJECTS.values()] + [OSLO_CONFIG]
    run([str(py), "-m", "pip", "install", "-q", *wanted])
    return py


def pip_version(py: Path, dist: str) -> str:
    out = subprocess.run([str(py), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def namespaces(sdist_dir: Path, prefix: str, conf_paths: list[str]) -> list[str]:
    tarball = next(sdist_dir.glob(f"{prefix}.tar.gz"))
    found: list[str] = []
    with tarfile.open(tarball) as tar:
        for rel in conf_paths:
            member = tar.extractfile(f"{prefix}/{rel}")
            if member is None:
                raise SystemExit(f"{rel} not in {tarball.name}")
            # the generator confs repeat "namespace =" (a MultiStrOpt): read the lines directly
            for line in member.read().decode().splitlines():
                line = line.strip()
                if line.startswith("namespace") and "=" in line:
                    ns = line.split("=", 1)[1].strip()
                    if ns and ns not in found:
                        found.append(ns)
    return found


def yaml_pairs(py: Path, ns: list[str], work: Path, project: str) -> set[tuple[str, str]]:
    """(group, option) pairs of `oslo-config-generator --format yaml` for these namespaces."""
    target = work / f"{project}.yaml"
    cmd = [str(py.parent / "oslo-config-generator"), "--format", "yaml", "--output-file", str(target)]
    for n in ns:
        cmd += ["--namespace", n]
    run(cmd, stdout=subprocess.DEVNULL)
    code = ("import sys, yaml, json; d = yaml.load(open(sys.argv[1]), Loader=getattr(yaml, 'CSafeLoader', "
            "yaml.SafeLoader)); print(json.dumps([[g, o['name']] for g, v in d['options'].items() "
            "for o in v['opts']]))")
    out = subprocess.run([str(py), "-c", code, str(target)], check=True, capture_output=True, text=True)
    return {tuple(p) for p in json.loads(out.stdout)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--venv", default="/tmp/hd-optdata-venv", help="throw-away venv (created if missing)")
    ap.add_argument("--out", default=str(OUT), help="output directory (default: %(default)s)")
    ap.add_argument("--keep", action="store_true", help="keep the venv afterwards")
    args = ap.parse_args()
    started = time.time()
    vpath = Path(args.venv)
    py = venv(vpath)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    versions = {"oslo.config": pip_version(py, "oslo.config"),
                "keystoneauth1": pip_version(py, "keystoneauth1"),
                "keystonemiddleware": pip_version(py, "keystonemiddleware")}
    with tempfile.TemporaryDirectory(prefix="hd-optdata-") as tmp:
        work = Path(tmp)
        run([str(py), "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", str(work),
             *[req for req, _, _ in PROJECTS.values()]])
        walker = work / "walk.py"
        walker.write_text(WALKER)
        for project, (req, prefix, confs) in PROJECTS.items():
            dist, _, version = req.partition("==")
            installed = pip_version(py, dist)
            if installed != version:
                raise SystemExit(f"{dist} {installed} installed, {version} wanted")
            ns = namespaces(work, prefix, confs)
            walked = subprocess.run([str(py), str(walker), *ns], check=True, capture_output=True, text=True)
            groups = json.loads(walked.stdout)
            pairs = {(g, o) for g, v in groups.items() for o in v["opts"]}
            from_yaml = yaml_pairs(py, ns, work, project)
            if pairs != from_yaml:
                raise SystemExit(f"{project}: walk and oslo-config-generator --format yaml differ: "
                                 f"{sorted(pairs ^ from_yaml)[:10]}")
            data = {"project": project, "version": version, "dist": dist, "namespaces": ns,
                    "oslo.config": versions["oslo.config"], "groups": groups}
            blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
            with gzip.GzipFile(out / f"{project}.json.gz", "wb", mtime=0) as fh:
                fh.write(blob)
            print(f"{project} {version}: {len(groups)} groups, {len(pairs)} options, "
                  f"{len(ns)} namespaces", file=sys.stderr)
            versions[dist] = version
    lines = ["# Generated by scripts/gen_optdata.py; do not edit."]
    lines += [f"{req}" for req, _, _ in PROJECTS.values()]
    lines += [f"oslo.config=={versions['oslo.config']}", f"keystoneauth1=={versions['keystoneauth1']}",
              f"keystonemiddleware=={versions['keystonemiddleware']}",
              f"generated={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"]
    (out / "VERSIONS").write_text("\n".join(lines) + "\n")
    if not args.keep:
        shutil.rmtree(vpath, ignore_errors=True)
    print(f"done in {time.time() - started:.0f} s -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
