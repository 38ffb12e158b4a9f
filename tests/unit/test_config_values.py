"""config_values on plain files: each value kind as oslo.config parses it, against the shipped option data.

Files are written under tmp_path and judged with the data of healthd/openstack/optdata (nova 34.0.0,
keystone 30.0.0, ...); nothing of nova is imported. The lab's real files are in
tests/e2e/test_probe_config_values.py.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from checks.config_values import (
    M_DATA,
    M_FILE,
    M_OPTIONS,
    M_PROBLEMS,
    ConfigValuesProbe,
    FileEntry,
    FileResult,
    check_path,
    judge,
)
from healthd.model import Report, Severity
from healthd.openstack import optdata
from healthd.redact import redact

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "lab"))
from healthd_lab.faults_config import TYPO_PASSWORD, TYPOS  # noqa: E402


def check(tmp_path: Path, text: str, name: str = "nova.conf", project: str = "") -> FileResult:
    path = tmp_path / name
    path.write_text(text)
    return check_path(str(path), project or name.split(".")[0].split("-")[0])


def found(result: FileResult, severity: Severity | None = None) -> dict[str, str]:
    """'[section] option' -> message of the problems (of one severity)."""
    return {f"[{p.section}] {p.option}": p.message for p in result.problems
            if severity is None or p.severity is severity}


def test_the_shipped_data_is_the_labs_release() -> None:
    pins = {}
    for line in (REPO / "lab" / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if match:
            pins[match.group(1)] = match.group(2)
    versions = optdata.versions()
    for dist in ("nova", "keystone", "openstack-placement", "glance"):
        assert versions[dist] == pins[dist], dist
    assert versions["oslo.config"] == "10.7.0"
    assert versions["neutron"] == "29.0.0"  # the same 2026.2 series release (sdists of 2026-09-30)
    assert optdata.projects() == ["glance", "keystone", "neutron", "nova", "placement"]
    for project in optdata.projects():
        data = optdata.load(project)
        assert data.version == versions["openstack-placement" if project == "placement" else project]
        assert "DEFAULT" in data.groups


def test_the_notes_typos_and_others(tmp_path: Path) -> None:
    result = check(tmp_path, TYPOS, "nova-typos.conf")
    assert result.release == "nova 34.0.0"
    critical = found(result, Severity.CRITICAL)
    assert "invalid literal for int() with base 10: 'abc'" in critical["[DEFAULT] report_interval"]
    assert "Valid values are [kvm, lxc, qemu, parallels], but found 'kvmm'" in critical["[libvirt] virt_type"]
    assert "'maybe'" in critical["[DEFAULT] debug"]
    assert "'70000'" in critical["[vnc] novncproxy_port"]
    assert "did you mean 'password'?" in critical["[placement] auth_type"]
    assert "NoSuchOptError" in critical["[placement] password"]
    warning = found(result, Severity.WARNING)
    assert "did you mean enabled_filters?" in warning["[filter_scheduler] enabled_filter"]
    assert "removed in nova 32.0.0" in warning["[DEFAULT] auth_strategy"]
    assert "deprecated name of [vnc] enabled" in warning["[DEFAULT] vnc_enabled"]
    # $my_ip is set in the file: substituted, then parsed as a host address
    assert "[vnc] server_listen" not in found(result)
    for problem in result.problems:
        assert "nova 34.0.0" in problem.message or problem.option == "*"


def test_a_secret_with_a_bad_value_is_never_echoed(tmp_path: Path) -> None:
    result = check(tmp_path, TYPOS, "nova-typos.conf")
    text = " ".join(p.message + p.fix + p.subject for p in result.problems)
    assert TYPO_PASSWORD not in text
    assert "secret-4411" not in text and "$secret" not in text
    # registered with the redaction path: any later log line is masked
    assert redact(f"x {TYPO_PASSWORD} y") == "x *** y"
    # a secret option by name, of a type that rejects the value: the message has no value
    result = check(tmp_path, "[keystone_authtoken]\nmemcache_secret_key = ${nope}Zq7\n"
                   "[DEFAULT]\ntransport_url = rabbit://u:Pw9$x@h/\n")
    text = " ".join(p.message for p in result.problems)
    assert "Zq7" not in text and "Pw9" not in text
    assert set(found(result, Severity.CRITICAL)) == {"[keystone_authtoken] memcache_secret_key",
                                                     "[DEFAULT] transport_url"}


@pytest.mark.parametrize(("section", "option", "good", "bad", "reason"), [
    ("DEFAULT", "report_interval", "10", "ten", "invalid literal for int()"),
    ("DEFAULT", "shutdown_timeout", "0", "-1", "greater than or equal to 0"),  # IntOpt min=0
    ("DEFAULT", "debug", "True", "enabled", "Unexpected boolean value"),
    ("DEFAULT", "cpu_allocation_ratio", "4.0", "four", "could not convert string to float"),
    ("vnc", "novncproxy_port", "6080", "6080x", "invalid literal for int()"),
    ("vnc", "server_listen", "10.0.0.5", "10.0.0.300 bad", "host address"),
    ("DEFAULT", "host", "compute-1.example.org", "bad_host name!", ""),
    ("vnc", "novncproxy_base_url", "http://10.0.0.5:6080/vnc_lite.html", "http//novnc",
     "host, scheme were required but missing"),
    ("libvirt", "virt_type", "qemu", "QEMU", "Valid values are"),
    ("DEFAULT", "instance_usage_audit_period", "month@15", "weekly", "doesn't match regex"),  # regex
    ("placement", "retriable_status_codes", "503,504", "503,five", "invalid literal for int()"),  # int list
    ("DEFAULT", "reserved_huge_pages", "node:0,size:2048,count:64", "node=0", "NAME:VALUE"),  # dict
    ("cinder", "catalog_info", "volumev3::publicURL", "volumev3", "doesn't match regex"),
])
def test_each_value_kind(tmp_path: Path, section: str, option: str, good: str, bad: str, reason: str) -> None:
    ok = check(tmp_path, f"[{section}]\n{option} = {good}\n")
    assert ok.problems == [] and ok.checked == 1, ok.problems
    wrong = check(tmp_path, f"[{section}]\n{option} = {bad}\n")
    [problem] = wrong.problems
    assert problem.severity is Severity.CRITICAL
    assert reason in problem.message
    assert "ConfigFileValueError" in problem.message


def test_a_range_and_a_multi_valued_option(tmp_path: Path) -> None:
    spec = {"k": "range", "min": 0, "max": 100, "inclusive": True}
    assert optdata.build_type(spec)("10-20") == range(10, 21)
    with pytest.raises(ValueError):
        optdata.build_type(spec)("10-200")
    multi = check(tmp_path, "[oslo_messaging_notifications]\ndriver = messagingv2\ndriver = log\n")
    assert multi.problems == [] and multi.checked == 1


def test_substitution_as_oslo_config_does_it(tmp_path: Path) -> None:
    ok = check(tmp_path, "[DEFAULT]\nmy_ip = 10.0.0.5\n[vnc]\nserver_listen = $my_ip\n"
               "server_proxyclient_address = ${my_ip}\n")
    assert ok.problems == [] and ok.checked == 3
    bad = check(tmp_path, "[DEFAULT]\nmy_ip = 10.0.0.5 and more\n[vnc]\nserver_listen = $my_ip\n")
    assert "[vnc] server_listen" in found(bad, Severity.CRITICAL)
    # $state_path is not in the file: the service substitutes its own default; not judged
    unset = check(tmp_path, "[oslo_concurrency]\nlock_path = $state_path/lock\n")
    assert unset.problems == [] and unset.unchecked == 1
    # a $ that names no option: NoSuchOptError in the service; escaped it is fine
    typo = check(tmp_path, "[DEFAULT]\ninstance_name_template = inst-$nothere\n")
    assert "NoSuchOptError" in found(typo, Severity.CRITICAL)["[DEFAULT] instance_name_template"]
    assert check(tmp_path, "[DEFAULT]\ninstance_name_template = inst-$$nothere\n").problems == []


def test_names_in_the_wrong_place_and_unknown_sections(tmp_path: Path) -> None:
    result = check(tmp_path, "[DEFAULT]\nvirt_type = kvm\n[libvirtt]\nvirt_type = kvm\n[mystuff]\nx = 1\n")
    warning = found(result, Severity.WARNING)
    assert "it is an option of [libvirt]" in warning["[DEFAULT] virt_type"]
    assert "did you mean [libvirt]" in warning["[libvirtt] *"]
    assert "[mystuff] x" not in warning and result.unknown_sections == ["libvirtt", "mystuff"]


def test_deprecated_for_removal_is_info(tmp_path: Path) -> None:
    result = check(tmp_path, "[libvirt]\nlive_migration_uri = qemu+ssh://%s/system\n")
    [problem] = result.problems
    assert problem.severity is Severity.INFO
    assert "deprecated for removal in nova 34.0.0 since 15.0.0" in problem.message


def test_keystoneauth_sections_take_their_plugins_options(tmp_path: Path) -> None:
    appcred = ("[placement]\nauth_type = v3applicationcredential\nauth_url = http://k:5000/v3\n"
               "application_credential_id = 0123\napplication_credential_secret = Sekrit-77\n"
               "region_name = RegionOne\nvalid_interfaces = internal\n")
    result = check(tmp_path, appcred)
    assert result.problems == [], result.problems  # oslo-config-validator's false alarm
    assert redact("Sekrit-77") == "***"
    password = appcred.replace("v3applicationcredential", "password")
    warning = found(check(tmp_path, password), Severity.WARNING)
    assert "nor of its auth plugin 'password'" in warning["[placement] application_credential_id"]
    authtoken = ("[keystone_authtoken]\nwww_authenticate_uri = http://k:5000\nauth_url = http://k:5000\n"
                 "auth_type = password\nproject_domain_name = Default\nuser_domain_name = Default\n"
                 "project_name = service\nusername = nova\npassword = pw\nmemcached_servers = m:11211\n"
                 "service_token_roles_required = true\n")
    assert check(tmp_path, authtoken).problems == []
    no_type = check(tmp_path, "[service_user]\nsend_service_user_token = true\n"
                    "application_credential_id = 1\nregion_name = RegionOne\n")
    assert "auth plugin options are read only with an auth_type" in \
        found(no_type, Severity.WARNING)["[service_user] application_credential_id"]
    # an adapter option nova does not read in [service_user] (kolla writes it): harmless, INFO
    assert "harmless" in found(no_type, Severity.INFO)["[service_user] region_name"]
    other = check(tmp_path, "[neutron]\nauth_type = v3kerberosx\n")
    assert "[neutron] auth_type" in found(other, Severity.WARNING)


def test_dynamic_groups(tmp_path: Path) -> None:
    mdev = check(tmp_path, "[devices]\nenabled_mdev_types = nvidia-35\n[mdev_nvidia-35]\n"
                 "device_addresses = 0000:84:00.0\nmdev_class = vgpu\n")
    assert list(found(mdev, Severity.CRITICAL)) == ["[mdev_nvidia-35] mdev_class"]  # regex ^(VGPU|CUSTOM_..)$
    privsep = check(tmp_path, "[privsep_osbrick]\nhelper_command = sudo privsep-helper\n")
    assert privsep.problems == [] and privsep.checked == 1
    glance = check(tmp_path, "[DEFAULT]\nenabled_backends = fast:rbd, cheap:file\n"
                   "[glance_store]\ndefault_backend = fast\n[fast]\nrbd_store_pool = images\n"
                   "rbd_store_chunk_size = eight\n[cheap]\n"
                   "filesystem_store_datadir = /var/lib/glance/images\n"
                   "[os_glance_staging_store]\nfilesystem_store_datadir = /var/lib/glance/staging\n",
                   "glance-api.conf")
    assert list(found(glance)) == ["[fast] rbd_store_chunk_size"]


def test_typical_devstack_and_kolla_files_do_not_page(tmp_path: Path) -> None:
    """Files as kolla-ansible / devstack write them for this series (the eventlet-era bind_host,
    bind_port, workers, api_paste_config of glance and neutron are gone in glance 33 / neutron 29:
    a file that still has them gets the WARNING, rightly)."""
    for name, text in KOLLA.items():
        result = check(tmp_path, text, name)
        assert result.error == ""
        bad = [(p.severity.name, p.subject, p.message) for p in result.problems
               if p.severity >= Severity.WARNING]
        assert bad == [], name


def test_files_that_cannot_be_checked(tmp_path: Path) -> None:
    broken = check(tmp_path, "[DEFAULT\nx = 1\n")
    assert broken.fatal and "cannot parse" in broken.error
    other = check(tmp_path, "[DEFAULT]\nx = 1\n", "cinder.conf")
    assert "no option data for 'cinder'" in other.error and not other.fatal
    forced = check(tmp_path, "[DEFAULT]\nreport_interval = x\n", "cinder.conf", project="nova")
    assert list(found(forced, Severity.CRITICAL)) == ["[DEFAULT] report_interval"]


def test_judge_metrics_and_settings(tmp_path: Path) -> None:
    typos = check(tmp_path, TYPOS, "nova-typos.conf")
    fine = check(tmp_path, "[DEFAULT]\ndebug = true\n", "keystone.conf")
    report = Report("config_values", ConfigValuesProbe.metrics)
    judge(report, [typos, fine], ["/nowhere/*.conf"])
    values = {(s.name, tuple(sorted(s.labels))): s.value for s in report.samples}
    assert values[(M_FILE, (("file", typos.path), ("project", "nova")))] == 1
    assert values[(M_PROBLEMS, (("file", typos.path), ("severity", "critical")))] == 6
    assert values[(M_PROBLEMS, (("file", fine.path), ("severity", "warning")))] == 0
    assert values[(M_OPTIONS, (("file", fine.path),))] == 1
    assert values[(M_DATA, (("project", "keystone"), ("version", "30.0.0")))] == 1
    assert any(f.subject == "files pattern /nowhere/*.conf" for f in report.findings)
    quiet = Report("config_values", ConfigValuesProbe.metrics)
    judge(quiet, [typos], [], unknown_options=False, deprecated=False)
    assert {f.severity for f in quiet.findings} == {Severity.CRITICAL}
    settings = ConfigValuesProbe.Settings(files=["/etc/nova/*.conf",
                                                 {"path": "/etc/x.conf", "project": "nova"}])
    assert isinstance(settings.files[1], FileEntry)
    with pytest.raises(ValueError):
        ConfigValuesProbe.Settings(files=[{"path": "/etc/x.conf", "projekt": "nova"}])


KOLLA = {
    "nova.conf": """
