"""The status page at `/`: what a person paged at 3 a.m. opens first.

Server-rendered HTML with its CSS inline: no script, no font, nothing fetched
from elsewhere, so it works on a controller without internet. It is made per
request from the same snapshot as /metrics and /checks (a few checks and at
most hundreds of findings: a millisecond or two), so "failing for" is always
counted up to now. It refreshes itself every REFRESH_SECONDS.

Every text comes from the results, which the engine already redacted; it is
redacted again here and HTML-escaped.
"""

from __future__ import annotations

import html
import time

from healthd import __version__
from healthd.model import Finding, Result, Severity, Status
from healthd.redact import redact
from healthd.store import Snapshot

REFRESH_SECONDS = 30

# Most urgent first: a known outage, then what cannot be judged, then warnings.
STATUS_ORDER = {Status.CRITICAL: 0, Status.UNKNOWN: 1, Status.WARNING: 2, Status.OK: 3}
SEVERITY_ORDER = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}

_CSS = """
:root { --ok: #1a7f37; --warning: #9a6700; --critical: #cf222e; --unknown: #6e7781; --info: #0969da;
        --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #ffffff; --card: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: var(--bg); }
header { padding: 12px 16px; color: #fff; }
header.status-ok { background: var(--ok); } header.status-warning { background: var(--warning); }
header.status-critical { background: var(--critical); } header.status-unknown { background: var(--unknown); }
header h1 { margin: 0; font-size: 20px; }
header p { margin: 4px 0 0; font-size: 13px; opacity: .95; }
header a { color: #fff; }
main { max-width: 1100px; margin: 0 auto; padding: 8px 16px 32px; }
h2 { font-size: 17px; margin: 20px 0 8px; }
.badge { display: inline-block; min-width: 84px; padding: 1px 8px; border-radius: 12px; color: #fff;
         font-size: 12px; font-weight: 600; text-align: center; letter-spacing: .02em; }
.status-ok > .badge, .badge.status-ok { background: var(--ok); }
.badge.status-warning { background: var(--warning); }
.badge.status-critical { background: var(--critical); }
.badge.status-unknown { background: var(--unknown); }
.badge.status-info { background: var(--info); }
.finding { border: 1px solid var(--line); border-left: 6px solid var(--unknown); border-radius: 6px;
           background: var(--card); padding: 10px 12px; margin: 0 0 10px; }
.finding.status-critical { border-left-color: var(--critical); }
.finding.status-warning { border-left-color: var(--warning); }
.finding.status-info { border-left-color: var(--info); }
.finding .subject { font-weight: 600; overflow-wrap: anywhere; }
.finding .meta { color: var(--muted); font-size: 13px; }
.finding .message { margin: 6px 0; overflow-wrap: anywhere; }
.finding .fix { margin: 0; padding: 6px 8px; background: #fff; border: 1px solid var(--line);
                border-radius: 4px; font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace;
                white-space: pre-wrap; overflow-wrap: anywhere; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 13px; color: var(--muted); font-weight: 600; }
td.summary { overflow-wrap: anywhere; }
.none { color: var(--muted); }
@media (max-width: 640px) {
  table, tbody, tr, td { display: block; width: 100%; }
  thead { display: none; }
  tr { border-bottom: 1px solid var(--line); padding: 6px 0; }
  td { border: 0; padding: 2px 0; }
  td[data-label]::before { content: attr(data-label) ": "; color: var(--muted); font-size: 13px; }
}
"""


def render(snap: Snapshot, now: float | None = None) -> bytes:
    now = time.time() if now is None else now
    results = [snap.results[name] for name in snap.specs if name in snap.results]
    overall = Status.worst(r.status for r in results) if results else Status.UNKNOWN
    findings = sorted(
        ((r.check, f) for r in results for f in r.findings),
        key=lambda cf: (SEVERITY_ORDER[cf[1].severity], cf[1].since or now, cf[0], cf[1].subject),
    )
    counts = ", ".join(
        f"{sum(1 for r in results if r.status is status)} {status.name.lower()}"
        for status in sorted(STATUS_ORDER, key=STATUS_ORDER.get) if any(r.status is status for r in results)
    )
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width, initial-scale=1">',
        f'<meta http-equiv=refresh content="{REFRESH_SECONDS}">',
        f"<title>{overall.name} - healthd</title><style>{_CSS}</style></head><body>",
        f'<header class="status-{overall.name.lower()}" data-status="{overall.name}">',
        f"<h1>healthd: {overall.name}</h1>",
        f"<p>{_e(counts or 'no checks loaded')} &middot; {len(findings)} finding(s) &middot; "
        f"as of {_utc(now)} &middot; refreshes every {REFRESH_SECONDS} s &middot; "
        '<a href="/checks">/checks</a> <a href="/metrics">/metrics</a> <a href="/healthz">/healthz</a>'
        f" &middot; healthd {_e(__version__)}</p></header><main>",
        "<h2>Findings</h2>",
        *([_finding(check, f, now) for check, f in findings] or ['<p class=none>No findings.</p>']),
        "<h2>Checks</h2>",
        _checks_table(results, now),
        "</main></body></html>\n",
    ]
    return "".join(parts).encode()


def _finding(check: str, finding: Finding, now: float) -> str:
    severity = finding.severity.name.lower()
    since = (f" &middot; failing for {_duration(now - finding.since)} (since {_utc(finding.since)})"
             if finding.since else "")
    fix = f'<pre class=fix>Fix: {_e(finding.remediation)}</pre>' if finding.remediation else ""
    return (
        f'<section class="finding status-{severity}" data-severity="{severity}">'
        f'<div><span class="badge status-{severity}">{finding.severity.name}</span> '
        f'<span class=subject>{_e(finding.subject)}</span></div>'
        f'<div class=meta>check {_e(check)}{since}</div>'
        f'<p class=message>{_e(finding.message)}</p>{fix}</section>'
    )


def _checks_table(results: list[Result], now: float) -> str:
    rows = []
    for r in sorted(results, key=lambda r: (STATUS_ORDER[r.status], r.check)):
        status = r.status.name.lower()
        last = f"{_duration(now - r.started_at)} ago" if r.started_at else "not run yet"
        rows.append(
            f'<tr class="status-{status}" data-check="{_e(r.check)}">'
            f'<td data-label=check>{_e(r.check)}</td>'
            f'<td data-label=status><span class="badge status-{status}">{r.status.name}</span></td>'
            f'<td data-label="last run">{last}</td>'
            f'<td data-label=took>{r.duration:.2f} s</td>'
            f'<td class=summary data-label=summary>{_e(r.summary)}</td></tr>'
        )
    return ("<table><thead><tr><th>check</th><th>status</th><th>last run</th><th>took</th>"
            f"<th>summary</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _e(text: str) -> str:
    return html.escape(redact(text), quote=True)


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def _duration(seconds: float) -> str:
    """'42 s', '5 min', '3 h 12 min', '2 d 4 h': how long, as a person says it."""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
