"""checks.flavor_filters' model of nova 34's scheduler on plain data: no database.

The expected verdicts of the filters were cross-checked once against nova 34.0.0's own
ComputeCapabilitiesFilter / AggregateInstanceExtraSpecsFilter / extra_specs_ops (the lab
venv; see docs/probes/flavor_filters.md "Cross-check"), not at test time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from checks.flavor_filters import (
    AIESF,
    CCF,
    DEFAULT_FILTERS,
    Flavor,
    FlavorFiltersProbe,
    Host,
    Placement,
    SchedulerFiles,
    View,
    aiesf_verdict,
    ccf_verdict,
    host_from_row,
    judge,
    match,
    placement_from_rows,
    placement_request,
    read_scheduler_files,
)
from healthd.model import Report, Result, Severity, Status

UUID1 = "11111111-0000-4000-8000-000000000001"
UUID2 = "22222222-0000-4000-8000-000000000002"
CELL = "c1c1c1c1-0000-4000-8000-000000000001"


def node(host: str, uuid: str, hv: str = "fake", stats: dict[str, Any] | None = None,
         cpu_info: str = '{"arch": "x86_64", "features": ["sse"], "maxphysaddr": {"bits": 46}}',
         **over: Any) -> dict[str, Any]:
    row = {"uuid": uuid, "host": host, "hypervisor_hostname": host, "hypervisor_type": hv,
           "hypervisor_version": 1000, "cpu_info": cpu_info, "host_ip": "127.0.0.1",
           "stats": json.dumps(stats or {"num_instances": "0", "io_workload": "0"}),
           "supported_instances": '[["x86_64", "fake", "hvm"]]', "vcpus": 1000, "memory_mb": 800000,
           "local_gb": 600000, "free_disk_gb": 600000, "cpu_allocation_ratio": 16.0,
           "ram_allocation_ratio": 1.5, "disk_allocation_ratio": 1.0}
    row.update(over)
    return row


def hosts(*rows: dict[str, Any], aggs: dict[str, dict[str, set[str]]] | None = None,
          states: dict[str, str] | None = None) -> list[Host]:
    out = []
    for r in rows:
        h = host_from_row(r, CELL, "cell1")
        h.aggregates = (aggs or {}).get(h.host, {})
        h.state = (states or {}).get(h.host, h.state)
        out.append(h)
    return out


def placement(*uuids: str, vcpu_max: int = 1000, traits: dict[str, set[str]] | None = None,
              known_traits: set[str] | None = None) -> Placement:
    providers = [{"id": i + 1, "uuid": u, "root_id": i + 1} for i, u in enumerate(uuids)]
    inv = []
    for i, _u in enumerate(uuids):
        for name, total, mx in (("VCPU", 1000, vcpu_max), ("MEMORY_MB", 800000, 800000),
                                ("DISK_GB", 600000, 600000)):
            inv.append({"rp_id": i + 1, "name": name, "total": total, "reserved": 0, "min_unit": 1,
                        "max_unit": mx, "step_size": 1, "allocation_ratio": 1.0})
    tr = [{"rp_id": i + 1, "name": t} for i, u in enumerate(uuids) for t in (traits or {}).get(u, set())]
    names = [{"kind": "rc", "name": n} for n in ("VCPU", "MEMORY_MB", "DISK_GB", "PCPU")]
    known = known_traits or {"HW_CPU_X86_AVX", "COMPUTE_STATUS_DISABLED"}
    names += [{"kind": "trait", "name": t} for t in known]
    return placement_from_rows(providers, inv, tr, names)


def flavor(specs: dict[str, str] | None = None, flavorid: str = "f1", name: str = "m1",
           **over: Any) -> Flavor:
    args: dict[str, Any] = {"id": 1, "flavorid": flavorid, "name": name, "vcpus": 1, "memory_mb": 64,
                            "root_gb": 1, "specs": dict(specs or {})}
    args.update(over)
    return Flavor(**args)


def judged(flavors: list[Flavor], hs: list[Host] | None = None, pl: Placement | str | None = "both",
           filters: tuple[str, ...] | None = None, **settings: Any) -> Result:
    """Judged with placement's two providers unless pl is given (None: placement not configured)."""
    hs = hs if hs is not None else hosts(node("c1", UUID1), node("c2", UUID2))
    if isinstance(pl, str):
        pl = placement(UUID1, UUID2)
    sched = SchedulerFiles({"/etc/nova/nova.conf": filters} if filters is not None else {})
    view = View(flavors, hs, pl, sched, placement_skipped="" if pl else "not configured")
    report = Report(FlavorFiltersProbe.name, FlavorFiltersProbe.metrics)
    judge(view, FlavorFiltersProbe.Settings(**settings), report)
    return report.result(0, 0)


