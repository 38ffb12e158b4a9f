"""Names, ports and limits of the lab (HEALTHD_LAB_* environment overrides)."""
import hashlib
import os
from pathlib import Path

# lab/ (this package's parent): wsgi_runner.py, mc_holder.py, network_standin.py
# and requirements.txt live there and are run/read by path.
LAB_SRC = Path(__file__).resolve().parent.parent
REPO = LAB_SRC.parent


def _default_prefix():
    """'hdlab' and six hex digits of the lab directory's path: one set of names per lab.

    Two labs on one MariaDB/RabbitMQ (a clone's CI run beside a developer's lab, two
    HEALTHD_LAB_DIRs) must never share databases, users or vhosts: a fresh start of one
    drops and re-creates them, and a password reset by one locks the other out.
    """
    where = Path(os.environ.get('HEALTHD_LAB_DIR') or (REPO / '.lab')).resolve()
    return 'hdlab' + hashlib.sha256(str(where).encode()).hexdigest()[:6]


# Names of the lab's databases, DB users, vhost and broker user start with this
# prefix; HEALTHD_LAB_PREFIX overrides the one derived from the lab's directory.
PREFIX = os.environ.get('HEALTHD_LAB_PREFIX') or _default_prefix()
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
          'disk-overcommit', 'disk-over-capacity', 'memcached-saturation',
          'bad-config-hosts', 'catalog-public-only', 'catalog-missing-interface',
          'cell0-conductor', 'cell0-compute', 'old-compute-row')
# Faults injected one at a time only, never by 'all': a cell mapping with a wrong password
# makes every nova-manage command the other faults use (discover_hosts, ...) fail with 1045,
# and the stray allocation waits (up to 90 s) for lab-compute1's resource tracker to log it,
# which the restarts of the other faults delay.
SOLO_FAULTS = ('stray-allocation', 'cell-db-password', 'cell-transport-password',
               'config-typos', 'compute-bad-value', 'compute-wrong-value',
               'nova-api-grant',  # db_grants: nova_api's grant revoked (faults_grants.py)
               # image_properties (faults_images.py): images with properties that cannot boot
               'image-ide-q35', 'image-quiesce', 'image-min-disk', 'image-prefilter-cirrus',
               # api_backends (faults_backends.py): HAProxy in front of two keystones
               'keystone-haproxy', 'keystone-backend-down', 'keystone-bind-failure',
               # flavor_filters (faults_flavors.py): flavors no host takes, a server in ERROR
               'flavor-badcap', 'flavor-aggregate-filter', 'flavor-wide',
               # rabbit_queues (faults_queues.py): nova-conductor stopped, notifications unread
               'conductor-stopped', 'notifications-unread')

PORT_NAMES = ('keystone', 'placement', 'nova_api', 'glance', 'network',
              'memcached', 'memcached_sat', 'healthd', 'dead_rabbit',
              'dead_memcached')
