"""Faults of flavors no host can take (issue 9, probe flavor_filters), made the real way.

Each creates a flavor with the `openstack` CLI, as an operator does, then boots a server
from it with the CLI (`--nic none`), which really goes to ERROR "No valid host was found":

* `flavor-badcap`: `openstack flavor create lab-badcap ... --property
  capabilities:hypervisor_type=QEMU` with nova's default filters: the fake driver reports
  hypervisor_type 'fake' (nova/virt/fake.py), so ComputeCapabilitiesFilter rejects every host.
* `flavor-aggregate-filter`: `[filter_scheduler] enabled_filters` with
  AggregateInstanceExtraSpecsFilter written into the controller's nova.conf, nova-scheduler
  restarted (only it), and `openstack flavor create lab-xxx ... --property xxx=123 --property
  yyy=321`: no aggregate carries xxx, so that filter rejects every host (the seed's case;
  ComputeCapabilitiesFilter ignores unscoped keys since Newton).
* `flavor-wide`: `openstack flavor create lab-wide --vcpus 2000`: the fake driver's VCPU
  inventory has max_unit 1000 (nova/virt/fake.py), so placement returns no candidate. The
  admin project's cores quota is raised to 4000 for the boot (PUT /os-quota-sets), so the
  API does not refuse it first; the revert puts the quota back.

Reverts delete the server and the flavor with the CLI and, for the aggregate filter, take
the section out of nova.conf again and restart nova-scheduler.
"""
import time

from .util import LabError, _write

FILTERS_MARK = '# healthd-lab fault flavor-aggregate-filter\n'
FILTERS_SECTION = (FILTERS_MARK + '[filter_scheduler]\nenabled_filters = ComputeFilter,'
                   'ComputeCapabilitiesFilter,ImagePropertiesFilter,ServerGroupAntiAffinityFilter,'
                   'ServerGroupAffinityFilter,AggregateInstanceExtraSpecsFilter\n')


