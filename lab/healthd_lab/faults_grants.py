"""The database-grant fault (issue 10, db_grants): made the way a DBA makes it.

* `nova-api-grant`: the lab's service user loses its grant on the lab's nova_api
  database, as a DBA runs it:

      REVOKE ALL PRIVILEGES ON `<P>_nova_api`.* FROM '<P>_svc'@'127.0.0.1', '<P>_svc'@'localhost';

  then ends the user's open sessions on that database (KILL CONNECTION), as a DBA does
  to make a revocation bite: MariaDB checks database privileges when a session opens the
  database, so pooled sessions would keep working until oslo.db recycles them
  (connection_recycle_time, 3600 s by default). The services reconnect and get
  ``(1044, "Access denied for user '<P>_svc'@'127.0.0.1' to database '<P>_nova_api'")``:
  nova-api answers 500 to every call that reads nova_api (GET /flavors) and logs the
  error. The fault returns once both are seen.

  Revert: ``GRANT ALL PRIVILEGES ON `<P>_nova_api`.* TO`` both accounts (what the lab's
  `up` grants), and waits until GET /flavors answers 200 again.
"""
import time

from .constants import DBS, SVC_DB_USER
from .util import LabError

GRANT_HOSTS = ('127.0.0.1', 'localhost')


class GrantsFaultsMixin:
    """Part of Lab (through FaultsMixin): the db_grants fault above."""

    def _svc_accounts(self):
        return ', '.join(f"'{SVC_DB_USER}'@'{host}'" for host in GRANT_HOSTS)

    def _kill_sessions(self, db):
        out = self.mysql(
            'SELECT ID FROM information_schema.PROCESSLIST '
            f"WHERE USER = '{SVC_DB_USER}' AND DB = '{db}'")
        ids = [line.strip() for line in out.splitlines() if line.strip().isdigit()]
        for session in ids:
            self.mysql(f'KILL CONNECTION {session}', check=False)  # it may have ended already
        return len(ids)

    def _flavors_status(self):
        code, _ = self.api('compute', 'GET', '/flavors', ok=None, timeout=30)
        return code

    def _inject_nova_api_grant(self):
        db = DBS['nova_api']
        log = self.logs / 'nova-api.log'
        offset = log.stat().st_size if log.exists() else 0
        self.mysql(f'REVOKE ALL PRIVILEGES ON `{db}`.* FROM {self._svc_accounts()}')
        killed = self._kill_sessions(db)
        said = f"Access denied for user '{SVC_DB_USER}'"
        deadline = time.time() + 60
        code = None
        while time.time() < deadline:
            code = self._flavors_status()
            text = log.read_text(errors='replace')[offset:] if log.exists() else ''
            if code == 500 and said in text:
                line = next(ln for ln in text.splitlines() if said in ln)
                return {'database': db, 'user': SVC_DB_USER, 'hosts': list(GRANT_HOSTS),
                        'killed_sessions': killed, 'flavors_status': code,
                        'logged': line[line.index(said) - 7 if line.find(said) >= 7 else 0:][:200]}
            time.sleep(1)
        raise LabError(f'nova-api did not fail after the revoke (GET /flavors -> {code}, '
                       f'no {said!r} in {log})')

    def _revert_nova_api_grant(self, info):
        db = DBS['nova_api']
        for host in GRANT_HOSTS:
            self.mysql(f"GRANT ALL PRIVILEGES ON `{db}`.* TO '{SVC_DB_USER}'@'{host}'")
        deadline = time.time() + 60
        while time.time() < deadline:
            if self._flavors_status() == 200:
                return
            time.sleep(1)
        raise LabError('nova-api still fails GET /flavors after the grant was restored')
