"""`edge-app up`: the whole fleet on this machine in one command.

Uses the broker at ``--broker`` if one answers there, else starts the embedded broker (amqtt)
on that local port (or a free one). Then starts, each as its own process: the scheduler, N
workers, the dashboard (unless ``--no-dashboard``) and a sensor streaming generated demo clips
through the model. Prints what runs where, the URLs, and each process's log file; follows the
results; Ctrl-C or SIGTERM stops every child (sensor first, broker last).

Children run in their own session (so Ctrl-C reaches only this supervisor, which then stops them
in order) and, on Linux, get SIGTERM if the supervisor dies. Broker credentials reach them
through the environment, never the command line.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edge_app.config import BrokerConfig, FleetConfig, add_fleet_args, fleet_config_from_args
from edge_app.errors import ConfigError, EdgeAppError, ModelError, TransportError
from edge_app.messages.schemas import JobOutcome
from edge_app.roles.supervisor import Child, ChildSet, free_port, port_open

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DEMO_MODEL, FALLBACK_MODEL = "actions", "shapes"
DASHBOARD_PORT = 8080


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "up",
        help="run the whole demo fleet on this machine (broker, scheduler, workers, sensor, "
        "dashboard)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workers", type=int, default=2, metavar="N", help="worker processes (2)")
    p.add_argument("--model", default=None, help=f"model (default {DEMO_MODEL}, else shapes)")
    p.add_argument("--source", default=None, help="sensor source (default: generated pattern)")
    p.add_argument("--rate", type=float, default=None, metavar="FPS", help="sensor frame rate")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="threads per worker")
    p.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    p.add_argument(
        "--dashboard-port", type=int, default=DASHBOARD_PORT, help="dashboard port (8080)"
    )
    p.add_argument("--log-dir", default=None, help="folder for the children's logs")
    p.add_argument("--run-for", type=float, default=None, metavar="S", help="stop after S seconds")
    add_fleet_args(p)
    p.set_defaults(func=run)


# --- choosing things ---------------------------------------------------------------------------


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def online_schedulers(config: FleetConfig, listen_s: float = 1.0) -> list[str]:
    """Schedulers of this fleet whose retained status says online (TransportError if the broker
    does not accept us): a second ``up`` on the same fleet would make two plan writers."""
    from edge_app.messages.schemas import DeviceStatus, decode
    from edge_app.transport.base import Received
    from edge_app.transport.mqtt import MqttTransport

    found: dict[str, bool] = {}

    def on_status(msg: Received) -> None:
        try:
            status = decode(DeviceStatus, msg.payload)
        except EdgeAppError:
            return
        if status.role == "scheduler":
            found[status.device] = status.state == "online"

    probe = MqttTransport(config.broker, f"edge-up-probe-{os.getpid()}", connect_timeout=3.0)
    probe.subscribe(config.topics.all("status"), on_status)
    probe.start()
    time.sleep(listen_s)  # retained statuses arrive right after the subscription
    probe.stop()
    return sorted(d for d, online in found.items() if online)


def pick_model(name: str | None) -> tuple[str, str]:
    """(model name, task) — the demo's action model, or the image model if it is missing."""
    from edge_app.inference.catalog import resolve_model

    candidates = [name] if name else [DEMO_MODEL, FALLBACK_MODEL]
    for candidate in candidates:
        try:
            card, _ = resolve_model(candidate)
        except ModelError:
            if name:
                raise
            continue
        return candidate, card.task
    raise ModelError(f"none of the demo models {candidates} is available")


def child_env(broker: BrokerConfig) -> dict[str, str]:
    env = dict(os.environ)
    env["EDGE_BROKER_URL"] = broker.url
    user, password = broker.credentials
    for key, value in (
        ("EDGE_BROKER_USERNAME", user),
        ("EDGE_BROKER_PASSWORD", password),
        ("EDGE_BROKER_CA", broker.ca_file),
    ):
        if value is not None:
            env[key] = value
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_app.cli", *args]


# --- the run -----------------------------------------------------------------------------------


