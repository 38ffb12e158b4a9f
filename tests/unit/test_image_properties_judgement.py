"""checks.image_properties' judgement on plain data: no Glance, no nova.

Images are what GET /v2/images gives (properties as strings), flavors what GET /flavors/detail
gives, computes what their nova.conf says, providers the compute nodes' trait sets in placement.
Each rule has a case that fires and one, next to it, that must not (the false-alarm traps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from checks.image_properties import (
    ComputeConf,
    Flavor,
    Image,
    ImagePropertiesProbe,
    ImageView,
    Provider,
    effective_props,
    flavor_from_api,
    fold_providers,
    image_from_api,
    judge,
    prefilter_traits,
    read_configs,
)
from healthd.model import Report, Result, Severity, Status

IMG = "11111111-2222-4333-8444-555555555555"
TINY = Flavor("1", "tiny", ram=512, disk=1)
BIG = Flavor("2", "big", ram=8192, disk=80)
GIB = 1024 ** 3


def image(props: dict[str, Any] | None = None, **kw: Any) -> Image:
    base: dict[str, Any] = {"id": IMG, "name": "cirros", "visibility": "public", "disk_format": "raw",
                            "size": 20 * 1024 * 1024}
    base.update(kw)
    return Image(properties=props or {}, **base)


def node(*traits: str, name: str = "compute-1", tree: tuple[str, ...] = ()) -> Provider:
    root = frozenset(("COMPUTE_NODE", *traits))
    return Provider(f"rp-{name}", name, root, root | frozenset(tree))


def judged(images: list[Image], flavors: list[Flavor] | None = None,
           computes: list[ComputeConf] | None = None, providers: list[Provider] | None = None,
           scheduler: dict[str, bool] | None = None, **settings: Any) -> Result:
    view = ImageView(images, [TINY, BIG] if flavors is None else flavors, computes or [], providers,
                     scheduler or {}, [], 2)
    report = Report(ImagePropertiesProbe.name, ImagePropertiesProbe.metrics)
    judge(view, ImagePropertiesProbe.Settings(**settings), report)
    return report.result(0, 0)


def value(result: Result, name: str, **labels: str) -> float | None:
    found = [s.value for s in result.samples if s.name == name and dict(s.labels) == labels]
    return found[0] if found else None


def only(result: Result, rule: str) -> Any:
    found = [f for f in result.findings if f.message.startswith(rule + ":")]
    assert len(found) == 1, [f.as_dict() for f in result.findings]
    return found[0]


# -- healthy --------------------------------------------------------------------------------


def test_a_plain_image_and_common_properties_give_nothing() -> None:
    props = {"hw_disk_bus": "virtio", "hw_video_model": "virtio", "hw_qemu_guest_agent": "yes",
             "os_require_quiesce": "yes", "hw_architecture": "x86_64", "os_type": "Linux",
             "hw_vif_model": "VirtualE1000", "hw_scsi_model": "virtio-scsi", "hw_machine_type": "q35",
             "hw_cdrom_bus": "sata", "os_distro": "ubuntu", "img_config_drive": "mandatory",
             "hw_cpu_cores": " 2 ", "hw_numa_nodes": "2", "hw_numa_cpus.0": "0-1", "hw_numa_mem.0": "512",
             "hw_numa_cpus.1": "2,3,^1", "hw_numa_mem.1": "512", "owner_specified.openstack.md5": "",
             "block_device_mapping": '[{"boot_index": 0, "volume_size": 1, "delete_on_termination": '
                                     'false, "source_type": "snapshot", "tag": null}]',
             "bdm_v2": "True", "img_hv_requested_version": ">= 2.0, < 9.1", "architecture": "amd64"}
    result = judged([image(props)])
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert not result.findings
    assert value(result, "healthd_image_properties_images") == 1
    for rule in ("invalid_value", "ide_on_q35", "no_flavor", "cirrus"):
        assert value(result, "healthd_image_properties_problems", rule=rule) == 0


# -- values nova refuses ---------------------------------------------------------------------


@pytest.mark.parametrize(("prop", "bad"), [
    ("hw_disk_bus", "idee"), ("hw_video_model", "Cirrus"), ("hw_architecture", "x86-64"),
    ("hw_cpu_cores", "2.0"), ("hw_vif_model", "virtio-net"), ("img_hv_type", "kvm2"),
    ("hw_firmware_type", "UEFI"), ("os_secure_boot", "yes"), ("hw_numa_mem.0", "1G"),
    ("hw_numa_cpus.0", "3-1"), ("img_hv_requested_version", "2.0"), ("img_config_drive", "always"),
    ("architecture", "x86-64"), ("img_mappings", "[]"), ("block_device_mapping", "not json"),
])
def test_a_value_nova_refuses_is_invalid_value(prop: str, bad: str) -> None:
    result = judged([image({prop: bad})])
    assert result.status is Status.WARNING
    finding = only(result, "invalid_value")
    assert finding.subject == f"image {IMG}" and prop in finding.message
    assert "Invalid image metadata" in finding.message
    assert IMG in finding.remediation and prop in finding.remediation
    assert value(result, "healthd_image_properties_image_problem", image=IMG, rule="invalid_value") == 1


def test_a_legacy_name_is_refused_even_when_the_current_name_is_valid() -> None:
    # _set_attr_from_legacy_names runs first and coerces the legacy value anyway
    assert effective_props({"architecture": "bogus", "hw_architecture": "x86_64"})[1]
    assert not effective_props({"architecture": "AMD64"})[1]
    assert effective_props({"architecture": "AMD64"})[0]["hw_architecture"] == "x86_64"


def test_the_fix_for_an_enum_lists_the_values_nova_accepts() -> None:
    finding = only(judged([image({"hw_video_model": "Cirrus"})]), "invalid_value")
    assert "openstack image set --property hw_video_model=<one of: cirrus, qxl, vga" in finding.remediation


def test_a_value_nova_only_reads_as_false_is_info_not_a_warning() -> None:
    result = judged([image({"hw_qemu_guest_agent": "maybe"})])
    assert result.status is Status.OK
    finding = only(result, "not_boolean")
    assert finding.severity is Severity.INFO and "reads it as false" in finding.message
    assert value(result, "healthd_image_properties_image_problem", image=IMG, rule="not_boolean") is None


# -- IDE and q35 -----------------------------------------------------------------------------


def test_ide_with_an_image_q35_machine_type() -> None:
    result = judged([image({"hw_disk_bus": "ide", "hw_machine_type": "pc-q35-rhel9.4.0"})])
    finding = only(result, "ide_on_q35")
    assert "hw_disk_bus" in finding.message and "pc-q35-rhel9.4.0" in finding.message
    assert finding.remediation.startswith(f"openstack image set --property hw_disk_bus=virtio {IMG}")
    assert f"openstack image unset --property hw_machine_type {IMG}" in finding.remediation


def test_ide_with_the_default_pc_machine_type_is_fine() -> None:
    assert not judged([image({"hw_disk_bus": "ide"})]).findings
    assert not judged([image({"hw_cdrom_bus": "ide", "hw_machine_type": "pc-i440fx-8.2"})]).findings


def test_ide_cdrom_with_q35_from_the_computes_config() -> None:
    computes = [ComputeConf("/etc/nova/c1.conf", True, ("x86_64=q35", "aarch64=virt")),
                ComputeConf("/etc/nova/c2.conf", True, ())]
    finding = only(judged([image({"hw_cdrom_bus": "ide"})], computes=computes), "ide_on_q35")
    assert "/etc/nova/c1.conf: x86_64=q35" in finding.message and "c2.conf" not in finding.message
    assert "hw_cdrom_bus=sata" in finding.remediation


def test_machine_type_mappings_are_matched_as_nova_matches_them() -> None:
    # get_default_machine_type: partition('=') without strip, an entry without '=' is skipped,
    # a non-libvirt compute does not count, the image's own machine type wins.
    spaced = [ComputeConf("/c.conf", True, ("x86_64 = q35",))]
    assert not judged([image({"hw_disk_bus": "ide"})], computes=spaced).findings
    assert not judged([image({"hw_disk_bus": "ide"})], computes=[ComputeConf("/c.conf", True, ("q35",))]
                      ).findings
    not_libvirt = [ComputeConf("/c.conf", False, ("x86_64=q35",))]
    assert not judged([image({"hw_disk_bus": "ide"})], computes=not_libvirt).findings
    own = [ComputeConf("/c.conf", True, ("x86_64=q35",))]
    assert not judged([image({"hw_disk_bus": "ide", "hw_machine_type": "pc"})], computes=own).findings
    # the image's arch picks the mapping
    assert not judged([image({"hw_disk_bus": "ide", "hw_architecture": "i686"})], computes=own).findings


def test_ide_on_an_architecture_without_ide() -> None:
    finding = only(judged([image({"hw_disk_bus": "ide", "hw_architecture": "aarch64"})]), "ide_on_q35")
    assert "aarch64" in finding.message


def test_a_bus_libvirt_does_not_support() -> None:
    finding = only(judged([image({"hw_disk_bus": "xen"})]), "unsupported_bus")
    assert "UnsupportedHardware" in finding.message


# -- cirrus ------------------------------------------------------------------------------------


def test_cirrus_without_evidence_is_not_flagged() -> None:
    assert not judged([image({"hw_video_model": "cirrus"})]).findings
    # providers with no graphics traits at all (not libvirt, e.g. the fake or ironic driver)
    assert not judged([image({"hw_video_model": "cirrus"})], providers=[node()]).findings
    # one libvirt node whose QEMU has it
    libvirt = [node("COMPUTE_GRAPHICS_MODEL_VGA"), node("COMPUTE_GRAPHICS_MODEL_CIRRUS", name="c2")]
    assert not judged([image({"hw_video_model": "cirrus"})], providers=libvirt).findings


def test_cirrus_when_no_libvirt_node_has_it() -> None:
    libvirt = [node("COMPUTE_GRAPHICS_MODEL_VGA", "COMPUTE_GRAPHICS_MODEL_VIRTIO"),
               node("COMPUTE_GRAPHICS_MODEL_CIRRUS", "COMPUTE_STATUS_DISABLED", name="c2")]
    finding = only(judged([image({"hw_video_model": "cirrus"})], providers=libvirt), "cirrus")
    assert "none of 1 libvirt compute nodes" in finding.message
    assert finding.remediation == f"openstack image set --property hw_video_model=virtio {IMG}"


def test_cirrus_on_a_non_x86_architecture() -> None:
    only(judged([image({"hw_video_model": "cirrus", "hw_architecture": "ppc64le"})]), "cirrus")


# -- quiesce -----------------------------------------------------------------------------------


@pytest.mark.parametrize("agent", [None, "no", "maybe", "False"])
def test_quiesce_without_the_guest_agent(agent: str | None) -> None:
    props = {"os_require_quiesce": "yes"}
    if agent is not None:
        props["hw_qemu_guest_agent"] = agent
    finding = only(judged([image(props)]), "quiesce_without_agent")
    assert "snapshot" in finding.message
    assert f"openstack image set --property hw_qemu_guest_agent=yes {IMG}" in finding.remediation
    assert f"openstack image unset --property os_require_quiesce {IMG}" in finding.remediation


def test_quiesce_with_the_agent_or_not_required_is_fine() -> None:
    assert not judged([image({"os_require_quiesce": "True", "hw_qemu_guest_agent": "YES"})]).findings
    assert not judged([image({"os_require_quiesce": "no"})]).findings


# -- flavors -----------------------------------------------------------------------------------


def test_min_disk_larger_than_every_public_flavor() -> None:
    result = judged([image(min_disk=100)])
    finding = only(result, "no_flavor")
    assert "min_disk 100 GiB" in finding.message
    assert "big with 8192 MiB RAM and 80 GiB disk" in finding.message
    assert "openstack image set --min-disk" in finding.remediation and IMG in finding.remediation


def test_min_ram_and_size() -> None:
    only(judged([image(min_ram=16384)]), "no_flavor")
    only(judged([image(size=81 * GIB)]), "no_flavor")
    assert not judged([image(size=80 * GIB, min_ram=8192, min_disk=80)]).findings


def test_a_zero_disk_flavor_skips_the_size_checks_as_nova_does() -> None:
    zero = Flavor("3", "bfv", ram=4096, disk=0)
    assert not judged([image(min_disk=500, size=300 * GIB)], flavors=[TINY, zero]).findings
    only(judged([image(min_ram=8192, min_disk=500)], flavors=[TINY, zero]), "no_flavor")


def test_a_private_image_may_fit_a_private_flavor() -> None:
    private_flavor = Flavor("4", "project-huge", ram=4096, disk=500, public=False)
    assert not judged([image(min_disk=400, visibility="private")], flavors=[TINY, private_flavor]).findings
    # a public image must fit a public flavor
    only(judged([image(min_disk=400)], flavors=[TINY, private_flavor]), "no_flavor")


def test_no_flavor_read_judges_no_fit() -> None:
    assert not judged([image(min_disk=400)], flavors=[]).findings


def test_video_ram_above_every_flavor_limit() -> None:
    only(judged([image({"hw_video_ram": "64"})]), "video_ram")
    roomy = Flavor("5", "desktop", ram=4096, disk=40, video_ram_max=128)
    assert not judged([image({"hw_video_ram": "64"})], flavors=[TINY, roomy]).findings


# -- traits ------------------------------------------------------------------------------------


def test_a_required_trait_no_enabled_node_has() -> None:
    props = {"trait:HW_CPU_X86_AVX512F": "required", "trait:CUSTOM_GPU": "forbidden"}
    finding = only(judged([image(props)], providers=[node("HW_CPU_X86_AVX2")]), "required_trait")
    assert "HW_CPU_X86_AVX512F" in finding.message and "No valid host" in finding.message
    assert f"openstack image unset --property trait:HW_CPU_X86_AVX512F {IMG}" in finding.remediation
    # on a child provider of the tree: fine (unsuffixed request group)
    assert not judged([image(props)], providers=[node(tree=("HW_CPU_X86_AVX512F",))]).findings
    # without placement: not judged
    assert not judged([image(props)], providers=None).findings
    # only on a disabled node: still no host
    only(judged([image(props)], providers=[node("HW_CPU_X86_AVX512F", "COMPUTE_STATUS_DISABLED"),
                                            node(name="c2")]), "required_trait")


def test_prefilter_traits_only_when_the_scheduler_option_is_on() -> None:
    props = {"hw_video_model": "cirrus"}
    fake = [node(), node(name="c2")]
    assert not judged([image(props)], providers=fake).findings
    finding = only(judged([image(props)], providers=fake, scheduler={"image_metadata_prefilter": True}),
                   "prefilter_traits")
    assert "COMPUTE_GRAPHICS_MODEL_CIRRUS" in finding.message and "No valid host" in finding.message
    assert f"openstack image unset --property hw_video_model {IMG}" in finding.remediation
    ok = [node("COMPUTE_GRAPHICS_MODEL_CIRRUS", "COMPUTE_STORAGE_BUS_IDE")]
    assert not judged([image({**props, "hw_disk_bus": "ide"})], providers=ok,
                      scheduler={"image_metadata_prefilter": True}).findings


def test_prefilter_adds_nothing_when_one_trait_is_unknown_to_os_traits() -> None:
    # request_filter.transform_image_metadata returns False on COMPUTE_VIOMMU_INTEL (os-traits has
    # COMPUTE_VIOMMU_MODEL_INTEL): no trait of this image is required at all.
    assert prefilter_traits({"hw_viommu_model": "intel", "hw_video_model": "cirrus"}) is None
    assert prefilter_traits({"hw_vif_model": "VirtualE1000", "hw_architecture": "AMD64"}) == [
        "COMPUTE_NET_VIF_MODEL_E1000", "HW_ARCH_X86_64"]
    assert not judged([image({"hw_viommu_model": "intel", "hw_video_model": "cirrus"})],
                      providers=[node()], scheduler={"image_metadata_prefilter": True}).findings


def test_image_type_support() -> None:
    raw_only = [node("COMPUTE_IMAGE_TYPE_RAW")]
    qcow = image(disk_format="qcow2")
    assert not judged([qcow], providers=raw_only).findings
    finding = only(judged([qcow], providers=raw_only,
                          scheduler={"query_placement_for_image_type_support": True}), "image_type")
    assert "COMPUTE_IMAGE_TYPE_QCOW2" in finding.message and "raw" in finding.message
    assert not judged([image()], providers=raw_only,
                      scheduler={"query_placement_for_image_type_support": True}).findings


# -- labels, caps, names -----------------------------------------------------------------------


def test_names_never_reach_a_label_and_are_shown_safely() -> None:
    name = "Ubuntu 24.04 \u65e5\u672c\u8a9e \u00e9t\u00e9\n\x1b[31m"
    result = judged([image({"hw_disk_bus": "idee"}, name=name)])
    labels = [v for s in result.samples for _, v in s.labels]
    assert IMG in labels
    assert not any(ch in label for label in labels for ch in "\u65e5\u00e9\n\x1b ")
    finding = only(result, "invalid_value")
    assert "\u65e5\u672c\u8a9e" in finding.message
    assert "\x1b" not in finding.message and "\n" not in finding.message


def test_series_and_findings_are_capped() -> None:
    images = [image({"hw_disk_bus": "idee"}, id=f"00000000-0000-4000-8000-{n:012d}") for n in range(30)]
    result = judged(images, max_image_series=10, max_findings=5)
    assert len([s for s in result.samples if s.name == "healthd_image_properties_image_problem"]) == 10
    assert value(result, "healthd_image_properties_problems", rule="invalid_value") == 30
    assert len(result.findings) == 6 and "25 more image problem(s)" in result.findings[-1].message


def test_ignored_images_are_not_judged() -> None:
    assert not judged([image(min_disk=500)], ignore_images=[IMG]).findings


# -- parsing the sources ---------------------------------------------------------------------


def test_image_and_flavor_from_the_api_json() -> None:
    raw = {"id": IMG, "name": "x", "status": "active", "visibility": "community", "size": None,
           "min_disk": 3, "min_ram": 0, "disk_format": "qcow2", "os_hidden": False, "tags": [],
           "hw_disk_bus": "ide", "stores": "fs", "os_hash_value": "ab"}
    img = image_from_api(raw)
    assert img.properties == {"hw_disk_bus": "ide"} and img.size == 0 and img.min_disk == 3
    assert flavor_from_api({"id": "1", "name": "f", "ram": 512, "disk": 1,
                            "OS-FLV-DISABLED:disabled": True}) is None
    f = flavor_from_api({"id": "1", "name": "f", "ram": 512, "disk": 1, "os-flavor-access:is_public": False,
                         "extra_specs": {"hw_video:ram_max_mb": "64"}})
    assert f is not None and not f.public and f.video_ram_max == 64


def test_providers_are_compute_node_trees() -> None:
    rps = [{"id": 1, "uuid": "u1", "name": "c1", "root_id": 1}, {"id": 2, "uuid": "u2", "name": "c1_nic",
                                                                   "root_id": 1},
           {"id": 3, "uuid": "u3", "name": "sharing", "root_id": 3}]
    rows = [{"rp_id": 1, "names": b"COMPUTE_NODE,HW_ARCH_X86_64"}, {"rp_id": 2, "names": "CUSTOM_X"},
            {"rp_id": 3, "names": "CUSTOM_Y"}]
    [p] = fold_providers(rps, rows)
    assert p.uuid == "u1" and "CUSTOM_X" in p.tree_traits and "CUSTOM_X" not in p.root_traits


def test_config_files_are_read_with_oslo_config(tmp_path: Path) -> None:
    compute = tmp_path / "nova-compute.conf"
    compute.write_text("[DEFAULT]\ncompute_driver = libvirt.LibvirtDriver\n"
                       "[libvirt]\nhw_machine_type = x86_64=q35, aarch64=virt\n")
    sched = tmp_path / "nova.conf"
    sched.write_text("[scheduler]\nimage_metadata_prefilter = yes\n")
    broken = tmp_path / "bad.conf"
    broken.write_text("[scheduler]\nquery_placement_for_image_type_support = perhaps\n")
    computes, scheduler, problems = read_configs([str(compute), str(tmp_path / "none-*.conf")],
                                                 [str(sched), str(broken)])
    assert computes == [ComputeConf(str(compute), True, ("x86_64=q35", "aarch64=virt"), "kvm")]
    # an option is on if a file turns it on; the bad file's unreadable value is reported
    assert scheduler == {"image_metadata_prefilter": True, "query_placement_for_image_type_support": False}
    assert any("matches no file" in why for _, why in problems)
    assert any("bad.conf" in subject and "query_placement_for_image_type_support" in why
               and "boolean" in why for subject, why in problems)
