"""``edge-app simulate``: how a fleet of profiled devices would run a model, at any scale."""

from __future__ import annotations

import argparse
import json
from typing import Any

from edge_app.errors import ConfigError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="simulate a fleet of profiled devices running a model (the real planner and routing)",
        description="Discrete-event simulation of a fleet: the real planner seats the model's "
        "stages on the devices, the real routing policy sends the jobs; devices compute at "
        "their profile's speed and send at their link's rate. Prints throughput, latency "
        "percentiles, utilization per device, the bottleneck, energy per inference and the "
        "bound (compute or links) with which one binds.",
    )
    p.add_argument("--fleet", required=True, metavar="SPEC", help='e.g. "pi3b:8,pi4:2"')
    p.add_argument("--model", required=True, metavar="NAME_OR_PATH", help="zoo name or model")
    p.add_argument("--jobs", type=int, default=1000, help="jobs measured after the warm-up")
    p.add_argument("--warmup", type=int, default=50, help="jobs before the measurement")
    p.add_argument("--in-flight", type=int, default=None, help="the sensor's in-flight limit")
    p.add_argument("--rate", type=float, default=None, help="frames/s offered (default: max)")
    p.add_argument("--sensor-link", default="wifi-n", help="the sensor's link (devices.toml)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=run_simulate)


def load_workload(name: str) -> Any:
    """The workload of a zoo name (built into the cache) or a model path/name."""
    from edge_app.emulation.workload import workload_from_model
    from edge_app.inference.catalog import resolve_model

    card, path = resolve_model(name)
    return workload_from_model(path.read_bytes(), card.name)


def run_simulate(args: argparse.Namespace) -> int:
    from edge_app.simulation.fleet import parse_fleet
    from edge_app.simulation.run import Load, simulate

    if args.rate is not None and args.rate <= 0:
        raise ConfigError("--rate must be positive")
    devices = parse_fleet(args.fleet)
    workload = load_workload(args.model)
    load = Load(
        jobs=args.jobs,
        warmup=args.warmup,
        in_flight=args.in_flight,
        rate=args.rate,
        sensor_link=args.sensor_link,
    )
    report = simulate(devices, workload, load)
    if args.json:
        print(json.dumps(report.as_dict(), indent=1, sort_keys=True))
        return 0
    b = report.bound
    print(f"model {report.model} on {', '.join(f'{n} x {k}' for k, n in report.fleet.items())}")
    for line in report.stages:
        print(f"  {line}")
    print(f"throughput      {report.throughput:.3f} inferences/s")
    print(
        f"bound           {b.value:.3f}/s ({b.binds} binds: compute {b.compute:.3f}, "
        f"sensor link {b.sensor_link:.3f}, fleet links {b.fleet_links:.3f}); "
        f"efficiency {report.efficiency:.1%}"
    )
    print(
        f"latency         p50 {report.latency_p50:.2f} s, p90 {report.latency_p90:.2f} s, "
        f"p99 {report.latency_p99:.2f} s, mean {report.latency_mean:.2f} s"
        f" (sensor in-flight limit {report.in_flight})"
    )
    print(f"bottleneck      {report.bottleneck}")
    print(f"energy          {report.energy_j:.1f} J per inference ({report.power_w:.1f} W)")
    util = sorted(report.utilization.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{d} {u:.0%}" for d, u in util[:12])
    more = f" (+{len(util) - 12} more)" if len(util) > 12 else ""
    print(f"utilization     {shown}{more}")
    return 0
