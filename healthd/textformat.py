"""The Prometheus text exposition format (version 0.0.4), the one renderer healthd has.

A sample's line is formatted once, when a probe reports it (healthd.model.Report);
a family's header once per probe and spec. The exporter only joins bytes. The
output is what prometheus_client's generate_latest writes for the same families
(a test holds the two side by side): labels sorted by name, floats as Go prints
them, counters and info metrics named in full.
"""

from __future__ import annotations

from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape_label_value(value: str) -> str:
    if "\\" not in value and "\n" not in value and '"' not in value:
        return value  # the common case, a host name: no copies
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def go_float(value: float) -> str:
    """floatToGoString, with a fast path: a repr of at most 8 chars never needs Go's exponent form."""
    text = repr(float(value))
    if len(text) > 8 or text in ("inf", "-inf", "nan"):
        return floatToGoString(value)
    return text


def series(name: str, labels: dict[str, str] | tuple[tuple[str, str], ...]) -> str:
    """``name{a="x",b="y"}`` with labels sorted by name."""
    if not labels:
        return name
    pairs = sorted(labels.items() if isinstance(labels, dict) else labels)
    inner = ",".join(f'{key}="{escape_label_value(value)}"' for key, value in pairs)
    return f"{name}{{{inner}}}"


def line(series_text: str, value: float) -> str:
    return f"{series_text} {go_float(value)}\n"


def header(name: str, help_text: str, kind: str) -> str:
    """``# HELP`` and ``# TYPE`` lines; kind is gauge or counter (info metrics are gauges)."""
    return f"# HELP {name} {escape_help(help_text)}\n# TYPE {name} {kind}\n"
