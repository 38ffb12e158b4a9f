"""Hold connections to a memcached until it refuses more (stdlib only).

    python3 mc_holder.py PORT STATUS_FILE [MAX]

The first connection is kept as a control connection: every second the
holder sends ``stats`` on it and writes the result (plus how many connections
it holds and whether memcached refused one) to STATUS_FILE as JSON.  Then it
opens connections one by one, each checked with ``version``, until memcached
refuses one (memcached 1.6 with its default ``maxconns_fast`` answers
``ERROR Too many open connections`` and closes it; without it the listener is
disabled and the connection never gets an answer).  It keeps every accepted
connection open until it is stopped (SIGTERM).
"""
import json
import os
import signal
import socket
import sys
import time


def _stats(sock):
    sock.sendall(b'stats\r\n')
    buf = b''
    while not buf.endswith(b'END\r\n'):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError('control connection closed')
        buf += chunk
    out = {}
    for line in buf.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == 'STAT':
            out[parts[1]] = parts[2]
    return out


def main():
    port = int(sys.argv[1])
    status_file = sys.argv[2]
    max_conns = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))

    control = socket.create_connection(('127.0.0.1', port), timeout=5)
    held = [control]
    refused = 0
    last_refusal = ''
    while len(held) < max_conns and refused < 3:
        try:
            s = socket.create_connection(('127.0.0.1', port), timeout=2)
        except OSError as exc:
            refused += 1
            last_refusal = f'connect: {exc}'
            continue
        try:
            s.sendall(b'version\r\n')
            reply = s.recv(200)
        except OSError as exc:
            reply = b''
            last_refusal = f'no reply: {exc}'
        if reply.startswith(b'VERSION'):
            held.append(s)
            continue
        refused += 1
        if reply:
            last_refusal = reply.decode(errors='replace').strip()
        elif not last_refusal:
            last_refusal = 'closed without reply'
        s.close()

    while True:
        try:
            stats = _stats(control)
        except OSError as exc:
            stats = {'error': str(exc)}
        tmp = status_file + '.tmp'
        with open(tmp, 'w') as f:
            json.dump({'pid': os.getpid(), 'held': len(held),
                       'refused': refused, 'saturated': refused > 0,
                       'last_refusal': last_refusal, 'stats': stats,
                       'time': time.time()}, f)
        os.replace(tmp, status_file)
        time.sleep(1)


if __name__ == '__main__':
    main()