[DEFAULT]
debug = False
log_dir = /var/log/kolla/nova
state_path = /var/lib/nova
allow_resize_to_same_host = true
compute_driver = libvirt.LibvirtDriver
my_ip = 10.0.0.10
instance_usage_audit = True
instance_usage_audit_period = hour
transport_url = rabbit://openstack:Pw@10.0.0.10:5672,openstack:Pw@10.0.0.11:5672//
shutdown_timeout = 0
instance_name_template = instance-%08x
pointer_model = ps2mouse
force_config_drive = False
graceful_shutdown_timeout = 5
rootwrap_config = /etc/nova/rootwrap.conf
[conductor]
workers = 5
[vnc]
enabled = True
novncproxy_host = 10.0.0.10
novncproxy_port = 6080
server_listen = $my_ip
server_proxyclient_address = $my_ip
novncproxy_base_url = http://10.0.0.100:6080/vnc_lite.html
[serial_console]
enabled = false
[oslo_middleware]
enable_proxy_headers_parsing = True
[oslo_concurrency]
lock_path = /var/lib/nova/tmp
[glance]
cafile =
num_retries = 3
debug = False
valid_interfaces = internal
[cinder]
catalog_info = volumev3:cinderv3:internalURL
os_region_name = RegionOne
auth_url = http://10.0.0.100:5000
auth_type = password
project_domain_name = Default
user_domain_id = default
project_name = service
username = cinder
password = Pw
cafile =
[neutron]
metadata_proxy_shared_secret = Pw
service_metadata_proxy = true
auth_url = http://10.0.0.100:5000
auth_type = password
cafile =
project_domain_name = Default
user_domain_id = default
project_name = service
username = neutron
password = Pw
region_name = RegionOne
valid_interfaces = internal
[database]
connection = mysql+pymysql://nova:Pw@10.0.0.100:3306/nova
connection_recycle_time = 10
max_pool_size = 1
max_retries = -1
[api_database]
connection = mysql+pymysql://nova_api:Pw@10.0.0.100:3306/nova_api
connection_recycle_time = 10
max_pool_size = 1
max_retries = -1
[cache]
backend = oslo_cache.memcache_pool
enabled = True
memcache_servers = 10.0.0.10:11211,10.0.0.11:11211
[keystone_authtoken]
service_type = compute
www_authenticate_uri = http://10.0.0.100:5000
auth_url = http://10.0.0.100:5000
auth_type = password
project_domain_id = default
user_domain_id = default
project_name = service
username = nova
password = Pw
cafile =
region_name = RegionOne
memcache_security_strategy = ENCRYPT
memcache_secret_key = Pw
memcached_servers = 10.0.0.10:11211,10.0.0.11:11211
service_token_roles_required = True
[libvirt]
connection_uri = qemu+tcp://10.0.0.10/system
live_migration_inbound_addr = 10.0.0.10
images_type = rbd
images_rbd_pool = vms
images_rbd_ceph_conf = /etc/ceph/ceph.conf
rbd_user = nova
disk_cachemodes = network=writeback
hw_disk_discard = unmap
rbd_secret_uuid = 5e0f7b3c-6d28-4b8e-9a76-0b2ad4b5c1f0
virt_type = kvm
cpu_mode = host-passthrough
[upgrade_levels]
compute = auto
[oslo_messaging_notifications]
transport_url = rabbit://openstack:Pw@10.0.0.10:5672//
driver = messagingv2
topics = notifications
[oslo_messaging_rabbit]
amqp_durable_queues = true
rabbit_quorum_queue = true
rabbit_transient_quorum_queue = true
use_queue_manager = true
[privsep_entrypoint]
helper_command = sudo nova-rootwrap /etc/nova/rootwrap.conf privsep-helper --config-file /etc/nova/nova.conf
[guestfs]
debug = False
[placement]
auth_type = password
auth_url = http://10.0.0.100:5000
username = placement
password = Pw
user_domain_name = Default
project_name = service
project_domain_name = Default
region_name = RegionOne
cafile =
valid_interfaces = internal
[notifications]
notify_on_state_change = vm_and_task_state
notification_format = unversioned
[barbican]
auth_endpoint = http://10.0.0.100:5000
[service_user]
send_service_user_token = true
auth_url = http://10.0.0.100:5000
auth_type = password
project_domain_id = default
user_domain_id = default
project_name = service
username = nova
password = Pw
cafile =
region_name = RegionOne
valid_interfaces = internal
[scheduler]
max_attempts = 10
discover_hosts_in_cells_interval = 60
[filter_scheduler]
enabled_filters = ComputeFilter,ComputeCapabilitiesFilter,ImagePropertiesFilter,ServerGroupAntiAffinityFilter
available_filters = nova.scheduler.filters.all_filters
[workarounds]
skip_cpu_compare_on_dest = True
[os_vif_ovs]
ovsdb_connection = tcp:127.0.0.1:6640
[wsgi]
api_paste_config = /etc/nova/api-paste.ini
[key_manager]
backend = barbican
""",
    "keystone.conf": """
