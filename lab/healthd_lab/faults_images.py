"""Faults of Glance image properties (issue 9, probe image_properties), made the real way.

* `image-ide-q35`: an image uploaded to the lab's Glance (1 MiB raw, public) with
  `hw_disk_bus=ide` and `hw_machine_type=q35`, as `openstack image create --property ...`
  does. The fake driver never runs libvirt, so a boot would not fail here; on libvirt it
  fails ("IDE controllers are unsupported for this QEMU binary or machine type").
* `image-quiesce`: `os_require_quiesce=yes` set on lab-image (JSON patch, as `openstack image
  set --property os_require_quiesce=yes lab-image`), without `hw_qemu_guest_agent`.
* `image-min-disk`: an image whose min_disk (500000 GB) is larger than every flavor (lab-huge
  is 400000 GB): nova refuses every boot with HTTP 400 (FlavorDiskSmallerThanMinDisk).
* `image-prefilter-cirrus`: `[scheduler] image_metadata_prefilter = True` written into the
  controller's nova.conf and nova-scheduler restarted (only it: nova-api and nova-conductor
  keep running), an image with `hw_video_model=cirrus`, and a lab-tiny server booted from it
  that really goes to ERROR "No valid host was found": the fake computes report no
  COMPUTE_GRAPHICS_MODEL_* trait (nova/scheduler/request_filter.py transform_image_metadata).

Reverts delete the images and the server through the APIs, unset the property, and take
the line out of nova.conf again (then restart nova-scheduler).
"""
import os
import struct
import time

from .constants import FLAVOR_TINY
from .util import LabError, _http, _write

IDE_IMAGE = 'lab-ide-q35'
MIN_DISK_IMAGE = 'lab-min-disk'
CIRRUS_IMAGE = 'lab-cirrus'
MIN_DISK_GB = 500000
PREFILTER_LINE = 'image_metadata_prefilter = True'
PREFILTER_MARK = '# healthd-lab fault image-prefilter-cirrus\n'


def _empty_qcow2(virtual_size=1024 * 1024):
    """An empty qcow2 of version 2 (what `qemu-img create -f qcow2 -o compat=0.10` writes):
    header, one refcount table and block, one L1 table, 64 KiB clusters."""
    cluster = 1 << 16
    header = struct.pack('>4sIQIIQIIQQIIQ', b'QFI\xfb', 2, 0, 0, 16, virtual_size, 0, 1,
                         3 * cluster, cluster, 1, 0, 0)
    refcount_table = struct.pack('>Q', 2 * cluster)
    refcount_block = struct.pack('>4H', 1, 1, 1, 1)
    out = bytearray(4 * cluster)
    out[:len(header)] = header
    out[cluster:cluster + 8] = refcount_table
    out[2 * cluster:2 * cluster + 8] = refcount_block
    return bytes(out)


