"""healthd-lab: a real mini OpenStack control plane on loopback.

Stdlib only.  The OpenStack services and their CLIs (keystone-manage,
placement-manage, glance-manage, nova-manage, openstack) run from the lab's
own virtualenv ($HEALTHD_LAB_DIR/venv).  See lab/README.md.

Python API (for pytest fixtures and other tooling):

    up() -> state dict        down()          status() -> (ok, report)
    inject(name) / revert(name)  ('all' for every fault)
    load_state() -> state dict or None
"""
# (The docstring above is also `healthd-lab --help`'s description.)
#
# Layout: constants.py (names, ports, env overrides), util.py (process, port,
# HTTP and file helpers, the flock decorator), lab.py (class Lab: state,
# commands, processes, up/down/status, and the functions below), and the
# mixins Lab is made of: services.py (system packages, venv, ports, DBs,
# vhost, starting services), templates.py (config files), openstack.py (REST
# client, catalog, flavors/image, nova-manage), faults.py (inject/revert);
# cli.py (main).
from .cli import main
from .constants import (
    CLOUD,
    COMPUTES,
    CONTROLLER_HOST,
    DB_HOST,
    DB_PORT,
    DBS,
    EXTRA_COMPUTE,
    FAKE_LOCAL_GB,
    FAULTS,
    FLAVOR_HUGE,
    FLAVOR_TINY,
    HUGE_DISK_GB,
    IMAGE_NAME,
    LAB_SRC,
    MEMCACHED_SAT_CONNS,
    NOVA_MICROVERSION,
    OVERCOMMIT_RATIO,
    OVERCOMMIT_SERVERS,
    PLACEMENT_MICROVERSION,
    PORT_NAMES,
    PREFIX,
    PY_VERSION,
    RABBIT_PORT,
    RABBIT_USER,
    RABBIT_VHOST,
    READER_DB_USER,
    REGION,
    REPO,
    SERVICE_USERS,
    SOLO_FAULTS,
    SVC_DB_USER,
)
from .lab import Lab, down, env_exports, inject, load_state, revert, status, up
from .util import LabError, lab_dir, memcached_stats

__all__ = [
    'CLOUD', 'COMPUTES', 'CONTROLLER_HOST', 'DBS', 'DB_HOST', 'DB_PORT', 'EXTRA_COMPUTE',
    'FAKE_LOCAL_GB', 'FAULTS', 'FLAVOR_HUGE', 'FLAVOR_TINY', 'HUGE_DISK_GB', 'IMAGE_NAME',
    'LAB_SRC', 'MEMCACHED_SAT_CONNS', 'NOVA_MICROVERSION', 'OVERCOMMIT_RATIO',
    'OVERCOMMIT_SERVERS', 'PLACEMENT_MICROVERSION', 'PORT_NAMES', 'PREFIX', 'PY_VERSION',
    'RABBIT_PORT', 'RABBIT_USER', 'RABBIT_VHOST', 'READER_DB_USER', 'REGION', 'REPO',
    'SERVICE_USERS', 'SOLO_FAULTS', 'SVC_DB_USER',
    'Lab', 'LabError', 'down', 'env_exports', 'inject', 'lab_dir', 'load_state', 'main',
    'memcached_stats', 'revert', 'status', 'up',
]
