"""Resident memory of the daemon with every built-in probe loaded and running.

    .venv/bin/python bench/rss.py [--config .lab/healthd.yaml] [--seconds 60]

Starts `healthd run` on the given config (the lab's by default, so every probe
really talks to Keystone, Nova, MariaDB, memcached and RabbitMQ), lets every
check run repeatedly (intervals forced to 5 s), and prints the RSS over time
and its peak, read from /proc/<pid>/status.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=".lab/healthd.yaml")
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config.setdefault("server", {}).update({"listen_address": "127.0.0.1", "port": port})
    from healthd.registry import discover

    checks = config.setdefault("checks", {})
    for name in discover():
        if not name.startswith("t_"):
            checks.setdefault(name, {}).update({"interval": 5})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(config, f)
    proc = subprocess.Popen([sys.executable, "-m", "healthd.cli", "--config", f.name, "run"],
                            stderr=subprocess.DEVNULL)
    peak, t0 = 0.0, time.monotonic()
    try:
        while time.monotonic() - t0 < args.seconds:
            time.sleep(5)
            peak = max(peak, rss_mb(proc.pid))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/checks", timeout=5) as resp:
                    doc = json.load(resp)
                states = " ".join(f"{c['check']}={c['status']}" for c in doc["checks"])
            except OSError as exc:
                states = f"(no /checks: {exc})"
            print(f"t={time.monotonic() - t0:5.0f}s rss={rss_mb(proc.pid):6.1f} MB  {states}", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"peak RSS {peak:.1f} MB over {args.seconds:g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
