"""Process, port, HTTP and file helpers; the cross-process lock."""
import calendar
import fcntl
import functools
import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from .constants import REPO

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_CHILDREN = {}


class LabError(Exception):
    pass


def lab_dir():
    return Path(os.environ.get('HEALTHD_LAB_DIR') or (REPO / '.lab')).resolve()


def _log(msg):
    stamp = time.strftime('%H:%M:%S')
    print(f'[healthd-lab {stamp}] {msg}', flush=True)


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
        return f'(no log: {exc})'


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
    stamp = stamp.rstrip('Z').split('+')[0]
    return calendar.timegm(time.strptime(stamp.split('.')[0],
                                         '%Y-%m-%dT%H:%M:%S')) + (
        float('0.' + stamp.split('.')[1]) if '.' in stamp else 0.0)


def _proc_starttime(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
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
        out.append(f'[{sect}]')
        for k, v in opts:
            out.append(f'{k} = {v}')
        out.append('')
    return '\n'.join(out)


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


# -------------------------------------------------------------- locking --

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
                _log(f'waiting for another healthd-lab operation on {self.dir}')
                fcntl.flock(fh, fcntl.LOCK_EX)
            self.state = self._load()
            self._lock_depth = 1
            try:
                return method(self, *args, **kwargs)
            finally:
                self._lock_depth = 0
                fcntl.flock(fh, fcntl.LOCK_UN)
    return wrapper