[DEFAULT]
debug = False
log_file = /var/log/kolla/keystone/keystone.log
use_stderr = True
transport_url = rabbit://openstack:Pw@10.0.0.10:5672//
public_endpoint = https://cloud.example.org:5000
max_token_size = 255
[database]
connection = mysql+pymysql://keystone:Pw@10.0.0.100:3306/keystone
connection_recycle_time = 10
max_pool_size = 1
max_retries = -1
[token]
revoke_by_id = False
provider = fernet
expiration = 86400
allow_expired_window = 172800
[fernet_tokens]
max_active_keys = 3
key_repository = /etc/keystone/fernet-keys
[cache]
backend = oslo_cache.memcache_pool
enabled = True
memcache_servers = 10.0.0.10:11211
[oslo_messaging_notifications]
transport_url = rabbit://openstack:Pw@10.0.0.10:5672//
driver = noop
[oslo_middleware]
enable_proxy_headers_parsing = True
[identity]
domain_specific_drivers_enabled = True
domain_config_dir = /etc/keystone/domains
password_hash_rounds = 12
[auth]
methods = password,token,openid,application_credential
[security_compliance]
lockout_failure_attempts = 5
lockout_duration = 1800
unique_last_password_count = 5
[federation]
trusted_dashboard = https://cloud.example.org/auth/websso/
""",
    "placement.conf": """
