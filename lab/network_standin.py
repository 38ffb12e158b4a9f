"""A tiny read-only stand-in for the Neutron API (stdlib only).

The lab boots servers with ``networks: none``, so Nova never creates ports.
Nova still *reads* Neutron on a few paths (listing ports by device_id when a
server is deleted, the periodic info-cache heal, the extension list).  This
stand-in answers every ``GET /v2.0/<collection>`` with an empty collection and
the version document on ``GET /``; everything else gets 404.  It is NOT
Neutron: no network, subnet or port can be created through it.

    python3 network_standin.py PORT
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class Handler(BaseHTTPRequestHandler):
    server_version = 'healthd-lab-network-standin'
    protocol_version = 'HTTP/1.1'

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = urlsplit(self.path).path.rstrip('/')
        if path in ('', '/'):
            port = self.server.server_address[1]
            return self._send(200, {'versions': [{
                'id': 'v2.0', 'status': 'CURRENT',
                'links': [{'rel': 'self',
                           'href': f'http://127.0.0.1:{port}/v2.0/'}]}]})
        parts = [p for p in path.split('/') if p]
        if parts and parts[0] == 'v2.0':
            parts = parts[1:]
        if len(parts) == 1:
            coll = parts[0]
            if coll.endswith('.json'):
                coll = coll[:-5]
            return self._send(200, {coll.replace('-', '_'): []})
        if not parts:
            return self._send(200, {'resources': []})
        return self._send(404, {'NeutronError': {
            'type': 'NotFound', 'message': 'not found (lab stand-in)',
            'detail': ''}})

    def _notimpl(self):
        self._send(404, {'NeutronError': {
            'type': 'NotFound', 'message': 'read-only lab stand-in',
            'detail': ''}})

    do_POST = do_PUT = do_DELETE = do_PATCH = _notimpl

    def log_message(self, fmt, *args):
        sys.stdout.write(f'{self.address_string()} {fmt % args}\n')
        sys.stdout.flush()


def main():
    port = int(sys.argv[1])
    srv = ThreadingHTTPServer(('127.0.0.1', port), Handler)
    print(f'network stand-in on 127.0.0.1:{port}', flush=True)
    srv.serve_forever()


if __name__ == '__main__':
    main()
