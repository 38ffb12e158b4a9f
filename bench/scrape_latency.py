#!/usr/bin/env python3
"""Scrape latency of healthd's /metrics while results keep changing.

Starts the exporter and HTTP server in this process with a synthetic probe
result (hosts x metrics series), republishes results in the background (as
probes finishing would, so renders happen during scrapes) and drives N
concurrent scrapers from separate client processes (Python threads with
keep-alive connections, or wrk if installed and --client wrk is given).

Examples:
    .venv/bin/python bench/scrape_latency.py --hosts 100 --duration 30           # ~1k series
    .venv/bin/python bench/scrape_latency.py --hosts 10000 --duration 30         # ~100k series
    .venv/bin/python bench/scrape_latency.py --hosts 10000 --gzip --interval 1   # Prometheus-like
    .venv/bin/python bench/scrape_latency.py --hosts 10000 --soak 600

Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

# Nothing below may import healthd in a client worker: keep workers light.


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


# ----------------------------------------------------------------------------- client worker


def worker(url_host: str, port: int, threads: int, duration: float, use_gzip: bool, interval: float) -> None:
    """One client process: `threads` scrapers, each on its own keep-alive connection."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + duration
    headers = {"Accept-Encoding": "gzip"} if use_gzip else {}

    def scraper() -> None:
        conn = http.client.HTTPConnection(url_host, port, timeout=30)
        mine: list[float] = []
        if interval:
            time.sleep(random.uniform(0, interval))  # spread like independent Prometheus servers
        next_at = time.monotonic()
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                conn.request("GET", "/metrics", headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200 or not body:
                    raise RuntimeError(f"HTTP {resp.status}")
                mine.append(time.perf_counter() - started)
            except Exception as exc:
                with lock:
                    failures.append(type(exc).__name__)
                conn.close()
                conn = http.client.HTTPConnection(url_host, port, timeout=30)
            if interval:
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
        conn.close()
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=scraper) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    json.dump({"latencies": latencies, "failures": failures}, sys.stdout)


def run_python_clients(port: int, args: argparse.Namespace) -> dict[str, object]:
    procs = []
    per_proc = [args.concurrency // args.client_procs] * args.client_procs
    per_proc[0] += args.concurrency - sum(per_proc)
    for threads in per_proc:
        cmd = [
            sys.executable, __file__, "--worker", "--port", str(port), "--threads", str(threads),
            "--duration", str(args.duration), "--interval", str(args.interval),
        ]  # fmt: skip
        if args.gzip:
            cmd.append("--gzip")
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
    latencies: list[float] = []
    failures: list[str] = []
    for proc in procs:
        out, _ = proc.communicate()
        data = json.loads(out)
        latencies += data["latencies"]
        failures += data["failures"]
    latencies.sort()
    return {
        "client": f"python ({args.client_procs} processes, keep-alive)",
        "scrapes": len(latencies),
        "failures": len(failures),
        "failure_kinds": sorted(set(failures)),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p90_ms": percentile(latencies, 90) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "p999_ms": percentile(latencies, 99.9) * 1000,
        "max_ms": (latencies[-1] if latencies else float("nan")) * 1000,
        "mean_ms": (statistics.fmean(latencies) if latencies else float("nan")) * 1000,
        "over_1s": sum(1 for x in latencies if x > 1.0),
        "over_10ms": sum(1 for x in latencies if x > 0.010),
    }


def run_wrk(port: int, args: argparse.Namespace) -> dict[str, object]:
    cmd = [
        "wrk", "-t", str(min(args.concurrency, 2)), "-c", str(args.concurrency),
        "-d", f"{int(args.duration)}s", "--latency", "--timeout", "30s",
    ]  # fmt: skip
    if args.gzip:
        cmd += ["-H", "Accept-Encoding: gzip"]
    out = subprocess.run([*cmd, f"http://127.0.0.1:{port}/metrics"], capture_output=True, text=True).stdout
    result: dict[str, object] = {"client": "wrk (closed loop)", "raw": out}
    for label, key in (("50%", "p50_ms"), ("90%", "p90_ms"), ("99%", "p99_ms")):
        m = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)", out)
        if m:
            result[key] = float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]
    m = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    if m:
        result["max_ms"] = float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]
    m = re.search(r"(\d+) requests in", out)
    result["scrapes"] = int(m[1]) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    result["failures"] = m[1] if m else 0
    return result


# ----------------------------------------------------------------------------- server side


def build_rows(hosts: int, metrics: int, seed: float) -> list[tuple[str, str, float]]:
    """(metric, host, value) rows: what a probe reads from its backend before reporting."""
    rows = []
    for h in range(hosts):
        host = f"compute-{h:05d}.cell{h % 4}.example.org"
        for i in range(metrics):
            rows.append((f"healthd_synthetic_m{i}", host, (h * metrics + i) * seed))
    return rows


def report_rows(specs, rows) -> object:
    """One probe run's reporting work, as a probe does it: Report.metric per sample, then result()."""
    from healthd.model import Report

    report = Report("synthetic", specs)
    for name, host, value in rows:
        report.metric(name, value, host=host)
    return report.result(started_at=time.time(), duration=1.0)


