"""`edge-app scheduler` (the single writer of the plan) and `edge-app status` (the fleet now)."""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import threading
import time
from typing import Any

from edge_app.config import FleetConfig, add_fleet_args, fleet_config_from_args
from edge_app.errors import ConfigError, EdgeAppError
from edge_app.messages.schemas import DeviceStatus, Heartbeat, Metrics, Plan, decode
from edge_app.messages.topics import Kind, check_id
from edge_app.scheduling.planner import PlanPolicy
from edge_app.scheduling.snapshot import FleetSnapshot
from edge_app.transport.base import Received

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    _register_scheduler(subparsers)
    _register_status(subparsers)


def _register_scheduler(subparsers: Any) -> None:
    sched = subparsers.add_parser(
        "scheduler",
        help="run the scheduler: turn heartbeats into the plan (one per fleet)",
        description="Watch device status and heartbeats, seat the model's stages on the workers "
        "(convolutions replicated, fully-connected layers sharded where memory or speed needs "
        "it) and publish the plan, retained, with an increasing epoch. A restarted scheduler "
        "continues from the retained plan.",
    )
    sched.add_argument(
        "--model", required=True, help="model name, folder, card or .tflite (as for `worker`)"
    )
    sched.add_argument("--id", default="scheduler", help="this scheduler's device id")
    sched.add_argument(
        "--shards",
        action="append",
        default=[],
        metavar="STAGE=K",
        help="force stage STAGE into K shards (1 = replicated); repeatable",
    )
    sched.add_argument(
        "--heartbeat-s", type=float, default=None, help="the fleet's heartbeat interval (1.0)"
    )
    add_fleet_args(sched)
    sched.set_defaults(func=run_scheduler)


def _register_status(subparsers: Any) -> None:
    status = subparsers.add_parser(
        "status",
        help="show the fleet: devices, roles, stages, plan epoch, rates and counters",
        description="Listen to the fleet's retained status and plan and a few seconds of "
        "heartbeats and metrics, then print what runs where.",
    )
    status.add_argument("--json", action="store_true", help="one JSON document")
    status.add_argument(
        "--wait",
        type=float,
        default=5.5,
        metavar="S",
        help="seconds to listen (default 5.5: the counters come every 5 s, heartbeats every 1 s)",
    )
    add_fleet_args(status)
    status.set_defaults(func=run_status)


# --- scheduler --------------------------------------------------------------------------------


def parse_shards(values: list[str]) -> dict[int, int]:
    out: dict[int, int] = {}
    for value in values:
        stage, sep, k = value.partition("=")
        if not sep or not stage.strip().isdigit() or not k.strip().isdigit() or int(k) < 1:
            raise ConfigError(f"--shards {value!r}: use STAGE=K with K >= 1, e.g. 1=2")
        out[int(stage)] = int(k)
    return out


def run_scheduler(args: argparse.Namespace) -> int:
    from edge_app.inference.catalog import resolve_model
    from edge_app.roles.scheduler import Scheduler, SchedulerOptions
    from edge_app.scheduling.profile import profile_from_model

    config = fleet_config_from_args(args)
    device = check_id(args.id, "scheduler id")
    card, path = resolve_model(args.model)
    profile = profile_from_model(path.read_bytes(), card.name)
    shards = parse_shards(args.shards)
    for stage in shards:
        if stage >= len(profile.stages) or not profile.stages[stage].shardable:
            raise ConfigError(f"--shards: stage {stage} of {card.name} cannot be sharded")
    options = SchedulerOptions(policy=PlanPolicy(shards=shards))
    scheduler = Scheduler(config, profile, device, options=options)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    scheduler.start()
    print(
        f"scheduler {device}: model {card.name} ({len(profile.stages)} stages) on "
        f"{config.broker.display_url}, fleet {config.topics.root}",
        flush=True,
    )
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        scheduler.stop()
    return 0


# --- status -------------------------------------------------------------------------------------


