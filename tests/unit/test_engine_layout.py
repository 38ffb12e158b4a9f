"""The engine's shape, held by tests: no OpenStack inside the core, no import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

HEALTHD = Path(__file__).resolve().parents[2] / "healthd"
OPENSTACK_SPECIFIC = ("openstack", "keystoneauth1", "checks", "healthd.openstack")


def test_core_modules_load_nothing_openstack_specific() -> None:
    code = (
        "import sys, healthd.probe, healthd.scheduler, healthd.exporter, healthd.store, healthd.http\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {OPENSTACK_SPECIFIC[:3]!r} "
        "or m.startswith('healthd.openstack'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def module_name(path: Path) -> str:
    rel = path.relative_to(HEALTHD.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def top_level_imports(path: Path) -> set[str]:
    """healthd.* modules imported when the module loads (not inside functions or TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if not isinstance(node, ast.FunctionDef | ast.ClassDef) else ():
            if isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                if sub.module == "healthd":
                    found |= {f"healthd.{alias.name}" for alias in sub.names}
                elif sub.module.startswith("healthd."):
                    found.add(sub.module)
            elif isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names if a.name.startswith("healthd.")}
    return found


def test_no_import_cycle_in_healthd() -> None:
    modules = {module_name(p): p for p in HEALTHD.rglob("*.py")}
    graph = {name: {m for m in top_level_imports(path) if m in modules and m != name}
             for name, path in modules.items()}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        assert name not in visiting, f"import cycle: {' -> '.join([*visiting[visiting.index(name):], name])}"
        visiting.append(name)
        for dep in sorted(graph[name]):
            visit(dep)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_engine_never_imports_the_openstack_package_or_the_probes() -> None:
    """healthd/openstack and checks/ build on the engine, never the other way round."""
    for path in HEALTHD.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                assert not name.startswith(("healthd.openstack", "checks")), f"{path.name} imports {name}"
