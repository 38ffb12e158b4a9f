"""Faults of nova's cells and service rows (issue 12): made the way they happen.

* `cell0-conductor`: a second nova-conductor on lab-controller whose [database]
  connection is cell0's, as the super-conductor of the superconductor layout
  (devstack, kolla-ansible) is configured. It listens on a vhost of its own (the
  "API-level" queue), so the cell1 computes keep talking to the cell1
  conductor. Its services row is (cell0, nova-conductor, lab-controller), next
  to (cell1, nova-conductor, lab-controller).
* `cell0-compute`: a nova-compute (lab-compute0) whose transport_url is that
  API-level queue: nova-compute has no database access of its own
  (nova/cmd/compute.py DISABLE_DB_ACCESS), the cell0 conductor answers it, so
  it registers its service and compute node in cell0, where discover_hosts
  never looks. Injects cell0-conductor first if needed.
* `old-compute-row`: the row an old release leaves when a compute host is
  retired with `openstack compute service set --disable` instead of a delete:
  a nova-compute of Victoria (service version 52, nova/objects/service.py
  SERVICE_VERSION_ALIASES), disabled, silent for 400 days, written with SQL in
  cell1's services table. nova 34's raise_if_old_compute refuses it.

Reverts delete the rows through the compute API (DELETE /os-services/{uuid},
microversion 2.53+), the cleanup healthd names.
"""
import shutil
import time
import uuid as uuidlib

from .constants import CONTROLLER_HOST, DBS, RABBIT_USER, RABBIT_VHOST
from .util import LabError, _write

CELL0_CONDUCTOR = 'nova-conductor-cell0'
CELL0_COMPUTE = 'lab-compute0'
OLD_COMPUTE = 'lab-compute-old'
OLD_VERSION = 52  # SERVICE_VERSION_ALIASES['Victoria']
SUPER_VHOST = RABBIT_VHOST + '_super'


