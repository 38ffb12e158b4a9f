"""Command line: run, check, list, validate-config.

`healthd check` behaves like a Nagios plugin: it prints what it found and
exits 0 (OK), 1 (WARNING), 2 (CRITICAL) or 3 (UNKNOWN) by the worst status.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence

from healthd import __version__, logs, registry
from healthd.config import Config, ConfigError, default_path, load
from healthd.model import Result, Status
from healthd.probe import Probe

EXIT_CONFIG = 2


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 127.0.0.1:9730")
    return host.strip("[]") or "0.0.0.0", int(port)


def _global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every verb takes, before or after it (`healthd --config X check` and
    `healthd check --config X`). After the verb they default to SUPPRESS, so an option given
    before the verb is not overwritten by the subcommand's default."""
    default = None if defaults else argparse.SUPPRESS
    parser.add_argument("--config", default=default,
                        help=f"YAML config (default: $HEALTHD_CONFIG or {default_path()})")
    parser.add_argument("--log-format", choices=["plain", "json"], default=default)
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="healthd", description="Health-checker daemon for OpenStack clouds."
    )
    parser.add_argument("--version", action="version", version=f"healthd {__version__}")
    _global_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True)
    verbs = {
        "run": "run the daemon (scheduler + /metrics)",
        "check": "run checks once, print findings, exit 0/1/2/3",
        "list": "list the checks found (entry-point group healthd.checks)",
        "metrics": "print the metrics reference (Markdown table) of the checks found",
        "validate-config": "validate the config; exit 0 or 2 with the key at fault",
    }
    parsers = {}
    for verb, text in verbs.items():
        parsers[verb] = sub.add_parser(verb, help=text, description=text)
        _global_options(parsers[verb], defaults=False)
    parsers["run"].add_argument("--listen", type=_listen, metavar="HOST:PORT",
                                help="override server.listen_*")
    parsers["check"].add_argument("names", nargs="*", metavar="NAME",
                                  help="checks to run (default: all enabled)")
    parsers["check"].add_argument("--format", choices=["table", "json"], default="table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = args.config or default_path()
    available = registry.discover()
    if args.command == "list":
        return _list(available)
    if args.command == "metrics":
        from healthd.docs import metrics_table

        print(metrics_table(available))
        return 0
    try:
        config = load(path, available)
    except ConfigError as exc:
        print(f"healthd: invalid config:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.setup(args.log_format or config.logging.format, args.log_level or config.logging.level)
    if args.command == "validate-config":
        enabled = ", ".join(registry.enabled(config, available)) or "none"
        print(f"{path}: OK (checks enabled: {enabled})")
        return 0
    if args.command == "check":
        return _check(config, available, args.names, args.format)
    from healthd.daemon import Daemon  # imports the HTTP server only for `run`

    return Daemon(path, available, config, args.listen).run()


def _list(available: Mapping[str, type[Probe]]) -> int:
    for name, cls in available.items():
        needs = ", ".join(cls.requires) or "nothing"
        print(f"{name:<16} {cls.description}")
        print(f"{'':<16} every {cls.default_interval:g} s, timeout {cls.default_timeout:g} s, needs {needs}")
    return 0


def _check(config: Config, available: Mapping[str, type[Probe]], names: list[str], fmt: str) -> int:
    from healthd.connections import Backends
    from healthd.scheduler import run_once

    unknown_names = [n for n in names if n not in available]
    if unknown_names:
        print(f"healthd: unknown check(s): {', '.join(unknown_names)} "
              f"(known: {', '.join(available)})", file=sys.stderr)
        return Status.UNKNOWN.value
    probes = registry.enabled(config, available)
    if names:  # named checks run even if disabled in the config
        probes = {n: available[n](config.probe_settings[n]) for n in names}
    backends = Backends(config.backends)
    results = run_once(probes, backends)  # every check at once: bounded by the largest timeout
    worst = Status.worst(r.status for r in results.values())
    if fmt == "json":
        print(json.dumps({"status": worst.name, "checks": [r.as_dict() for r in results.values()]}, indent=2))
    else:
        print(render_table(results))
        print(f"\nOverall: {worst.name}")
    return worst.value


def render_table(results: Mapping[str, Result]) -> str:
    width = max((len(n) for n in results), default=5) + 2
    lines = [f"{'CHECK':<{width}}{'STATUS':<10}{'TIME':>8}  SUMMARY"]
    for name, r in results.items():
        lines.append(f"{name:<{width}}{r.status.name:<10}{r.duration:>7.2f}s  {r.summary}")
    for name, r in results.items():
        for f in r.findings:
            lines.append("")
            since = f" (since {_utc(f.since)})" if f.since else ""
            lines.append(f"[{f.severity.name}] {name}: {f.subject}{since}")
            lines.extend(textwrap.wrap(f.message, 100, initial_indent="  ", subsequent_indent="  "))
            if f.remediation:
                lines.extend(textwrap.wrap(f"Fix: {f.remediation}", 100, initial_indent="  ",
                                           subsequent_indent="       "))
    return "\n".join(lines)


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
