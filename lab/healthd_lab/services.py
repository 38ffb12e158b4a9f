"""Bring up what the lab runs on: system packages, the venv, ports, the
databases and broker vhost, and the processes (memcached, WSGI apps, nova)."""
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .constants import (
    DB_HOST,
    DB_PORT,
    DBS,
    LAB_SRC,
    PORT_NAMES,
    PY_VERSION,
    RABBIT_PORT,
    RABBIT_USER,
    RABBIT_VHOST,
    READER_DB_USER,
    SVC_DB_USER,
)
from .util import LabError, _free_port, _log, _port_open, _write


class ServicesMixin:
    """Part of Lab: system services, venv, ports, databases, vhost, processes."""

    # ------------------------------------------------------- system --
    def _apt_install(self, pkgs):
        _log(f"apt-get install {' '.join(pkgs)}")
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
            self._cmd(['apt-get', 'install', '-y', '-q', *pkgs], 'apt', env=env)
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
        raise LabError(f'{what} did not open port {port}')

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
                    raise LabError(f'python{PY_VERSION} is needed for the lab venv')
            _log(f'creating venv {self.venv}')
            self._cmd([base, '-m', 'venv', self.venv], 'pip')
        _log('pip install -r lab/requirements.txt (about 2 minutes)')
        self._cmd([py, '-m', 'pip', 'install', '-q', '-r', req], 'pip',
                  timeout=1800)
        _write(marker, digest + '\n')
        self.state.setdefault('timings', {})['pip_install_s'] = round(
            time.time() - t0, 1)
        _log(f'venv ready in {time.time() - t0:.0f}s')

    # ---------------------------------------------------------- ports --
    def ensure_ports(self):
        used = set(self.ports.values())
        for name in PORT_NAMES:
            env = os.environ.get(f'HEALTHD_LAB_PORT_{name.upper()}')
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
            password = self._secret('db_svc_password')
            return f'mysql+pymysql://{user}:{password}@{DB_HOST}:{DB_PORT}/{db}?charset=utf8'
        return f'mysql+pymysql://{user}@{DB_HOST}:{DB_PORT}/{db}'

    def transport_url(self, port=None):
        password = self._secret('rabbit_password')
        return f'rabbit://{RABBIT_USER}:{password}@127.0.0.1:{port or RABBIT_PORT}/{RABBIT_VHOST}'

    def ensure_databases(self, fresh=False):
        svc_pw = self._secret('db_svc_password')
        rd_pw = self._secret('db_password')
        sql = []
        if fresh:
            # Databases left by a lab whose processes are gone (a killed
            # session, another checkout) hold its services and compute nodes:
            # start from empty schemas so they cannot haunt this lab.
            sql += [f'DROP DATABASE IF EXISTS `{db}`;' for db in DBS.values()]
        for db in DBS.values():
            sql.append(f'CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8;')
        for host in ('localhost', '127.0.0.1'):
            for user, pw in ((SVC_DB_USER, svc_pw), (READER_DB_USER, rd_pw)):
                sql.append(f"CREATE USER IF NOT EXISTS '{user}'@'{host}' "
                           f"IDENTIFIED BY '{pw}';")
                sql.append(f"ALTER USER '{user}'@'{host}' IDENTIFIED BY '{pw}';")
            for db in DBS.values():
                sql.append(f"GRANT ALL PRIVILEGES ON `{db}`.* TO '{SVC_DB_USER}'@'{host}';")
                sql.append(f"GRANT SELECT ON `{db}`.* TO '{READER_DB_USER}'@'{host}';")
            # db_grants' audit grants (deploy/mysql/grants.sql): the grant tables, no hash
            sql.append("GRANT SELECT (Host, User, Select_priv, Insert_priv, Update_priv, Delete_priv, "
                       "Create_priv, Drop_priv, Index_priv, Alter_priv, is_role, default_role) "
                       f"ON `mysql`.`user` TO '{READER_DB_USER}'@'{host}';")
            for table in ('db', 'tables_priv', 'roles_mapping'):
                sql.append(f"GRANT SELECT ON `mysql`.`{table}` TO '{READER_DB_USER}'@'{host}';")
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

    # ------------------------------------------------------- services --
    def _svc_env(self):
        return {
            'OS_KEYSTONE_CONFIG_DIR': str(self.etc / 'keystone'),
            'OS_PLACEMENT_CONFIG_DIR': str(self.etc / 'placement'),
            'OS_NOVA_CONFIG_DIR': str(self.etc / 'nova'),
            'OS_GLANCE_CONFIG_DIR': str(self.etc / 'glance'),
            'PATH': f"{self.bin}:{os.environ.get('PATH', '')}",
        }

    def start_memcached(self, name, port, extra=()):
        if self.alive(name):
            return
        binary = shutil.which('memcached') or '/usr/bin/memcached'
        self.spawn(name, [binary, '-u', 'nobody', '-l', '127.0.0.1',
                          '-p', port, '-U', '0', *extra])
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
        (self.data / f'nova-{host}' / 'instances').mkdir(parents=True, exist_ok=True)
        self.start_nova_service(f'nova-compute-{host}', 'nova-compute',
                                self._compute_conf_path(host))
