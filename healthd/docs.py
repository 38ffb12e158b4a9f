"""The metrics reference, derived from what the exporter really exports.

`healthd metrics` prints it as a Markdown table for the README; a test checks
the README against a fresh rendering, so the documentation cannot drift.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

from healthd.exporter import Exposition
from healthd.model import Report
from healthd.probe import Probe
from healthd.store import ResultStore


def exported_metrics(available: Mapping[str, type[Probe]]) -> dict[str, tuple[str, tuple[str, ...], str]]:
    """name -> (type, label names, help) as the exposition shows them, one sample per metric."""
    store = ResultStore()
    store.reset(
        ((name, cls.metrics) for name, cls in available.items()),
        {name: cls.default_interval for name, cls in available.items()},
    )
    for name, cls in available.items():
        report = Report(name, cls.metrics)
        for spec in cls.metrics:
            report.metric(spec.name, 1.0, **dict.fromkeys(spec.labels, "x"))
        store.publish(report.result(started_at=1.0, duration=0.0))
    exposition = Exposition(store)
    exposition.start()
    try:
        text = exposition.current().body.decode()
    finally:
        exposition.stop()
    found: dict[str, tuple[str, tuple[str, ...], str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = tuple(sorted(sample.labels))
            found.setdefault(sample.name, (family.type, labels, family.documentation))
    return dict(sorted(found.items()))


def metrics_table(available: Mapping[str, type[Probe]]) -> str:
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for name, (kind, labels, help_text) in exported_metrics(available).items():
        label_text = ", ".join(f"`{label}`" for label in labels) or "-"
        lines.append(f"| `{name}` | {kind} | {label_text} | {help_text.replace('|', '/')} |")
    return "\n".join(lines)


BEGIN, END = "<!-- metrics:begin -->", "<!-- metrics:end -->"


def readme_table(readme: str) -> str:
    """The table between the README's metrics markers."""
    return readme.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def update_readme(path: str, available: Mapping[str, type[Probe]]) -> None:
    """Rewrite the README's metrics table: `python -m healthd.docs README.md`."""
    with open(path) as f:
        text = f.read()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    with open(path, "w") as f:
        f.write(f"{head}{BEGIN}\n{metrics_table(available)}\n{END}{tail}")


if __name__ == "__main__":
    import sys

    from healthd.registry import discover

    update_readme(sys.argv[1] if len(sys.argv) > 1 else "README.md", discover())
