#!/usr/bin/env python3
"""healthd-lab: a real mini OpenStack control plane on loopback.

Stdlib only.  The OpenStack services and their CLIs (keystone-manage,
placement-manage, glance-manage, nova-manage, openstack) run from the lab's
own virtualenv ($HEALTHD_LAB_DIR/venv).  See lab/README.md.

Python API (for pytest fixtures and other tooling):

    up() -> state dict        down()          status() -> (ok, report)
    inject(name) / revert(name)  ('all' for every fault)
    load_state() -> state dict or None
"""
import argparse
import fcntl
import functools
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

LAB_SRC = Path(__file__).resolve().parent
REPO = LAB_SRC.parent

# Names of the lab's databases, DB users, vhost and broker user start with
# this prefix; HEALTHD_LAB_PREFIX (with its own HEALTHD_LAB_DIR) lets a second
# lab live beside the default one on the same MariaDB/RabbitMQ.
PREFIX = os.environ.get('HEALTHD_LAB_PREFIX', 'hdlab')
if not PREFIX.replace('_', '').isalnum() or not PREFIX.islower():
    raise SystemExit('HEALTHD_LAB_PREFIX must be lower-case [a-z0-9_]')
REGION = 'RegionOne'
CLOUD = 'healthd-lab'
COMPUTES = ('lab-compute1', 'lab-compute2')
EXTRA_COMPUTE = 'lab-compute3'
CONTROLLER_HOST = 'lab-controller'
DB_HOST = os.environ.get('HEALTHD_LAB_DB_HOST', '127.0.0.1')
DB_PORT = int(os.environ.get('HEALTHD_LAB_DB_PORT', '3306'))
RABBIT_PORT = int(os.environ.get('HEALTHD_LAB_RABBIT_PORT', '5672'))
DBS = {
    'keystone': PREFIX + '_keystone',
    'placement': PREFIX + '_placement',
    'nova_api': PREFIX + '_nova_api',
    'nova_cell0': PREFIX + '_nova_cell0',
    'nova_cell1': PREFIX + '_nova_cell1',
    'glance': PREFIX + '_glance',
}
SVC_DB_USER = PREFIX + '_svc'        # used by the OpenStack services
READER_DB_USER = PREFIX + '_reader'  # SELECT-only, used by healthd
RABBIT_USER = PREFIX + '_nova'
RABBIT_VHOST = PREFIX
SERVICE_USERS = ('nova', 'placement', 'glance')
FLAVOR_TINY = 'lab-tiny'
FLAVOR_HUGE = 'lab-huge'
IMAGE_NAME = 'lab-image'
# nova.virt.fake.FakeDriver reports local_gb = 600000 for every node.
FAKE_LOCAL_GB = 600000
HUGE_DISK_GB = 400000          # two of these overcommit one fake node
OVERCOMMIT_SERVERS = 2
OVERCOMMIT_RATIO = 16.0
MEMCACHED_SAT_CONNS = 16       # memcached -c for the saturation instance
NOVA_MICROVERSION = 'compute 2.90'
PLACEMENT_MICROVERSION = 'placement 1.39'
PY_VERSION = '3.11'

FAULTS = ('duplicate-service', 'unmapped-compute', 'compute-down',
          'disk-overcommit', 'memcached-saturation', 'bad-config-hosts')

PORT_NAMES = ('keystone', 'placement', 'nova_api', 'glance', 'network',
              'memcached', 'memcached_sat', 'healthd', 'dead_rabbit',
              'dead_memcached')

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_CHILDREN = {}


class LabError(Exception):
    pass


def lab_dir():
    return Path(os.environ.get('HEALTHD_LAB_DIR') or (REPO / '.lab')).resolve()


def _log(msg):
    print('[healthd-lab %s] %s' % (time.strftime('%H:%M:%S'), msg),
          flush=True)


# --------------------------------------------------------------- helpers --

