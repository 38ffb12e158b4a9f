"""Faults of nova's RabbitMQ queues (issue 10, rabbit_queues): made the way they happen.

* `conductor-stopped`: nova-conductor (lab-controller) stopped with SIGTERM while the
  computes keep running, then a server created through the API. nova-api casts
  schedule_and_build_instances to the `conductor` queue (nova/conductor/rpcapi.py
  ComputeTaskAPI), which keeps it (a topic queue is neither auto-delete nor exclusive):
  the queue has messages and 0 consumers, the server stays in BUILD / scheduling. The
  computes' heartbeats go through the conductor too, so they turn down after
  service_down_time. Revert: start nova-conductor again (it drains the queue and builds
  the server), wait for the computes to report, delete the server.
* `notifications-unread`: `[oslo_messaging_notifications] driver = messagingv2` and
  `[notifications] notification_format = both` in the controller's nova.conf, nova-api,
  nova-conductor and nova-scheduler restarted, a server created and deleted: the
  publisher declares `<topic>.info` itself and nobody consumes it. Revert: driver back to
  noop, restart the three, delete the (versioned_)notifications.* queues.
"""
import time

from .constants import COMPUTES, CONTROLLER_HOST, RABBIT_VHOST
from .util import LabError, _log

QUEUE_SERVER = 'healthd-e2e-queues'
NOTIFY_SERVER = 'healthd-e2e-notify'


class QueueFaultsMixin:
    """Part of Lab (through FaultsMixin): the queue faults above."""

    def all_queue_stats(self):
        """{queue: (messages ready, consumers)} of the lab vhost (one rabbitmqctl: it starts an
        Erlang VM, about a second of CPU)."""
        _, out = self._cmd(['rabbitmqctl', '-q', 'list_queues', '-p', RABBIT_VHOST, 'name',
                            'messages_ready', 'consumers'], 'rabbitmq', check=False)
        found = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                found[parts[0]] = (int(parts[1]), int(parts[2]))
        return found

    def queue_stats(self, name):
        """(messages ready, consumers) of a queue on the lab vhost, None if it does not exist."""
        return self.all_queue_stats().get(name)

    def _wait_queue(self, name, ok, what, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            stats = self.queue_stats(name)
            if stats is not None and ok(*stats):
                return stats
            time.sleep(1)
        raise LabError(f'queue {name}: not {what} after {timeout}s ({self.queue_stats(name)})')

    # conductor-stopped
    def _inject_conductor_stopped(self):
        self.stop('nova-conductor')
        self._wait_queue('conductor', lambda _m, c: c == 0, 'without consumer')
        server = self.boot_server(QUEUE_SERVER)
        ready, _ = self._wait_queue('conductor', lambda m, _c: m >= 1, 'holding the build')
        _log(f'conductor-stopped: server {server} waits in queue conductor ({ready} messages)')
        return {'server': server, 'host': CONTROLLER_HOST}

    def _revert_conductor_stopped(self, info):
        started = time.time()
        self.start_nova_service('nova-conductor', 'nova-conductor', self.etc / 'nova' / 'nova.conf')
        self._wait_queue('conductor', lambda _m, c: c >= 1, 'consumed', timeout=90)
        for host in COMPUTES:
            if self.alive(f'nova-compute-{host}'):
                self.wait_compute(host, 'up', proc=f'nova-compute-{host}', since=started)
        server = info.get('server')
        if server:
            self.delete_server(server)
            self.wait_server(server, 'DELETED', timeout=120)

    # notifications-unread
    NOTIFY_OFF = '[oslo_messaging_notifications]\ndriver = noop\n'
    NOTIFY_ON = ('[oslo_messaging_notifications]\ndriver = messagingv2\n\n'
                 '[notifications]\nnotification_format = both\n')

    def _set_notifications(self, on):
        conf = self.etc / 'nova' / 'nova.conf'
        text = conf.read_text()
        old, new = (self.NOTIFY_OFF, self.NOTIFY_ON) if on else (self.NOTIFY_ON, self.NOTIFY_OFF)
        if old not in text and new not in text:
            raise LabError(f'{conf}: no [oslo_messaging_notifications] driver line to change')
        conf.write_text(text.replace(old, new))

    def _restart_controller_services(self):
        """nova-api, nova-conductor and nova-scheduler read nova.conf again (the scheduler sends
        scheduler.select_destinations notifications, nova-api and the conductor instance ones)."""
        started = time.time()
        conf = self.etc / 'nova' / 'nova.conf'
        for name in ('nova-conductor', 'nova-scheduler'):
            self.stop(name)
            self.start_nova_service(name, name, conf)
        self.stop('nova-api')
        self.start_wsgi('nova-api', 'nova.wsgi.osapi_compute', self.state['ports']['nova_api'])
        self.wait_http('nova-api', self.url('compute'))
        for host in COMPUTES:
            if self.alive(f'nova-compute-{host}'):
                self.wait_compute(host, 'up', proc=f'nova-compute-{host}', since=started)

    def _notification_queues(self):
        names = []
        for topic in ('notifications', 'versioned_notifications'):
            for priority in ('audit', 'critical', 'debug', 'error', 'info', 'sample', 'warn'):
                names.append(f'{topic}.{priority}')
        return names

    def _inject_notifications_unread(self):
        self._set_notifications(True)
        try:
            self._restart_controller_services()
            server = self.boot_server(NOTIFY_SERVER)
            self.wait_server(server, 'ACTIVE')
            self.delete_server(server)
            self.wait_server(server, 'DELETED')
            deadline = time.time() + 60
            held = {}
            while time.time() < deadline and not held:
                queues = self.all_queue_stats()
                for name in self._notification_queues():
                    stats = queues.get(name)
                    if stats is not None and stats[0] >= 1 and stats[1] == 0:
                        held[name] = stats[0]
                time.sleep(1)
            if not held:
                raise LabError('no notification queue holds messages after a server create and delete')
        except Exception:
            self._revert_notifications_unread({})
            raise
        return {'queues': held}

    def _revert_notifications_unread(self, info):
        self._set_notifications(False)
        self._restart_controller_services()
        for name in self._notification_queues():
            self._cmd(['rabbitmqctl', 'delete_queue', '-p', RABBIT_VHOST, name], 'rabbitmq', check=False)
