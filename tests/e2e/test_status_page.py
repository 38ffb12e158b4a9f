"""The status page in a real browser: healthd on the lab, a fault injected, Debian's Chromium.

healthd runs as a daemon on the lab's config (the catalog check every 2 s), the
lab's `duplicate-service` fault creates a second, empty `network` service through the
Keystone API, and headless Chromium driven by Debian's chromedriver (W3C WebDriver over
loopback HTTP, no library in between) opens `/`: the finding's subject and fix are on
the screen, the colours are the status colours, the page fits a phone's width, and no
password of the lab is anywhere in it. Screenshots go to the test's temp dir.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from healthd.registry import discover
from tests.helpers.servers import free_port
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
HEALTHD = REPO / ".venv" / "bin" / "healthd"
PROBES = ("catalog",)  # the fault is in the catalog; the page shows only this check
CRITICAL_RGB = "rgb(207, 34, 46)"  # --critical in healthd/statuspage.py
OK_RGB = "rgb(26, 127, 55)"  # --ok
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy for loopback


def request(method: str, url: str, body: Any = None, timeout: float = 60) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with _HTTP.open(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw and resp.headers.get_content_type() == "application/json" else raw


class Browser:
    """One WebDriver session on Debian's chromium, through Debian's chromedriver."""

    def __init__(self, tmp: Path) -> None:
        for tool in ("chromium", "chromedriver"):
            if shutil.which(tool) is None:
                pytest.fail(f"{tool} not installed: scripts/setup.sh installs chromium and chromium-driver")
        port = free_port()
        self.log = tmp / "chromedriver.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(["chromedriver", f"--port={port}", "--allowed-ips=127.0.0.1"],
                                         stdout=out, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{port}"
        wait_for("chromedriver", lambda: request("GET", f"{self.base}/status")["value"]["ready"], 30,
                 [self.log])
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-quic", f"--user-data-dir={tmp / 'profile'}"]
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": shutil.which("chromium"), "args": args}}}}
        session_id = request("POST", f"{self.base}/session", caps)["value"]["sessionId"]
        self.session = f"{self.base}/session/{session_id}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return request(method, f"{self.session}{path}", body)["value"]

    def open(self, url: str, width: int, height: int) -> None:
        self.call("POST", "/window/rect", {"width": width, "height": height})
        self.call("POST", "/url", {"url": url})

    def js(self, script: str) -> Any:
        return self.call("POST", "/execute/sync", {"script": script, "args": []})

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("GET", "/screenshot")))

    def close(self) -> None:
        try:
            request("DELETE", self.session)
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def daemon(lab: dict[str, Any], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    lab_cfg = yaml.safe_load(Path(lab["healthd_yaml"]).read_text())
    shipped = [name for name, cls in discover().items() if cls.__module__.startswith("checks.")]
    checks: dict[str, Any] = {name: {"enabled": False} for name in shipped if name not in PROBES}
    checks.update({name: {"interval": 2} for name in PROBES})
    config = {"server": {"listen_address": "127.0.0.1", "port": port},
              "backends": lab_cfg["backends"], "checks": checks}
    (tmp_path / "healthd.yaml").write_text(yaml.safe_dump(config))
    log = tmp_path / "healthd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(HEALTHD), "--config", str(tmp_path / "healthd.yaml"), "run"],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("healthd's first catalog run",
                 lambda: catalog_status(url) not in (None, "UNKNOWN"), 60, [log])
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def catalog_status(url: str) -> str | None:
    doc = request("GET", f"{url}/checks", timeout=5)
    return next((c["status"] for c in doc["checks"] if c["check"] == "catalog"), None)


def lab_passwords(lab: dict[str, Any]) -> list[str]:
    clouds = yaml.safe_load(Path(lab["paths"]["clouds_yaml"]).read_text())
    found = [c["auth"]["password"] for c in clouds["clouds"].values() if c.get("auth", {}).get("password")]
    found.append(Path(lab["paths"]["db_password_file"]).read_text().strip())
    return [p for p in found if len(p) >= 6]


def test_status_page_shows_the_fault_in_a_browser(lab: dict[str, Any], lab_api: Any, daemon: str,
                                                 tmp_path: Path) -> None:
    browser = Browser(tmp_path)
    try:
        browser.open(daemon, 1280, 1000)
        assert browser.js("return document.querySelector('header').dataset.status") in ("OK", "WARNING")
        info = lab_api.inject("duplicate-service")
        try:
            service_id = info["service_id"]
            wait_for("the duplicate service on /checks", lambda: catalog_status(daemon) == "CRITICAL", 60, [])
            browser.open(daemon, 1280, 1000)
            text = browser.js("return document.body.innerText")
            finding = browser.js(
                "const f = document.querySelector('section.finding.status-critical');"
                "return f && {text: f.innerText, border: getComputedStyle(f).borderLeftColor,"
                " badge: getComputedStyle(f.querySelector('.badge')).backgroundColor};")
            header = browser.js("return getComputedStyle(document.querySelector('header')).backgroundColor")
            browser.screenshot(tmp_path / "status-laptop.png")
            assert finding, text
            subject = finding["text"].split("\n")[0]
            assert subject.startswith("CRITICAL") and "service " in subject, finding["text"]
            assert subject.endswith(f"service {service_id}"), subject  # the new, empty one
            assert "Fix: openstack service delete " in finding["text"]
            assert "failing for" in finding["text"]
            assert header == CRITICAL_RGB and finding["border"] == CRITICAL_RGB == finding["badge"]
            # A phone: nothing wider than the screen, the fix still readable.
            browser.open(daemon, 390, 844)
            assert browser.js("return document.documentElement.scrollWidth <= window.innerWidth + 1")
            assert "Fix: openstack service delete" in browser.js("return document.body.innerText")
            browser.screenshot(tmp_path / "status-phone.png")
            source = browser.js("return document.documentElement.outerHTML")
            for secret in lab_passwords(lab):
                assert secret not in source and secret not in text
        finally:
            lab_api.revert("duplicate-service")
        wait_for("the catalog clear again", lambda: catalog_status(daemon) in ("OK", "WARNING"), 60, [])
        browser.open(daemon, 1280, 1000)
        assert not browser.js("return document.querySelector('section.finding.status-critical')")
    finally:
        browser.close()
    assert (tmp_path / "status-laptop.png").stat().st_size > 10_000
