"""`edge-app bench paper`: emulated Pi fleets beside the Musical Chair paper's measurements.

Sections (each row emulated, then simulated with the plan it ran, and set against the bound):

1. the paper's configurations: AlexNet on 5 and 6 Pi 3B, VGG16 on 9 and 11, with our planner's
   own plan, beside the paper's images/s and the Jetson TX2's;
2. scaling: VGG16 and C3D on N = 1..12 Pi 3B (target: emulated >= 0.90 x bound; simulator
   within 10% of emulation on throughput and p50 latency);
3. a mixed fleet (4 x Pi 3B + 3 x Pi 4 + 1 x Pi 5): our weighted plan against an equal split
   (target: >= 1.5 x, and >= 0.95 x the bound).

Default: the full-size zoo models really run on the host, padded to Pi time, time scale 1 (slow
by design: about 10 s per VGG16 inference per Pi). ``--quick``: surrogate models (the full
model's stages and FC rows, a tiny convolution trunk) padded to the FULL model's Pi times, all
emulated times divided by a scale factor (reported per row), fewer device counts.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from edge_app.errors import ConfigError

log = logging.getLogger(__name__)

# Hadidi et al. 2018, images/s (the paper's Figure/Table as quoted in issue 7 and DESIGN.md)
PAPER = {("alexnet", 5): 4.33, ("alexnet", 6): 5.72, ("vgg16", 9): 0.48, ("vgg16", 11): 1.11}
TX2 = {"alexnet": (7.12, 5.57), "vgg16": (1.29, 0.52)}  # (GPU, CPU) images/s
QUICK_COUNTS = {"vgg16": (1, 2, 4, 8, 9, 11, 12), "c3d": (1, 2, 4, 8, 12)}
MIXED = "pi3b:4,pi4:3,pi5:1"
QUICK_PI3B_S = 3.5
STATIC_WINDOW = 64  # routing by weight alone: the window never pushes back (as the paper)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "paper",
        help="emulated Pi fleets against the Musical Chair paper (slow; --quick: minutes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="surrogate models and time scaling")
    p.add_argument("--scale", type=float, default=None, help="time scale (quick: per model)")
    p.add_argument("--jobs", type=int, default=None, help="results measured per configuration")
    p.add_argument(
        "--sections", default="paper,scaling,mixed", help="comma list: paper, scaling, mixed"
    )
    p.add_argument("--counts", default=None, help="device counts for scaling, e.g. 1,4,12")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON to this file")
    p.add_argument("--plots", type=Path, default=None, help="write PNG plots into this folder")
    p.set_defaults(func=run_paper)


def _scale(args: argparse.Namespace, model: str) -> float:
    """Quick: a Pi 3B inference of the full model takes about QUICK_PI3B_S of wall time (at
    larger scales the host's own per-hop delays, ~10-30 ms on a loaded 2-core machine, become
    a visible part of the short emulated FC shards)."""
    if args.scale is not None:
        return float(args.scale)
    if not args.quick:
        return 1.0
    from edge_app.emulation.experiment import workloads
    from edge_app.emulation.profiles import get_profile

    _, _, timing = workloads(model, True)
    return float(max(1, round(timing.seconds(get_profile("pi3b")) / QUICK_PI3B_S)))


def _jobs(args: argparse.Namespace, n: int) -> int:
    if args.jobs is not None:
        return int(args.jobs)
    # identical devices finish in bursts of about n: the window must span several bursts
    return max(8, 6 * n + 4)


def _counts(args: argparse.Namespace, model: str) -> tuple[int, ...]:
    if args.counts:
        try:
            return tuple(int(x) for x in args.counts.split(","))
        except ValueError:
            raise ConfigError(f"--counts {args.counts!r}: expected e.g. 1,4,12") from None
    return QUICK_COUNTS[model] if args.quick else tuple(range(1, 13))


def _row(args: argparse.Namespace, label: str, model: str, fleet: str, **kw: Any) -> Any:
    from edge_app.emulation.experiment import run_config

    n = sum(int(p.split(":")[1]) if ":" in p else 1 for p in fleet.split(","))
    row, plan = run_config(
        label,
        model,
        fleet,
        surrogate=args.quick,
        time_scale=_scale(args, model),
        jobs=_jobs(args, n),
        **kw,
    )
    _print_row(row)
    return row, plan


def _print_row(r: Any) -> None:
    print(
        f"{r.label:<34} {r.throughput:8.3f}/s  bound {r.bound:7.3f} ({r.binds[:7]}) "
        f"eff {r.efficiency:6.1%}  sim {r.sim_throughput:7.3f} ({r.sim_error:+6.1%})  "
        f"p50 {r.p50:7.2f}s sim {r.sim_p50:7.2f}s ({r.sim_p50_error:+6.1%})  "
        f"{r.energy_j:6.1f} J  x{r.time_scale:g}  {r.overruns} overruns {r.resent} re-sent",
        flush=True,
    )


def run_paper(args: argparse.Namespace) -> int:
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - {"paper", "scaling", "mixed"}
    if unknown:
        raise ConfigError(f"unknown sections {sorted(unknown)}")
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    print(
        "configuration                       emulated  bound               efficiency  "
        "simulated          latency p50                 energy   scale"
    )
    done: dict[tuple[str, int], dict[str, Any]] = {}
    if "paper" in sections:
        for (model, n), measured in PAPER.items():
            row, _ = _row(args, f"paper {model} {n} x pi3b", model, f"pi3b:{n}")
            gpu, cpu = TX2[model]
            done[(model, n)] = row.as_dict()
            rows.append({**row.as_dict(), "paper": measured, "tx2_gpu": gpu, "tx2_cpu": cpu})
    if "scaling" in sections:
        for model in ("vgg16", "c3d"):
            for n in _counts(args, model):
                label = f"scaling {model} {n} x pi3b"
                if (model, n) in done:  # the paper section ran this very configuration
                    rows.append({**done[(model, n)], "label": label, "paper": PAPER[(model, n)]})
                    continue
                row, _ = _row(args, label, model, f"pi3b:{n}")
                rows.append({**row.as_dict(), "paper": PAPER.get((model, n))})
    if "mixed" in sections:
        rows += _mixed(args)
    elapsed = time.monotonic() - started
    print(f"total wall time {elapsed:.0f} s")
    doc = {"quick": args.quick, "wall_s": elapsed, "rows": rows}
    if args.out is not None:
        args.out.write_text(json.dumps(doc, indent=1))
    if args.plots is not None:
        from edge_app.bench.paper_plots import write_plots

        for path in write_plots(doc, args.plots):
            print(f"wrote {path}")
    if args.json:
        print(json.dumps(doc, indent=1))
    return 0


def _mixed(args: argparse.Namespace) -> list[dict[str, Any]]:
    from edge_app.scheduling.predict import equal_split

    out = []
    for model in ("vgg16",):
        weighted, plan = _row(args, f"mixed {model} weighted", model, MIXED)
        # an equal split only settles once the slow devices' queues have filled: warm up longer
        settle = 3 * (2 * 8 + 2)
        even, _ = _row(
            args,
            f"mixed {model} equal split",
            model,
            MIXED,
            fixed_plan=equal_split(plan),
            warmup=settle,
        )
        w_static, _ = _row(
            args, f"mixed {model} weighted, static", model, MIXED, window=STATIC_WINDOW
        )
        e_static, _ = _row(
            args,
            f"mixed {model} equal split, static",
            model,
            MIXED,
            window=STATIC_WINDOW,
            fixed_plan=equal_split(plan),
            warmup=settle,
        )
        for row in (weighted, even, w_static, e_static):
            out.append(row.as_dict())
        print(
            f"mixed {model}: weighted / equal split = {weighted.throughput / even.throughput:.2f}"
            f" (window 4), {w_static.throughput / e_static.throughput:.2f} (static routing); "
            f"weighted / bound = {weighted.efficiency:.1%}"
        )
    return out