def collect(config: FleetConfig, wait_s: float) -> FleetSnapshot:
    """Listen for ``wait_s`` seconds and return what was heard."""
    from edge_app.transport.mqtt import MqttTransport

    topics = config.topics
    snap = FleetSnapshot()
    lock = threading.Lock()

    def handler(kind: str) -> Any:
        def on_message(msg: Received) -> None:
            now = time.time()
            try:
                with lock:
                    if kind == "status":
                        snap.add_status(decode(DeviceStatus, msg.payload))
                    elif kind == "heartbeat":
                        snap.add_heartbeat(decode(Heartbeat, msg.payload), now)
                    elif kind == "metrics":
                        snap.add_metrics(decode(Metrics, msg.payload), now)
                    else:
                        snap.add_plan(decode(Plan, msg.payload))
            except EdgeAppError as exc:
                log.debug("status: %s: %s", msg.topic, exc)
                with lock:
                    snap.errors += 1

        return on_message

    transport = MqttTransport(config.broker, client_id=f"status-{secrets.token_hex(4)}")
    kinds: tuple[Kind, ...] = ("status", "heartbeat", "metrics", "plan")
    for kind in kinds:
        transport.subscribe(topics.all(kind), handler(kind))
    transport.start()
    try:
        time.sleep(max(0.0, wait_s))
    finally:
        transport.stop()
    with lock:
        return snap


def run_status(args: argparse.Namespace) -> int:
    config = fleet_config_from_args(args)
    snap = collect(config, args.wait)
    report = snap.report(time.time())
    report["fleet"] = config.topics.root
    report["broker"] = config.broker.display_url
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print_report(report)
    if not report["devices"] and report["plan"] is None:
        if not args.json:
            print(f"nothing heard on {config.topics.root} in {args.wait:g} s")
        return 1
    return 0


def print_report(report: dict[str, Any]) -> None:
    plan = report["plan"]
    print(f"fleet {report['fleet']} on {report['broker']}")
    if plan is None:
        print("plan: none yet")
    else:
        model = plan["model"]
        print(
            f"plan: epoch {plan['epoch']} by {plan['scheduler']}, {plan['age_s']} s ago"
            f" ({plan['reason'] or '-'}); model {model['name']} {model['sha256'][:12]}"
        )
        for st in plan["stages"]:
            if st["mode"] == "sharded":
                seats = ", ".join(f"{d}[{lo}:{hi}]" for d, lo, hi in st["shards"])
                if st["mergers"]:
                    seats += "; mergers " + ", ".join(st["mergers"])
            else:
                seats = ", ".join(f"{d} {w:.3g}" for d, w in st["replicas"].items())
            print(f"  stage {st['stage']} {st['mode']:<10} {seats}")
    print()
    head = ("DEVICE", "ROLE", "STATE", "HB", "LOAD", "QUEUE", "JOBS/s", "EPOCH", "SEATS")
    print("{:<20} {:<9} {:<8} {:>6} {:>5} {:>6} {:>7} {:>5}  {}".format(*head))
    for d in report["devices"]:
        hb = f"{d['heartbeat_age_s']:.1f}s" if "heartbeat_age_s" in d else "-"
        load = f"{d['load']:.2f}" if "load" in d else "-"
        queue = "{}/{}".format(*d["queue"]) if "queue" in d else "-"
        epoch = str(d.get("epoch", "-")) + ("!" if d.get("behind_plan") else "")
        rate = d.get("jobs_per_s")
        jobs = "-" if rate is None else f"{rate:.1f}"
        print(
            f"{d['device']:<20} {d['role'] or '?':<9} {d['state']:<8} {hb:>6} {load:>5}"
            f" {queue:>6} {jobs:>7} {epoch:>5}  {', '.join(d['seats']) or '-'}"
        )
    _print_counters(report)


def _print_counters(report: dict[str, Any]) -> None:
    rows = [d for d in report["devices"] if "metrics" in d]
    if not rows:
        return
    print()
    names = ("accepted", "completed", "dropped", "resent", "errors", "duplicates")
    print("{:<20} ".format("COUNTERS") + " ".join(f"{n:>10}" for n in names) + "  RATE/s")
    for d in rows:
        m, rates = d["metrics"], d.get("rates")
        rate = f"{rates['completed']:.2f} done" if rates else "-"
        print(f"{d['device']:<20} " + " ".join(f"{m[n]:>10}" for n in names) + f"  {rate}")