class Demo:
    def __init__(self, args: argparse.Namespace, config: FleetConfig, log_dir: Path) -> None:
        self.args = args
        self.config = config
        self.children = ChildSet(log_dir)
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.first: JobOutcome | None = None

    def start_broker(self) -> BrokerConfig:
        broker = self.config.broker
        if port_open(broker.host, broker.port):
            running = online_schedulers(self.config)
            if running:
                raise ConfigError(
                    f"fleet {self.config.fleet!r} on {broker.display_url} already has a scheduler"
                    f" ({', '.join(running)}): stop it, or pick another --fleet"
                )
            print(f"broker      {broker.display_url} (already running: using it)")
            return broker
        if broker.host not in LOCAL_HOSTS:
            raise TransportError(f"no MQTT broker answers at {broker.display_url}")
        if broker.tls or any(broker.credentials):
            raise ConfigError("the embedded broker takes no TLS or credentials: drop them")
        if importlib.util.find_spec("amqtt") is None:
            raise ConfigError(
                f"no broker answers at {broker.display_url} and the embedded broker needs amqtt:"
                " pip install 'edge-app[demo]', or start Mosquitto"
            )
        port = broker.port if port_free("127.0.0.1", broker.port) else free_port()
        argv = [sys.executable, "-m", "edge_app.roles.embedded_broker", "--port", str(port)]
        child = self.children.start(Child("broker", "embedded broker", argv, critical=True))
        if not self.children.wait_port(child, "127.0.0.1", port, timeout=15):
            raise TransportError(f"the embedded broker did not start: see {child.log_path}")
        local = broker.with_url(f"mqtt://127.0.0.1:{port}")
        print(f"broker      {local.display_url} (embedded amqtt, pid {child.pid})")
        return local

    def start_fleet(self, broker: BrokerConfig, model: str, task: str) -> None:
        env = child_env(broker)
        fleet = ["--fleet", self.config.fleet]
        self.children.start(
            Child(
                "scheduler",
                "scheduler",
                cli("scheduler", "--model", model, *fleet),
                env=env,
                critical=True,
            )
        )
        for i in range(1, self.args.workers + 1):
            argv = cli("worker", "--device", f"worker-{i}", "--model", model,
                       "--threads", str(self.args.threads), *fleet)  # fmt: skip
            self.children.start(Child("worker", f"worker-{i}", argv, env=env))
        dashboard = self.start_dashboard(env, fleet)
        source = self.args.source or ("pattern:actions" if task == "action" else "pattern:box")
        argv = cli("sensor", "--source", source, "--model", model, "--sensor", "camera-1", *fleet)
        if self.args.rate:
            argv += ["--rate", str(self.args.rate)]
        self.children.start(Child("sensor", "camera-1", argv, env=env))
        print("\n".join(self.children.table()))
        if dashboard:
            print(f"\ndashboard   {dashboard}")
        print(f"model       {model} ({task})   fleet {self.config.fleet}")
        print(f"logs        {self.children.log_dir}")
        print("Ctrl-C stops everything.\n", flush=True)

    def start_dashboard(self, env: dict[str, str], fleet: list[str]) -> str | None:
        if self.args.no_dashboard:
            return None
        port = self.args.dashboard_port
        if not port_free("127.0.0.1", port):
            port = free_port()
        db = self.children.log_dir / "dashboard.sqlite3"
        argv = cli("dashboard", "--bind", f"127.0.0.1:{port}", "--db", str(db), *fleet)
        self.children.start(Child("dashboard", "dashboard", argv, env=env))
        return f"http://127.0.0.1:{port}/"

    def on_outcome(self, outcome: JobOutcome) -> None:
        if self.first is None and outcome.status == "ok":
            self.first = outcome
            took = time.monotonic() - self.started
            print(
                f"first result after {took:.1f} s: {outcome.sensor} {outcome.label} "
                f"{outcome.score or 0:.2f} ({outcome.latency_s * 1000:.0f} ms)",
                flush=True,
            )

    def report_crashes(self) -> bool:
        """Print children that died; True if one the demo needs (broker, scheduler) did."""
        fatal = False
        for crash in self.children.crashes():
            c = crash.child
            print(f"\n{c.name} exited with code {crash.code}; last lines of {c.log_path}:")
            print(c.tail(), flush=True)
            fatal = fatal or c.critical
        return fatal

    def follow(self, broker: BrokerConfig) -> int:
        from edge_app.roles.sink import OutcomeSink
        from edge_app.transport.mqtt import MqttTransport

        transport = MqttTransport(broker, f"edge-up-{os.getpid()}")
        sink = OutcomeSink(transport, self.config.topics, on_outcome=self.on_outcome)
        sink.attach()
        transport.start()
        end = time.monotonic() + self.args.run_for if self.args.run_for else None
        next_summary = time.monotonic() + 10
        try:
            while not self.stop.wait(0.25):
                if self.report_crashes():
                    return 1
                now = time.monotonic()
                if end is not None and now >= end:
                    break
                if now >= next_summary:
                    next_summary = now + 10
                    counts = sink.counts()
                    print(f"results: ok {counts['ok']}, dropped {counts['dropped']}", flush=True)
            return 0
        finally:
            print(f"results: {sink.counts()}", flush=True)
            transport.stop()


def run(args: argparse.Namespace) -> int:
    if args.workers < 1 or args.threads < 1:
        raise ConfigError("--workers and --threads must be at least 1")
    if not 0 < args.dashboard_port < 65536:
        raise ConfigError(f"--dashboard-port {args.dashboard_port} is not a TCP port (1-65535)")
    config = fleet_config_from_args(args)
    model, task = pick_model(args.model)
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="edge-app-up-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    demo = Demo(args, config, log_dir)

    def on_signal(signum: int, _frame: object) -> None:
        demo.stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        broker = demo.start_broker()
        demo.start_fleet(broker, model, task)
        return demo.follow(broker)
    except EdgeAppError:
        demo.report_crashes()
        raise
    finally:
        print("stopping...", flush=True)
        demo.children.stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("stopped.", flush=True)
