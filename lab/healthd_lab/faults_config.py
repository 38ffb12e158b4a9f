"""Faults of option values in config files (issue 10, probe config_values): made the way they happen.

* `config-typos`: a nova config file with the notes' typos and others, as an operator's
  hand edit leaves them: `[libvirt] virt_type = kvmm`, `[DEFAULT] report_interval = abc`,
  `[DEFAULT] auth_strategy = keyston` (an option nova 34 no longer has),
  `[filter_scheduler] enabled_filter = ...` (the name misspelt), a deprecated name
  (`[DEFAULT] vnc_enabled`), `[placement] auth_type = pasword`, a boolean that is not one and a
  password with an unescaped `$`. No process loads it (like bad-config-hosts), and it lives
  outside etc/nova so the lab's other file globs never see it.
* `compute-bad-value`: lab-compute2's own file gets `[DEFAULT] report_interval = abc` (appended:
  the file already sets report_interval, and oslo.config keeps the last value) and the
  nova-compute is restarted, as an operator restarting after an edit would: what nova really
  does is recorded in the info dict (`exited`: the process ended, `log`: the lines of its log
  that name the option). nova/cmd/compute.py main reads every option at start
  (CONF.log_opt_values): it exits. The revert restores the file and starts the compute again.
* `compute-wrong-value`: the same compute with `[DEFAULT] log_options = false` and
  `[libvirt] virt_type = kvmm`: nothing reads virt_type at start (the lab's fake driver never
  does), so nova-compute starts and runs with the invalid value in its file.
"""
import time
from pathlib import Path

from .constants import COMPUTES
from .util import LabError, _log, _write

TYPO_PASSWORD = 'Lab-typo$secret-4411'  # the "$secret" is an unescaped template reference
TYPOS = f"""# healthd-lab fault config-typos: a hand-edited nova.conf (no process loads this file)
[DEFAULT]
report_interval = abc
auth_strategy = keyston
vnc_enabled = true
debug = maybe
my_ip = 10.0.0.5

[libvirt]
virt_type = kvmm

[filter_scheduler]
enabled_filter = ComputeFilter,ImagePropertiesFilter

[placement]
auth_type = pasword
auth_url = http://127.0.0.1:5000/v3
password = {TYPO_PASSWORD}

[vnc]
server_listen = $my_ip
novncproxy_port = 70000
"""
BAD_VALUE_HOST = COMPUTES[1]
BAD_VALUE_LINE = 'report_interval = abc'


class ConfigFaultsMixin:
    """Part of Lab (through FaultsMixin): the config_values faults above."""

    def _typos_path(self):
        return self.etc / 'nova-config-values' / 'nova-typos.conf'

    def _inject_config_typos(self):
        path = self._typos_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, TYPOS, 0o640)
        return {'path': str(path), 'password': TYPO_PASSWORD}

    def _revert_config_typos(self, info):
        path = Path(info.get('path') or self._typos_path())
        path.unlink(missing_ok=True)
        if path.parent.exists() and not any(path.parent.iterdir()):
            path.parent.rmdir()

    def _inject_compute_bad_value(self):
        return self._restart_with(f'\n[DEFAULT]\n{BAD_VALUE_LINE}\n', 'report_interval')

    def _revert_compute_bad_value(self, info):
        self._restore_compute(info)

    def _inject_compute_wrong_value(self):
        return self._restart_with('\n[DEFAULT]\nlog_options = false\n[libvirt]\nvirt_type = kvmm\n',
                                  'virt_type')

    def _revert_compute_wrong_value(self, info):
        self._restore_compute(info)

    def _restart_with(self, appended, option):
        """Append sections to lab-compute2's own file (oslo.config merges a repeated section and
        the last value of an option wins: the lab's file already sets report_interval = 2),
        restart that nova-compute, and record whether it exits within 60 s and what its log says
        of the option."""
        host = BAD_VALUE_HOST
        name = f'nova-compute-{host}'
        conf = Path(self._compute_conf_path(host))
        original = conf.read_text()
        backup = conf.with_name(conf.name + '.healthd-lab-orig')
        if not backup.exists():
            _write(backup, original, 0o640)
        _write(conf, original + appended, 0o640)
        log = self.logs / f'{name}.log'
        offset = log.stat().st_size if log.exists() else 0
        self.stop(name)
        self.start_compute(host)
        started = time.time()
        exited, deadline = False, started + 60
        while time.time() < deadline:
            if not self.alive(name):
                exited = True
                break
            if self._heartbeat_since(host, started + 1):
                break  # it runs: it reported to nova after the restart
            time.sleep(1)
        said = []
        if log.exists():
            with open(log, 'rb') as fh:
                fh.seek(offset)
                tail = fh.read().decode(errors='replace')
            said = [ln for ln in tail.splitlines() if option in ln][-5:]
        _log(f'nova-compute {host} with {option} wrong: {"exited" if exited else "still running"}')
        return {'host': host, 'path': str(conf), 'backup': str(backup), 'exited': exited, 'log': said}

    def _heartbeat_since(self, host, since):
        try:
            self.wait_compute(host, 'up', timeout=1, since=since)
        except LabError:  # no heartbeat yet
            return False
        return True

    def _restore_compute(self, info):
        host = info.get('host', BAD_VALUE_HOST)
        conf = Path(info.get('path') or self._compute_conf_path(host))
        backup = Path(info.get('backup') or conf.with_name(conf.name + '.healthd-lab-orig'))
        if backup.exists():
            _write(conf, backup.read_text(), 0o640)
            backup.unlink()
        else:  # no backup: cut what the fault appended
            text = conf.read_text()
            cut = text.find('\n\n[DEFAULT]\n' + BAD_VALUE_LINE)
            cut = cut if cut >= 0 else text.find('\n\n[DEFAULT]\nlog_options = false')
            if cut >= 0:
                conf.write_text(text[:cut + 1])
        name = f'nova-compute-{host}'
        self.stop(name)
        started = time.time()
        self.start_compute(host)
        self.wait_compute(host, 'up', proc=name, since=started + 1)