[DEFAULT]
debug = False
state_path = /var/lib/placement
[api]
auth_strategy = keystone
[placement_database]
connection = mysql+pymysql://placement:Pw@10.0.0.100:3306/placement
connection_recycle_time = 10
max_retries = -1
max_pool_size = 1
[keystone_authtoken]
service_type = placement
www_authenticate_uri = http://10.0.0.100:5000
auth_url = http://10.0.0.100:5000
auth_type = password
project_domain_id = default
user_domain_id = default
project_name = service
username = placement
password = Pw
memcache_security_strategy = ENCRYPT
memcache_secret_key = Pw
memcached_servers = 10.0.0.10:11211
[oslo_middleware]
enable_proxy_headers_parsing = True
[placement]
randomize_allocation_candidates = true
""",
    "glance-api.conf": """
[DEFAULT]
debug = False
log_file = /var/log/kolla/glance/glance-api.log
show_multiple_locations = False
transport_url = rabbit://openstack:Pw@10.0.0.10:5672//
enabled_backends = file:file
[database]
connection = mysql+pymysql://glance:Pw@10.0.0.100:3306/glance
connection_recycle_time = 10
max_pool_size = 1
max_retries = -1
[keystone_authtoken]
service_type = image
www_authenticate_uri = http://10.0.0.100:5000
auth_url = http://10.0.0.100:5000
auth_type = password
project_domain_id = default
user_domain_id = default
project_name = service
username = glance
password = Pw
memcache_security_strategy = ENCRYPT
memcache_secret_key = Pw
memcached_servers = 10.0.0.10:11211
[paste_deploy]
flavor = keystone
[glance_store]
default_backend = file
[file]
filesystem_store_datadir = /var/lib/glance/images/
[os_glance_staging_store]
filesystem_store_datadir = /var/lib/glance/staging
[oslo_middleware]
enable_proxy_headers_parsing = True
[oslo_messaging_notifications]
transport_url = rabbit://openstack:Pw@10.0.0.10:5672//
driver = messagingv2
[oslo_concurrency]
lock_path = /var/lib/glance/tmp
[image_format]
require_image_format_match = true
""",
    "neutron.conf": """
