"""image_properties' placement part against the real local MariaDB, with only the documented grants.

Images and flavors come from the Glance and compute APIs (tests/e2e/test_probe_image_properties.py
runs them on the lab's real services); here the compute nodes' traits are read from a per-run
placement database with the real schema (tests/schemas/placement.sql), by a user that has exactly
the three grants of deploy/mysql/grants.sql, and judged. Each grant is shown to be needed, the
statement count is constant in the number of providers, and a down database leaves the trait rules
unjudged (a WARNING that says why), never a false finding.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from checks.image_properties import (
    Flavor,
    Image,
    ImagePropertiesProbe,
    ImageView,
    judge,
    read_providers,
)
from healthd.config import BackendsConfig
from healthd.connections import Backends
from healthd.deadline import Deadline
from healthd.errors import BackendUnavailable
from healthd.model import Report, Result, Status
from healthd.probe import Context
from tests.helpers.novadb import HOST, NovaDB, utcnow
from tests.helpers.servers import free_port

GRANTS = ("resource_providers", "resource_provider_traits", "traits")
CIRRUS = Image("aaaaaaaa-0000-4000-8000-000000000001", "legacy-win", properties={"hw_video_model": "cirrus"})
AVX512 = Image("aaaaaaaa-0000-4000-8000-000000000002", "hpc",
               properties={"trait:HW_CPU_X86_AVX512F": "required"})
PLAIN = Image("aaaaaaaa-0000-4000-8000-000000000003", "cirros", properties={"hw_disk_bus": "virtio"})


class Placement:
    def __init__(self, novadb: NovaDB) -> None:
        self.novadb = novadb
        self.db = novadb.create("placement", "placement")
        self.traits: dict[str, int] = {}

    def trait(self, name: str) -> int:
        if name not in self.traits:
            self.traits[name] = self.novadb.insert(self.db, "traits", {"created_at": utcnow(), "name": name})
        return self.traits[name]

    def provider(self, name: str, *traits: str, parent: int | None = None) -> int:
        """POST /resource_providers then PUT .../traits (placement/objects/trait.py _set_traits)."""
        rp = self.novadb.insert(self.db, "resource_providers", {
            "created_at": utcnow(), "uuid": str(uuid.uuid4()), "name": name, "generation": 1})
        root = parent if parent is not None else rp
        self.novadb.exec(f"UPDATE `{self.db}`.resource_providers SET root_provider_id = %s, "
                         "parent_provider_id = %s WHERE id = %s", (root, parent, rp))
        for t in traits:
            self.novadb.insert(self.db, "resource_provider_traits", {
                "created_at": utcnow(), "resource_provider_id": rp, "trait_id": self.trait(t)})
        return rp


@pytest.fixture(scope="module")
def cloud() -> Iterator[tuple[NovaDB, Placement, str, str]]:
    novadb = NovaDB()
    try:
        placement = Placement(novadb)
        # Two libvirt nodes whose QEMU has no Cirrus, a disabled one that has it and AVX512 on a
        # child provider, and a sharing provider that is no compute node.
        placement.provider("kvm-1", "COMPUTE_NODE", "COMPUTE_GRAPHICS_MODEL_VGA",
                           "COMPUTE_GRAPHICS_MODEL_VIRTIO", "HW_ARCH_X86_64", "HW_CPU_X86_AVX2")
        placement.provider("kvm-2", "COMPUTE_NODE", "COMPUTE_GRAPHICS_MODEL_VIRTIO", "HW_ARCH_X86_64")
        old = placement.provider("kvm-old", "COMPUTE_NODE", "COMPUTE_GRAPHICS_MODEL_CIRRUS",
                                 "COMPUTE_STATUS_DISABLED")
        placement.provider("kvm-old_numa0", "HW_CPU_X86_AVX512F", parent=old)
        placement.provider("ceph-pool", "MISC_SHARES_VIA_AGGREGATE", "CUSTOM_X")
        password = f"Img-{uuid.uuid4().hex[:12]}"
        user = novadb.create_user("img", password, [f"SELECT ON `{placement.db}`.`{t}`" for t in GRANTS])
        yield novadb, placement, user, password
    finally:
        novadb.close()


def context(backends: Backends) -> Context:
    return Context(backends, Deadline(20), logging.getLogger("test"))


def backends_for(db: str, user: str, password: str, port: int = 3306) -> Backends:
    return Backends(BackendsConfig.model_validate({"databases": {"placement": {
        "url": NovaDB.url(db, user, port=port), "password": password, "connect_timeout": 2}}}))


def judged(view: ImageView) -> Result:
    report = Report(ImagePropertiesProbe.name, ImagePropertiesProbe.metrics)
    judge(view, ImagePropertiesProbe.Settings(), report)
    return report.result(0, 0)


def test_traits_read_with_only_the_documented_grants_are_judged(cloud: Any) -> None:
    _, placement, user, password = cloud
    backends = backends_for(placement.db, user, password)
    ctx = context(backends)
    try:
        providers = read_providers(ctx, [CIRRUS, AVX512, PLAIN])
    finally:
        ctx.close()
    assert sorted(p.name for p in providers) == ["kvm-1", "kvm-2", "kvm-old"]  # no sharing pool
    old = next(p for p in providers if p.name == "kvm-old")
    assert not old.enabled and "HW_CPU_X86_AVX512F" in old.tree_traits
    # only the traits that can matter are read, not every CPU flag
    assert "HW_CPU_X86_AVX2" not in {t for p in providers for t in p.root_traits}
    assert sum(backends.sql_statements.values()) == 2
    result = judged(ImageView([CIRRUS, AVX512, PLAIN], [Flavor("1", "small", 2048, 20)], [], providers))
    assert result.status is Status.WARNING
    subjects = sorted((f.subject, f.message.split(":")[0]) for f in result.findings)
    assert subjects == [(f"image {CIRRUS.id}", "cirrus"), (f"image {AVX512.id}", "required_trait")]


def test_the_statement_count_does_not_grow_with_providers(cloud: Any) -> None:
    _, placement, user, password = cloud
    for n in range(200):
        placement.provider(f"more-{n}", "COMPUTE_NODE", "COMPUTE_GRAPHICS_MODEL_VGA")
    backends = backends_for(placement.db, user, password)
    ctx = context(backends)
    try:
        assert len(read_providers(ctx, [CIRRUS, AVX512, PLAIN])) == 203
    finally:
        ctx.close()
    assert sum(backends.sql_statements.values()) == 2


@pytest.mark.parametrize("table", GRANTS)
def test_every_grant_is_needed(cloud: Any, table: str) -> None:
    novadb, placement, user, password = cloud
    novadb.exec(f"REVOKE SELECT ON `{placement.db}`.`{table}` FROM '{user}'@'{HOST}'")
    try:
        ctx = context(backends_for(placement.db, user, password))
        try:
            with pytest.raises(BackendUnavailable) as denied:
                read_providers(ctx, [PLAIN])
        finally:
            ctx.close()
        assert "denied" in str(denied.value).lower() and password not in str(denied.value)
    finally:
        novadb.exec(f"GRANT SELECT ON `{placement.db}`.`{table}` TO '{user}'@'{HOST}'")


def test_placement_down_leaves_the_trait_rules_unjudged(cloud: Any) -> None:
    _, placement, user, password = cloud
    ctx = context(backends_for(placement.db, user, password, port=free_port()))
    try:
        with pytest.raises(BackendUnavailable) as down:
            read_providers(ctx, [CIRRUS])
    finally:
        ctx.close()
    assert password not in str(down.value)
    view = ImageView([CIRRUS, AVX512], [Flavor("1", "small", 2048, 20)], [], None,
                     placement_error=str(down.value))
    result = judged(view)
    assert [f.subject for f in result.findings] == ["placement database"]
    assert "not judged" in result.findings[0].message and "grants.sql" in result.findings[0].remediation
    assert password not in result.findings[0].message