class FlavorFaultsMixin:
    """Part of Lab (through FaultsMixin): the flavor faults above."""

    def _ff_osc(self, *args):
        """The lab's `openstack` CLI as the admin (clouds.yaml), one value out."""
        _, out = self._osc(*args)
        return out.strip().splitlines()[-1].strip() if out.strip() else ''

    def _ff_flavor(self, name, vcpus=1, ram=64, disk=1, properties=()):
        args = ['flavor', 'create', name, '--vcpus', str(vcpus), '--ram', str(ram), '--disk', str(disk)]
        for prop in properties:
            args += ['--property', prop]
        return self._ff_osc(*args, '-f', 'value', '-c', 'id')

    def _ff_boot_fails(self, info, name, flavor, attempts=3):
        """`openstack server create` with the flavor; waits for ERROR "No valid host".

        The conductor writes the failed build into cell0 (_bury_in_cell0). When the shared
        MariaDB refuses that connection (1040 Too many connections, the machine's
        max_connections shared by several labs) the server stays in BUILD although the
        scheduler said NoValidHost: that server is deleted and the boot tried again."""
        for attempt in range(attempts):
            info['server'] = self._ff_osc('--os-compute-api-version', '2.74', 'server', 'create',
                                          '--flavor', flavor, '--image', self.state['ids']['image'],
                                          '--nic', 'none', name, '-f', 'value', '-c', 'id')
            self.save()
            deadline = time.time() + 60
            while time.time() < deadline:
                _, data = self.api('compute', 'GET', f"/servers/{info['server']}")
                server = data['server']
                if server['status'] == 'ERROR':
                    info['fault'] = (server.get('fault') or {}).get('message', '')
                    if 'No valid host' not in info['fault']:
                        raise LabError(f"server {info['server']} failed otherwise: {info['fault']}")
                    info['attempts'] = attempt + 1
                    return info
                if server['status'] == 'ACTIVE':
                    raise LabError(f"server {info['server']} with flavor {flavor} became ACTIVE")
                time.sleep(0.5)
            self.delete_server(info['server'])
            self.wait_server(info['server'], 'DELETED')
            info.pop('server')
            self.save()
        raise LabError(f'no server with flavor {flavor} reached ERROR in {attempts} attempts '
                       '(see nova-conductor.log: 1040 Too many connections?)')

    def _ff_cleanup(self, info):
        """Idempotent: a revert after a half-done inject (or a second revert) is fine."""
        if info.get('server'):
            self.delete_server(info['server'])
            self.wait_server(info['server'], 'DELETED')
        if info.get('flavor'):
            code, _ = self.api('compute', 'GET', f"/flavors/{info['flavor']}", ok=None)
            if code != 404:
                self._osc('flavor', 'delete', info['flavor'])
        if info.get('quota_cores') is not None:
            self._ff_quota(info['project'], info['quota_cores'])

    def _ff_quota(self, project, cores):
        """PUT /os-quota-sets/{project} (what `openstack quota set --cores N` sends to nova; the
        CLI also asks Neutron, which the lab only stands in for)."""
        self.api('compute', 'PUT', f'/os-quota-sets/{project}', {'quota_set': {'cores': cores}})

    def _ff_start(self, name):
        info = {}
        self.state.setdefault('faults', {})[name] = info
        self.save()
        return info

    # flavor-badcap
    def _inject_flavor_badcap(self):
        info = self._ff_start('flavor-badcap')
        info['flavor'] = self._ff_flavor('lab-badcap', properties=['capabilities:hypervisor_type=QEMU'])
        info['name'] = 'lab-badcap'
        self.save()
        return self._ff_boot_fails(info, 'lab-badcap-server', info['flavor'])

    def _revert_flavor_badcap(self, info):
        self._ff_cleanup(info)

    # flavor-aggregate-filter
    def _ff_set_filters(self, on):
        conf = self.etc / 'nova' / 'nova.conf'
        text = conf.read_text().replace('\n' + FILTERS_SECTION, '').replace(FILTERS_SECTION, '')
        if on:
            text = text.rstrip('\n') + '\n\n' + FILTERS_SECTION
        _write(conf, text, 0o640)

    def _ff_restart_scheduler(self, attempts=5):
        """Stop nova-scheduler and start it again on the same nova.conf; wait for its heartbeat.
        A scheduler that exits while starting because the shared MariaDB refused its connection
        (1040 Too many connections, in nova-scheduler.log) is started again."""
        from .util import _utc_epoch

        for attempt in range(attempts):
            self.stop('nova-scheduler')
            started = time.time()
            self.start_nova_service('nova-scheduler', 'nova-scheduler', self.etc / 'nova' / 'nova.conf')
            deadline = time.time() + 90
            while time.time() < deadline:
                if not self.alive('nova-scheduler'):
                    break
                code, data = self.api('compute', 'GET', '/os-services?binary=nova-scheduler', ok=None)
                if code == 200 and any(_utc_epoch(s.get('updated_at')) > started + 1
                                       for s in data['services']):
                    return
                time.sleep(1)
            if attempt + 1 < attempts:
                time.sleep(5)
        self.fail('nova-scheduler', f'nova-scheduler did not start and report in {attempts} attempts')

    def _inject_flavor_aggregate_filter(self):
        info = self._ff_start('flavor-aggregate-filter')
        self._ff_set_filters(True)
        info['filters'] = True
        info['nova_conf'] = str(self.etc / 'nova' / 'nova.conf')
        self.save()
        self._ff_restart_scheduler()
        info['flavor'] = self._ff_flavor('lab-xxx', properties=['xxx=123', 'yyy=321'])
        info['name'] = 'lab-xxx'
        self.save()
        return self._ff_boot_fails(info, 'lab-xxx-server', info['flavor'])

    def _revert_flavor_aggregate_filter(self, info):
        self._ff_cleanup(info)
        if info.get('filters'):
            self._ff_set_filters(False)
            self._ff_restart_scheduler()

    # flavor-wide
    def _inject_flavor_wide(self):
        info = self._ff_start('flavor-wide')
        # The admin project's cores quota (20 by default) would refuse the boot with 403 before
        # the scheduler runs: raised for the fault, as an operator lifts a quota, put back on revert.
        info['project'] = self._ff_osc('token', 'issue', '-f', 'value', '-c', 'project_id')
        _, quota = self.api('compute', 'GET', f"/os-quota-sets/{info['project']}")
        info['quota_cores'] = int(quota['quota_set']['cores'])
        self.save()
        self._ff_quota(info['project'], 4000)
        info['flavor'] = self._ff_flavor('lab-wide', vcpus=2000)
        info['name'] = 'lab-wide'
        self.save()
        return self._ff_boot_fails(info, 'lab-wide-server', info['flavor'])

    def _revert_flavor_wide(self, info):
        self._ff_cleanup(info)