[DEFAULT]
debug = False
log_dir = /var/log/kolla/neutron
rpc_workers = 2
interface_driver = openvswitch
core_plugin = ml2
service_plugins = router,qos
transport_url = rabbit://openstack:Pw@10.0.0.10:5672//
dhcp_agents_per_network = 2
[nova]
auth_url = http://10.0.0.100:5000
auth_type = password
project_domain_id = default
user_domain_id = default
region_name = RegionOne
project_name = service
username = nova
password = Pw
endpoint_type = internal
[placement]
auth_url = http://10.0.0.100:5000
auth_type = password
project_domain_id = default
user_domain_id = default
project_name = service
username = placement
password = Pw
endpoint_type = internal
[oslo_concurrency]
lock_path = /var/lib/neutron/tmp
[database]
connection = mysql+pymysql://neutron:Pw@10.0.0.100:3306/neutron
max_retries = -1
[keystone_authtoken]
service_type = network
www_authenticate_uri = http://10.0.0.100:5000
auth_url = http://10.0.0.100:5000
auth_type = password
project_domain_id = default
user_domain_id = default
project_name = service
username = neutron
password = Pw
memcached_servers = 10.0.0.10:11211
[oslo_messaging_notifications]
transport_url = rabbit://openstack:Pw@10.0.0.10:5672//
driver = noop
[oslo_middleware]
enable_proxy_headers_parsing = True
[privsep]
helper_command = sudo neutron-rootwrap /etc/neutron/rootwrap.conf privsep-helper
""",
}


def test_removed_options_name_the_release(tmp_path: Path) -> None:
    harmless = check(tmp_path, "[api]\nauth_strategy = keystone\n")  # the lab's own nova.conf has it
    [info] = harmless.problems
    assert info.severity is Severity.INFO and "removed in nova 32.0.0" in info.message
    changed = check(tmp_path, "[api]\nauth_strategy = noauth2\n[libvirt]\nnum_memory_encrypted_guests = 4\n")
    warning = found(changed, Severity.WARNING)
    assert "removed in nova 32.0.0" in warning["[api] auth_strategy"]
    assert "removed in nova 34.0.0" in warning["[libvirt] num_memory_encrypted_guests"]


def test_what_a_rejected_value_does_at_start(tmp_path: Path) -> None:
    nova = found(check(tmp_path, "[DEFAULT]\nreport_interval = x\n"))["[DEFAULT] report_interval"]
    assert "CONF.log_opt_values at start ([DEFAULT] log_options = true), so the service exits" in nova
    lazy = found(check(tmp_path, "[DEFAULT]\nlog_options = false\nreport_interval = x\n"))
    assert "otherwise each request or task that reads it fails" in lazy["[DEFAULT] report_interval"]
    keystone = found(check(tmp_path, "[token]\nexpiration = soon\n", "keystone.conf"))["[token] expiration"]
    assert "[DEFAULT] debug is off" in keystone
    debug = found(check(tmp_path, "[DEFAULT]\ndebug = true\n[token]\nexpiration = soon\n", "keystone.conf"))
    assert "so the service exits at its next start" in debug["[token] expiration"]


def test_a_dollar_name_inside_a_password(tmp_path: Path) -> None:
    result = check(tmp_path, "[DEFAULT]\nhost = cmp1\n[placement]\nauth_type = password\n"
                   "password = Qx9$host-7\n[service_user]\nauth_type = password\npassword = Qx9$$host-7\n")
    [problem] = result.problems
    assert problem.severity is Severity.WARNING and problem.subject.endswith("[placement] password")
    assert "uses another secret than the one written" in problem.message
    assert "Qx9" not in problem.message and redact("Qx9$host-7") == "***"


INSTALL_GUIDE = {
    # nova's install guide and its service user token guide: enabled_apis (the eventlet API
    # server, gone in 32.0.0) and [service_user] auth_strategy (never an option there)
    "nova.conf": """[DEFAULT]
