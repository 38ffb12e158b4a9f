"""Benchmark: rabbit_queues at N compute hosts on the local RabbitMQ (127.0.0.1:5672).

Builds a nova deployment (nova 34's real schemas, tests/schemas) in the shared MariaDB
under a unique prefix: nova_api, cell0, cell1 with one conductor, one scheduler and N
nova-compute rows (1 % of them down, 0.5 % disabled, 0.5 % deleted). On a vhost of its
own it declares, as the services' user, the RPC queues oslo.messaging would declare
(conductor, scheduler, compute, compute.<host> for every host but 0.2 % that are "missing")
and consumes them on one connection, except the down hosts' queues and 0.1 % of up hosts
whose consumer "died" (a message waits in each), so the judging paths (CRITICAL, INFO) run
too. healthd logs in with a user that has '^$' '^$' '^$'.

Then it runs the probe --runs times and reports the wall time (median), the SQL
statements (Backends.sql_statements) and the passive declares
(healthd_rabbit_queues_declares) per run.

Usage: .venv/bin/python bench/rabbit_queues.py [--hosts 100 10000] [--runs 5]
The vhost, users and databases are removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pika  # noqa: E402

from checks.rabbit_queues import RabbitQueuesProbe  # noqa: E402
from healthd.config import BackendsConfig  # noqa: E402
from healthd.connections import Backends  # noqa: E402
from healthd.scheduler import execute  # noqa: E402
from tests.helpers.novadb import Deployment, NovaDB, utcnow  # noqa: E402

BATCH = 5000


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


def bulk_services(novadb: NovaDB, db: str, rows: list[dict[str, Any]]) -> None:
    cols = list(rows[0])
    sql = (f"INSERT INTO `{db}`.`services` ({', '.join(f'`{c}`' for c in cols)}) "
           f"VALUES ({', '.join(['%s'] * len(cols))})")
    with novadb._root.cursor() as cur:
        for i in range(0, len(rows), BATCH):
            cur.executemany(sql, [tuple(r.values()) for r in rows[i:i + BATCH]])


def build(novadb: NovaDB, hosts: int, mq_url: str) -> tuple[Deployment, list[str]]:
    dep = Deployment(novadb, with_placement=False)
    dep.add_cell0()
    cell = dep.add_cell("cell1")
    novadb.exec(f"UPDATE `{dep.api}`.cell_mappings SET transport_url = %s WHERE id = %s", (mq_url, cell.id))
    now = utcnow()
    rows = []
    names = []
    for i in range(hosts):
        host = f"cmp{i:05d}"
        names.append(host)
        silent = timedelta(minutes=10) if i % 100 == 1 else timedelta(0)
        rows.append({"created_at": now - timedelta(days=1), "updated_at": now - silent, "host": host,
                     "binary": "nova-compute", "topic": "compute", "report_count": 10,
                     "disabled": 1 if i % 200 == 2 else 0, "deleted": i + 1 if i % 200 == 3 else 0,
                     "last_seen_up": now - silent, "forced_down": 0, "version": 74,
                     "uuid": str(uuid.uuid4())})
    bulk_services(novadb, cell.db, rows)
    dep.add_service(cell, "nova-conductor", "ctl1")
    dep.add_service(cell, "nova-scheduler", "ctl1")
    return dep, names


def declare(params: pika.ConnectionParameters, names: list[str]) -> pika.BlockingConnection:
    """Declare the queues and consume them as the running services do: one connection, one
    consumer per queue but for the hosts that are down (i % 100 == 1) and one in 1,000 up hosts
    whose consumer died (i % 1000 == 7). Returns the consumers' connection (closed by the caller)."""
    conn = pika.BlockingConnection(params)
    channel = conn.channel()
    for name in ["conductor", "scheduler", "compute"]:
        channel.queue_declare(name, durable=False, auto_delete=False)
        channel.basic_consume(name, lambda *a: None)
    for i, host in enumerate(names):
        if i % 500 == 4:
            continue  # "missing": the compute listens on another vhost
        queue = f"compute.{host}"
        channel.queue_declare(queue, durable=False, auto_delete=False)
        if i % 100 == 1 or i % 1000 == 7:
            channel.basic_publish("", queue, b"cast")
        else:
            channel.basic_consume(queue, lambda *a: None)
    return conn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, nargs="+", default=[100, 10000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for hosts in args.hosts:
        tag = f"hdbench-rq-{uuid.uuid4().hex[:8]}"
        svc_pw, mon_pw = secrets.token_hex(16), secrets.token_hex(16)
        novadb = NovaDB()
        rabbitmqctl("add_vhost", tag)
        try:
            rabbitmqctl("add_user", f"{tag}-svc", svc_pw)
            rabbitmqctl("set_permissions", "-p", tag, f"{tag}-svc", ".*", ".*", ".*")
            rabbitmqctl("add_user", f"{tag}-mon", mon_pw)
            rabbitmqctl("set_permissions", "-p", tag, f"{tag}-mon", "^$", "^$", "^$")
            mq_url = f"rabbit://{tag}-svc:{svc_pw}@127.0.0.1:5672/{tag}"
            t0 = time.monotonic()
            dep, names = build(novadb, hosts, mq_url)
            credentials = pika.PlainCredentials(f"{tag}-svc", svc_pw)
            consumers = declare(pika.ConnectionParameters("127.0.0.1", 5672, tag, credentials, heartbeat=0),
                                names)
            setup = time.monotonic() - t0
            with tempfile.TemporaryDirectory() as tmp:
                conf = Path(tmp) / "nova.conf"
                conf.write_text(f"[DEFAULT]\ntransport_url = {mq_url}\n[api_database]\nconnection = x\n")
                pwfile = Path(tmp) / "pw"
                pwfile.write_text(mon_pw)
                probe = RabbitQueuesProbe(RabbitQueuesProbe.Settings(
                    files=[str(conf)], user=f"{tag}-mon", password_file=str(pwfile), timeout=60))
                times, statements, declares = [], [], []
                result = None
                for _ in range(args.runs):
                    # the report loop: every host but the silent ones heartbeats
                    cell_db = dep.cells["cell1"].db
                    novadb.exec(f"UPDATE `{cell_db}`.services SET last_seen_up = UTC_TIMESTAMP() "
                                "WHERE last_seen_up > UTC_TIMESTAMP() - INTERVAL 5 MINUTE OR `binary` <> "
                                "'nova-compute' OR deleted <> 0")
                    backends = Backends(BackendsConfig.model_validate(
                        {"databases": {"nova_api": {"url": NovaDB.url(dep.api)}}}))
                    started = time.monotonic()
                    result = execute(probe, backends, {})
                    times.append(time.monotonic() - started)
                    statements.append(sum(backends.sql_statements.values()))
                    declares.append(next(s.value for s in result.samples
                                         if s.name == "healthd_rabbit_queues_declares"))
            assert result is not None
            counts: dict[str, int] = {}
            for f in result.findings:
                counts[f.severity.name] = counts.get(f.severity.name, 0) + 1
            print(f"hosts={hosts} setup={setup:.1f}s status={result.status.name} "
                  f"median={statistics.median(times):.3f}s min={min(times):.3f}s max={max(times):.3f}s "
                  f"statements={statements[-1]} declares={int(declares[-1])} findings={counts}")
            consumers.close()
        finally:
            novadb.close()
            for user in (f"{tag}-svc", f"{tag}-mon"):
                subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=120)
            rabbitmqctl("delete_vhost", tag)


if __name__ == "__main__":
    main()