def value(result: Result, name: str, **labels: str) -> float | None:
    found = [s.value for s in result.samples if s.name == name and dict(s.labels) == labels]
    return found[0] if found else None


def about(result: Result, text: str) -> list[Any]:
    return [f for f in result.findings if text in f"{f.subject} {f.message}"]


WITH_AGG = (*DEFAULT_FILTERS, AIESF)


# == extra_specs_ops.match (verdicts as nova 34's own module gives them) ==================

@pytest.mark.parametrize(("value", "req", "expected"), [
    ("fake", "fake", True), ("fake", "QEMU", False), ("1", "1", True),
    ("12", "= 10", True), ("8", "= 10", False), ("10", "== 10.0", True), ("10", "!= 10", False),
    ("3", ">= 3", True), ("3", "<= 2", False),
    ("abc", "s== abc", True), ("abc", "s!= abc", False), ("b", "s> a", True), ("a", "s>= b", False),
    ("a", "s< b", True), ("a", "s<= a", True),
    ("x86_64 sse avx", "<in> avx", True), ("sse", "<in> avx", False),
    ("['sse', 'avx']", "<all-in> sse avx", True), ("['sse']", "<all-in> sse avx", False),
    ("v2", "<or> v1 <or> v2", True), ("v3", "<or> v1 <or> v2", False), ("v1", "<or> v1", True),
    ("x", "", False), ("", "", True), ("x", "= ", False), ("x", "unknownop 5", False),
])
def test_match_like_nova(value: str, req: str, expected: bool) -> None:
    assert match(value, req) is expected