def synthetic_specs(metrics: int):
    from healthd.model import MetricSpec

    return tuple(
        MetricSpec(f"healthd_synthetic_m{i}", f"Synthetic metric {i}.", ("host",)) for i in range(metrics)
    )


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve_and_measure(args: argparse.Namespace) -> dict[str, object]:
    from healthd.config import ServerConfig
    from healthd.exporter import Exposition, validate_specs
    from healthd.http import serve
    from healthd.model import MetricSpec, Report
    from healthd.store import ResultStore

    big_specs = synthetic_specs(args.metrics)
    small_specs = tuple(MetricSpec(f"healthd_small{i}_up", "Small probe.", ("target",)) for i in range(5))
    probes = {"synthetic": big_specs, **{f"small{i}": (small_specs[i],) for i in range(5)}}
    validate_specs(probes)
    store = ResultStore()
    store.reset(probes.items())
    variants = [build_rows(args.hosts, args.metrics, seed) for seed in (0.5, 0.25)]
    exposition = Exposition(store)
    build_times: list[float] = []

    prebuilt = [report_rows(big_specs, rows) for rows in variants]

    def publish_big(k: int) -> None:
        if not args.report_in_thread:  # as the "before" runs did: results made in advance
            store.publish(prebuilt[k % 2])
            return
        # The probe's own reporting, in this (probe-like) thread on every run, holding the GIL
        # as a real probe does: 100k Report.metric calls format their lines here.
        t = time.perf_counter()
        result = report_rows(big_specs, variants[k % 2])
        build_times.append(time.perf_counter() - t)
        store.publish(result)

    def publish_small(i: int, k: int) -> None:
        report = Report(f"small{i}", (small_specs[i],))
        report.metric(f"healthd_small{i}_up", k % 2, target=f"t{i}")
        store.publish(report.result(started_at=time.time(), duration=0.01))

    publish_big(0)
    exposition.start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = serve(ServerConfig(listen_address="127.0.0.1", port=port), exposition, lambda: True)
    body = exposition.current().body
    stop = threading.Event()
    publishes = [0]

    def republisher() -> None:
        k = 1
        next_big = time.monotonic() + args.republish
        while not stop.wait(0.2):
            publish_small(k % 5, k)
            publishes[0] += 1
            if time.monotonic() >= next_big:
                publish_big(k)
                publishes[0] += 1
                next_big += args.republish
            k += 1

    pub = threading.Thread(target=republisher, daemon=True)
    renders_before = exposition.renders
    pub.start()
    rss = [rss_mib()]
    sampler_stop = threading.Event()

    def rss_sampler() -> None:
        while not sampler_stop.wait(1.0):
            rss.append(rss_mib())

    threading.Thread(target=rss_sampler, daemon=True).start()
    try:
        client = run_wrk(port, args) if args.client == "wrk" else run_python_clients(port, args)
    finally:
        stop.set()
        sampler_stop.set()
        pub.join()
        server.shutdown()
        exposition.stop()
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return {
        "machine": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        "series": series,
        "body_bytes": len(body),
        "gzip_bytes": len(exposition.current().gzipped),
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "interval_s": args.interval or "closed loop",
        "gzip": args.gzip,
        "republish_big_every_s": args.republish,
        "snapshots_published": publishes[0],
        "renders": exposition.renders - renders_before,
        "last_render_s": round(exposition.render_seconds, 4),
        "report_s_per_big_run": round(statistics.fmean(build_times), 3) if build_times else None,
        "rss_mib_max": round(max(rss), 1),
        **client,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=100, help="synthetic hosts (series = hosts x metrics)")
    parser.add_argument("--metrics", type=int, default=10, help="metrics per host")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--soak", type=float, default=0.0, help="run this many seconds instead of --duration")
    parser.add_argument(
        "--interval", type=float, default=0.0, help="seconds between scrapes per scraper (0: closed loop)"
    )
    parser.add_argument(
        "--republish", type=float, default=2.0, help="seconds between new results of the big probe"
    )
    parser.add_argument(
        "--report-in-thread", action="store_true",
        help="build the big probe's Report (100k metric calls) in the publisher thread on every run, "
        "as a real probe does, instead of publishing results made in advance",
    )
    parser.add_argument("--gzip", action="store_true", help="send Accept-Encoding: gzip (as Prometheus does)")
    parser.add_argument("--client", choices=("python", "wrk"), default="python")
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the raw result as JSON")
    parser.add_argument("--no-gc", action="store_true", help="diagnosis: disable the cyclic GC in the server")
    parser.add_argument(
        "--switch-interval", type=float, default=0.0, help="sys.setswitchinterval for the server (0: keep)"
    )
    # worker mode (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker("127.0.0.1", args.port, args.threads, args.duration, args.gzip, args.interval)
        return
    if args.soak:
        args.duration = args.soak
    if args.client == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install -y wrk)")
    if args.no_gc:
        import gc

        gc.disable()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    result = serve_and_measure(args)
    raw = result.pop("raw", None)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for key, value in result.items():
            print(f"{key:24} {round(value, 2) if isinstance(value, float) else value}")
    if raw:
        print(raw)


if __name__ == "__main__":
    main()
