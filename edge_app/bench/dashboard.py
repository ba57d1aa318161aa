"""`edge-app bench dashboard`: the dashboard under a steady stream of results.

Starts a private Mosquitto (unless --broker is given) and the dashboard as its own process
(`edge-app dashboard`), opens the page in headless Chromium (Debian's /usr/bin/chromium, driven
by Playwright), publishes results at --rate per second for --seconds, and reports the dashboard
process's CPU use and the delay from each result's publish to the page showing it (measured in
the browser: page clock minus the outcome's done_ts stamped just before publishing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_app.bench.codec import private_broker
from edge_app.config import BrokerConfig
from edge_app.errors import ConfigError
from edge_app.roles.supervisor import free_port, wait_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
START_TIMEOUT_S = 20.0


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium, never a downloaded browser."""
    if not Path(CHROMIUM).exists():
        raise ConfigError(f"{CHROMIUM} not found: install Debian's chromium package")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))


class DashboardProcess:
    """`edge-app dashboard` as a child process (so its CPU time is its own)."""

    def __init__(self, broker_url: str, fleet: str, db: Path, extra: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "edge_app.cli",
            "dashboard",
            "--broker",
            broker_url,
            "--fleet",
            fleet,
            "--bind",
            f"127.0.0.1:{self.port}",
            "--db",
            str(db),
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if wait_port(self.proc, "127.0.0.1", self.port, START_TIMEOUT_S):
            return
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise ConfigError(f"the dashboard exited: {err.strip()[-800:]}")
        self.stop()
        raise ConfigError("the dashboard did not start listening")

    def stop(self) -> int:
        """SIGTERM (a clean stop: offline status, history flushed); returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        proc.terminate()
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(5)
        if proc.stderr:
            proc.stderr.close()
        return code


@dataclass(frozen=True)
class DashboardBench:
    rate: float
    seconds: float
    sent: int
    shown: int
    delay_p50_ms: float
    delay_p95_ms: float
    delay_max_ms: float
    cpu_percent: float  # of one core, dashboard process only
    rss_mb: float


def _pace(fleet: Any, rate: float, seconds: float) -> int:
    """Publish results at ``rate``/s (cameras in turn), heartbeats each second."""
    period = 1.0 / rate
    start = time.monotonic()
    sent, next_hb = 0, start
    cameras = list(fleet.cameras)
    while (now := time.monotonic()) - start < seconds:
        if now >= next_hb:
            fleet.heartbeats()
            fleet.metrics()
            next_hb += 1.0
        fleet.result(cameras[sent % len(cameras)])
        sent += 1
        time.sleep(max(0.0, start + sent * period - time.monotonic()))
    return sent


def _measure(page: Any, fleet: Any, pid: int, rate: float, seconds: float) -> DashboardBench:
    import psutil

    from edge_app.dashboard.series import percentile

    proc = psutil.Process(pid)
    cpu0, t0 = proc.cpu_times(), time.monotonic()
    sent = _pace(fleet, rate, seconds)
    time.sleep(1.0)  # let the last results reach the page
    cpu1, t1 = proc.cpu_times(), time.monotonic()
    delays = [float(d) for d in page.evaluate("window.edgeDash.delays")]
    busy = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)

    def ms(q: float) -> float:
        value = percentile(delays, q)
        return float("nan") if value is None else 1000 * value

    return DashboardBench(
        rate=rate,
        seconds=seconds,
        sent=sent,
        shown=len(delays),
        delay_p50_ms=ms(50),
        delay_p95_ms=ms(95),
        delay_max_ms=ms(100),
        cpu_percent=100 * busy / (t1 - t0),
        rss_mb=proc.memory_info().rss / 2**20,
    )


def run_bench(broker: BrokerConfig, rate: float, seconds: float) -> DashboardBench:
    from playwright.sync_api import sync_playwright

    from edge_app.dashboard.demo import DemoFleet
    from edge_app.messages.topics import Topics
    from edge_app.transport.mqtt import MqttTransport

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-bench-dash-"))
        pw = stack.enter_context(sync_playwright())
        dash = DashboardProcess(broker.url, "bench", Path(tmp) / "history.sqlite3")
        dash.start()
        stack.callback(dash.stop)
        publisher = MqttTransport(broker, client_id="bench-fleet")
        publisher.start()
        stack.callback(publisher.stop)
        browser = launch_chromium(pw)
        stack.callback(browser.close)
        page = browser.new_page()
        page.goto(dash.url)
        page.wait_for_function("window.edgeDash && window.edgeDash.snapshots > 0")
        fleet = DemoFleet(publisher, Topics.for_fleet("bench"))
        fleet.start()
        time.sleep(1.0)
        return _measure(page, fleet, dash.pid, rate, seconds)
    raise AssertionError("unreachable")  # ExitStack does not swallow exceptions


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "dashboard", help="dashboard CPU and publish-to-page delay under a stream of results"
    )
    p.add_argument("--rate", type=float, default=30.0, help="results per second (default 30)")
    p.add_argument("--seconds", type=float, default=60.0, help="how long (default 60)")
    p.add_argument("--broker", default=None, help="broker URL (default: a private mosquitto)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    if not 0 < args.rate <= 1000 or not 0 < args.seconds <= 3600:
        raise ConfigError("--rate must be in (0, 1000] and --seconds in (0, 3600]")
    with contextlib.ExitStack() as stack:
        broker = (
            BrokerConfig(url=args.broker)
            if args.broker
            else stack.enter_context(private_broker("mosquitto"))
        )
        result = run_bench(broker, args.rate, args.seconds)
    sys.stdout.write(json.dumps(asdict(result), indent=2) + "\n" if args.json else report(result))
    return 0 if result.shown >= result.sent else 1


def report(r: DashboardBench) -> str:
    return (
        f"dashboard bench: {r.rate:g} results/s for {r.seconds:g} s\n"
        f"  results sent / shown in the page       {r.sent} / {r.shown}\n"
        f"  publish-to-page delay p50 / p95 / max  {r.delay_p50_ms:.1f} / "
        f"{r.delay_p95_ms:.1f} / {r.delay_max_ms:.1f} ms\n"
        f"  dashboard process CPU                  {r.cpu_percent:.1f} % of one core\n"
        f"  dashboard process RSS                  {r.rss_mb:.0f} MB\n"
    )
