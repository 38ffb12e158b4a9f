"""Faults behind a load balancer (issue 10, api_backends): made the way they happen.

* `keystone-haproxy`: not a fault by itself but the layout the next ones need, as a
  kolla-ansible or OpenStack-Ansible controller pair has it: Debian's HAProxy on
  loopback (a VIP port of its own) in front of two keystone backends, the lab's
  keystone and a second keystone worker (`keystone-2`, the same keystone.wsgi.api,
  config, database and fernet keys) on another port. HAProxy checks them with
  `option httpchk GET /healthcheck` (what kolla-ansible configures for keystone) and
  has a stats socket (`show stat`) at run/haproxy.sock.
* `keystone-backend-down`: keystone-2's process stops (SIGTERM, as a crash or an
  OOM kill ends it): HAProxy marks it DOWN after its `fall` checks and the VIP keeps
  answering through the lab keystone. Injects keystone-haproxy first if needed;
  the revert starts keystone-2 again.
* `keystone-bind-failure`: the seed's `AH00072: make_sock: could not bind to
  address [::]:5000`: keystone-2 is stopped, another process takes its port (a
  listener that never answers), keystone-2 is started again and exits with
  EADDRINUSE. HAProxy's check times out on the holder; the VIP answers through
  the lab keystone. The revert ends the holder and starts keystone-2.

Nothing here touches the lab's catalog or its keystone: the VIP is extra, so the
other probes and faults see the lab as it was.
"""
import shutil
import sys
import time

from .util import LabError, _free_port, _http, _port_open, _write

KS2 = 'keystone-2'
HAPROXY = 'haproxy'
HOLDER = 'port-holder'
BACKEND = 'keystone_api'