@pytest.mark.parametrize(("value", "req", "exc"), [
    ("fake", "= 5", ValueError), ("5", "== abc", ValueError), ("x", "<or>", IndexError),
])
def test_match_raises_like_nova(value: str, req: str, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        match(value, req)


# == ComputeCapabilitiesFilter / AggregateInstanceExtraSpecsFilter per key ================

def test_ccf_ignores_unscoped_keys_unless_the_host_has_them() -> None:
    (h,) = hosts(node("c1", UUID1, stats={"num_instances": "1", "cpu_arch": "x86_64"}))
    assert ccf_verdict(h, "xxx", "123") is None  # since Newton: ignored
    assert ccf_verdict(h, "hypervisor_type", "fake") is True  # a HostState attribute
    assert ccf_verdict(h, "hypervisor_type", "QEMU") is False
    assert ccf_verdict(h, "cpu_arch", "x86_64") is True  # a static stats key (ironic's kind)
    assert ccf_verdict(h, "foo:bar", "1") is None  # another namespace
    assert ccf_verdict(h, "capabilities:hypervisor_type", "QEMU") is False
    assert ccf_verdict(h, "capabilities:nothing", "1") is False  # scoped and absent: fails
    assert ccf_verdict(h, "capabilities:cpu_info:arch", "x86_64") is True  # into the JSON
    assert ccf_verdict(h, "capabilities:cpu_info:features", "<in> sse") is True
    assert ccf_verdict(h, "capabilities:cpu_info:maxphysaddr:bits", ">= 40") is True
    assert ccf_verdict(h, "capabilities:hypervisor_version", ">= 1000") is True
    assert ccf_verdict(h, "capabilities:supported_instances", "<in> fake") is True


def test_ccf_does_not_judge_load_dependent_capabilities() -> None:
    from checks.flavor_filters import NotJudged
    (h,) = hosts(node("c1", UUID1, stats={"num_instances": "1", "num_proj_abc": "1"}))
    for key in ("num_instances", "capabilities:free_ram_mb", "free_disk_mb", "num_proj_abc",
                "capabilities:stats:num_instances"):
        with pytest.raises(NotJudged):
            ccf_verdict(h, key, "1")
    # a dynamic stats key this host does not have: ignored (unscoped), as nova does
    assert ccf_verdict(h, "num_proj_zzz", "1") is None


def test_aiesf_reads_unscoped_and_its_own_scope() -> None:
    (h,) = hosts(node("c1", UUID1), aggs={"c1": {"xxx": {"123"}, "ssd": {"true", "yes"}}})
    assert aiesf_verdict(h, "xxx", "123") is True
    assert aiesf_verdict(h, "yyy", "321") is False
    assert aiesf_verdict(h, "aggregate_instance_extra_specs:ssd", "yes") is True
    assert aiesf_verdict(h, "capabilities:hypervisor_type", "QEMU") is None
    assert aiesf_verdict(h, "hw:cpu_policy", "dedicated") is None
    assert aiesf_verdict(h, "group_policy", "none") is False  # unscoped: nova checks it too


# == the seed's case and the research's measured verdicts ================================

def test_xxx_breaks_only_the_aggregate_filter() -> None:
    fl = flavor({"xxx": "123", "yyy": "321"})
    assert judged([fl]).findings == ()  # default filters: ComputeCapabilitiesFilter ignores it
    result = judged([fl], filters=WITH_AGG)
    (f,) = result.findings
    assert f.severity is Severity.CRITICAL and f.subject == "flavor f1 (m1)"
    assert AIESF in f.message and "xxx=123" in f.message and "yyy=321" in f.message
    assert "openstack flavor unset --property xxx f1" in f.remediation
    assert "openstack aggregate set --property xxx=123 AGGREGATE" in f.remediation
    assert value(result, "healthd_flavor_filters_unschedulable", visibility="public") == 1
    assert value(result, "healthd_flavor_filters_flavor_hosts", flavor="f1") == 0


def test_aggregate_metadata_makes_it_schedulable_on_that_host() -> None:
    fl = flavor({"xxx": "123", "yyy": "321"})
    hs = hosts(node("c1", UUID1), node("c2", UUID2), aggs={"c1": {"xxx": {"123"}, "yyy": {"321"}}})
    result = judged([fl], hs, filters=WITH_AGG)
    assert result.findings == ()
    assert value(result, "healthd_flavor_filters_flavor_hosts", flavor="f1") == 1


def test_capabilities_hypervisor_type_fails_on_fake_hosts() -> None:
    fl = flavor({"capabilities:hypervisor_type": "QEMU"})
    result = judged([fl])
    (f,) = result.findings
    assert f.severity is Severity.CRITICAL and CCF in f.message
    assert f.remediation == "openstack flavor unset --property capabilities:hypervisor_type f1"
    assert result.status is Status.CRITICAL
    # not when ComputeCapabilitiesFilter is off
    assert judged([fl], filters=("ComputeFilter",)).findings == ()
    # and fine where a host is QEMU
    assert judged([fl], hosts(node("c1", UUID1), node("c2", UUID2, hv="QEMU"))).findings == ()


def test_stats_key_counts_and_load_keys_do_not_page() -> None:
    assert judged([flavor({"num_instances": "1"})]).findings == ()
    assert judged([flavor({"capabilities:free_ram_mb": ">= 99999999"})]).findings == ()


def test_a_key_no_single_host_meets_together() -> None:
    hs = hosts(node("c1", UUID1, hv="QEMU"), node("c2", UUID2, cpu_info='{"arch": "aarch64"}'))
    fl = flavor({"capabilities:hypervisor_type": "QEMU", "capabilities:cpu_info:arch": "aarch64"})
    (f,) = judged([fl], hs).findings
    assert "together" in f.message


def test_maxphysaddr_bits_rewrite() -> None:
    assert judged([flavor({"hw:maxphysaddr_bits": "40"})]).findings == ()
    (f,) = judged([flavor({"hw:maxphysaddr_bits": "52"})]).findings
    assert "capabilities:cpu_info:maxphysaddr:bits" in f.message


def test_operator_that_raises_in_nova() -> None:
    (f,) = judged([flavor({"capabilities:hypervisor_type": "= 5"})]).findings
    assert "raises ValueError" in f.message and f.severity is Severity.CRITICAL


# == placement ==========================================================================

def test_flavor_wider_than_every_max_unit() -> None:
    pl = placement(UUID1, UUID2)
    result = judged([flavor(vcpus=2000)], pl=pl)
    (f,) = result.findings
    assert "vcpus=2000" in f.message and "placement" in f.message
    # a size beyond every node is capacity, not a typo: WARNING, out of the critical count
    assert f.severity is Severity.WARNING and "too large for every compute node" in f.message
    assert value(result, "healthd_flavor_filters_unschedulable", visibility="public") == 0
    assert value(result, "healthd_flavor_filters_too_large", visibility="public") == 1
    assert value(result, "healthd_flavor_filters_placement_checked") == 1
    assert judged([flavor(vcpus=1000)], pl=pl).findings == ()
    # resources:VCPU=0 (ironic-style) removes the VCPU request entirely
    assert judged([flavor({"resources:VCPU": "0"}, vcpus=2000)], pl=pl).findings == ()
    # max_unit, not total
    (f,) = judged([flavor(vcpus=600)], pl=placement(UUID1, UUID2, vcpu_max=512)).findings
    assert "vcpus=600" in f.message


def test_root_disk_larger_than_every_node_is_only_info() -> None:
    """A boot from volume requests no root DISK_GB (nova/scheduler/utils.py
    resources_from_request_spec, is_bfv): the flavor still works for it."""
    result = judged([flavor(root_gb=700000)], pl=placement(UUID1, UUID2))
    (f,) = result.findings
    assert f.severity is Severity.INFO and "boot from volume" in f.message
    assert value(result, "healthd_flavor_filters_unschedulable", visibility="public") == 0
    assert value(result, "healthd_flavor_filters_too_large", visibility="public") == 1


def test_a_typo_and_a_size_together_stay_critical() -> None:
    result = judged([flavor({"trait:CUSTOM_NOPE": "required"}, vcpus=2000)],
                    pl=placement(UUID1, UUID2, known_traits={"CUSTOM_NOPE"}))
    assert [f.severity for f in result.findings] == [Severity.CRITICAL]
    assert value(result, "healthd_flavor_filters_unschedulable", visibility="public") == 1


def test_resources_and_traits() -> None:
    pl = placement(UUID1, UUID2, traits={UUID1: {"HW_CPU_X86_AVX"}})
    assert judged([flavor({"trait:HW_CPU_X86_AVX": "required"})], pl=pl).findings == ()
    (f,) = judged([flavor({"resources:VCPU": "5000"})], pl=pl).findings
    assert "resources:VCPU=5000" in f.message
    assert f.remediation == "openstack flavor unset --property resources:VCPU f1"
    (f,) = judged([flavor({"trait:COMPUTE_STATUS_DISABLED": "required"})], pl=pl).findings
    assert "trait:COMPUTE_STATUS_DISABLED" in f.message
    (f,) = judged([flavor({"trait:CUSTOM_NOPE": "forbidden"})], pl=pl).findings
    assert "No such trait" in f.message
    (f,) = judged([flavor({"resources:CUSTOM_GPU": "1"})], pl=pl).findings
    assert "Invalid resource class" in f.message
    everywhere = placement(UUID1, UUID2, traits={UUID1: {"HW_CPU_X86_AVX"}, UUID2: {"HW_CPU_X86_AVX"}})
    (f,) = judged([flavor({"trait:HW_CPU_X86_AVX": "forbidden"})], pl=everywhere).findings
    assert "trait:HW_CPU_X86_AVX=forbidden" in f.message
    # a value nova does not understand is ignored by nova (RequestGroup.add_trait / add_resource)
    assert judged([flavor({"trait:CUSTOM_NOPE": "yes", "resources:VCPU": "-1"})], pl=pl).findings == ()


def test_placement_request_like_nova() -> None:
    req = placement_request(flavor({"hw:cpu_policy": "dedicated", "resources1:CUSTOM_X": "2",
                                    "trait1:CUSTOM_T": "required", "group_policy": "isolate"},
                                   vcpus=4, memory_mb=512, root_gb=10, ephemeral_gb=5, swap=1025))
    assert req.groups[None].resources == {"PCPU": 4, "MEMORY_MB": 512, "DISK_GB": 17}
    assert req.groups["1"].resources == {"CUSTOM_X": 2} and req.groups["1"].required == {"CUSTOM_T"}
    assert req.group_policy == "isolate"


def test_two_numbered_groups_without_group_policy() -> None:
    pl = placement(UUID1, UUID2)
    (f,) = judged([flavor({"resources1:VCPU": "1", "resources2:VCPU": "1"})], pl=pl).findings
    assert "group_policy" in f.message


def test_placement_skipped_is_said() -> None:
    result = judged([flavor(vcpus=5000)], pl=None)
    assert result.findings[0].severity is Severity.INFO and "skipped" in result.findings[0].message
    assert value(result, "healthd_flavor_filters_placement_checked") == 0


# == who is affected, host states ========================================================

def test_severity_by_visibility() -> None:
    bad = {"capabilities:hypervisor_type": "QEMU"}
    result = judged([flavor(bad, "pub"), flavor(bad, "priv", is_public=False, projects=2),
                     flavor(bad, "adm", is_public=False), flavor(bad, "off", disabled=True)])
    sev = {f.subject.split()[1]: f.severity for f in result.findings}
    assert sev == {"pub": Severity.CRITICAL, "priv": Severity.WARNING, "adm": Severity.INFO,
                   "off": Severity.INFO}
    assert value(result, "healthd_flavor_filters_unschedulable", visibility="private") == 1
    assert value(result, "healthd_flavor_filters_unschedulable", visibility="admin_only") == 1
    assert value(result, "healthd_flavor_filters_unschedulable", visibility="disabled") == 1


def test_only_down_or_disabled_hosts_take_it() -> None:
    hs = hosts(node("c1", UUID1, hv="QEMU"), node("c2", UUID2), states={"c1": "down"})
    result = judged([flavor({"capabilities:hypervisor_type": "QEMU"})], hs)
    (f,) = result.findings
    assert f.severity is Severity.WARNING and "1 down" in f.message
    assert value(result, "healthd_flavor_filters_unschedulable", visibility="public") == 0
    assert value(result, "healthd_flavor_filters_hosts", state="down") == 1
    assert value(result, "healthd_flavor_filters_hosts", state="eligible") == 1


def test_no_eligible_host_is_one_warning() -> None:
    hs = hosts(node("c1", UUID1), states={"c1": "disabled"})
    result = judged([flavor({"capabilities:hypervisor_type": "QEMU"}), flavor(flavorid="f2")], hs)
    (f,) = result.findings
    assert f.severity is Severity.WARNING and "no compute node is enabled and up" in f.message


def test_not_reported_node_is_not_counted() -> None:
    hs = hosts(node("c1", UUID1), node("c2", UUID2, hv="QEMU", free_disk_gb=None))
    assert hs[1].state == "not_reported"
    (f,) = judged([flavor({"capabilities:hypervisor_type": "QEMU"})], hs).findings
    assert f.severity is Severity.CRITICAL


def test_ignore_flavors_and_series_cap() -> None:
    bad = {"capabilities:hypervisor_type": "QEMU"}
    result = judged([flavor(bad, "a"), flavor(bad, "b", name="gpu"), flavor({}, "c")],
                    ignore_flavors=["gpu"], max_flavor_series=1)
    assert [f.subject for f in result.findings] == ["flavor a (m1)"]
    assert [dict(s.labels) for s in result.samples if s.name == "healthd_flavor_filters_flavor_hosts"] \
        == [{"flavor": "a"}]


def test_max_findings_rolls_up() -> None:
    bad = {"capabilities:hypervisor_type": "QEMU"}
    result = judged([flavor(bad, f"f{i}") for i in range(5)], max_findings=2)
    assert len(result.findings) == 3 and "3 more" in result.findings[-1].message


# == the scheduler's nova.conf ===========================================================

def test_scheduler_files(tmp_path: Path) -> None:
    a = tmp_path / "a.conf"
    b = tmp_path / "b.conf"
    a.write_text("[filter_scheduler]\nenabled_filters = ComputeFilter, AggregateInstanceExtraSpecsFilter\n")
    b.write_text("[DEFAULT]\ndebug = true\n")
    sched = read_scheduler_files([str(a), str(b), str(tmp_path / "none*.conf")])
    assert sched.lists[str(a)] == ("ComputeFilter", AIESF)
    assert sched.lists[str(b)] == DEFAULT_FILTERS  # not written: nova's default
    assert not sched.agree and sched.enabled == {*DEFAULT_FILTERS, AIESF}
    assert sched.missing == [str(tmp_path / "none*.conf")]
    view = View([flavor({"xxx": "1"})], hosts(node("c1", UUID1)), None, sched)
    report = Report(FlavorFiltersProbe.name, FlavorFiltersProbe.metrics)
    judge(view, FlavorFiltersProbe.Settings(), report)
    result = report.result(0, 0)
    assert about(result, "disagree") and about(result, "matches no file")
    assert about(result, "flavor f1")[0].severity is Severity.CRITICAL
    assert value(result, "healthd_flavor_filters_scheduler_files_agree") == 0
    assert value(result, "healthd_flavor_filters_filter_enabled", filter=AIESF) == 1


def test_unparsable_scheduler_file(tmp_path: Path) -> None:
    bad = tmp_path / "nova.conf"
    bad.write_text("[filter_scheduler\nenabled_filters = X\n")
    sched = read_scheduler_files([str(bad)])
    assert sched.problems and not sched.lists and sched.enabled == set(DEFAULT_FILTERS)


def test_hosts_are_grouped_only_by_what_flavors_name() -> None:
    from checks.flavor_filters import group_hosts
    hs = hosts(node("c1", UUID1), node("c2", UUID2), node("c3", "33333333-0000-4000-8000-000000000003"))
    pl = placement(UUID1, UUID2, "33333333-0000-4000-8000-000000000003")
    assert [g.count for g in group_hosts(hs, [flavor({"capabilities:hypervisor_type": "fake"})], pl)] == [3]
    assert len(group_hosts(hs, [flavor({"capabilities:host": "c2"})], pl)) == 3
    result = judged([flavor({"capabilities:host": "c2"}), flavor({"xxx": "1"}, "f2")], hs, pl=pl)
    assert value(result, "healthd_flavor_filters_flavor_hosts", flavor="f1") == 1
    assert value(result, "healthd_flavor_filters_flavor_hosts", flavor="f2") == 3


def test_ironic_node_in_use_is_not_an_unschedulable_flavor() -> None:
    """nova/virt/ironic/driver.py update_provider_tree: reserved = total while the node is in use;
    the baremetal flavor asks for its class only (resources:VCPU=0 ...), capabilities in stats."""
    hs = hosts(node("ir1", UUID1, hv="ironic", stats={"cpu_arch": "x86_64", "boot_mode": "uefi"}))
    pl = placement_from_rows(
        [{"id": 1, "uuid": UUID1, "root_id": 1}],
        [{"rp_id": 1, "name": "CUSTOM_BAREMETAL_GOLD", "total": 1, "reserved": 1, "min_unit": 1,
          "max_unit": 1, "step_size": 1, "allocation_ratio": 1.0}],
        [], [{"kind": "rc", "name": "CUSTOM_BAREMETAL_GOLD"}, {"kind": "rc", "name": "VCPU"}])
    gold = flavor({"resources:CUSTOM_BAREMETAL_GOLD": "1", "resources:VCPU": "0", "resources:MEMORY_MB": "0",
                   "resources:DISK_GB": "0", "cpu_arch": "x86_64", "capabilities:boot_mode": "uefi"},
                  vcpus=64, memory_mb=262144, root_gb=400)
    assert judged([gold], hs, pl=pl).findings == ()
    two = flavor({**gold.specs, "resources:CUSTOM_BAREMETAL_GOLD": "2"}, vcpus=64)
    (f,) = judged([two], hs, pl=pl).findings
    assert "resources:CUSTOM_BAREMETAL_GOLD=2" in f.message


def test_pre_pike_option_is_ignored_and_said(tmp_path: Path) -> None:
    old = tmp_path / "nova.conf"
    old.write_text("[DEFAULT]\nscheduler_default_filters = AggregateInstanceExtraSpecsFilter,ComputeFilter\n")
    sched = read_scheduler_files([str(old)])
    assert sched.lists[str(old)] == DEFAULT_FILTERS and sched.ignored_old == [str(old)]
    view = View([flavor({"xxx": "1"})], hosts(node("c1", UUID1)), None, sched)
    report = Report(FlavorFiltersProbe.name, FlavorFiltersProbe.metrics)
    judge(view, FlavorFiltersProbe.Settings(), report)
    result = report.result(0, 0)
    (f,) = about(result, "scheduler_default_filters")
    assert f.severity is Severity.WARNING and not about(result, "flavor f1")