enabled_apis = osapi_compute,metadata
my_ip = 10.0.0.11
[api]
auth_strategy = keystone
[service_user]
send_service_user_token = true
auth_url = http://controller:5000/
auth_strategy = keystone
auth_type = password
project_domain_name = Default
project_name = service
user_domain_name = Default
username = nova
password = pw
[vnc]
enabled = true
server_listen = $my_ip
server_proxyclient_address = $my_ip
""",
    # glance's install guide: [oslo_limit] is a keystoneauth section oslo.limit registers at run time
    "glance-api.conf": """[oslo_limit]
auth_url = http://controller:5000
auth_type = password
user_domain_id = default
username = glance
system_scope = all
password = pw
endpoint_id = 340be3625e9b4239a6415d034e98aace
region_name = RegionOne
""",
}


def test_install_guide_files_do_not_warn(tmp_path: Path) -> None:
    for name, text in INSTALL_GUIDE.items():
        result = check(tmp_path, text, name)
        assert result.error == ""
        bad = [(p.severity.name, p.subject, p.message) for p in result.problems
               if p.severity >= Severity.WARNING]
        assert bad == [], name
    infos = found(check(tmp_path, INSTALL_GUIDE["nova.conf"], "nova.conf"), Severity.INFO)
    assert any("enabled_apis" in subject for subject in infos), infos


def test_a_misspelt_option_in_oslo_limit_still_warns(tmp_path: Path) -> None:
    result = check(tmp_path, "[oslo_limit]\nauth_type = password\nusernme = glance\n", "glance-api.conf")
    assert any("usernme" in subject for subject in found(result, Severity.WARNING))
