"""The dashboard in real headless Chromium (Debian's), against real Mosquitto and the real CLI.

Set EDGE_DASHBOARD_SCREENSHOT=docs/dashboard.png to also write the screenshot there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_app.bench.dashboard import CHROMIUM, DashboardProcess, launch_chromium
from edge_app.dashboard.demo import DemoFleet
from edge_app.transport.mqtt import MqttTransport

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed"),
]

WORKER = """
import sys, time
from edge_app.config import BrokerConfig
from edge_app.messages.schemas import DeviceStatus, Hardware, Heartbeat, StageLoad, encode
from edge_app.messages.topics import Topics
from edge_app.transport.mqtt import MqttTransport
url, fleet, dev = sys.argv[1:4]
t = Topics.for_fleet(fleet)
status = lambda s: encode(DeviceStatus(device=dev, role="worker", state=s, ts=time.time()))
tr = MqttTransport(BrokerConfig(url=url), client_id=dev)
tr.set_will(t.status(dev), status("offline"))
tr.start()
tr.publish(t.status(dev), status("online"), retain=True)
seq = 0
while True:
    seq += 1
    hb = Heartbeat(device=dev, role="worker", seq=seq, ts=time.time(), load=0.42,
                   hardware=Hardware(cores=4, memory_total=2 << 30, memory_available=1 << 30,
                                     temperature_c=47.5),
                   stages=[StageLoad(stage=0, service_time_s=0.08)])
    tr.publish(t.heartbeat(dev), encode(hb))
    time.sleep(0.5)
"""


@pytest.fixture
def publisher(mosquitto: Any) -> Iterator[MqttTransport]:
    client = MqttTransport(mosquitto.config, client_id="e2e-fleet")
    client.start()
    try:
        yield client
    finally:
        client.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = launch_chromium(pw)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    """A phone-to-desktop friendly page with every console error and page error recorded."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("window.edgeDash && window.edgeDash.snapshots > 0", timeout=5000)
    return page, errors


def card(sensor: str) -> str:
    return f'.camera[data-sensor="{sensor}"]'


def test_dashboard_in_chromium(
    mosquitto: Any, publisher: MqttTransport, browser: Any, tmp_path: Path
) -> None:
    fleet_cfg = mosquitto.fleet("e2e")
    db = tmp_path / "history.sqlite3"
    dash = DashboardProcess(mosquitto.url, "e2e", db)
    dash.start()
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, mosquitto.url, "e2e", "pi-e2e"],
        stdout=subprocess.DEVNULL,
    )
    try:
        page, errors = open_page(browser, dash.url)
        fleet = DemoFleet(publisher, fleet_cfg.topics)
        fleet.start()
        page.wait_for_selector('.device[data-device="pi-e2e"].online', timeout=5000)

        # a result injected over MQTT shows in its camera card within 2 s
        t0 = time.monotonic()
        injected = fleet.result("porch")
        page.wait_for_function(
            "([sel, label]) => document.querySelector(sel + ' .action')?.textContent === label",
            arg=[card("porch"), injected.label],
            timeout=2000,
        )
        assert time.monotonic() - t0 < 2.0
        assert page.locator(f"{card('porch')} img.thumb").count() == 1

        # a worker that goes offline (killed: its last will) turns its card offline
        worker.send_signal(signal.SIGKILL)
        worker.wait(5)
        page.wait_for_selector('.device[data-device="pi-e2e"].offline', timeout=5000)
        assert page.locator('.device[data-device="pi-e2e"] .pill').inner_text() == "offline"

        # some traffic for the charts and strips, then the screenshot
        for i in range(80):
            cam = fleet.cameras[i % len(fleet.cameras)]
            if i % 17 == 8:
                fleet.result(cam, status="dropped", reason="deadline")
            else:
                fleet.result(cam)
            if i % 10 == 0:
                fleet.heartbeats()
                fleet.metrics()
            time.sleep(0.1)
        last = fleet.result("porch")
        page.wait_for_function(
            "([sel, label]) => document.querySelector(sel + ' .action')?.textContent === label",
            arg=[card("porch"), last.label],
            timeout=2000,
        )
        page.wait_for_timeout(1200)  # one more chart tick
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        if target := os.environ.get("EDGE_DASHBOARD_SCREENSHOT"):
            page.screenshot(path=target, full_page=True)
        assert errors == []
        page.close()

        # after a restart of the dashboard the history is still there
        assert dash.stop() == 0
        dash = DashboardProcess(mosquitto.url, "e2e", db)
        dash.start()
        page, errors = open_page(browser, dash.url)
        page.wait_for_function(
            "([sel, label]) => document.querySelector(sel + ' .action')?.textContent === label",
            arg=[card("porch"), last.label],
            timeout=3000,
        )
        page.click("#tab-history")
        page.wait_for_selector(f'#history-table tr[data-job="{injected.job}"]', timeout=3000)
        page.select_option("#h-camera", "porch")
        page.click("#history-form button")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#history-table tbody tr[data-job]')]"
            ".every((tr) => tr.children[1].textContent === 'porch')"
        )
        assert page.locator("#history-table tbody tr[data-job]").count() >= 16
        assert page.locator("#events-table tbody tr").count() >= 1  # pi-e2e went offline
        assert errors == []
    finally:
        worker.kill()
        worker.wait(5)
        dash.stop()
