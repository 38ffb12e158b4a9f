"""Serve one OpenStack WSGI application with cheroot (threaded) on loopback.

Run by the lab with the lab venv's python:

    python wsgi_runner.py NAME MODULE PORT

MODULE is the project's own WSGI entry-point module (e.g. ``keystone.wsgi.api``)
whose ``application`` attribute is the WSGI app; the app finds its config
through the project's usual environment variables (OS_KEYSTONE_CONFIG_DIR,
OS_PLACEMENT_CONFIG_DIR, OS_NOVA_CONFIG_DIR, OS_GLANCE_CONFIG_DIR), which the
lab sets.
"""
import importlib
import os
import signal
import sys


def main():
    name, module, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.argv = [name]  # the apps parse sys.argv through oslo.config
    app = importlib.import_module(module).application
    from cheroot import wsgi

    server = wsgi.Server(('127.0.0.1', port), app, numthreads=8,
                         server_name=f'healthd-lab-{name}',
                         request_queue_size=64)

    def _stop(signum, frame):
        # nothing to flush: leave at once (cheroot's stop() can wait on
        # keep-alive connections for its whole timeout)
        os._exit(0)

    signal.signal(signal.SIGTERM, _stop)
    print(f'{name}: serving {module} on 127.0.0.1:{port}', flush=True)
    try:
        server.start()
    except KeyboardInterrupt:
        server.stop()


if __name__ == '__main__':
    main()
