"""Logging to stderr, plain or JSON, with every line passed through redact()."""

from __future__ import annotations

import json
import logging
import sys
import time

from healthd.redact import redact


class RedactingFormatter(logging.Formatter):
    """Formats the whole record (traceback included) and then masks secrets."""

    def __init__(self, json_lines: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        if not self.json_lines:
            return redact(super().format(record))
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry))


def setup(log_format: str = "plain", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(log_format == "json"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Client libraries log request details (URLs, sometimes headers) at INFO/DEBUG.
    for noisy in ("keystoneauth", "openstack", "urllib3", "pika", "stevedore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
