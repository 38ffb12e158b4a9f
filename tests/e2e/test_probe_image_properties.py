"""image_properties end to end on the loopback lab: the real Glance 33, nova 34 and placement.

The images are read through the lab's Glance API, the flavors through nova's, the scheduler's
and computes' nova.conf with oslo.config, the traits from the placement database. Faults
(lab/healthd_lab/faults_images.py) are made the real way: images uploaded to Glance with the
bad properties, a property set on lab-image, and for a real "No valid host" the scheduler's
image_metadata_prefilter turned on (nova-scheduler restarted) with a server booted from a
cirrus image. Nova itself is asked too: the probe's "nova refuses this value" table is compared
with nova 34's own ImageMetaProps on a corpus of values, and boots that nova refuses with
HTTP 400 are tried for real.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from checks.image_properties import ImagePropertiesProbe, effective_props
from healthd.connections import Backends
from healthd.model import Severity, Status
from tests.e2e.test_probe_catalog import _clouds_yaml
from tests.helpers.probes import ProbeRun, lab_backends, run_probe
from tests.helpers.servers import free_port
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.e2e

UNICODE_NAME = "Ubuntu 24.04 \u65e5\u672c\u8a9e \u00e9t\u00e9 \u2603"


def settings(lab: dict[str, Any], **extra: Any) -> ImagePropertiesProbe.Settings:
    etc = Path(lab["paths"]["nova_conf"]).parent
    values: dict[str, Any] = {"compute_config_files": [str(etc / "nova-compute-*.conf")],
                              "scheduler_config_files": [str(etc / "nova.conf")]}
    return ImagePropertiesProbe.Settings(**{**values, **extra})


def run(lab: dict[str, Any], backends: Any = None, **extra: Any) -> ProbeRun:
    return run_probe(ImagePropertiesProbe(settings(lab, **extra)), backends or lab_backends(lab))


def problem(result: ProbeRun, image: str, rule: str) -> Any:
    found = [f for f in result.about(image) if f.message.startswith(rule + ":")]
    assert len(found) == 1, [f.as_dict() for f in result.findings]
    return found[0]


def test_healthy_lab_gives_no_finding(lab: dict[str, Any]) -> None:
    result = run(lab)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert not result.findings
    assert (result.value("healthd_image_properties_images") or 0) >= 1
    assert result.value("healthd_image_properties_flavors") == 2  # lab-tiny, lab-huge
    assert result.value("healthd_image_properties_scheduler_option", option="image_metadata_prefilter") == 0
    for rule in ("invalid_value", "ide_on_q35", "quiesce_without_agent", "no_flavor", "prefilter_traits"):
        assert result.value("healthd_image_properties_problems", rule=rule) == 0
    assert result.value("healthd_image_properties_api_calls") == 2  # one page of images, one of flavors


def test_ide_with_q35_then_revert(lab: dict[str, Any], lab_api: Any) -> None:
    info = lab_api.inject("image-ide-q35")
    try:
        result = run(lab)
        assert result.status is Status.WARNING
        finding = problem(result, info["image"], "ide_on_q35")
        assert finding.subject == f"image {info['image']}" and "lab-ide-q35" in finding.message
        assert "hw_machine_type=q35" in finding.message
        assert f"openstack image set --property hw_disk_bus=virtio {info['image']}" in finding.remediation
        series = "healthd_image_properties_image_problem"
        assert result.value(series, image=info["image"], rule="ide_on_q35") == 1
    finally:
        lab_api.revert("image-ide-q35")
    result = run(lab)
    assert result.status is Status.OK and not result.about(info["image"])
    assert result.value("healthd_image_properties_image_problem", image=info["image"],
                        rule="ide_on_q35") is None


def test_q35_from_a_compute_config_file(lab: dict[str, Any], lab_api: Any, tmp_path: Path) -> None:
    """An image with only hw_cdrom_bus=ide, uploaded to the real Glance, and a libvirt compute whose
    nova.conf maps x86_64 to a downstream q35 type: judged from the file, as nova picks the type."""
    handle = lab_api.Lab()
    image = handle.upload_image("healthd-e2e-cdrom-ide", {"hw_cdrom_bus": "ide"})
    conf = tmp_path / "nova-compute-kvm1.conf"
    conf.write_text("[DEFAULT]\ncompute_driver = libvirt.LibvirtDriver\n"
                    "[libvirt]\nvirt_type = kvm\nhw_machine_type = x86_64=pc-q35-rhel9.6.0,aarch64=virt\n")
    try:
        result = run_probe(ImagePropertiesProbe(ImagePropertiesProbe.Settings(
            compute_config_files=[str(conf)])), lab_backends(lab))
        finding = problem(result, image, "ide_on_q35")
        assert f"{conf}: x86_64=pc-q35-rhel9.6.0" in finding.message
        assert f"openstack image set --property hw_cdrom_bus=sata {image}" in finding.remediation
        # the lab's own (fake driver) computes: not libvirt, so not judged
        assert not run(lab).about(image)
    finally:
        handle.delete_image(image)


def test_quiesce_without_agent_on_lab_image_then_revert(lab: dict[str, Any], lab_api: Any) -> None:
    info = lab_api.inject("image-quiesce")
    try:
        result = run(lab)
        finding = problem(result, info["image"], "quiesce_without_agent")
        assert "'lab-image'" in finding.message and "snapshot" in finding.message
        assert f"openstack image unset --property os_require_quiesce {info['image']}" in finding.remediation
    finally:
        lab_api.revert("image-quiesce")
    assert run(lab).status is Status.OK


def test_min_disk_above_every_flavor_is_refused_by_nova_too(lab: dict[str, Any], lab_api: Any) -> None:
    info = lab_api.inject("image-min-disk")
    handle = lab_api.Lab()
    try:
        result = run(lab)
        finding = problem(result, info["image"], "no_flavor")
        assert "min_disk 500000 GiB" in finding.message and "lab-huge" in finding.message
        # nova's own answer for the largest flavor: HTTP 400 before any scheduling
        body = {"server": {"name": "healthd-e2e-min-disk", "imageRef": info["image"],
                           "flavorRef": "lab-huge", "networks": "none"}}
        code, data = handle.api("compute", "POST", "/servers", body, ok=None)
        assert code == 400 and "minimum size specified in image metadata" in json.dumps(data), data
    finally:
        lab_api.revert("image-min-disk")
    assert not run(lab).about(info["image"])


def test_cirrus_with_the_prefilter_really_fails_with_no_valid_host(lab: dict[str, Any], lab_api: Any) -> None:
    info = lab_api.inject("image-prefilter-cirrus")  # returns once the server is in ERROR
    try:
        assert "No valid host" in info["fault"]
        result = run(lab)
        option = "image_metadata_prefilter"
        assert result.value("healthd_image_properties_scheduler_option", option=option) == 1
        finding = problem(result, info["image"], "prefilter_traits")
        assert "COMPUTE_GRAPHICS_MODEL_CIRRUS" in finding.message and "No valid host" in finding.message
        assert f"openstack image unset --property hw_video_model {info['image']}" in finding.remediation
        # without the placement database the trait rules are not judged: no false finding
        config = lab_backends(lab).config
        databases = {k: v for k, v in config.databases.items() if k != "placement"}
        no_placement = Backends(config.model_copy(update={"databases": databases}))
        assert not run(lab, no_placement).about(info["image"])
        # the same image without the prefilter: cirrus alone is no evidence (no libvirt node)
        assert not run(lab, scheduler_config_files=[]).about(info["image"])
    finally:
        lab_api.revert("image-prefilter-cirrus")
    result = run(lab)
    assert result.status is Status.OK, [f.as_dict() for f in result.findings]
    assert result.value("healthd_image_properties_scheduler_option", option="image_metadata_prefilter") == 0


def test_image_type_support_from_the_real_traits(lab: dict[str, Any], lab_api: Any, tmp_path: Path) -> None:
    """The fake computes report COMPUTE_IMAGE_TYPE_RAW only (nova/virt/fake.py capabilities): with
    query_placement_for_image_type_support on, a qcow2 image has no host, a raw one does."""
    handle = lab_api.Lab()
    image = handle.upload_image("healthd-e2e-qcow2", disk_format="qcow2")
    sched = tmp_path / "nova.conf"
    sched.write_text("[scheduler]\nquery_placement_for_image_type_support = true\n")
    try:
        assert not run(lab).about(image)  # option off in the lab's scheduler
        result = run(lab, scheduler_config_files=[str(sched)])
        finding = problem(result, image, "image_type")
        assert "COMPUTE_IMAGE_TYPE_QCOW2" in finding.message and "raw" in finding.message
        assert not result.about(lab["ids"]["image"])  # lab-image is raw
    finally:
        handle.delete_image(image)


def test_a_value_nova_refuses_is_refused_by_nova_at_boot(lab: dict[str, Any], lab_api: Any) -> None:
    """hw_video_model=Cirrus (case): nova answers 400 "Invalid image metadata"; the probe says so.
    The image has a non-ASCII name: it shows in the message, never in a label."""
    handle = lab_api.Lab()
    image = handle.upload_image(UNICODE_NAME, {"hw_video_model": "Cirrus"})
    try:
        body = {"server": {"name": "healthd-e2e-invalid", "imageRef": image, "flavorRef": "lab-tiny",
                           "networks": "none"}}
        code, data = handle.api("compute", "POST", "/servers", body, ok=None)
        assert code == 400 and "Invalid image metadata" in json.dumps(data), data
        result = run(lab)
        finding = problem(result, image, "invalid_value")
        assert UNICODE_NAME in finding.message and "hw_video_model" in finding.message
        labels = [value for sample in result.result.samples for _, value in sample.labels]
        assert image in labels
        assert all(label.isascii() for label in labels), labels
        assert not any("Ubuntu" in label for label in labels)
        assert b"Ubuntu" not in result.result.exposition and image.encode() in result.result.exposition
    finally:
        handle.delete_image(image)


def test_pagination_reads_every_image_in_a_constant_number_of_calls(lab: dict[str, Any],
                                                                    lab_api: Any) -> None:
    handle = lab_api.Lab()
    made = []
    try:
        for n in range(5):
            made.append(handle.upload_image(f"healthd-e2e-page-{n}", {"hw_disk_bus": "idee"}))
        total = run(lab).value("healthd_image_properties_images") or 0
        result = run(lab, page_size=2)
        assert result.value("healthd_image_properties_images") == total
        assert result.value("healthd_image_properties_problems", rule="invalid_value") == 5
        # ceil((N + 1) / page) image calls at most, and one flavor page of 2 (two flavors) + 1
        assert result.value("healthd_image_properties_api_calls") <= (total // 2 + 1) + 2
    finally:
        for image in made:
            handle.delete_image(image)


# -- the probe's reading of the values is nova's ------------------------------------------------

CORPUS: list[dict[str, str]] = [
    {"hw_disk_bus": v} for v in ("ide", "idee", "IDE", "virtio", "sata", "lxc", "")] + [
    {"hw_video_model": v} for v in ("cirrus", "Cirrus", "virtio", "bochs", "vga ")] + [
    {"hw_architecture": v} for v in ("x86_64", "X86_64", "x86-64", "amd64", "i386", "aarch64", "arm64")] + [
    {"architecture": "x86-64", "hw_architecture": "x86_64"}, {"architecture": "AMD64"}] + [
    {"hw_vif_model": v} for v in ("virtio", "VirtualE1000", "e1000", "virtio-net", "spapr-vlan")] + [
    {"hw_scsi_model": v} for v in ("virtio-scsi", "LsiLogicSAS", "paravirtual", "virtio")] + [
    {"os_type": v} for v in ("Linux", "windows", "bsd")] + [
    {"hw_vm_mode": v} for v in ("hvm", "HV", "pv", "kvm")] + [
    {"img_hv_type": v} for v in ("kvm", "QEMU", "xapi", "kvm2")] + [
    {"hw_cpu_cores": v} for v in ("2", " 4 ", "2.0", "two", "-1")] + [
    {"hw_qemu_guest_agent": v} for v in ("yes", "maybe", "")] + [
    {"hw_firmware_type": v} for v in ("uefi", "UEFI")] + [
    {"img_config_drive": v} for v in ("mandatory", "always")] + [
    {"img_hv_requested_version": v} for v in (">= 2.0", ">=2.0,<3", "2.0", "~= 2", ">= abc")] + [
    {"hw_numa_nodes": "2", "hw_numa_mem.0": "512", "hw_numa_cpus.0": "0-1,^1"},
    {"hw_numa_mem.0": "1G"}, {"hw_numa_cpus.0": "3-1"}, {"hw_numa_cpus.0": "a"},
    {"img_mappings": "[]"}, {"mappings": "[]"}, {"mappings": "nope"},
    {"block_device_mapping": '[{"boot_index": 0, "volume_size": 1, "tag": null}]'},
    {"block_device_mapping": '{"a": 1}'}, {"vmware_adaptertype": "lsiLogic"},
    {"vmware_adaptertype": "bogus"}, {"hw_mem_encryption_model": "intel-tdx"},
    {"hw_tpm_version": "2"}, {"hw_watchdog_action": "disabled"}, {"trait:CUSTOM_X": "required"},
]

NOVA_SCRIPT = """
import json, sys, warnings
warnings.simplefilter("ignore")
from nova import objects, exception
objects.register_all()
from nova.image import glance
out = []
for props in json.load(sys.stdin):
    try:
        meta = glance._convert_from_string({"properties": dict(props)})
        objects.ImageMeta.from_dict({"properties": meta["properties"]})
        out.append(True)
    except (ValueError, exception.Invalid):
        out.append(False)
