"""Benchmark: image_properties at scale.

Part 1 (database, always): a per-run placement database with placement 16's real schema and
N compute node providers carrying a libvirt host's traits (COMPUTE_NODE, HW_ARCH_X86_64, the
graphics models, storage buses, VIF models, image types and 20 CPU flags: 44 traits each), plus
1,000 images and 1,000 flavors as the APIs give them. Reports the statements, the rows read,
and the time of read_providers (SQL) and of judge (Python) separately.

Part 2 (--lab DIR, optional): N images uploaded to the lab's real Glance (1 byte each), then the
whole probe run through the engine with two page sizes: HTTP calls and wall time. The images
are deleted at the end.

Usage: .venv/bin/python bench/image_properties.py [--hosts 100 10000] [--lab /tmp/lab-x --images 300]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.db_probes import bulk  # noqa: E402
from checks.image_properties import (  # noqa: E402
    Flavor,
    Image,
    ImagePropertiesProbe,
    ImageView,
    judge,
    read_providers,
)
from healthd.config import BackendsConfig  # noqa: E402
from healthd.connections import Backends  # noqa: E402
from healthd.deadline import Deadline  # noqa: E402
from healthd.model import Report  # noqa: E402
from healthd.probe import Context  # noqa: E402
from tests.helpers.novadb import NovaDB, utcnow  # noqa: E402

HOST_TRAITS = (
    ["COMPUTE_NODE", "HW_ARCH_X86_64", "COMPUTE_IMAGE_TYPE_RAW", "COMPUTE_IMAGE_TYPE_QCOW2",
     "COMPUTE_IMAGE_TYPE_ISO"]
    + [f"COMPUTE_GRAPHICS_MODEL_{m}" for m in ("VGA", "VIRTIO", "BOCHS", "NONE", "QXL", "VMVGA")]
    + [f"COMPUTE_STORAGE_BUS_{b}" for b in ("IDE", "SATA", "SCSI", "USB", "VIRTIO", "FDC")]
    + [f"COMPUTE_NET_VIF_MODEL_{m}" for m in ("E1000", "E1000E", "NE2K_PCI", "PCNET", "RTL8139",
                                              "VIRTIO", "VMXNET3")]
    + [f"HW_CPU_X86_{f}" for f in ("AVX", "AVX2", "SSE", "SSE2", "SSE41", "SSE42", "SSSE3", "AESNI",
                                   "FMA3", "BMI", "BMI2", "F16C", "MMX", "SVM", "VMX", "CLMUL",
                                   "ABM", "AVX512F", "AVX512CD", "AVX512BW")])
PROPS = [{}, {"hw_disk_bus": "virtio"}, {"hw_disk_bus": "ide", "hw_machine_type": "q35"},
         {"hw_video_model": "cirrus"}, {"os_require_quiesce": "yes"}, {"hw_video_model": "Cirrus"},
         {"trait:HW_CPU_X86_AVX512VNNI": "required"}, {"hw_vif_model": "e1000", "os_type": "windows"}]


def images(n: int) -> list[Image]:
    return [Image(f"{i:08d}-0000-4000-8000-000000000000", f"image-{i}", "public", "", "qcow2",
                  20 * 1024 ** 2, 512, 1, dict(PROPS[i % len(PROPS)])) for i in range(n)]


def flavors(n: int) -> list[Flavor]:
    return [Flavor(str(i), f"flavor-{i}", 512 * (1 + i % 64), i % 200, i % 10 != 0) for i in range(n)]


def build_placement(novadb: NovaDB, hosts: int) -> str:
    db = novadb.create("placement", "placement")
    now = utcnow()
    bulk(novadb, db, "traits", [{"id": i + 1, "created_at": now, "name": t}
                                for i, t in enumerate(HOST_TRAITS)])
    bulk(novadb, db, "resource_providers", [
        {"id": h + 1, "created_at": now, "uuid": str(uuid.uuid4()), "name": f"compute-{h:05d}",
         "generation": 3, "root_provider_id": h + 1} for h in range(hosts)])
    bulk(novadb, db, "resource_provider_traits", [
        {"created_at": now, "resource_provider_id": h + 1, "trait_id": t + 1}
        for h in range(hosts) for t in range(len(HOST_TRAITS))])
    return db


def part1(hosts_list: list[int], runs: int) -> None:
    imgs, flvs = images(1000), flavors(1000)
    for hosts in hosts_list:
        novadb = NovaDB(prefix=f"hdbench_{uuid.uuid4().hex[:8]}")
        try:
            t0 = time.perf_counter()
            db = build_placement(novadb, hosts)
            built = time.perf_counter() - t0
            config = BackendsConfig.model_validate({"databases": {"placement": {"url": NovaDB.url(db)}}})
            sql_t, judge_t, statements = [], [], 0
            for _ in range(runs):
                backends = Backends(config)
                ctx = Context(backends, Deadline(120), logging.getLogger("bench"))
                t0 = time.perf_counter()
                providers = read_providers(ctx, imgs)
                sql_t.append(time.perf_counter() - t0)
                ctx.close()
                statements = sum(backends.sql_statements.values())
                report = Report(ImagePropertiesProbe.name, ImagePropertiesProbe.metrics)
                t0 = time.perf_counter()
                judge(ImageView(imgs, flvs, [], providers, {"image_metadata_prefilter": True}),
                      ImagePropertiesProbe.Settings(), report)
                judge_t.append(time.perf_counter() - t0)
            rows = novadb.query(f"SELECT COUNT(*) AS n FROM `{db}`.resource_provider_traits")[0]["n"]
            print(f"\n== {hosts} compute node providers x {len(HOST_TRAITS)} traits ({rows} rows, built in "
                  f"{built:.1f} s), 1,000 images, 1,000 flavors, median of {runs}")
            print(f"  placement: {statements} SQL statements, {statistics.median(sql_t):.3f} s")
            print(f"  judge: {statistics.median(judge_t):.3f} s, {len(report.findings)} findings, "
                  f"summary: {report.summary[:110]}")
        finally:
            novadb.close()


def part2(lab_dir: str, count: int, runs: int) -> None:
    sys.path.insert(0, str(REPO / "lab"))
    import os

    os.environ["HEALTHD_LAB_DIR"] = lab_dir
    import healthd_lab

    from tests.helpers.probes import lab_backends, run_probe

    handle = healthd_lab.Lab()
    state = dict(handle.state)
    state["healthd_yaml"] = state["paths"]["healthd_yaml"]
    made: list[str] = []
    try:
        t0 = time.perf_counter()
        for i in range(count):
            body = {"name": f"bench-{i}", "disk_format": "raw", "container_format": "bare",
                    "visibility": "public", **PROPS[i % len(PROPS)]}
            _, img = handle.api("image", "POST", "/v2/images", body)
            made.append(img["id"])
            handle.api("image", "PUT", f"/v2/images/{img['id']}/file", raw=b"x")
        print(f"\n== lab Glance: {count} images uploaded in {time.perf_counter() - t0:.1f} s")
        for page in (1000, 500, 100):
            times: list[float] = []
            calls = total = 0.0
            for _ in range(runs):
                probe = ImagePropertiesProbe(ImagePropertiesProbe.Settings(page_size=page))
                t0 = time.perf_counter()
                result = run_probe(probe, lab_backends(state))
                times.append(time.perf_counter() - t0)
                calls = result.value("healthd_image_properties_api_calls") or 0
                total = result.value("healthd_image_properties_images") or 0
            print(f"  page_size {page:4d}: {int(total)} images, {int(calls)} HTTP calls (images + flavors), "
                  f"{statistics.median(times):.2f} s (median of {runs}, incl. Keystone auth)")
    finally:
        for image in made:
            handle.api("image", "DELETE", f"/v2/images/{image}", ok=(204, 404))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="*", default=[100, 10000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lab", default=None, help="a lab directory that is up (part 2)")
    parser.add_argument("--images", type=int, default=300)
    args = parser.parse_args()
    if args.hosts:
        part1(args.hosts, args.runs)
    if args.lab:
        part2(args.lab, args.images, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
