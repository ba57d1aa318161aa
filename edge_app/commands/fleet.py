"""``edge-app worker``: run a worker of the fleet on this device."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from edge_app.config import FleetConfig, add_fleet_args, fleet_config_from_args
from edge_app.errors import ConfigError
from edge_app.messages.topics import check_id


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "worker",
        help="run a worker: heartbeats, loads the stages the plan gives it, runs jobs",
        description="Run a worker. It reports itself to the scheduler, cuts and loads the stages "
        "the newest plan seats it on (from its local copy of the model, hash-checked) and runs "
        "jobs until stopped (Ctrl-C or SIGTERM: finishes what it holds, then goes offline).",
    )
    p.add_argument("--device", required=True, metavar="ID", help="device id (A-Z a-z 0-9 _ . -)")
    p.add_argument(
        "--model",
        required=True,
        metavar="NAME_OR_PATH",
        help="model folder/card/.tflite path, a models/ name, or a zoo name",
    )
    p.add_argument("--threads", type=int, default=1, metavar="N", help="interpreter threads")
    p.add_argument("--queue", type=int, default=64, metavar="N", help="job queue limit")
    p.add_argument(
        "--emulate",
        default=None,
        metavar="PROFILE",
        help="emulate a device profile (e.g. a Raspberry Pi 3B) on this host",
    )
    p.add_argument(
        "--emulate-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="with --emulate: divide every emulated time by F (reported in the heartbeat speed)",
    )
    add_fleet_args(p)
    p.set_defaults(func=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    from edge_app.inference.catalog import resolve_model

    device = check_id(args.device, "device id")
    if args.threads < 1 or args.queue < 1:
        raise ConfigError("--threads and --queue must be at least 1")
    config = fleet_config_from_args(args)
    card, path = resolve_model(args.model)
    worker = _make_worker(args, device, config, card, path)
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.start()
    print(
        f"worker {device} on {config.broker.display_url} fleet {config.fleet}: model "
        f"{card.name} ({path}), {args.threads} thread(s), queue {args.queue}",
        flush=True,
    )
    try:
        while not done.wait(0.5):
            pass
    finally:
        worker.stop()
    return 0


def _make_worker(
    args: argparse.Namespace, device: str, config: FleetConfig, card: Any, path: Path
) -> Any:
    """The Worker, emulating a device profile when asked (issue 7: pads compute to the profile,
    paces sends to its link, reports the profile's hardware and speed)."""
    from edge_app.roles.worker import Worker, WorkerOptions

    emulator, transport = None, None
    if args.emulate:
        from edge_app.emulation.emulator import emulator_for
        from edge_app.transport.mqtt import MqttTransport

        if args.emulate_scale <= 0:
            raise ConfigError("--emulate-scale must be positive")
        emulator = emulator_for(
            args.emulate, path.read_bytes(), card.name, time_scale=args.emulate_scale
        )
        mqtt = MqttTransport(config.broker, client_id=f"edge-worker-{device}")
        transport = emulator.wrap(mqtt, config.topics)
    worker = Worker(
        config,
        device,
        path,
        threads=args.threads,
        queue_limit=args.queue,
        transport=transport,
        model_name=card.name,
        labels=card.labels,
        options=WorkerOptions(
            emulate=args.emulate,
            speed=emulator.speed if emulator else 1.0,
            hardware=emulator.hardware if emulator else None,
        ),
        compute_hook=emulator.hook if emulator else None,
    )
    if emulator is not None:
        emulator.bind(device, worker.current_plan)
    return worker