print(json.dumps(out))
"""


def test_the_probe_refuses_exactly_what_nova_34_refuses(lab: dict[str, Any]) -> None:
    python = Path(lab["paths"]["venv"]) / "bin" / "python"
    proc = subprocess.run([str(python), "-c", NOVA_SCRIPT], input=json.dumps(CORPUS), text=True,
                          capture_output=True, timeout=120, check=True)
    nova = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = [not effective_props(props)[1] for props in CORPUS]
    differ = [(props, n, o) for props, n, o in zip(CORPUS, nova, ours, strict=True) if n != o]
    assert not differ, differ
    assert False in nova and True in nova  # the corpus has both


# -- backends down ---------------------------------------------------------------------------


def test_glance_down_is_unknown(lab: dict[str, Any], lab_api: Any) -> None:
    handle = lab_api.Lab()
    port = handle.ports["glance"]
    handle.stop("glance-api")
    try:
        result = run(lab)
        assert result.status is Status.UNKNOWN
        assert result.summary.startswith("Glance image list"), result.summary
    finally:
        handle.start_wsgi("glance-api", "glance.wsgi.api", port)
        handle.wait_http("glance-api", handle.url("image"))
    # Back to OK once Glance answers again (a fresh Glance may answer 500 while the machine's
    # shared MariaDB refuses new connections: wait for that to pass, never longer than 60 s).
    logs = [Path(lab["paths"]["lab_dir"]) / "logs" / "glance-api.log"]
    wait_for("image_properties OK after Glance restarted", lambda: run(lab).status is Status.OK, 60, logs)


def test_keystone_unreachable_is_unknown_without_the_password(lab: dict[str, Any], tmp_path: Path) -> None:
    import yaml

    backends = lab_backends(lab, clouds_yaml=_clouds_yaml(lab, tmp_path, free_port()))
    result = run(lab, backends)
    assert result.status is Status.UNKNOWN
    auth = yaml.safe_load(Path(lab["paths"]["clouds_yaml"]).read_text())["clouds"]["healthd-lab"]["auth"]
    assert auth["password"] not in result.everything()
    assert not [f for f in result.findings if f.severity is Severity.WARNING]
