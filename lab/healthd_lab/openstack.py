"""The lab's own REST client for its OpenStack, and setup through the APIs
(catalog, flavors, image) and nova-manage."""
import os
import time

from .constants import (
    DBS,
    FLAVOR_HUGE,
    FLAVOR_TINY,
    HUGE_DISK_GB,
    IMAGE_NAME,
    NOVA_MICROVERSION,
    PLACEMENT_MICROVERSION,
    REGION,
    SERVICE_USERS,
)
from .util import LabError, _http, _utc_epoch


class OpenStackMixin:
    """Part of Lab: Keystone/Nova/Placement/Glance API calls, nova-manage."""

    # ------------------------------------------------------------ api --
    def url(self, svc):
        p = self.ports
        return {
            'identity': f"http://127.0.0.1:{p['keystone']}/v3",
            'placement': f"http://127.0.0.1:{p['placement']}",
            'compute': f"http://127.0.0.1:{p['nova_api']}/v2.1",
            'image': f"http://127.0.0.1:{p['glance']}",
            'network': f"http://127.0.0.1:{p['network']}",
        }[svc]

    def token(self, refresh=False):
        if self._token and not refresh:
            return self._token
        body = {'auth': {
            'identity': {'methods': ['password'], 'password': {'user': {
                'name': 'admin', 'domain': {'name': 'Default'},
                'password': self._secret('admin_password')}}},
            'scope': {'project': {'name': 'admin',
                                  'domain': {'name': 'Default'}}}}}
        code, headers, data = _http('POST', self.url('identity') +
                                    '/auth/tokens', body)
        if code != 201:
            raise LabError(f'keystone auth failed: {code} {data}')
        self._token = headers.get('X-Subject-Token') or headers.get(
            'x-subject-token')
        return self._token

    def api(self, svc, method, path, body=None, ok=(200, 201, 202, 204),
            raw=None, timeout=60):
        headers = {'X-Auth-Token': self.token()}
        if svc == 'compute':
            headers['OpenStack-API-Version'] = NOVA_MICROVERSION
        elif svc == 'placement':
            headers['OpenStack-API-Version'] = PLACEMENT_MICROVERSION
        code, _, data = _http(method, self.url(svc) + path, body, headers,
                              raw=raw, timeout=timeout)
        if code == 401:
            headers['X-Auth-Token'] = self.token(refresh=True)
            code, _, data = _http(method, self.url(svc) + path, body,
                                  headers, raw=raw, timeout=timeout)
        if ok is not None and code not in ok:
            raise LabError(f'{svc} {method} {path} -> {code}: {data}')
        return code, data

    # ------------------------------------------------------- keystone --
    def ks_find(self, coll, **filters):
        q = '&'.join(f'{k}={v}' for k, v in filters.items())
        _, data = self.api('identity', 'GET', f'/{coll}?{q}')
        return data[coll]

    def ensure_catalog(self):
        def one(coll, key, body, **filters):
            found = self.ks_find(coll, **filters)
            if found:
                return found[0]['id']
            _, data = self.api('identity', 'POST', '/' + coll, {key: body})
            return data[key]['id']

        domain = 'default'
        project = one('projects', 'project',
                      {'name': 'service', 'domain_id': domain},
                      name='service', domain_id=domain)
        roles = {r['name']: r['id'] for r in
                 self.api('identity', 'GET', '/roles')[1]['roles']}
        for rn in ('admin', 'service'):
            if rn not in roles:
                roles[rn] = one('roles', 'role', {'name': rn}, name=rn)
        pw = self._secret('service_password')
        for user in SERVICE_USERS:
            found = self.ks_find('users', name=user, domain_id=domain)
            if found:
                uid = found[0]['id']
                self.api('identity', 'PATCH', f'/users/{uid}',
                         {'user': {'password': pw}})
            else:
                uid = self.api('identity', 'POST', '/users', {'user': {
                    'name': user, 'domain_id': domain, 'password': pw,
                    'default_project_id': project}})[1]['user']['id']
            for rn in ('admin', 'service'):
                self.api('identity', 'PUT', f'/projects/{project}/users/{uid}/roles/{roles[rn]}')
        services = {
            'placement': ('placement', self.url('placement')),
            'compute': ('nova', self.url('compute')),
            'image': ('glance', self.url('image')),
            'network': ('neutron', self.url('network')),
        }
        ids = self.state.setdefault('ids', {})
        dup = self.state.get('faults', {}).get('duplicate-service', {}).get(
            'service_id')
        for stype, (name, url) in services.items():
            found = [s for s in self.ks_find('services', type=stype)
                     if s['name'] == name and s['id'] != dup]
            if found:
                sid = found[0]['id']
            else:
                sid = self.api('identity', 'POST', '/services', {'service': {
                    'type': stype, 'name': name,
                    'description': f'healthd-lab {stype}'}})[1][
                        'service']['id']
            ids['service_' + stype] = sid
            eps = self.ks_find('endpoints', service_id=sid)
            have = {e['interface']: e for e in eps}
            for iface in ('public', 'internal', 'admin'):
                if iface in have and have[iface]['url'] == url:
                    continue
                if iface in have:
                    self.api('identity', 'DELETE', f"/endpoints/{have[iface]['id']}")
                self.api('identity', 'POST', '/endpoints', {'endpoint': {
                    'service_id': sid, 'interface': iface, 'url': url,
                    'region_id': REGION}})
        self.save()

    # ---------------------------------------------------------- nova --
    def nova_manage(self, *args, check=True):
        return self._cmd([self.bin / 'nova-manage', '--config-file',
                          self.etc / 'nova' / 'nova.conf', *args],
                         'nova-manage', check=check)

    def compute_services(self):
        _, data = self.api('compute', 'GET',
                           '/os-services?binary=nova-compute')
        return data['services']

    def wait_compute(self, host, want='up', timeout=90, proc=None,
                     since=None):
        """Wait for the API to show host's nova-compute in state want.

        With since (epoch seconds), only a heartbeat written after it counts
        (a restarted service still looks 'up' for service_down_time)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc and want == 'up' and not self.alive(proc):
                self.fail(proc, 'nova-compute exited during start')
            for s in self.compute_services():
                if s['host'] == host and s['state'] == want and (
                        since is None or _utc_epoch(s.get('updated_at')) > since):
                    return s
            time.sleep(1)
        if proc:
            self.fail(proc, f'service {host} not {want} after {timeout}s')
        raise LabError(f'service {host} not {want} after {timeout}s')

    def hypervisors(self):
        _, data = self.api('compute', 'GET', '/os-hypervisors/detail')
        return data['hypervisors']

    def host_mappings(self):
        out = self.mysql('SELECT h.host, c.name FROM host_mappings h '
                         'JOIN cell_mappings c ON h.cell_id = c.id',
                         DBS['nova_api'])
        return dict(line.split('\t') for line in out.splitlines() if line.strip())

    def compute_node_row(self, host):
        out = self.mysql(
            'SELECT uuid, free_disk_gb, local_gb, local_gb_used, '
            f'disk_allocation_ratio FROM compute_nodes WHERE host = "{host}" '
            'AND deleted = 0', DBS['nova_cell1'])
        rows = [line.split('\t') for line in out.splitlines() if line.strip()]
        if not rows:
            return None
        r = rows[0]

        def num(v):  # a brand-new row has NULLs until the first RT update
            return None if v == 'NULL' else int(v)
        return {'uuid': r[0], 'free_disk_gb': num(r[1]),
                'local_gb': num(r[2]), 'local_gb_used': num(r[3]),
                'disk_allocation_ratio': r[4]}

    def ensure_flavors_and_image(self):
        ids = self.state.setdefault('ids', {})
        for fid, disk in ((FLAVOR_TINY, 1), (FLAVOR_HUGE, HUGE_DISK_GB)):
            code, _ = self.api('compute', 'GET', f'/flavors/{fid}',
                               ok=None)
            if code == 404:
                self.api('compute', 'POST', '/flavors', {'flavor': {
                    'name': fid, 'id': fid, 'ram': 64, 'vcpus': 1,
                    'disk': disk}})
        ids['flavor_tiny'] = FLAVOR_TINY
        ids['flavor_huge'] = FLAVOR_HUGE
        _, data = self.api('image', 'GET', f'/v2/images?name={IMAGE_NAME}')
        active = [i for i in data['images'] if i['status'] == 'active']
        if active:
            ids['image'] = active[0]['id']
        else:
            for i in data['images']:
                self.api('image', 'DELETE', f"/v2/images/{i['id']}", ok=None)
            _, img = self.api('image', 'POST', '/v2/images', {
                'name': IMAGE_NAME, 'disk_format': 'raw',
                'container_format': 'bare', 'visibility': 'public'})
            self.api('image', 'PUT', f"/v2/images/{img['id']}/file",
                     raw=os.urandom(1024 * 1024))
            for _ in range(60):
                _, i = self.api('image', 'GET', f"/v2/images/{img['id']}")
                if i['status'] == 'active':
                    break
                time.sleep(0.5)
            else:
                self.fail('glance-api', 'image did not become active')
            ids['image'] = img['id']
        self.save()

    def boot_server(self, name, flavor=FLAVOR_TINY, host=None):
        body = {'server': {'name': name, 'imageRef': self.state['ids'][
            'image'], 'flavorRef': flavor, 'networks': 'none'}}
        if host:
            body['server']['availability_zone'] = f'nova:{host}'
        _, data = self.api('compute', 'POST', '/servers', body)
        return data['server']['id']

    def wait_server(self, sid, want='ACTIVE', timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            code, data = self.api('compute', 'GET', f'/servers/{sid}',
                                  ok=None)
            if want == 'DELETED':
                if code == 404:
                    return None
            else:
                s = data['server']
                if s['status'] == want:
                    return s
                if s['status'] == 'ERROR':
                    raise LabError(f"server {sid} went to ERROR: {s.get('fault')}")
            time.sleep(0.5)
        raise LabError(f'server {sid} not {want} after {timeout}s')

    def delete_server(self, sid):
        self.api('compute', 'DELETE', f'/servers/{sid}', ok=(204, 404))
