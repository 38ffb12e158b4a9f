"""The Lab: state, commands, processes, up / down / status; the Python API."""
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

from .constants import (
    CLOUD,
    COMPUTES,
    DB_HOST,
    DB_PORT,
    DBS,
    EXTRA_COMPUTE,
    LAB_SRC,
    MEMCACHED_SAT_CONNS,
    RABBIT_PORT,
    RABBIT_USER,
    RABBIT_VHOST,
    READER_DB_USER,
    REGION,
    SVC_DB_USER,
)
from .faults import FaultsMixin
from .openstack import OpenStackMixin
from .services import ServicesMixin
from .templates import TemplatesMixin
from .util import (
    _CHILDREN,
    LabError,
    _http,
    _locked,
    _log,
    _pid_alive,
    _port_open,
    _proc_starttime,
    _tail,
    _write,
    lab_dir,
)


class Lab(ServicesMixin, TemplatesMixin, OpenStackMixin, FaultsMixin):
    """One lab directory ($HEALTHD_LAB_DIR).  The mixins hold the system and
    process setup (services.py), the config files (templates.py), the API
    client (openstack.py) and the faults (faults.py)."""

    _lock_depth = 0

    def __init__(self, directory=None):
        self.dir = Path(directory).resolve() if directory else lab_dir()
        self.venv = self.dir / 'venv'
        self.bin = self.venv / 'bin'
        self.etc = self.dir / 'etc'
        self.logs = self.dir / 'logs'
        self.data = self.dir / 'data'
        self.run = self.dir / 'run'
        self.secrets = self.dir / 'secrets'
        self.state_file = self.dir / 'state.json'
        self.state = self._load()
        self._token = None

    # ---------------------------------------------------------- state --
    def _load(self):
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def save(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        _write(self.state_file, json.dumps(self.state, indent=2,
                                           sort_keys=True) + '\n')

    @property
    def ports(self):
        return self.state.setdefault('ports', {})

    def _secret(self, name):
        path = self.secrets / name
        if path.exists():
            return path.read_text().strip()
        self.secrets.mkdir(parents=True, exist_ok=True)
        os.chmod(self.secrets, 0o700)
        value = secrets.token_hex(12)
        _write(path, value + '\n', 0o600)
        return value

    @property
    def paths(self):
        return {
            'lab_dir': str(self.dir),
            'venv': str(self.venv),
            'nova_conf': str(self.etc / 'nova' / 'nova.conf'),
            'keystone_conf': str(self.etc / 'keystone' / 'keystone.conf'),
            'placement_conf': str(self.etc / 'placement' / 'placement.conf'),
            'glance_conf': str(self.etc / 'glance' / 'glance-api.conf'),
            'nova_bad_conf': str(self.etc / 'nova' / 'nova-bad.conf'),
            'compute_confs': {h: str(self._compute_conf_path(h))
                              for h in (*COMPUTES, EXTRA_COMPUTE)},
            'clouds_yaml': str(self.dir / 'clouds.yaml'),
            'healthd_yaml': str(self.dir / 'healthd.yaml'),
            'db_password_file': str(self.secrets / 'db_password'),
            'state': str(self.state_file),
            'logs': str(self.logs),
        }

    def _compute_conf_path(self, host):
        return self.etc / 'nova' / f'nova-compute-{host}.conf'

    # ------------------------------------------------------- commands --
    def _cmd(self, argv, logname, check=True, env=None, timeout=900,
             input_text=None):
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f'{logname}.log'
        full_env = dict(os.environ)
        full_env.update(env or {})
        with open(log, 'ab') as f:
            cmdline = ' '.join(map(str, argv))
            f.write(f'\n$ {cmdline}\n'.encode())
            f.flush()
            res = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, env=full_env,
                                 timeout=timeout, input=(input_text or '').encode(),
                                 cwd=str(self.dir))
            f.write(res.stdout)
        out = res.stdout.decode(errors='replace')
        if check and res.returncode != 0:
            print(_tail(log), file=sys.stderr)
            cmd = ' '.join(map(str, argv[:3]))
            raise LabError(f'{cmd} failed (exit {res.returncode}); log: {log}')
        return res.returncode, out

    def _par(self, jobs):
        """Run several (logname, argv) commands in parallel; fail on any."""
        self.logs.mkdir(parents=True, exist_ok=True)
        running = []
        for logname, argv in jobs:
            log = self.logs / f'{logname}.log'
            # the child writes to its own copy of the descriptor
            with open(log, 'ab') as f:
                cmdline = ' '.join(map(str, argv))
                f.write(f'\n$ {cmdline}\n'.encode())
                f.flush()
                p = subprocess.Popen([str(a) for a in argv], stdout=f,
                                     stderr=subprocess.STDOUT, cwd=str(self.dir))
            running.append((logname, p, log))
        failed = []
        for logname, p, log in running:
            rc = p.wait(timeout=900)
            if rc != 0:
                failed.append((logname, rc, log))
        for logname, rc, log in failed:
            print(f'--- {logname} (exit {rc}), last lines of {log}:',
                  file=sys.stderr)
            print(_tail(log), file=sys.stderr)
        if failed:
            raise LabError(f"failed: {', '.join(x[0] for x in failed)}")

    def mysql(self, sql, db=None, check=True):
        argv = ['mysql', '-uroot', '-h', DB_HOST, '-P', str(DB_PORT), '-N',
                '-B']
        pw = os.environ.get('HEALTHD_LAB_DB_ROOT_PASSWORD')
        if pw:
            argv.append('-p' + pw)
        if db:
            argv += ['-D', db]
        argv += ['-e', sql]
        res = subprocess.run(argv, capture_output=True, timeout=60)
        if check and res.returncode != 0:
            err = res.stderr.decode(errors='replace')
            raise LabError(f'mysql failed: {sql[:200]}\n{err}')
        return res.stdout.decode()

    # ------------------------------------------------------ processes --
    def spawn(self, name, argv, env=None):
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f'{name}.log'
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.pop('OS_CLOUD', None)
        full_env.pop('OS_CLIENT_CONFIG_FILE', None)
        with open(log, 'ab') as f:
            now = time.strftime('%Y-%m-%d %H:%M:%S')
            cmdline = ' '.join(map(str, argv))
            f.write(f'\n==== {now} starting: {cmdline}\n'.encode())
            f.flush()
            p = subprocess.Popen([str(a) for a in argv], stdout=f,
                                 stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL,
                                 start_new_session=True, env=full_env,
                                 cwd=str(self.dir))
        _CHILDREN[p.pid] = p
        st = None
        for _ in range(50):
            st = _proc_starttime(p.pid)
            if st:
                break
            time.sleep(0.01)
        self.state.setdefault('procs', {})[name] = {
            'pid': p.pid, 'starttime': st, 'argv': [str(a) for a in argv],
            'log': str(log), 'started': time.time()}
        self.save()
        return p.pid

    def alive(self, name):
        return _pid_alive(self.state.get('procs', {}).get(name))

    def stop(self, name, timeout=10.0, forget=True):
        info = self.state.get('procs', {}).get(name)
        if info and _pid_alive(info):
            pid = info['pid']
            try:
                os.killpg(pid, signal.SIGTERM)
            except OSError:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.time() + timeout
            while time.time() < deadline and _pid_alive(info):
                time.sleep(0.1)
            if _pid_alive(info):
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                for _ in range(50):
                    if not _pid_alive(info):
                        break
                    time.sleep(0.1)
            child = _CHILDREN.pop(pid, None)
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=1)
        if forget and info:
            self.state['procs'].pop(name, None)
            self.save()

    def stop_all(self, timeout=8.0):
        """SIGTERM every recorded process group at once, SIGKILL leftovers."""
        procs = self.state.get('procs', {})
        live = {n: i for n, i in procs.items() if _pid_alive(i)}
        for info in live.values():
            with contextlib.suppress(OSError):
                os.killpg(info['pid'], signal.SIGTERM)
        deadline = time.time() + timeout
        while time.time() < deadline and any(_pid_alive(i)
                                             for i in live.values()):
            time.sleep(0.2)
        for name, info in live.items():
            if _pid_alive(info):
                _log(f'{name} did not stop on SIGTERM: SIGKILL')
                with contextlib.suppress(OSError):
                    os.killpg(info['pid'], signal.SIGKILL)
        for name in list(procs):
            self.stop(name, timeout=2)

    def fail(self, name, msg):
        log = self.logs / f'{name}.log'
        print(f'--- last lines of {log}:', file=sys.stderr)
        print(_tail(log, 40), file=sys.stderr)
        raise LabError(f'{name}: {msg}')

    def wait_http(self, name, url, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.alive(name):
                self.fail(name, 'process exited during start')
            try:
                code, _, _ = _http('GET', url, timeout=5)
                if code < 500:
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.5)
        self.fail(name, f'no answer on {url} after {timeout}s')

    # ------------------------------------------------------------ up --
    def all_proc_names(self):
        names = ['memcached', 'memcached-sat', 'network-standin', 'keystone',
                 'placement', 'glance-api', 'nova-api', 'nova-conductor',
                 'nova-scheduler']
        names += [f'nova-compute-{h}' for h in COMPUTES]
        faults = self.state.get('faults', {})
        if 'compute-down' in faults:
            names.remove(f'nova-compute-{COMPUTES[1]}')
        if 'unmapped-compute' in faults:
            names.append(f'nova-compute-{EXTRA_COMPUTE}')
        if 'memcached-saturation' in faults:
            names.append('mc-holder')
        for fault in ('cell0-conductor', 'cell0-compute'):  # faults_cells.py
            if fault in faults:
                names.append(faults[fault]['proc'])
        return names

    def is_up(self):
        return bool(self.state.get('complete')) and all(
            self.alive(n) for n in self.all_proc_names())

    @_locked
    def up(self):
        t0 = time.time()
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.is_up():
            _log(f'lab already up in {self.dir}')
            self.summary()
            return self.state
        self.state['complete'] = False
        self.state['lab_dir'] = str(self.dir)
        for d in (self.etc, self.logs, self.data, self.run):
            d.mkdir(parents=True, exist_ok=True)
        self.ensure_system()
        self.ensure_venv()
        self.ensure_ports()
        self.state['paths'] = self.paths
        self.save()
        for name in ('admin_password', 'service_password', 'db_password',
                     'db_svc_password', 'rabbit_password'):
            self._secret(name)
        _log('databases, vhost and users')
        self.ensure_databases(
            fresh=not any(self.alive(n) for n in self.state.get('procs', {})))
        self.ensure_rabbit()
        self.write_configs()
        p = self.ports
        self.start_memcached('memcached', p['memcached'], ['-m', '64'])
        self.start_memcached('memcached-sat', p['memcached_sat'],
                             ['-m', '16', '-t', '1',
                              '-c', str(MEMCACHED_SAT_CONNS)])
        if not self.alive('network-standin'):
            self.spawn('network-standin', [sys.executable,
                                           LAB_SRC / 'network_standin.py',
                                           p['network']])

        ksconf = self.etc / 'keystone' / 'keystone.conf'
        km = [self.bin / 'keystone-manage', '--config-file', ksconf]
        nm = [self.bin / 'nova-manage', '--config-file',
              self.etc / 'nova' / 'nova.conf']
        _log('schema migrations (keystone, placement, glance, nova_api)')
        t1 = time.time()
        self._par([
            ('keystone-manage', [*km, 'db_sync']),
            ('placement-manage', [self.bin / 'placement-manage',
                                  '--config-file',
                                  self.etc / 'placement' / 'placement.conf',
                                  'db', 'sync']),
            ('glance-manage', [self.bin / 'glance-manage', '--config-file',
                               self.etc / 'glance' / 'glance-api.conf',
                               'db_sync']),
            ('nova-manage', [*nm, 'api_db', 'sync']),
        ])
        _log(f'migrations done in {time.time() - t1:.0f}s')
        if not any((self.etc / 'keystone' / 'fernet-keys').iterdir()):
            self._cmd([*km, 'fernet_setup', '--keystone-user', 'root',
                       '--keystone-group', 'root'], 'keystone-manage')
        if not any((self.etc / 'keystone' / 'credential-keys').iterdir()):
            self._cmd([*km, 'credential_setup', '--keystone-user', 'root',
                       '--keystone-group', 'root'], 'keystone-manage')
        kurl = f"http://127.0.0.1:{p['keystone']}/v3/"
        self._cmd([*km, 'bootstrap', '--bootstrap-password',
                   self._secret('admin_password'),
                   '--bootstrap-admin-url', kurl,
                   '--bootstrap-internal-url', kurl,
                   '--bootstrap-public-url', kurl,
                   '--bootstrap-region-id', REGION], 'keystone-manage')
        self.start_wsgi('keystone', 'keystone.wsgi.api', p['keystone'])
        self.start_wsgi('placement', 'placement.wsgi.api', p['placement'])
        self.start_wsgi('glance-api', 'glance.wsgi.api', p['glance'])

        _log('nova cells (map_cell0, create_cell cell1, db sync)')
        t1 = time.time()
        self.nova_manage('cell_v2', 'map_cell0', '--database_connection',
                         self.db_url(DBS['nova_cell0']))
        _, cells = self.nova_manage('cell_v2', 'list_cells', '--verbose')
        if ' cell1 ' not in cells:
            self.nova_manage('cell_v2', 'create_cell', '--name', 'cell1',
                             '--database_connection',
                             self.db_url(DBS['nova_cell1']),
                             '--transport-url', self.transport_url(),
                             '--verbose')
        self.nova_manage('db', 'sync')
        _log(f'nova db done in {time.time() - t1:.0f}s')

        self.wait_http('keystone', self.url('identity'))
        self.ensure_catalog()
        conf = self.etc / 'nova' / 'nova.conf'
        self.start_wsgi('nova-api', 'nova.wsgi.osapi_compute', p['nova_api'])
        self.start_nova_service('nova-conductor', 'nova-conductor', conf)
        self.start_nova_service('nova-scheduler', 'nova-scheduler', conf)
        for host in COMPUTES:
            if 'compute-down' in self.state.get('faults', {}) and \
                    host == COMPUTES[1]:
                continue
            self.start_compute(host)
        self.wait_http('placement', self.url('placement'))
        self.wait_http('glance-api', self.url('image'))
        self.wait_http('nova-api', self.url('compute'))
        for host in COMPUTES:
            name = f'nova-compute-{host}'
            if self.alive(name):
                self.wait_compute(host, 'up', proc=name)
        for name in ('nova-conductor', 'nova-scheduler'):
            if not self.alive(name):
                self.fail(name, 'process exited')
        _log('discover_hosts')
        self.nova_manage('cell_v2', 'discover_hosts', '--verbose')
        self.ensure_flavors_and_image()
        self.state['complete'] = True
        self.state.setdefault('faults', {})
        self.state.setdefault('timings', {})['up_s'] = round(
            time.time() - t0, 1)
        self.save()
        _log(f'lab up in {time.time() - t0:.0f}s')
        self.summary()
        return self.state

    def summary(self):
        p = self.ports
        print(f'healthd-lab in {self.dir}')
        for k in ('keystone', 'placement', 'nova_api', 'glance', 'network',
                  'memcached', 'memcached_sat', 'healthd'):
            print(f'  {k:<14} 127.0.0.1:{p[k]}')
        print(f"  clouds.yaml    {self.dir / 'clouds.yaml'} (cloud {CLOUD})")
        print(f"  healthd.yaml   {self.dir / 'healthd.yaml'}")
        print(f"  nova.conf      {self.etc / 'nova' / 'nova.conf'}")
        faults = ', '.join(sorted(self.state.get('faults', {}))) or 'none'
        print(f'  faults         {faults}')

    # ---------------------------------------------------------- down --
    @_locked
    def down(self):
        _log('stopping lab processes')
        self.stop_all(timeout=8)
        if _port_open(DB_PORT, DB_HOST) and shutil.which('mysql'):
            sql = [f'DROP DATABASE IF EXISTS `{db}`;' for db in DBS.values()]
            for host in ('localhost', '127.0.0.1'):
                for user in (SVC_DB_USER, READER_DB_USER):
                    sql.append(f"DROP USER IF EXISTS '{user}'@'{host}';")
            self.mysql('\n'.join(sql), check=False)
        if shutil.which('rabbitmqctl') and _port_open(RABBIT_PORT):
            for vhost in (RABBIT_VHOST, RABBIT_VHOST + '_super'):  # _super: faults_cells.py
                self._cmd(['rabbitmqctl', 'delete_vhost', vhost],
                          'rabbitmq', check=False)
            self._cmd(['rabbitmqctl', 'delete_user', RABBIT_USER],
                      'rabbitmq', check=False)
        # runtime data goes; the venv and logs stay (the venv is a cache)
        for d in (self.etc, self.data, self.run, self.secrets):
            shutil.rmtree(d, ignore_errors=True)
        for f in ('clouds.yaml', 'healthd.yaml'):
            (self.dir / f).unlink(missing_ok=True)
        self.state = {}
        self.state_file.unlink(missing_ok=True)
        _log('lab down')

    # -------------------------------------------------------- status --
    @_locked
    def status(self, verbose=True):
        problems = []
        lines = []
        if not self.state.get('complete'):
            return False, f'lab is not up (no complete state in {self.state_file})'
        for name in self.all_proc_names():
            if not self.alive(name):
                problems.append(f'process {name} is not running')
        try:
            self.token(refresh=True)
        except Exception as exc:
            problems.append(f'keystone: {exc}')
            return False, '\n'.join(problems)
        lines.append('Catalog:')
        _, svcs = self.api('identity', 'GET', '/services')
        _, eps = self.api('identity', 'GET', '/endpoints')
        by_type = {}
        for s in svcs['services']:
            by_type.setdefault(s['type'], []).append(s)
            ifaces = sorted(e['interface'] for e in eps['endpoints']
                            if e['service_id'] == s['id'])
            urls = sorted({e['url'] for e in eps['endpoints']
                           if e['service_id'] == s['id']})
            lines.append(f"  {s['type']!s:<10} {s['name']!s:<10} {s['id']} "
                         f"{','.join(ifaces) or 'NO-ENDPOINTS'} {' '.join(urls)}")
        for t, ss in by_type.items():
            if len(ss) > 1:
                problems.append(f'{len(ss)} services of type {t}')
        for t in ('identity', 'placement', 'compute', 'image', 'network'):
            if t not in by_type:
                problems.append(f'no {t} service in catalog')
        lines.append('Compute services:')
        try:
            services = self.compute_services()
        except Exception as exc:
            problems.append(f'nova-api: {exc}')
            services = []
        for s in services:
            lines.append(f"  {s['host']!s:<14} {s['state']!s:<8} {s['status']!s:<8} {s['id']}")
            if s['state'] != 'up':
                problems.append(f"nova-compute on {s['host']} is {s['state']}")
        hosts = {s['host'] for s in services}
        for h in COMPUTES:
            if h not in hosts:
                problems.append(f'no nova-compute service for {h}')
        lines.append('Hypervisors:')
        try:
            for h in self.hypervisors():
                lines.append(f"  {h['hypervisor_hostname']!s:<14} {h['state']!s:<6} {h['status']}")
        except Exception as exc:
            problems.append(f'hypervisors: {exc}')
        lines.append('Cell host mappings:')
        mappings = self.host_mappings()
        for h, c in sorted(mappings.items()):
            lines.append(f'  {h!s:<14} {c}')
        for h in hosts:
            if h not in mappings:
                problems.append(f'compute host {h} has no host mapping')
        for h in COMPUTES:
            row = self.compute_node_row(h)
            if row and (row['free_disk_gb'] or 0) < 0:
                problems.append(f"{h} free_disk_gb = {row['free_disk_gb']}")
        if Path(self.paths['nova_bad_conf']).exists():
            problems.append(f"{self.paths['nova_bad_conf']} exists")
        faults = sorted(self.state.get('faults', {}))
        lines.append(f"Injected faults: {', '.join(faults) or 'none'}")
        if faults:
            problems.append(f"faults injected: {', '.join(faults)}")
        lines.append('Problems:' if problems else 'OK')
        lines += ['  ' + p for p in problems]
        return not problems, '\n'.join(lines)


# ------------------------------------------------------------ python api --

def load_state():
    """The lab's state dict (ports, pids, paths, faults), or None."""
    st = Lab().state
    return st or None


def up():
    return Lab().up()


def down():
    Lab().down()


def status():
    """(ok, report) -- ok is False if anything is off."""
    return Lab().status()


def inject(name):
    return Lab().inject(name)


def revert(name):
    Lab().revert(name)


def env_exports(lab=None):
    lab = lab or Lab()
    p = lab.paths
    return [
        ('HEALTHD_LAB_DIR', p['lab_dir']),
        ('OS_CLIENT_CONFIG_FILE', p['clouds_yaml']),
        ('OS_CLOUD', CLOUD),
        ('HEALTHD_LAB_HEALTHD_CONFIG', p['healthd_yaml']),
        ('HEALTHD_LAB_NOVA_CONF', p['nova_conf']),
        ('HEALTHD_LAB_KEYSTONE_CONF', p['keystone_conf']),
        ('HEALTHD_LAB_PLACEMENT_CONF', p['placement_conf']),
        ('HEALTHD_LAB_NOVA_BAD_CONF', p['nova_bad_conf']),
        ('HEALTHD_LAB_BIN', str(lab.bin)),
    ]