class BackendsFaultsMixin:
    """Part of Lab (through FaultsMixin): the load-balancer faults above."""

    def _haproxy_paths(self):
        return self.etc / 'haproxy' / 'haproxy.cfg', self.run / 'haproxy.sock'

    def _ks2_port(self):
        return self.state['faults']['keystone-haproxy']['backend_ports'][1]

    def _start_ks2(self, port):
        self.start_wsgi(KS2, 'keystone.wsgi.api', port)
        self.wait_http(KS2, f'http://127.0.0.1:{port}/v3', timeout=120)

    def _haproxy_status(self, server):
        """HAProxy's status of one keystone server (field 17 of `show stat`)."""
        import socket
        _, sock_path = self._haproxy_paths()
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(sock_path))
            s.sendall(b'show stat\n')
            data = b''.join(iter(lambda: s.recv(65536), b'')).decode()
        for row in data.splitlines():
            f = row.split(',')
            if len(f) > 17 and f[0] == BACKEND and f[1] == server:
                return f[17]
        return ''

    def _wait_haproxy(self, server, prefix, timeout=30):
        deadline = time.time() + timeout
        status = ''
        while time.time() < deadline:
            status = self._haproxy_status(server)
            if status.startswith(prefix):
                return status
            time.sleep(0.3)
        raise LabError(f'HAProxy: {BACKEND}/{server} is {status!r}, not {prefix} after {timeout}s')

    # keystone-haproxy
    def _inject_keystone_haproxy(self):
        binary = shutil.which('haproxy') or '/usr/sbin/haproxy'
        if not shutil.which('haproxy'):
            self._apt_install(['haproxy'])  # with policy-rc.d: Debian's own haproxy stays stopped
        ks1, ks2, vip = self.ports['keystone'], _free_port(), _free_port()
        while vip == ks2:
            vip = _free_port()
        cfg, sock = self._haproxy_paths()
        cfg.parent.mkdir(parents=True, exist_ok=True)
        self.run.mkdir(parents=True, exist_ok=True)
        _write(cfg, '\n'.join([
            '# healthd-lab fault keystone-haproxy: a VIP in front of two keystones',
            'global',
            # level operator: what healthd needs (server addresses shown, no state changes)
            f'    stats socket {sock} mode 600 level operator',
            'defaults',
            '    mode http',
            '    timeout connect 2s',
            '    timeout client 30s',
            '    timeout server 30s',
            'frontend keystone_vip',
            f'    bind 127.0.0.1:{vip}',
            f'    default_backend {BACKEND}',
            f'backend {BACKEND}',
            '    option httpchk GET /healthcheck',
            '    timeout check 2s',
            '    default-server inter 500 fall 2 rise 1',
            f'    server ks1 127.0.0.1:{ks1} check',
            f'    server ks2 127.0.0.1:{ks2} check',
            '']))
        # Registered before anything starts: a failed inject is reverted like a done one.
        self.state.setdefault('faults', {})['keystone-haproxy'] = {'backend_ports': [ks1, ks2]}
        self.save()
        self._start_ks2(ks2)
        self.spawn(HAPROXY, [binary, '-db', '-f', cfg])
        deadline = time.time() + 15
        while not (_port_open(vip) and sock.exists()):
            if not self.alive(HAPROXY) or time.time() > deadline:
                self.fail(HAPROXY, 'haproxy did not start')
            time.sleep(0.2)
        self._wait_haproxy('ks1', 'UP')
        self._wait_haproxy('ks2', 'UP')
        code, _, _ = _http('GET', f'http://127.0.0.1:{vip}/v3', timeout=10)
        if code != 200:
            raise LabError(f'keystone through the VIP answers {code}')
        return {'vip': f'http://127.0.0.1:{vip}/v3', 'vip_port': vip, 'backend_ports': [ks1, ks2],
                'socket': str(sock), 'config': str(cfg), 'backend': BACKEND,
                'servers': {'ks1': f'127.0.0.1:{ks1}', 'ks2': f'127.0.0.1:{ks2}'},
                'procs': [HAPROXY, KS2]}

    def _revert_keystone_haproxy(self, info):
        faults = self.state.setdefault('faults', {})
        for dependent in ('keystone-backend-down', 'keystone-bind-failure'):
            if dependent in faults:  # they need this layout: they go first
                getattr(self, '_revert_' + dependent.replace('-', '_'))({**faults.pop(dependent),
                                                                         'restart': False})
                self.save()
        self.stop(HAPROXY)
        self.stop(KS2)
        self.stop(HOLDER)
        cfg, sock = self._haproxy_paths()
        cfg.unlink(missing_ok=True)
        sock.unlink(missing_ok=True)

    def _ensure_keystone_haproxy(self):
        faults = self.state.setdefault('faults', {})
        if 'keystone-haproxy' in faults:
            return False
        self.inject('keystone-haproxy')
        return True

    # keystone-backend-down
    def _inject_keystone_backend_down(self):
        auto = self._ensure_keystone_haproxy()
        self.stop(KS2)
        self._wait_haproxy('ks2', 'DOWN')
        info = dict(self.state['faults']['keystone-haproxy'])
        return {**info, 'down': 'ks2', 'address': info['servers']['ks2'], 'auto': auto}

    def _revert_keystone_backend_down(self, info):
        if info.get('restart', True) and 'keystone-haproxy' in self.state.get('faults', {}):
            self._start_ks2(self._ks2_port())
            self._wait_haproxy('ks2', 'UP')

    # keystone-bind-failure
    def _inject_keystone_bind_failure(self):
        auto = self._ensure_keystone_haproxy()
        port = self._ks2_port()
        self.stop(KS2)
        # Another process takes the port (listens, never answers), as the seed's did.
        code = ('import socket,time\n'
                's=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n'
                f"s.bind(('127.0.0.1',{port}));s.listen(64)\n"
                'print("holding", flush=True)\n'
                'while True: time.sleep(3600)\n')
        self.spawn(HOLDER, [sys.executable, '-c', code])
        deadline = time.time() + 10
        while not _port_open(port):
            if not self.alive(HOLDER) or time.time() > deadline:
                self.fail(HOLDER, 'the port holder did not start')
            time.sleep(0.1)
        log = self.logs / f'{KS2}.log'
        offset = log.stat().st_size if log.exists() else 0
        self.start_wsgi(KS2, 'keystone.wsgi.api', port)
        deadline = time.time() + 90
        while self.alive(KS2):
            if time.time() > deadline:
                raise LabError(f'{KS2} started although its port is taken')
            time.sleep(0.5)
        said = log.read_bytes()[offset:].decode('utf-8', 'replace') if log.exists() else ''
        if 'Address already in use' not in said and 'No socket could be created' not in said:
            raise LabError(f'{KS2} exited, but not on its port: {said[-400:]}')
        self.state['procs'].pop(KS2, None)
        self._wait_haproxy('ks2', 'DOWN')
        info = dict(self.state['faults']['keystone-haproxy'])
        return {**info, 'down': 'ks2', 'address': info['servers']['ks2'], 'auto': auto}

    def _revert_keystone_bind_failure(self, info):
        self.stop(HOLDER)
        if info.get('restart', True) and 'keystone-haproxy' in self.state.get('faults', {}):
            self._start_ks2(self._ks2_port())
            self._wait_haproxy('ks2', 'UP')