def _port_open(port, host='127.0.0.1', timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _tail(path, n=40):
    try:
        with open(path, 'rb') as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            lines = f.read().decode(errors='replace').splitlines()
        return '\n'.join(lines[-n:])
    except OSError as exc:
        return '(no log: %s)' % exc


def _http(method, url, body=None, headers=None, timeout=60, raw=None):
    hdrs = {'Accept': 'application/json'}
    data = None
    if raw is not None:
        data = raw
        hdrs['Content-Type'] = 'application/octet-stream'
    elif body is not None:
        data = json.dumps(body).encode()
        hdrs['Content-Type'] = 'application/json'
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            payload = resp.read()
            code, rh = resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        code, rh = exc.code, dict(exc.headers)
    try:
        parsed = json.loads(payload) if payload else None
    except ValueError:
        parsed = payload.decode(errors='replace')
    return code, rh, parsed


def _utc_epoch(stamp):
    """Nova's updated_at ('2026-01-01T00:00:00.000000', UTC) to epoch."""
    if not stamp:
        return 0.0
    import calendar
    stamp = stamp.rstrip('Z').split('+')[0]
    return calendar.timegm(time.strptime(stamp.split('.')[0],
                                         '%Y-%m-%dT%H:%M:%S')) + (
        float('0.' + stamp.split('.')[1]) if '.' in stamp else 0.0)


def _proc_starttime(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(')') + 2:].split()
    if fields[0] in ('Z', 'X'):
        return None
    return fields[19]


def _pid_alive(info):
    if not info:
        return False
    pid = info['pid']
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    st = _proc_starttime(pid)
    return st is not None and st == info.get('starttime')


def _write(path, text, mode=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(text)
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)


def _ini(sections):
    out = []
    for sect, opts in sections:
        out.append('[%s]' % sect)
        for k, v in opts:
            out.append('%s = %s' % (k, v))
        out.append('')
    return '\n'.join(out)


# ------------------------------------------------------------------ lab --

def _locked(method):
    """Serialize lab operations across processes (flock on <lab>/.lock).

    Several engineers/test sessions may drive the same lab dir; the state is
    re-read once the lock is held so no one works on a stale copy."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self._lock_depth:
            self._lock_depth += 1
            try:
                return method(self, *args, **kwargs)
            finally:
                self._lock_depth -= 1
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / '.lock', 'a+') as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _log('waiting for another healthd-lab operation on %s'
                     % self.dir)
                fcntl.flock(fh, fcntl.LOCK_EX)
            self.state = self._load()
            self._lock_depth = 1
            try:
                return method(self, *args, **kwargs)
            finally:
                self._lock_depth = 0
                fcntl.flock(fh, fcntl.LOCK_UN)
    return wrapper


class Lab:
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
                              for h in COMPUTES + (EXTRA_COMPUTE,)},
            'clouds_yaml': str(self.dir / 'clouds.yaml'),
            'healthd_yaml': str(self.dir / 'healthd.yaml'),
            'db_password_file': str(self.secrets / 'db_password'),
            'state': str(self.state_file),
            'logs': str(self.logs),
        }

    def _compute_conf_path(self, host):
        return self.etc / 'nova' / ('nova-compute-%s.conf' % host)

    # ------------------------------------------------------- commands --
    def _cmd(self, argv, logname, check=True, env=None, timeout=900,
             input_text=None):
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / ('%s.log' % logname)
        full_env = dict(os.environ)
        full_env.update(env or {})
        with open(log, 'ab') as f:
            f.write(('\n$ %s\n' % ' '.join(map(str, argv))).encode())
            f.flush()
            res = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, env=full_env,
                                 timeout=timeout, input=(input_text or '').encode(),
                                 cwd=str(self.dir))
            f.write(res.stdout)
        out = res.stdout.decode(errors='replace')
        if check and res.returncode != 0:
            print(_tail(log), file=sys.stderr)
            raise LabError('%s failed (exit %d); log: %s'
                           % (' '.join(map(str, argv[:3])), res.returncode, log))
        return res.returncode, out

    def _par(self, jobs):
        """Run several (logname, argv) commands in parallel; fail on any."""
        self.logs.mkdir(parents=True, exist_ok=True)
        running = []
        for logname, argv in jobs:
            log = self.logs / ('%s.log' % logname)
            f = open(log, 'ab')
            f.write(('\n$ %s\n' % ' '.join(map(str, argv))).encode())
            f.flush()
            p = subprocess.Popen([str(a) for a in argv], stdout=f,
                                 stderr=subprocess.STDOUT, cwd=str(self.dir))
            running.append((logname, argv, p, f, log))
        failed = []
        for logname, argv, p, f, log in running:
            rc = p.wait(timeout=900)
            f.close()
            if rc != 0:
                failed.append((logname, rc, log))
        for logname, rc, log in failed:
            print('--- %s (exit %d), last lines of %s:' % (logname, rc, log),
                  file=sys.stderr)
            print(_tail(log), file=sys.stderr)
        if failed:
            raise LabError('failed: %s' % ', '.join(x[0] for x in failed))

    def mysql(self, sql, db=None, check=True):
        argv = ['mysql', '-uroot', '-h', DB_HOST, '-P', str(DB_PORT), '-N',
                '-B']
        pw = os.environ.get('HEALTHD_LAB_DB_ROOT_PASSWORD')
        if pw:
            argv.append('-p' + pw)
        if db:
            argv += ['-D', db]
        argv += ['-e', sql]
        res = subprocess.run(argv, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=60)
        if check and res.returncode != 0:
            raise LabError('mysql failed: %s\n%s' % (
                sql[:200], res.stderr.decode(errors='replace')))
        return res.stdout.decode()

    # ------------------------------------------------------ processes --
    def spawn(self, name, argv, env=None):
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / ('%s.log' % name)
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.pop('OS_CLOUD', None)
        full_env.pop('OS_CLIENT_CONFIG_FILE', None)
        with open(log, 'ab') as f:
            f.write(('\n==== %s starting: %s\n' % (
                time.strftime('%Y-%m-%d %H:%M:%S'),
                ' '.join(map(str, argv)))).encode())
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
                try:
                    os.kill(pid, signal.SIGTERM)
                except OSError:
                    pass
            deadline = time.time() + timeout
            while time.time() < deadline and _pid_alive(info):
                time.sleep(0.1)
            if _pid_alive(info):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
                for _ in range(50):
                    if not _pid_alive(info):
                        break
                    time.sleep(0.1)
            child = _CHILDREN.pop(pid, None)
            if child is not None:
                try:
                    child.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
        if forget and info:
            self.state['procs'].pop(name, None)
            self.save()

    def stop_all(self, timeout=8.0):
        """SIGTERM every recorded process group at once, SIGKILL leftovers."""
        procs = self.state.get('procs', {})
        live = {n: i for n, i in procs.items() if _pid_alive(i)}
        for info in live.values():
            try:
                os.killpg(info['pid'], signal.SIGTERM)
            except OSError:
                pass
        deadline = time.time() + timeout
        while time.time() < deadline and any(_pid_alive(i)
                                             for i in live.values()):
            time.sleep(0.2)
        for name, info in live.items():
            if _pid_alive(info):
                _log('%s did not stop on SIGTERM: SIGKILL' % name)
                try:
                    os.killpg(info['pid'], signal.SIGKILL)
                except OSError:
                    pass
        for name in list(procs):
            self.stop(name, timeout=2)

    def fail(self, name, msg):
        log = self.logs / ('%s.log' % name)
        print('--- last lines of %s:' % log, file=sys.stderr)
        print(_tail(log, 40), file=sys.stderr)
        raise LabError('%s: %s' % (name, msg))

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
        self.fail(name, 'no answer on %s after %ds' % (url, timeout))

    # ------------------------------------------------------- system --
    def _apt_install(self, pkgs):
        _log('apt-get install %s' % ' '.join(pkgs))
        policy = Path('/usr/sbin/policy-rc.d')
        created = False
        if not policy.exists():
            # keep Debian's init scripts from starting the packaged services
            # (memcached on 11211 in particular); the lab starts its own.
            policy.write_text('#!/bin/sh\nexit 101\n')
            policy.chmod(0o755)
            created = True
        try:
            env = {'DEBIAN_FRONTEND': 'noninteractive'}
            self._cmd(['apt-get', 'update', '-qq'], 'apt', env=env)
            self._cmd(['apt-get', 'install', '-y', '-q'] + list(pkgs), 'apt',
                      env=env)
        finally:
            if created:
                policy.unlink()

    def ensure_system(self):
        if not _port_open(DB_PORT, DB_HOST):
            if not shutil.which('mariadbd') and not os.path.exists(
                    '/usr/sbin/mariadbd'):
                self._apt_install(['mariadb-server', 'mariadb-client'])
            _log('starting MariaDB')
            os.makedirs('/run/mysqld', exist_ok=True)
            subprocess.run(['chown', 'mysql:mysql', '/run/mysqld'],
                           check=False)
            self._cmd(['start-stop-daemon', '--start', '--oknodo',
                       '--background', '--exec', '/usr/sbin/mariadbd'],
                      'system')
            self._wait_port(DB_PORT, 'MariaDB', 60, DB_HOST)
        elif not shutil.which('mysql'):
            self._apt_install(['mariadb-client'])
        if not _port_open(RABBIT_PORT):
            if not shutil.which('rabbitmq-server'):
                self._apt_install(['rabbitmq-server'])
            _log('starting RabbitMQ')
            self._cmd(['rabbitmq-server', '-detached'], 'system')
            self._wait_port(RABBIT_PORT, 'RabbitMQ', 120)
            for _ in range(60):
                rc, _ = self._cmd(['rabbitmqctl', 'status'], 'system',
                                  check=False)
                if rc == 0:
                    break
                time.sleep(1)
        if not shutil.which('memcached'):
            self._apt_install(['memcached'])

    def _wait_port(self, port, what, timeout, host='127.0.0.1'):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if _port_open(port, host):
                return
            time.sleep(0.5)
        raise LabError('%s did not open port %d' % (what, port))

    def ensure_venv(self):
        req = LAB_SRC / 'requirements.txt'
        digest = hashlib.sha256(req.read_bytes()).hexdigest()
        marker = self.venv / '.healthd-lab-requirements'
        py = self.bin / 'python'
        if py.exists() and marker.exists() and \
                marker.read_text().strip() == digest:
            return
        t0 = time.time()
        if not py.exists():
            base = shutil.which('python' + PY_VERSION)
            if not base:
                if sys.version_info[:2] == (3, 11):
                    base = sys.executable
                else:
                    raise LabError('python%s is needed for the lab venv'
                                   % PY_VERSION)
            _log('creating venv %s' % self.venv)
            self._cmd([base, '-m', 'venv', self.venv], 'pip')
        _log('pip install -r lab/requirements.txt (about 2 minutes)')
        self._cmd([py, '-m', 'pip', 'install', '-q', '-r', req], 'pip',
                  timeout=1800)
        _write(marker, digest + '\n')
        self.state.setdefault('timings', {})['pip_install_s'] = round(
            time.time() - t0, 1)
        _log('venv ready in %.0fs' % (time.time() - t0))

    # ---------------------------------------------------------- ports --
    def ensure_ports(self):
        used = set(self.ports.values())
        for name in PORT_NAMES:
            env = os.environ.get('HEALTHD_LAB_PORT_%s' % name.upper())
            if env:
                self.ports[name] = int(env)
            elif name not in self.ports:
                while True:
                    p = _free_port()
                    if p not in used:
                        break
                self.ports[name] = p
            used.add(self.ports[name])
        self.save()

    # ------------------------------------------------------ db & mq --
    def db_url(self, db, user=SVC_DB_USER, with_password=True):
        if with_password:
            return 'mysql+pymysql://%s:%s@%s:%d/%s?charset=utf8' % (
                user, self._secret('db_svc_password'), DB_HOST, DB_PORT, db)
        return 'mysql+pymysql://%s@%s:%d/%s' % (user, DB_HOST, DB_PORT, db)

    def transport_url(self, port=None):
        return 'rabbit://%s:%s@127.0.0.1:%d/%s' % (
            RABBIT_USER, self._secret('rabbit_password'), port or RABBIT_PORT,
            RABBIT_VHOST)

    def ensure_databases(self, fresh=False):
        svc_pw = self._secret('db_svc_password')
        rd_pw = self._secret('db_password')
        sql = []
        if fresh:
            # Databases left by a lab whose processes are gone (a killed
            # session, another checkout) hold its services and compute nodes:
            # start from empty schemas so they cannot haunt this lab.
            sql += ['DROP DATABASE IF EXISTS `%s`;' % db for db in DBS.values()]
        for db in DBS.values():
            sql.append('CREATE DATABASE IF NOT EXISTS `%s` CHARACTER SET utf8;'
                       % db)
        for host in ('localhost', '127.0.0.1'):
            for user, pw in ((SVC_DB_USER, svc_pw), (READER_DB_USER, rd_pw)):
                sql.append("CREATE USER IF NOT EXISTS '%s'@'%s' "
                           "IDENTIFIED BY '%s';" % (user, host, pw))
                sql.append("ALTER USER '%s'@'%s' IDENTIFIED BY '%s';"
                           % (user, host, pw))
            for db in DBS.values():
                sql.append("GRANT ALL PRIVILEGES ON `%s`.* TO '%s'@'%s';"
                           % (db, SVC_DB_USER, host))
                sql.append("GRANT SELECT ON `%s`.* TO '%s'@'%s';"
                           % (db, READER_DB_USER, host))
        sql.append('FLUSH PRIVILEGES;')
        self.mysql('\n'.join(sql))

    def ensure_rabbit(self):
        pw = self._secret('rabbit_password')
        rc, out = self._cmd(['rabbitmqctl', '-q', 'list_vhosts'], 'rabbitmq')
        if RABBIT_VHOST not in out.split():
            self._cmd(['rabbitmqctl', 'add_vhost', RABBIT_VHOST], 'rabbitmq')
        rc, out = self._cmd(['rabbitmqctl', 'add_user', RABBIT_USER, pw],
                            'rabbitmq', check=False)
        if rc != 0:  # already there (from an earlier up): set the password
            self._cmd(['rabbitmqctl', 'change_password', RABBIT_USER, pw],
                      'rabbitmq')
        self._cmd(['rabbitmqctl', 'set_permissions', '-p', RABBIT_VHOST,
                   RABBIT_USER, '.*', '.*', '.*'], 'rabbitmq')

    # -------------------------------------------------------- configs --
    def _authtoken(self, user):
        k = self.ports['keystone']
        return [
            ('www_authenticate_uri', 'http://127.0.0.1:%d' % k),
            ('auth_url', 'http://127.0.0.1:%d' % k),
            ('memcached_servers', '127.0.0.1:%d' % self.ports['memcached']),
            ('auth_type', 'password'),
            ('project_domain_name', 'Default'),
            ('user_domain_name', 'Default'),
            ('project_name', 'service'),
            ('username', user),
            ('password', self._secret('service_password')),
            ('region_name', REGION),
        ]

    def _ks_auth(self, user):
        return [
            ('auth_type', 'password'),
            ('auth_url', 'http://127.0.0.1:%d/v3' % self.ports['keystone']),
            ('project_domain_name', 'Default'),
            ('user_domain_name', 'Default'),
            ('project_name', 'service'),
            ('username', user),
            ('password', self._secret('service_password')),
            ('region_name', REGION),
            ('valid_interfaces', 'public'),
        ]

    def nova_conf_text(self, host=CONTROLLER_HOST, with_db=True,
                       rabbit_port=None, memcached_port=None,
                       extra_default=()):
        mc = '127.0.0.1:%d' % (memcached_port or self.ports['memcached'])
        state_path = self.data / ('nova-%s' % host)
        default = [
            ('host', host),
            ('my_ip', '127.0.0.1'),
            ('state_path', state_path),
            ('instances_path', state_path / 'instances'),
            ('transport_url', self.transport_url(rabbit_port)),
            ('compute_driver', 'fake.FakeDriverWithoutFakeNodes'),
            ('report_interval', 2),
            ('service_down_time', 8),
            ('graceful_shutdown_timeout', 5),
            ('periodic_fuzzy_delay', 0),
            ('heal_instance_info_cache_interval', 60),
            ('update_resources_interval', 10),
            ('debug', 'false'),
        ] + list(extra_default)
        sections = [('DEFAULT', default),
                    ('api', [('auth_strategy', 'keystone')])]
        if with_db:
            sections += [
                ('api_database', [('connection',
                                   self.db_url(DBS['nova_api']))]),
                ('database', [('connection',
                               self.db_url(DBS['nova_cell1']))]),
            ]
        sections += [
            ('keystone_authtoken', self._authtoken('nova') + [
                ('service_token_roles_required', 'true')]),
            ('service_user', [('send_service_user_token', 'true')]
             + self._ks_auth('nova')),
            ('placement', self._ks_auth('nova')),
            ('neutron', self._ks_auth('nova')),
            ('glance', [('region_name', REGION),
                        ('valid_interfaces', 'public')]),
            ('cache', [('enabled', 'true'),
                       ('backend', 'dogpile.cache.pymemcache'),
                       ('memcache_servers', mc)]),
            ('scheduler', [('discover_hosts_in_cells_interval', -1)]),
            ('oslo_concurrency', [('lock_path', state_path / 'lock')]),
            ('oslo_messaging_notifications', [('driver', 'noop')]),
            ('vnc', [('enabled', 'false')]),
            ('wsgi', [('api_paste_config',
                       self.etc / 'nova' / 'api-paste.ini')]),
        ]
        return ('# generated by healthd-lab (%s)\n' % host) + _ini(sections)

    def write_configs(self):
        p = self.ports
        mc = '127.0.0.1:%d' % p['memcached']
        ks = self.etc / 'keystone'
        (ks / 'fernet-keys').mkdir(parents=True, exist_ok=True)
        (ks / 'credential-keys').mkdir(parents=True, exist_ok=True)
        _write(ks / 'keystone.conf', '# generated by healthd-lab\n' + _ini([
            ('DEFAULT', [('debug', 'false')]),
            ('database', [('connection', self.db_url(DBS['keystone']))]),
            ('token', [('provider', 'fernet')]),
            ('fernet_tokens', [('key_repository', ks / 'fernet-keys')]),
            ('fernet_receipts', [('key_repository', ks / 'fernet-keys')]),
            ('credential', [('key_repository', ks / 'credential-keys')]),
            ('cache', [('enabled', 'true'),
                       ('backend', 'dogpile.cache.pymemcache'),
                       ('memcache_servers', mc)]),
        ]))
        _write(self.etc / 'placement' / 'placement.conf',
               '# generated by healthd-lab\n' + _ini([
                   ('DEFAULT', [('debug', 'false')]),
                   ('placement_database', [
                       ('connection', self.db_url(DBS['placement']))]),
                   ('api', [('auth_strategy', 'keystone')]),
                   ('keystone_authtoken', self._authtoken('placement')),
               ]))
        gl = self.etc / 'glance'
        gl.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.venv / 'etc' / 'glance' / 'glance-api-paste.ini',
                    gl / 'glance-api-paste.ini')
        gdata = self.data / 'glance'
        (gdata / 'images').mkdir(parents=True, exist_ok=True)
        (gdata / 'staging').mkdir(parents=True, exist_ok=True)
        _write(gl / 'glance-api.conf', '# generated by healthd-lab\n' + _ini([
            ('DEFAULT', [('debug', 'false'),
                         ('enabled_backends', 'fs:file'),
                         ('worker_self_reference_url',
                          'http://127.0.0.1:%d' % p['glance'])]),
            ('glance_store', [('default_backend', 'fs')]),
            ('fs', [('filesystem_store_datadir', gdata / 'images')]),
            ('os_glance_staging_store', [('filesystem_store_datadir',
                                          gdata / 'staging')]),
            ('os_glance_tasks_store', [('filesystem_store_datadir',
                                        gdata / 'tasks')]),
            ('database', [('connection', self.db_url(DBS['glance']))]),
            ('keystone_authtoken', self._authtoken('glance')),
            ('paste_deploy', [('flavor', 'keystone')]),
            ('oslo_concurrency', [('lock_path', gdata / 'lock')]),
        ]))
        nv = self.etc / 'nova'
        nv.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.venv / 'etc' / 'nova' / 'api-paste.ini',
                    nv / 'api-paste.ini')
        _write(nv / 'nova.conf', self.nova_conf_text())
        for host in COMPUTES + (EXTRA_COMPUTE,):
            self.write_compute_conf(host)
        self.write_client_files()

    def write_compute_conf(self, host, extra_default=()):
        _write(self._compute_conf_path(host),
               self.nova_conf_text(host, with_db=False,
                                   extra_default=extra_default))

    def write_client_files(self):
        p = self.ports
        _write(self.dir / 'clouds.yaml', (
            'clouds:\n'
            '  %(cloud)s:\n'
            '    auth:\n'
            '      auth_url: http://127.0.0.1:%(k)d/v3\n'
            '      username: admin\n'
            '      password: "%(pw)s"\n'
            '      project_name: admin\n'
            '      user_domain_name: Default\n'
            '      project_domain_name: Default\n'
            '    region_name: %(region)s\n'
            '    interface: public\n'
            '    identity_api_version: 3\n') % {
                'cloud': CLOUD, 'k': p['keystone'], 'region': REGION,
                'pw': self._secret('admin_password')}, 0o600)
        self._secret('db_password')
        d = self.dir
        pwf = self.secrets / 'db_password'

        def db(name):
            return '{url: "%s", password_file: %s}' % (
                self.db_url(DBS[name], READER_DB_USER, False), pwf)
        _write(d / 'healthd.yaml', (
            'server:\n'
            '  listen_address: 127.0.0.1\n'
            '  port: %(hp)d\n'
            'logging: {format: plain, level: INFO}\n'
            'backends:\n'
            '  openstack:\n'
            '    cloud: %(cloud)s\n'
            '    clouds_yaml: %(clouds)s\n'
            '    region_name: %(region)s\n'
            '    interface: public\n'
            '  databases:\n'
            '    keystone: %(ks)s\n'
            '    nova_api: %(na)s\n'
            '    placement: %(pl)s\n'
            '  memcached:\n'
            '    servers: ["127.0.0.1:%(mc)d", "127.0.0.1:%(mcs)d"]\n'
            'checks:\n'
            # The lab's computes report every 2 s: a host unmapped for 10 s
            # is not a discovery still in progress.
            '  cell_mapping:\n'
            '    grace_seconds: 10\n'
            '  service_config:\n'
            # A glob, as an operator would list a node's configs: the bad
            # copy is checked while the fault puts it there, and a healthy
            # lab lists no missing file.
            '    files: ["%(nova)s", %(kscf)s]\n') % {
                'hp': p['healthd'], 'cloud': CLOUD,
                'clouds': d / 'clouds.yaml', 'region': REGION,
                'ks': db('keystone'), 'na': db('nova_api'),
                'pl': db('placement'), 'mc': p['memcached'],
                'mcs': p['memcached_sat'],
                'nova': self.etc / 'nova' / '*.conf',
                'kscf': self.etc / 'keystone' / 'keystone.conf'})

    # ------------------------------------------------------- services --
    def _svc_env(self):
        return {
            'OS_KEYSTONE_CONFIG_DIR': str(self.etc / 'keystone'),
            'OS_PLACEMENT_CONFIG_DIR': str(self.etc / 'placement'),
            'OS_NOVA_CONFIG_DIR': str(self.etc / 'nova'),
            'OS_GLANCE_CONFIG_DIR': str(self.etc / 'glance'),
            'PATH': '%s:%s' % (self.bin, os.environ.get('PATH', '')),
        }

    def start_memcached(self, name, port, extra=()):
        if self.alive(name):
            return
        binary = shutil.which('memcached') or '/usr/bin/memcached'
        self.spawn(name, [binary, '-u', 'nobody', '-l', '127.0.0.1',
                          '-p', port, '-U', '0'] + list(extra))
        deadline = time.time() + 10
        while not _port_open(port):
            if not self.alive(name) or time.time() > deadline:
                self.fail(name, 'memcached did not start')
            time.sleep(0.1)

    def start_wsgi(self, name, module, port):
        if self.alive(name):
            return
        self.spawn(name, [self.bin / 'python', LAB_SRC / 'wsgi_runner.py',
                          name, module, port], env=self._svc_env())

    def start_nova_service(self, name, binary, conf):
        if self.alive(name):
            return
        self.spawn(name, [self.bin / binary, '--config-file', conf],
                   env=self._svc_env())

    def start_compute(self, host):
        (self.data / ('nova-%s' % host) / 'instances').mkdir(
            parents=True, exist_ok=True)
        self.start_nova_service('nova-compute-%s' % host, 'nova-compute',
                                self._compute_conf_path(host))

    # ------------------------------------------------------------ api --
    def url(self, svc):
        p = self.ports
        return {
            'identity': 'http://127.0.0.1:%d/v3' % p['keystone'],
            'placement': 'http://127.0.0.1:%d' % p['placement'],
            'compute': 'http://127.0.0.1:%d/v2.1' % p['nova_api'],
            'image': 'http://127.0.0.1:%d' % p['glance'],
            'network': 'http://127.0.0.1:%d' % p['network'],
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
            raise LabError('keystone auth failed: %s %s' % (code, data))
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
            raise LabError('%s %s %s -> %s: %s' % (svc, method, path, code,
                                                   data))
        return code, data

    # ------------------------------------------------------- keystone --
    def ks_find(self, coll, **filters):
        q = '&'.join('%s=%s' % kv for kv in filters.items())
        _, data = self.api('identity', 'GET', '/%s?%s' % (coll, q))
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
                self.api('identity', 'PATCH', '/users/%s' % uid,
                         {'user': {'password': pw}})
            else:
                uid = self.api('identity', 'POST', '/users', {'user': {
                    'name': user, 'domain_id': domain, 'password': pw,
                    'default_project_id': project}})[1]['user']['id']
            for rn in ('admin', 'service'):
                self.api('identity', 'PUT', '/projects/%s/users/%s/roles/%s'
                         % (project, uid, roles[rn]))
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
                    'description': 'healthd-lab %s' % stype}})[1][
                        'service']['id']
            ids['service_' + stype] = sid
            eps = self.ks_find('endpoints', service_id=sid)
            have = {e['interface']: e for e in eps}
            for iface in ('public', 'internal', 'admin'):
                if iface in have and have[iface]['url'] == url:
                    continue
                if iface in have:
                    self.api('identity', 'DELETE',
                             '/endpoints/%s' % have[iface]['id'])
                self.api('identity', 'POST', '/endpoints', {'endpoint': {
                    'service_id': sid, 'interface': iface, 'url': url,
                    'region_id': REGION}})
        self.save()

    # ---------------------------------------------------------- nova --
    def nova_manage(self, *args, check=True):
        return self._cmd([self.bin / 'nova-manage', '--config-file',
                          self.etc / 'nova' / 'nova.conf'] + list(args),
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
                if s['host'] == host and s['state'] == want:
                    if since is None or _utc_epoch(s.get('updated_at')) > since:
                        return s
            time.sleep(1)
        if proc:
            self.fail(proc, 'service %s not %s after %ds' % (host, want,
                                                             timeout))
        raise LabError('service %s not %s after %ds' % (host, want, timeout))

    def hypervisors(self):
        _, data = self.api('compute', 'GET', '/os-hypervisors/detail')
        return data['hypervisors']

    def host_mappings(self):
        out = self.mysql('SELECT h.host, c.name FROM host_mappings h '
                         'JOIN cell_mappings c ON h.cell_id = c.id',
                         DBS['nova_api'])
        return dict(l.split('\t') for l in out.splitlines() if l.strip())

    def compute_node_row(self, host):
        out = self.mysql(
            'SELECT uuid, free_disk_gb, local_gb, local_gb_used, '
            'disk_allocation_ratio FROM compute_nodes WHERE host = "%s" '
            'AND deleted = 0' % host, DBS['nova_cell1'])
        rows = [l.split('\t') for l in out.splitlines() if l.strip()]
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
            code, _ = self.api('compute', 'GET', '/flavors/%s' % fid,
                               ok=None)
            if code == 404:
                self.api('compute', 'POST', '/flavors', {'flavor': {
                    'name': fid, 'id': fid, 'ram': 64, 'vcpus': 1,
                    'disk': disk}})
        ids['flavor_tiny'] = FLAVOR_TINY
        ids['flavor_huge'] = FLAVOR_HUGE
        _, data = self.api('image', 'GET', '/v2/images?name=%s' % IMAGE_NAME)
        active = [i for i in data['images'] if i['status'] == 'active']
        if active:
            ids['image'] = active[0]['id']
        else:
            for i in data['images']:
                self.api('image', 'DELETE', '/v2/images/%s' % i['id'],
                         ok=None)
            _, img = self.api('image', 'POST', '/v2/images', {
                'name': IMAGE_NAME, 'disk_format': 'raw',
                'container_format': 'bare', 'visibility': 'public'})
            self.api('image', 'PUT', '/v2/images/%s/file' % img['id'],
                     raw=os.urandom(1024 * 1024))
            for _ in range(60):
                _, i = self.api('image', 'GET', '/v2/images/%s' % img['id'])
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
            body['server']['availability_zone'] = 'nova:%s' % host
        _, data = self.api('compute', 'POST', '/servers', body)
        return data['server']['id']

    def wait_server(self, sid, want='ACTIVE', timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            code, data = self.api('compute', 'GET', '/servers/%s' % sid,
                                  ok=None)
            if want == 'DELETED':
                if code == 404:
                    return None
            else:
                s = data['server']
                if s['status'] == want:
                    return s
                if s['status'] == 'ERROR':
                    raise LabError('server %s went to ERROR: %s' % (
                        sid, s.get('fault')))
            time.sleep(0.5)
        raise LabError('server %s not %s after %ds' % (sid, want, timeout))

    def delete_server(self, sid):
        self.api('compute', 'DELETE', '/servers/%s' % sid, ok=(204, 404))

    # ------------------------------------------------------------ up --
    def all_proc_names(self):
        names = ['memcached', 'memcached-sat', 'network-standin', 'keystone',
                 'placement', 'glance-api', 'nova-api', 'nova-conductor',
                 'nova-scheduler']
        names += ['nova-compute-%s' % h for h in COMPUTES]
        faults = self.state.get('faults', {})
        if 'compute-down' in faults:
            names.remove('nova-compute-%s' % COMPUTES[1])
        if 'unmapped-compute' in faults:
            names.append('nova-compute-%s' % EXTRA_COMPUTE)
        if 'memcached-saturation' in faults:
            names.append('mc-holder')
        return names

    def is_up(self):
        return bool(self.state.get('complete')) and all(
            self.alive(n) for n in self.all_proc_names())

    @_locked
    def up(self):
        t0 = time.time()
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.is_up():
            _log('lab already up in %s' % self.dir)
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
            ('keystone-manage', km + ['db_sync']),
            ('placement-manage', [self.bin / 'placement-manage',
                                  '--config-file',
                                  self.etc / 'placement' / 'placement.conf',
                                  'db', 'sync']),
            ('glance-manage', [self.bin / 'glance-manage', '--config-file',
                               self.etc / 'glance' / 'glance-api.conf',
                               'db_sync']),
            ('nova-manage', nm + ['api_db', 'sync']),
        ])
        _log('migrations done in %.0fs' % (time.time() - t1))
        if not any((self.etc / 'keystone' / 'fernet-keys').iterdir()):
            self._cmd(km + ['fernet_setup', '--keystone-user', 'root',
                            '--keystone-group', 'root'], 'keystone-manage')
        if not any((self.etc / 'keystone' / 'credential-keys').iterdir()):
            self._cmd(km + ['credential_setup', '--keystone-user', 'root',
                            '--keystone-group', 'root'], 'keystone-manage')
        kurl = 'http://127.0.0.1:%d/v3/' % p['keystone']
        self._cmd(km + ['bootstrap', '--bootstrap-password',
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
        _log('nova db done in %.0fs' % (time.time() - t1))

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
            name = 'nova-compute-%s' % host
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
        _log('lab up in %.0fs' % (time.time() - t0))
        self.summary()
        return self.state

    def summary(self):
        p = self.ports
        print('healthd-lab in %s' % self.dir)
        for k in ('keystone', 'placement', 'nova_api', 'glance', 'network',
                  'memcached', 'memcached_sat', 'healthd'):
            print('  %-14s 127.0.0.1:%d' % (k, p[k]))
        print('  clouds.yaml    %s (cloud %s)' % (self.dir / 'clouds.yaml',
                                                   CLOUD))
        print('  healthd.yaml   %s' % (self.dir / 'healthd.yaml'))
        print('  nova.conf      %s' % (self.etc / 'nova' / 'nova.conf'))
        print('  faults         %s' % (
            ', '.join(sorted(self.state.get('faults', {}))) or 'none'))

    # ---------------------------------------------------------- down --
    @_locked
    def down(self):
        _log('stopping lab processes')
        self.stop_all(timeout=8)
        if _port_open(DB_PORT, DB_HOST) and shutil.which('mysql'):
            sql = ['DROP DATABASE IF EXISTS `%s`;' % db for db in DBS.values()]
            for host in ('localhost', '127.0.0.1'):
                for user in (SVC_DB_USER, READER_DB_USER):
                    sql.append("DROP USER IF EXISTS '%s'@'%s';" % (user, host))
            self.mysql('\n'.join(sql), check=False)
        if shutil.which('rabbitmqctl') and _port_open(RABBIT_PORT):
            self._cmd(['rabbitmqctl', 'delete_vhost', RABBIT_VHOST],
                      'rabbitmq', check=False)
            self._cmd(['rabbitmqctl', 'delete_user', RABBIT_USER],
                      'rabbitmq', check=False)
        # runtime data goes; the venv and logs stay (the venv is a cache)
        for d in (self.etc, self.data, self.run, self.secrets):
            shutil.rmtree(d, ignore_errors=True)
        for f in ('clouds.yaml', 'healthd.yaml'):
            try:
                (self.dir / f).unlink()
            except FileNotFoundError:
                pass
        self.state = {}
        try:
            self.state_file.unlink()
        except FileNotFoundError:
            pass
        _log('lab down')

    # -------------------------------------------------------- status --
    @_locked
    def status(self, verbose=True):
        problems = []
        lines = []
        if not self.state.get('complete'):
            return False, 'lab is not up (no complete state in %s)' % \
                self.state_file
        for name in self.all_proc_names():
            if not self.alive(name):
                problems.append('process %s is not running' % name)
        try:
            self.token(refresh=True)
        except Exception as exc:
            problems.append('keystone: %s' % exc)
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
            lines.append('  %-10s %-10s %s %s %s' % (
                s['type'], s['name'], s['id'], ','.join(ifaces) or
                'NO-ENDPOINTS', ' '.join(urls)))
        for t, ss in by_type.items():
            if len(ss) > 1:
                problems.append('%d services of type %s' % (len(ss), t))
        for t in ('identity', 'placement', 'compute', 'image', 'network'):
            if t not in by_type:
                problems.append('no %s service in catalog' % t)
        lines.append('Compute services:')
        try:
            services = self.compute_services()
        except Exception as exc:
            problems.append('nova-api: %s' % exc)
            services = []
        for s in services:
            lines.append('  %-14s %-8s %-8s %s' % (s['host'], s['state'],
                                                    s['status'], s['id']))
            if s['state'] != 'up':
                problems.append('nova-compute on %s is %s' % (s['host'],
                                                              s['state']))
        hosts = {s['host'] for s in services}
        for h in COMPUTES:
            if h not in hosts:
                problems.append('no nova-compute service for %s' % h)
        lines.append('Hypervisors:')
        try:
            for h in self.hypervisors():
                lines.append('  %-14s %-6s %s' % (
                    h['hypervisor_hostname'], h['state'], h['status']))
        except Exception as exc:
            problems.append('hypervisors: %s' % exc)
        lines.append('Cell host mappings:')
        mappings = self.host_mappings()
        for h, c in sorted(mappings.items()):
            lines.append('  %-14s %s' % (h, c))
        for h in hosts:
            if h not in mappings:
                problems.append('compute host %s has no host mapping' % h)
        for h in COMPUTES:
            row = self.compute_node_row(h)
            if row and (row['free_disk_gb'] or 0) < 0:
                problems.append('%s free_disk_gb = %d' % (
                    h, row['free_disk_gb']))
        if Path(self.paths['nova_bad_conf']).exists():
            problems.append('%s exists' % self.paths['nova_bad_conf'])
        faults = sorted(self.state.get('faults', {}))
        lines.append('Injected faults: %s' % (', '.join(faults) or 'none'))
        if faults:
            problems.append('faults injected: %s' % ', '.join(faults))
        lines.append('Problems:' if problems else 'OK')
        lines += ['  ' + p for p in problems]
        return not problems, '\n'.join(lines)

    # -------------------------------------------------------- faults --
    @_locked
    def inject(self, name):
        if name == 'all':
            for f in FAULTS:
                self.inject(f)
            return
        if name not in FAULTS:
            raise LabError('unknown fault %r (known: %s)' % (
                name, ', '.join(FAULTS)))
        if not self.state.get('complete'):
            raise LabError('lab is not up')
        faults = self.state.setdefault('faults', {})
        if name in faults:
            _log('%s already injected' % name)
            return faults[name]
        t0 = time.time()
        info = getattr(self, '_inject_' + name.replace('-', '_'))()
        info['injected_at'] = time.time()
        info['inject_s'] = round(time.time() - t0, 1)
        faults[name] = info
        self.save()
        _log('injected %s in %.1fs' % (name, time.time() - t0))
        return info

    @_locked
    def revert(self, name):
        if name == 'all':
            for f in reversed(FAULTS):
                self.revert(f)
            return
        if name not in FAULTS:
            raise LabError('unknown fault %r' % name)
        faults = self.state.setdefault('faults', {})
        if name not in faults and name not in ('bad-config-hosts',):
            _log('%s not injected' % name)
            return
        t0 = time.time()
        getattr(self, '_revert_' + name.replace('-', '_'))(
            faults.get(name, {}))
        faults.pop(name, None)
        self.state.setdefault('timings', {})['revert_%s_s' % name] = round(
            time.time() - t0, 1)
        self.save()
        _log('reverted %s in %.1fs' % (name, time.time() - t0))

    # 1. duplicate-service
    def _inject_duplicate_service(self):
        _, data = self.api('identity', 'POST', '/services', {'service': {
            'type': 'network', 'name': 'neutron',
            'description': 'healthd-lab fault: duplicate network service'}})
        return {'service_id': data['service']['id']}

    def _revert_duplicate_service(self, info):
        if info.get('service_id'):
            self.api('identity', 'DELETE', '/services/%s'
                     % info['service_id'], ok=(204, 404))

    # 2. unmapped-compute
    def _inject_unmapped_compute(self):
        host = EXTRA_COMPUTE
        shutil.rmtree(self.data / ('nova-%s' % host), ignore_errors=True)
        self.write_compute_conf(host)
        self.start_compute(host)
        proc = 'nova-compute-%s' % host
        svc = self.wait_compute(host, 'up', proc=proc)
        deadline = time.time() + 60
        while (self.compute_node_row(host) or {}).get('local_gb') is None:
            if time.time() > deadline:
                self.fail(proc, 'no compute node row for %s' % host)
            time.sleep(1)
        return {'host': host, 'service_id': svc['id']}

    def _revert_unmapped_compute(self, info):
        host = EXTRA_COMPUTE
        self.stop('nova-compute-%s' % host)
        ids = [s['id'] for s in self.compute_services() if s['host'] == host]
        for sid in ids:
            deadline = time.time() + 30
            while True:
                code, data = self.api('compute', 'DELETE',
                                      '/os-services/%s' % sid, ok=None)
                if code in (204, 404):
                    break
                if time.time() > deadline:
                    raise LabError('cannot delete service %s: %s %s'
                                   % (sid, code, data))
                time.sleep(1)
        shutil.rmtree(self.data / ('nova-%s' % host), ignore_errors=True)

    # 3. compute-down
    def _inject_compute_down(self):
        host = COMPUTES[1]
        self.stop('nova-compute-%s' % host)
        self.wait_compute(host, 'down', timeout=60)
        return {'host': host}

    def _revert_compute_down(self, info):
        host = COMPUTES[1]
        started = time.time()
        self.start_compute(host)
        self.wait_compute(host, 'up', proc='nova-compute-%s' % host,
                          since=started + 1)

    # 4. disk-overcommit
    def _restart_compute(self, host):
        name = 'nova-compute-%s' % host
        self.stop(name)
        started = time.time()
        self.start_compute(host)
        # the service record still looks 'up' from before the restart:
        # wait for a heartbeat from the new process instead
        self.wait_compute(host, 'up', proc=name, since=started + 1)

    def _placement_disk_ratio(self, host):
        _, data = self.api('placement', 'GET',
                           '/resource_providers?name=%s' % host)
        if not data['resource_providers']:
            return None
        rp = data['resource_providers'][0]['uuid']
        _, inv = self.api('placement', 'GET',
                          '/resource_providers/%s/inventories' % rp)
        disk = inv['inventories'].get('DISK_GB')
        return disk and disk['allocation_ratio']

    def _wait_ratio(self, host, ratio, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self._placement_disk_ratio(host) == ratio:
                return
            time.sleep(1)
        self.fail('nova-compute-%s' % host, 'placement DISK_GB ratio not '
                  '%s after %ds' % (ratio, timeout))

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
            sid = self.boot_server('lab-overcommit-%d' % i, FLAVOR_HUGE, host)
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
                raise LabError('free_disk_gb of %s did not go negative: %s'
                               % (host, row))
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
                raise LabError('free_disk_gb of %s still negative' % host)
            time.sleep(1)

    # 5. memcached-saturation
    def _inject_memcached_saturation(self):
        port = self.ports['memcached_sat']
        status = self.run / 'mc-holder.json'
        try:
            status.unlink()
        except FileNotFoundError:
            pass
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
        self.fail('mc-holder', 'memcached on %d not saturated' % port)

    def _revert_memcached_saturation(self, info):
        self.stop('mc-holder')
        port = self.ports['memcached_sat']
        deadline = time.time() + 15
        while time.time() < deadline:
            if memcached_stats(port, timeout=1) is not None:
                return
            time.sleep(0.2)
        raise LabError('memcached on %d still refuses connections' % port)

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
        try:
            Path(self.paths['nova_bad_conf']).unlink()
        except FileNotFoundError:
            pass


def memcached_stats(port, host='127.0.0.1', timeout=2.0):
    """``stats`` of a memcached as a dict, or None if it refuses/hangs."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b'stats\r\n')
            buf = b''
            while not buf.endswith(b'END\r\n'):
                chunk = s.recv(65536)
                if not chunk:
                    return None
                buf += chunk
                if buf.startswith(b'ERROR') or buf.startswith(b'SERVER_ERROR'):
                    return None
    except OSError:
        return None
    out = {}
    for line in buf.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == 'STAT':
            out[parts[1]] = parts[2]
    return out


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


def main(argv=None):
    ap = argparse.ArgumentParser(prog='healthd-lab', description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)
    sub.add_parser('up', help='bring the lab up (idempotent)')
    sub.add_parser('down', help='stop everything and drop lab DBs/vhost/users')
    sub.add_parser('status', help='catalog, services, hypervisors, mappings')
    sub.add_parser('env', help='print shell exports')
    for c in ('inject', 'revert'):
        sp = sub.add_parser(c, help='%s a fault' % c)
        sp.add_argument('fault', choices=FAULTS + ('all',))
    args = ap.parse_args(argv)
    lab = Lab()
    try:
        if args.cmd == 'up':
            lab.up()
        elif args.cmd == 'down':
            lab.down()
        elif args.cmd == 'status':
            ok, report = lab.status()
            print(report)
            return 0 if ok else 1
        elif args.cmd == 'env':
            for k, v in env_exports(lab):
                print('export %s=%s' % (k, v))
        elif args.cmd == 'inject':
            lab.inject(args.fault)
        elif args.cmd == 'revert':
            lab.revert(args.fault)
    except LabError as exc:
        print('healthd-lab: error: %s' % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
