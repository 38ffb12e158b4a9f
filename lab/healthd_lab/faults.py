"""The faults: inject and revert each one (the real way, see lab/README.md)."""
import json
import shutil
import sys
import time
import uuid
from pathlib import Path

from .constants import (
    CLOUD,
    COMPUTES,
    DBS,
    EXTRA_COMPUTE,
    FAULTS,
    FLAVOR_HUGE,
    LAB_SRC,
    OVERCOMMIT_RATIO,
    OVERCOMMIT_SERVERS,
    SOLO_FAULTS,
)
from .faults_backends import BackendsFaultsMixin
from .faults_cells import CellFaultsMixin
from .faults_config import ConfigFaultsMixin
from .faults_flavors import FlavorFaultsMixin
from .faults_grants import GrantsFaultsMixin
from .faults_images import ImageFaultsMixin
from .faults_queues import QueueFaultsMixin
from .util import LabError, _free_port, _http, _locked, _log, _port_open, _write, memcached_stats


class FaultsMixin(ConfigFaultsMixin, CellFaultsMixin, GrantsFaultsMixin, ImageFaultsMixin,
                  BackendsFaultsMixin, FlavorFaultsMixin, QueueFaultsMixin):
    """Part of Lab: inject(name) / revert(name) and one _inject_X/_revert_X per fault."""

    # -------------------------------------------------------- faults --
    @_locked
    def inject(self, name):
        if name == 'all':
            for f in FAULTS:
                self.inject(f)
            return
        if name not in (*FAULTS, *SOLO_FAULTS):
            raise LabError(f"unknown fault {name!r} (known: {', '.join((*FAULTS, *SOLO_FAULTS))})")
        if not self.state.get('complete'):
            raise LabError('lab is not up')
        faults = self.state.setdefault('faults', {})
        if name in faults:
            _log(f'{name} already injected')
            return faults[name]
        t0 = time.time()
        info = getattr(self, '_inject_' + name.replace('-', '_'))()
        info['injected_at'] = time.time()
        info['inject_s'] = round(time.time() - t0, 1)
        faults[name] = info
        self.save()
        _log(f'injected {name} in {time.time() - t0:.1f}s')
        return info

    @_locked
    def revert(self, name):
        if name == 'all':
            for f in reversed((*FAULTS, *SOLO_FAULTS)):  # whatever is injected, solo ones first
                self.revert(f)
            return
        if name not in (*FAULTS, *SOLO_FAULTS):
            raise LabError(f'unknown fault {name!r}')
        faults = self.state.setdefault('faults', {})
        if name not in faults and name not in ('bad-config-hosts',):
            _log(f'{name} not injected')
            return
        t0 = time.time()
        getattr(self, '_revert_' + name.replace('-', '_'))(
            faults.get(name, {}))
        faults.pop(name, None)
        self.state.setdefault('timings', {})[f'revert_{name}_s'] = round(
            time.time() - t0, 1)
        self.save()
        _log(f'reverted {name} in {time.time() - t0:.1f}s')

    # 1. duplicate-service
    def _inject_duplicate_service(self):
        _, data = self.api('identity', 'POST', '/services', {'service': {
            'type': 'network', 'name': 'neutron',
            'description': 'healthd-lab fault: duplicate network service'}})
        return {'service_id': data['service']['id']}

    def _revert_duplicate_service(self, info):
        if info.get('service_id'):
            self.api('identity', 'DELETE', f"/services/{info['service_id']}",
                     ok=(204, 404))

    # stray-allocation: an allocation written through the placement API for a
    # consumer nova does not have, the way the scheduler claims
    # (nova/scheduler/client/report.py claim_resources: PUT /allocations/{uuid}
    # with consumer_generation None for a new consumer). lab-compute1's resource
    # tracker then logs at each update_resources_interval "Instance <uuid> has
    # allocations against this compute host but is not found in the database."
    # (nova/compute/resource_tracker.py _remove_deleted_instances_allocations)
    # and never removes it.
    def _inject_stray_allocation(self):
        host = COMPUTES[0]
        _, data = self.api('placement', 'GET', f'/resource_providers?name={host}')
        rp = data['resource_providers'][0]['uuid']
        consumer = str(uuid.uuid4())
        log = self.logs / f'nova-compute-{host}.log'
        offset = log.stat().st_size if log.exists() else 0
        body = {
            'allocations': {rp: {'resources': {'VCPU': 1, 'MEMORY_MB': 64, 'DISK_GB': 1}}},
            'project_id': self.ks_find('projects', name='admin')[0]['id'],
            'user_id': self.ks_find('users', name='admin')[0]['id'],
            'consumer_generation': None}
        # nova's claim uses microversion 1.28 (report.py CONSUMER_GENERATION_VERSION)
        code, _, data = _http('PUT', self.url('placement') + f'/allocations/{consumer}', body,
                              {'X-Auth-Token': self.token(),
                               'OpenStack-API-Version': 'placement 1.28'})
        if code != 204:
            raise LabError(f'placement PUT /allocations/{consumer} -> {code}: {data}')
        said = (f'Instance {consumer} has allocations against this compute host '
                'but is not found in the database.')
        deadline = time.time() + 90
        while said not in _read_from(log, offset):
            if time.time() > deadline:
                raise LabError(f'{host} did not log {said!r} within 90 s')
            time.sleep(1)
        return {'host': host, 'provider': rp, 'consumer': consumer, 'logged': said}

    def _revert_stray_allocation(self, info):
        if info.get('consumer'):
            self.api('placement', 'DELETE', f"/allocations/{info['consumer']}", ok=(204, 404))

    # cell-db-password / cell-transport-password: cell1's mapping rewritten with
    # `nova-manage cell_v2 update_cell` to a URL whose password is wrong, as after a
    # password rotation that forgot nova_api.cell_mappings. Revert writes the right URL
    # back the same way. (update_cell with one option also rewrites the other from
    # nova.conf, nova/cmd/manage.py CellV2Commands.update_cell: both are passed.)
    def _cell1_uuid(self):
        _, out = self.nova_manage('cell_v2', 'list_cells')
        for line in out.splitlines():
            cols = [c.strip() for c in line.split('|')]
            if len(cols) > 2 and cols[1] == 'cell1':
                return cols[2]
        raise LabError('cell1 is not in nova-manage cell_v2 list_cells')

    def _update_cell1(self, db_url, mq_url):
        cell = self._cell1_uuid()
        self.nova_manage('cell_v2', 'update_cell', '--cell_uuid', cell,
                         '--database_connection', db_url, '--transport-url', mq_url)
        return cell

    def _inject_cell_db_password(self):
        wrong = self.db_url(DBS['nova_cell1']).replace(
            f":{self._secret('db_svc_password')}@", ':healthd-lab-wrong-password@')
        return {'cell_uuid': self._update_cell1(wrong, self.transport_url())}

    def _revert_cell_db_password(self, info):
        self._update_cell1(self.db_url(DBS['nova_cell1']), self.transport_url())

    def _inject_cell_transport_password(self):
        wrong = self.transport_url().replace(
            f":{self._secret('rabbit_password')}@", ':healthd-lab-wrong-password@')
        return {'cell_uuid': self._update_cell1(self.db_url(DBS['nova_cell1']), wrong)}

    def _revert_cell_transport_password(self, info):
        self._update_cell1(self.db_url(DBS['nova_cell1']), self.transport_url())

    # 2. unmapped-compute
    def _inject_unmapped_compute(self):
        host = EXTRA_COMPUTE
        shutil.rmtree(self.data / f'nova-{host}', ignore_errors=True)
        self.write_compute_conf(host)
        self.start_compute(host)
        proc = f'nova-compute-{host}'
        svc = self.wait_compute(host, 'up', proc=proc)
        deadline = time.time() + 60
        while (self.compute_node_row(host) or {}).get('local_gb') is None:
            if time.time() > deadline:
                self.fail(proc, f'no compute node row for {host}')
            time.sleep(1)
        return {'host': host, 'service_id': svc['id']}

    def _revert_unmapped_compute(self, info):
        host = EXTRA_COMPUTE
        self.stop(f'nova-compute-{host}')
        ids = [s['id'] for s in self.compute_services() if s['host'] == host]
        for sid in ids:
            deadline = time.time() + 30
            while True:
                code, data = self.api('compute', 'DELETE',
                                      f'/os-services/{sid}', ok=None)
                if code in (204, 404):
                    break
                if time.time() > deadline:
                    raise LabError(f'cannot delete service {sid}: {code} {data}')
                time.sleep(1)
        shutil.rmtree(self.data / f'nova-{host}', ignore_errors=True)

    # 3. compute-down
    def _inject_compute_down(self):
        host = COMPUTES[1]
        self.stop(f'nova-compute-{host}')
        self.wait_compute(host, 'down', timeout=60)
        return {'host': host}

    def _revert_compute_down(self, info):
        host = COMPUTES[1]
        started = time.time()
        self.start_compute(host)
        self.wait_compute(host, 'up', proc=f'nova-compute-{host}',
                          since=started + 1)

    # 4. disk-overcommit
    def _restart_compute(self, host):
        name = f'nova-compute-{host}'
        self.stop(name)
        started = time.time()
        self.start_compute(host)
        # the service record still looks 'up' from before the restart:
        # wait for a heartbeat from the new process instead
        self.wait_compute(host, 'up', proc=name, since=started + 1)

    def _placement_disk_ratio(self, host):
        _, data = self.api('placement', 'GET',
                           f'/resource_providers?name={host}')
        if not data['resource_providers']:
            return None
        rp = data['resource_providers'][0]['uuid']
        _, inv = self.api('placement', 'GET',
                          f'/resource_providers/{rp}/inventories')
        disk = inv['inventories'].get('DISK_GB')
        return disk and disk['allocation_ratio']

    def _wait_ratio(self, host, ratio, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self._placement_disk_ratio(host) == ratio:
                return
            time.sleep(1)
        self.fail(f'nova-compute-{host}',
                  f'placement DISK_GB ratio not {ratio} after {timeout}s')

    def _boot_on_host(self, name, flavor, host):
        """POST /servers with `host` (microversion 2.74): unlike the old
        availability_zone nova:HOST form it goes through the scheduler's
        filters and placement's allocation_candidates, as `openstack server
        create --host` does."""
        body = {'server': {'name': name, 'imageRef': self.state['ids']['image'],
                           'flavorRef': flavor, 'networks': 'none',
                           'host': host}}
        _, data = self.api('compute', 'POST', '/servers', body)
        return data['server']['id']

    def _inject_disk_overcommit(self):
        host = COMPUTES[0]
        self.write_compute_conf(host, extra_default=[
            ('disk_allocation_ratio', OVERCOMMIT_RATIO)])
        self._restart_compute(host)
        self._wait_ratio(host, OVERCOMMIT_RATIO)
        info = {'host': host, 'servers': []}
        self.state.setdefault('faults', {})['disk-overcommit'] = info
        self.save()
        for i in range(OVERCOMMIT_SERVERS):
            sid = self._boot_on_host(f'lab-overcommit-{i}', FLAVOR_HUGE, host)
            info['servers'].append(sid)
            self.save()
        for sid in info['servers']:
            self.wait_server(sid, 'ACTIVE')
        deadline = time.time() + 60
        while True:
            row = self.compute_node_row(host)
            if row and (row['free_disk_gb'] or 0) < 0:
                info['free_disk_gb'] = row['free_disk_gb']
                break
            if time.time() > deadline:
                raise LabError(f'free_disk_gb of {host} did not go negative: {row}')
            time.sleep(1)
        return info

    def _revert_disk_overcommit(self, info):
        host = COMPUTES[0]
        for sid in info.get('servers', []):
            self.delete_server(sid)
        for sid in info.get('servers', []):
            self.wait_server(sid, 'DELETED')
        # put the ratio back to 1.0 for real (compute_nodes + placement),
        # then leave the config file as it was originally (no ratio line):
        # with the option unset nova keeps the node's current ratio.
        self.write_compute_conf(host, extra_default=[
            ('disk_allocation_ratio', 1.0)])
        self._restart_compute(host)
        self._wait_ratio(host, 1.0)
        self.write_compute_conf(host)
        deadline = time.time() + 60
        while True:
            row = self.compute_node_row(host)
            if row and (row['free_disk_gb'] or 0) >= 0:
                break
            if time.time() > deadline:
                raise LabError(f'free_disk_gb of {host} still negative')
            time.sleep(1)

    # 4b. disk-over-capacity: on top of disk-overcommit, lower the ratio back
    # to 1.0 while the servers stay: placement keeps the allocations and
    # takes the smaller inventory (placement/objects/resource_provider.py
    # _update_inventory_for_provider only logs "exceeded"), so usage is
    # above capacity and the node commits more than ratio 1.0 allows.
    def _inject_disk_over_capacity(self):
        host = COMPUTES[0]
        auto = 'disk-overcommit' not in self.state.get('faults', {})
        if auto:
            self.inject('disk-overcommit')
        info = dict(self.state['faults']['disk-overcommit'])
        self.write_compute_conf(host, extra_default=[
            ('disk_allocation_ratio', 1.0)])
        self._restart_compute(host)
        self._wait_ratio(host, 1.0)
        return {'host': host, 'auto': auto, 'servers': info.get('servers', [])}

    def _revert_disk_over_capacity(self, info):
        host = COMPUTES[0]
        if info.get('auto', True):
            self.revert('disk-overcommit')
            return
        self.write_compute_conf(host, extra_default=[
            ('disk_allocation_ratio', OVERCOMMIT_RATIO)])
        self._restart_compute(host)
        self._wait_ratio(host, OVERCOMMIT_RATIO)

    # 5. memcached-saturation
    def _inject_memcached_saturation(self):
        port = self.ports['memcached_sat']
        status = self.run / 'mc-holder.json'
        status.unlink(missing_ok=True)
        self.spawn('mc-holder', [sys.executable, LAB_SRC / 'mc_holder.py',
                                 port, status, 256])
        deadline = time.time() + 30
        while time.time() < deadline:
            if not self.alive('mc-holder'):
                self.fail('mc-holder', 'holder exited')
            try:
                st = json.loads(status.read_text())
                if st.get('saturated'):
                    return {'port': port, 'status_file': str(status),
                            'held': st['held']}
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        self.fail('mc-holder', f'memcached on {port} not saturated')

    def _revert_memcached_saturation(self, info):
        self.stop('mc-holder')
        port = self.ports['memcached_sat']
        deadline = time.time() + 15
        while time.time() < deadline:
            if memcached_stats(port, timeout=1) is not None:
                return
            time.sleep(0.2)
        raise LabError(f'memcached on {port} still refuses connections')

    # 6. bad-config-hosts
    def _dead_port(self, name):
        port = self.ports[name]
        if _port_open(port):
            port = _free_port()
            self.ports[name] = port
            self.save()
        return port

    def _inject_bad_config_hosts(self):
        rp = self._dead_port('dead_rabbit')
        mp = self._dead_port('dead_memcached')
        text = self.nova_conf_text(rabbit_port=rp, memcached_port=mp)
        text = text.replace('# generated by healthd-lab',
                            '# healthd-lab fault bad-config-hosts: '
                            'transport_url and memcache servers point at '
                            'ports where nothing listens\n# copy of nova.conf',
                            1)
        path = Path(self.paths['nova_bad_conf'])
        _write(path, text, 0o640)
        return {'path': str(path), 'rabbit_port': rp, 'memcached_port': mp}

    def _revert_bad_config_hosts(self, info):
        Path(self.paths['nova_bad_conf']).unlink(missing_ok=True)

    # 7. catalog-public-only / 8. catalog-missing-interface: endpoints deleted
    # with the CLI, as an operator (or devstack, which never creates them) would.
    def _osc(self, *args):
        return self._cmd([self.bin / 'openstack', *args], 'openstack', env={
            'OS_CLIENT_CONFIG_FILE': str(self.dir / 'clouds.yaml'),
            'OS_CLOUD': CLOUD})

    def _delete_endpoints(self, service_types, interfaces):
        gone = []
        for stype in service_types:
            for svc in self.ks_find('services', type=stype):
                for ep in self.ks_find('endpoints', service_id=svc['id']):
                    if ep['interface'] in interfaces:
                        gone.append({'id': ep['id'], 'service_id': svc['id'],
                                     'interface': ep['interface'], 'url': ep['url'],
                                     'region': ep.get('region_id') or ''})
        if gone:
            self._osc('endpoint', 'delete', *[ep['id'] for ep in gone])
        return gone

    def _recreate_endpoints(self, gone):
        for ep in gone:
            have = self.ks_find('endpoints', service_id=ep['service_id'],
                                interface=ep['interface'])
            if any(e.get('region_id') == (ep['region'] or None) for e in have):
                continue
            region = ['--region', ep['region']] if ep['region'] else []
            self._osc('endpoint', 'create', *region, ep['service_id'],
                      ep['interface'], ep['url'])

    def _inject_catalog_public_only(self):
        types = ('identity', 'placement', 'compute', 'image', 'network')
        return {'deleted': self._delete_endpoints(types, ('internal', 'admin'))}

    def _revert_catalog_public_only(self, info):
        self._recreate_endpoints(info.get('deleted', []))

    def _inject_catalog_missing_interface(self):
        deleted = self._delete_endpoints(('image',), ('internal', 'admin'))
        return {'service_id': self.state['ids']['service_image'],
                'deleted': deleted}

    def _revert_catalog_missing_interface(self, info):
        self._recreate_endpoints(info.get('deleted', []))


def _read_from(path, offset):
    """The text of a log written after offset (empty if the file is not there yet)."""
    try:
        with open(path, 'rb') as f:
            f.seek(offset)
            return f.read().decode('utf-8', 'replace')
    except FileNotFoundError:
        return ''