class ImageFaultsMixin:
    """Part of Lab (through FaultsMixin): the image faults above."""

    def upload_image(self, name, properties=None, **attrs):
        """POST /v2/images (extra properties in the body, as the CLI sends them), PUT the data
        (1 MiB raw, or an empty qcow2: Glance 33 checks the data matches disk_format), wait for
        active. Returns the image id."""
        body = {'name': name, 'disk_format': 'raw', 'container_format': 'bare',
                'visibility': 'public', **attrs, **(properties or {})}
        _, img = self.api('image', 'POST', '/v2/images', body)
        data = _empty_qcow2() if body['disk_format'] == 'qcow2' else os.urandom(1024 * 1024)
        self.api('image', 'PUT', f"/v2/images/{img['id']}/file", raw=data)
        for _ in range(120):
            _, got = self.api('image', 'GET', f"/v2/images/{img['id']}")
            if got['status'] == 'active':
                return img['id']
            time.sleep(0.5)
        self.fail('glance-api', f'image {name} did not become active')

    def delete_image(self, image_id):
        if image_id:
            self.api('image', 'DELETE', f'/v2/images/{image_id}', ok=(204, 404))

    def patch_image(self, image_id, ops):
        """PATCH /v2/images/{id} with a JSON patch (what `openstack image set/unset` sends)."""
        headers = {'X-Auth-Token': self.token(),
                   'Content-Type': 'application/openstack-images-v2.1-json-patch'}
        code, _, data = _http('PATCH', self.url('image') + f'/v2/images/{image_id}', ops, headers)
        if code != 200:
            raise LabError(f'glance PATCH {image_id} -> {code}: {data}')
        return data

    # image-ide-q35
    def _inject_image_ide_q35(self):
        image = self.upload_image(IDE_IMAGE, {'hw_disk_bus': 'ide', 'hw_machine_type': 'q35'})
        return {'image': image}

    def _revert_image_ide_q35(self, info):
        self.delete_image(info.get('image'))

    # image-quiesce
    def _inject_image_quiesce(self):
        image = self.state['ids']['image']
        self.patch_image(image, [{'op': 'add', 'path': '/os_require_quiesce', 'value': 'yes'}])
        return {'image': image}

    def _revert_image_quiesce(self, info):
        image = info.get('image') or self.state['ids']['image']
        _, got = self.api('image', 'GET', f'/v2/images/{image}')
        if 'os_require_quiesce' in got:
            self.patch_image(image, [{'op': 'remove', 'path': '/os_require_quiesce'}])

    # image-min-disk
    def _inject_image_min_disk(self):
        image = self.upload_image(MIN_DISK_IMAGE, min_disk=MIN_DISK_GB)
        return {'image': image, 'min_disk': MIN_DISK_GB}

    def _revert_image_min_disk(self, info):
        self.delete_image(info.get('image'))

    # image-prefilter-cirrus
    def _scheduler_services(self):
        _, data = self.api('compute', 'GET', '/os-services?binary=nova-scheduler')
        return data['services']

    def _restart_scheduler(self):
        from .util import _utc_epoch

        conf = self.etc / 'nova' / 'nova.conf'
        self.stop('nova-scheduler')
        started = time.time()
        self.start_nova_service('nova-scheduler', 'nova-scheduler', conf)
        deadline = time.time() + 90
        starts = 1
        while time.time() < deadline:
            if not self.alive('nova-scheduler'):
                # It exits when its database refuses it at start (a shared MariaDB at
                # max_connections answers 1040): start it again, a few times.
                if starts >= 3:
                    self.fail('nova-scheduler', 'nova-scheduler exited during start')
                time.sleep(5)
                self.start_nova_service('nova-scheduler', 'nova-scheduler', conf)
                starts += 1
                continue
            if any(_utc_epoch(s.get('updated_at')) > started + 1 for s in self._scheduler_services()):
                return
            time.sleep(1)
        self.fail('nova-scheduler', 'no heartbeat from the restarted nova-scheduler after 90s')

    def _set_prefilter(self, on):
        conf = self.etc / 'nova' / 'nova.conf'
        text = conf.read_text()
        text = text.replace(PREFILTER_MARK + PREFILTER_LINE + '\n', '')
        if on:
            if '[scheduler]\n' not in text:
                raise LabError('nova.conf has no [scheduler] section')
            text = text.replace('[scheduler]\n', '[scheduler]\n' + PREFILTER_MARK + PREFILTER_LINE + '\n', 1)
        _write(conf, text, 0o640)

    def _inject_image_prefilter_cirrus(self):
        info = {}
        self.state.setdefault('faults', {})['image-prefilter-cirrus'] = info
        self._set_prefilter(True)
        info['prefilter'] = True
        self.save()
        self._restart_scheduler()
        info['image'] = self.upload_image(CIRRUS_IMAGE, {'hw_video_model': 'cirrus'})
        self.save()
        body = {'server': {'name': 'lab-cirrus-server', 'imageRef': info['image'],
                           'flavorRef': FLAVOR_TINY, 'networks': 'none'}}
        _, data = self.api('compute', 'POST', '/servers', body)
        info['server'] = data['server']['id']
        self.save()
        deadline = time.time() + 120
        while time.time() < deadline:
            _, got = self.api('compute', 'GET', f"/servers/{info['server']}")
            server = got['server']
            if server['status'] == 'ERROR':
                info['fault'] = (server.get('fault') or {}).get('message', '')
                if 'No valid host' not in info['fault']:
                    raise LabError(f"server {info['server']} failed otherwise: {info['fault']}")
                return info
            if server['status'] == 'ACTIVE':
                raise LabError(f"server {info['server']} went ACTIVE: the prefilter did not apply")
            time.sleep(0.5)
        raise LabError(f"server {info['server']} not in ERROR after 120s")

    def _revert_image_prefilter_cirrus(self, info):
        if info.get('server'):
            self.delete_server(info['server'])
            self.wait_server(info['server'], 'DELETED')
        self.delete_image(info.get('image'))
        self._set_prefilter(False)
        self._restart_scheduler()