class CellFaultsMixin:
    """Part of Lab (through FaultsMixin): the cells faults above."""

    def _cells_etc(self):
        # Not under etc/nova: service_config reads etc/nova/*.conf and these files
        # belong to processes of the fault, not to the lab's nova.
        path = self.etc / 'nova-cell0'
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _super_transport_url(self):
        return self.transport_url().rsplit('/', 1)[0] + '/' + SUPER_VHOST

    def _cell0_rows(self, binary, host):
        """[(uuid, seconds since last_seen_up or None)] of non-deleted rows in cell0."""
        out = self.mysql(
            'SELECT uuid, TIMESTAMPDIFF(SECOND, last_seen_up, UTC_TIMESTAMP()) FROM services '
            f"WHERE `binary` = '{binary}' AND host = '{host}' AND deleted = 0",
            DBS['nova_cell0'])
        rows = [line.split('\t') for line in out.splitlines() if line.strip()]
        return [(u, None if age == 'NULL' else int(age)) for u, age in rows]

    def _wait_cell0_row(self, binary, host, proc, timeout=90):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.alive(proc):
                self.fail(proc, f'{proc} exited during start')
            fresh = [u for u, age in self._cell0_rows(binary, host) if age is not None and age <= 4]
            if fresh:
                return fresh[0]
            time.sleep(1)
        self.fail(proc, f'no reporting {binary} row for {host} in cell0 after {timeout}s')

    def _delete_service_rows(self, uuids):
        for service in uuids:
            deadline = time.time() + 30
            while True:
                code, data = self.api('compute', 'DELETE', f'/os-services/{service}', ok=None)
                if code in (204, 404):
                    break
                if time.time() > deadline:
                    raise LabError(f'cannot delete service {service}: {code} {data}')
                time.sleep(1)

    # cell0-conductor
    def _inject_cell0_conductor(self):
        self._cmd(['rabbitmqctl', 'add_vhost', SUPER_VHOST], 'rabbitmq', check=False)
        self._cmd(['rabbitmqctl', 'set_permissions', '-p', SUPER_VHOST, RABBIT_USER,
                   '.*', '.*', '.*'], 'rabbitmq')
        text = self.nova_conf_text()
        text = text.replace(self.db_url(DBS['nova_cell1']), self.db_url(DBS['nova_cell0']))
        text = text.replace(self.transport_url(), self._super_transport_url())
        conf = self._cells_etc() / 'nova-conductor.conf'
        _write(conf, '# healthd-lab fault cell0-conductor: [database] connection is cell0\n' + text,
               0o640)
        self.start_nova_service(CELL0_CONDUCTOR, 'nova-conductor', conf)
        service = self._wait_cell0_row('nova-conductor', CONTROLLER_HOST, CELL0_CONDUCTOR)
        return {'host': CONTROLLER_HOST, 'service_uuid': service, 'conf': str(conf),
                'vhost': SUPER_VHOST, 'proc': CELL0_CONDUCTOR}

    def _revert_cell0_conductor(self, info):
        faults = self.state.setdefault('faults', {})
        if 'cell0-compute' in faults:  # it needs this conductor: it goes first
            self._revert_cell0_compute({**faults.pop('cell0-compute'), 'auto': False})
            self.save()
        self.stop(CELL0_CONDUCTOR)
        self._delete_service_rows([u for u, _ in self._cell0_rows('nova-conductor', CONTROLLER_HOST)])
        self._cmd(['rabbitmqctl', 'delete_vhost', SUPER_VHOST], 'rabbitmq', check=False)
        (self._cells_etc() / 'nova-conductor.conf').unlink(missing_ok=True)

    # cell0-compute
    def _inject_cell0_compute(self):
        auto = 'cell0-conductor' not in self.state.get('faults', {})
        if auto:
            self.inject('cell0-conductor')
        host = CELL0_COMPUTE
        shutil.rmtree(self.data / f'nova-{host}', ignore_errors=True)
        (self.data / f'nova-{host}' / 'instances').mkdir(parents=True, exist_ok=True)
        text = self.nova_conf_text(host, with_db=False)
        text = text.replace(self.transport_url(), self._super_transport_url())
        conf = self._cells_etc() / f'nova-compute-{host}.conf'
        _write(conf, '# healthd-lab fault cell0-compute: transport_url is the cell0 '
               "conductor's queue\n" + text, 0o640)
        proc = f'nova-compute-{host}'
        self.start_nova_service(proc, 'nova-compute', conf)
        service = self._wait_cell0_row('nova-compute', host, proc)
        return {'host': host, 'service_uuid': service, 'conf': str(conf), 'auto': auto, 'proc': proc}

    def _revert_cell0_compute(self, info):
        host = CELL0_COMPUTE
        self.stop(f'nova-compute-{host}')
        # nova's service delete also drops its compute node and resource provider
        self._delete_service_rows([u for u, _ in self._cell0_rows('nova-compute', host)])
        shutil.rmtree(self.data / f'nova-{host}', ignore_errors=True)
        (self._cells_etc() / f'nova-compute-{host}.conf').unlink(missing_ok=True)
        if info.get('auto'):  # the conductor was injected for this fault only
            faults = self.state.setdefault('faults', {})
            faults.pop('cell0-compute', None)
            if 'cell0-conductor' in faults:
                self._revert_cell0_conductor(faults.pop('cell0-conductor'))
            self.save()

    # old-compute-row
    def _inject_old_compute_row(self):
        service = str(uuidlib.uuid4())
        self.mysql(
            'INSERT INTO services (created_at, updated_at, host, `binary`, topic, report_count, '
            'disabled, disabled_reason, deleted, last_seen_up, forced_down, version, uuid) VALUES '
            '(UTC_TIMESTAMP() - INTERVAL 1500 DAY, UTC_TIMESTAMP() - INTERVAL 400 DAY, '
            f"'{OLD_COMPUTE}', 'nova-compute', 'compute', 1296000, 1, 'decommissioned', 0, "
            f"UTC_TIMESTAMP() - INTERVAL 400 DAY, 0, {OLD_VERSION}, '{service}')",
            DBS['nova_cell1'])
        out = self.mysql(f"SELECT id FROM services WHERE uuid = '{service}'", DBS['nova_cell1'])
        return {'host': OLD_COMPUTE, 'service_uuid': service, 'service_id': int(out.split()[0]),
                'version': OLD_VERSION}

    def _revert_old_compute_row(self, info):
        self._delete_service_rows([info['service_uuid']] if info.get('service_uuid') else [])
