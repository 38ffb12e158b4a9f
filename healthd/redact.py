"""Keep secrets out of every output: logs, metric labels, /checks and exceptions.

Two layers: every secret the engine or a probe learns is registered and
replaced verbatim, and anything that looks like credentials inside a URL
(``scheme://user:password@host``, also the later hosts of a multi-host
transport_url) is masked even if nobody registered it.
"""

from __future__ import annotations

import functools
import re
import threading

MASK = "***"

# "://user:pass@" or ",user:pass@" (the second host of rabbit://a:b@h1,c:d@h2/)
_URL_USERINFO = re.compile(r"(?P<pre>(?:://|,)[^:@/\s,]*):(?P<secret>[^@\s]+)@")
# password=..., "password": "...", passwd: ...
_KEY_VALUE = re.compile(
    r"(?P<pre>\b(?:password|passwd|secret|token)\b['\"]?\s*[:=]\s*['\"]?)(?P<secret>[^\s'\",}]+)",
    re.IGNORECASE,
)

_lock = threading.Lock()
_secrets: dict[str, re.Pattern[str]] = {}
# longest first, so a secret containing another is masked whole
_by_length: tuple[tuple[str, re.Pattern[str]], ...] = ()


def _pattern(secret: str) -> re.Pattern[str]:
    """The secret as a whole token: where it begins or ends with a letter or digit, not glued
    to another one. A cloud whose broker password is "guest" must not turn the "guests" of
    another check's message into "***s"; the password itself, wherever it stands alone (in a
    URL, after "as", between slashes), is still masked."""
    before = r"(?<![A-Za-z0-9])" if secret[0].isalnum() else ""
    after = r"(?![A-Za-z0-9])" if secret[-1].isalnum() else ""
    return re.compile(before + re.escape(secret) + after)


def register_secret(value: str | None) -> None:
    """Remember a secret so that it is masked wherever it would appear."""
    global _by_length
    if value and len(value) >= 3 and value not in _secrets:  # shorter would mask innocent text
        with _lock:
            _secrets[value] = _pattern(value)
            _by_length = tuple(sorted(_secrets.items(), key=lambda item: len(item[0]), reverse=True))
            _redact_cached.cache_clear()


def redact(text: str) -> str:
    """Mask secrets in text. Cached: probes pass the same host names many times per run."""
    if not text:
        return text
    return _redact_cached(text) if len(text) <= 256 else _redact(text)


def _redact(text: str) -> str:
    if "@" in text:
        text = _URL_USERINFO.sub(lambda m: f"{m['pre']}:{MASK}@", text)
    if "=" in text or ":" in text:
        text = _KEY_VALUE.sub(lambda m: f"{m['pre']}{MASK}", text)
    for secret, pattern in _by_length:
        if secret in text:  # the cheap test first: most texts hold no secret
            text = pattern.sub(MASK, text)
    return text


_redact_cached = functools.lru_cache(maxsize=65536)(_redact)


def describe_error(exc: BaseException) -> str:
    """A one-line, secret-free description of an exception for a finding or log."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return redact(f"{name}: {detail}" if detail else name)
