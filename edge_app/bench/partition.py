"""`edge-app bench partition`: what cutting a model into stages costs.

Per model, every figure measured in fresh (spawned) processes:

- the sum of the stage run times over the whole model's run time, both loaded in one process
  with the same thread count, runs interleaved (alternating which goes first), the median of the
  per-pair ratios by wall clock and by process CPU time; repeated in several processes (the
  order of loading alternates), because a process's memory layout alone moves the ratio by
  several percent, and the median over the processes is reported with their range;
- the time to split the model (what ``edge-app model split`` does: plan the default
  Musical-Chair stages, then ``write_split`` their files and manifest);
- the peak memory of that split (tracemalloc, the model file's bytes included) over the file size.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edge_app.errors import ConfigError

DEFAULT_MODELS = ("alexnet", "vgg16", "c3d")
T = TypeVar("T")


@dataclass(frozen=True)
class SplitCost:
    stages: int
    seconds: float
    peak_bytes: int


@dataclass(frozen=True)
class Timings:
    whole_s: float  # median wall time of the whole model
    stages_s: float  # median wall time of the stages in sequence
    wall_ratio: float  # median over interleaved pairs of stages/whole, wall clock
    cpu_ratio: float  # the same with process CPU time (robust on a loaded machine)
    cpu_min_ratio: float  # fastest stages run over fastest whole run, CPU time (noise only adds)


@dataclass(frozen=True)
class PartitionResult:
    model: str
    model_bytes: int
    stages: int
    timings: Timings  # medians over the processes
    cpu_ratio_range: tuple[float, float]  # smallest and largest CPU ratio of the processes
    outputs_equal: bool
    split_s: float
    split_peak_bytes: int

    @property
    def memory_ratio(self) -> float:
        return self.split_peak_bytes / self.model_bytes


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("partition", help="stage overhead, split time and split memory")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated zoo names")
    p.add_argument("--small", action="store_true", help="the small variants (seconds)")
    p.add_argument("--repeats", type=int, default=9, help="interleaved timed runs per process")
    p.add_argument("--processes", type=int, default=3, help="fresh processes timed per model")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (both sides)")
    p.set_defaults(func=cmd_partition)


def measure_split(path: str, trace: bool) -> SplitCost:
    """``edge-app model split`` of the default stages into a temporary directory: plan, then
    ``write_split`` (run in a fresh subprocess; ``trace`` measures the peak with tracemalloc)."""
    from edge_app.inference.graph_io import read_model
    from edge_app.inference.manifest import write_split
    from edge_app.inference.partition import default_stages

    with tempfile.TemporaryDirectory() as tmp:
        if trace:
            tracemalloc.start()
        start = time.perf_counter()
        stages = default_stages(read_model(Path(path).read_bytes()))
        write_split(path, Path(tmp) / "split", stages)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
        tracemalloc.stop()
    return SplitCost(len(stages), seconds, peak)


def _interleaved(whole: Any, stages: list[Any], feed: dict[str, Any], repeats: int) -> Timings:
    """Interleaved timed runs of the whole model and of the stages in sequence."""
    from edge_app.inference.verify import run_stages

    wall: list[tuple[float, float]] = []
    cpu: list[tuple[float, float]] = []
    runs = (lambda: whole.run(feed), lambda: run_stages(stages, feed))
    for i in range(repeats):
        order = (0, 1) if i % 2 == 0 else (1, 0)  # alternate who goes first: cancels order effects
        w = [0.0, 0.0]
        c = [0.0, 0.0]
        for j in order:
            t0, c0 = time.perf_counter(), time.process_time()
            runs[j]()
            w[j], c[j] = time.perf_counter() - t0, time.process_time() - c0
        wall.append((w[0], w[1]))
        cpu.append((c[0], c[1]))
    return Timings(
        whole_s=statistics.median(w for w, _ in wall),
        stages_s=statistics.median(s for _, s in wall),
        wall_ratio=statistics.median(s / w for w, s in wall),
        cpu_ratio=statistics.median(s / max(w, 1e-9) for w, s in cpu),
        cpu_min_ratio=min(s for _, s in cpu) / max(min(w for w, _ in cpu), 1e-9),
    )


def measure_timings(
    path: str, repeats: int, threads: int, whole_first: bool
) -> tuple[Timings, bool, int]:
    """In a fresh process: load the whole model and its default stages (in the given order),
    check that they agree, and time interleaved runs. Returns (timings, outputs equal, stages)."""
    from edge_app.inference.compare import compare_outputs
    from edge_app.inference.graph_io import read_model
    from edge_app.inference.interpreter import Runner
    from edge_app.inference.partition import cut_stage_model, default_stages
    from edge_app.inference.verify import run_stages, seeded_inputs

    data = Path(path).read_bytes()
    whole = Runner(data, num_threads=threads) if whole_first else None
    model = read_model(data)
    specs = default_stages(model)
    stages = [
        (s.inputs, s.outputs, [Runner(cut_stage_model(model, s), num_threads=threads)])
        for s in specs
    ]
    del model
    whole = whole or Runner(data, num_threads=threads)
    feed = seeded_inputs(whole.inputs, 0)
    reference = whole.run(feed)
    env = run_stages(stages, feed)  # also the warm-up of the stages
    equal = all(compare_outputs(ref, env[n]).ok for n, ref in reference.items())
    return _interleaved(whole, stages, feed, repeats), equal, len(specs)


def _in_subprocess(fn: Callable[..., T], *args: Any) -> T:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def bench_model(
    name: str, small: bool, repeats: int, threads: int, processes: int = 3
) -> PartitionResult:
    """Every measurement in fresh processes: a process's memory layout alone moves the
    stages/whole ratio by several percent, so timings are the median over ``processes``."""
    from edge_app.inference import zoo

    path = str(zoo.cached_build(name, small))
    split_s = _in_subprocess(measure_split, path, False).seconds
    cost = _in_subprocess(measure_split, path, True)
    runs = [
        _in_subprocess(measure_timings, path, repeats, threads, i % 2 == 0)
        for i in range(processes)
    ]
    per = [t for t, _, _ in runs]
    return PartitionResult(
        model=f"{name}{' (small)' if small else ''}",
        model_bytes=Path(path).stat().st_size,
        stages=runs[0][2],
        timings=Timings(
            whole_s=statistics.median(t.whole_s for t in per),
            stages_s=statistics.median(t.stages_s for t in per),
            wall_ratio=statistics.median(t.wall_ratio for t in per),
            cpu_ratio=statistics.median(t.cpu_ratio for t in per),
            cpu_min_ratio=statistics.median(t.cpu_min_ratio for t in per),
        ),
        cpu_ratio_range=(min(t.cpu_ratio for t in per), max(t.cpu_ratio for t in per)),
        outputs_equal=all(eq for _, eq, _ in runs),
        split_s=split_s,
        split_peak_bytes=cost.peak_bytes,
    )


def format_table(results: list[PartitionResult], threads: int, repeats: int, processes: int) -> str:
    lines = [
        f"threads={threads} repeats={repeats} processes={processes}",
        "| model | file MB | stages | whole s | stages s | stages/whole wall | stages/whole CPU "
        "| CPU ratio per process | outputs equal | split s | split peak MB | peak/file "
        "| (peak-file)/file |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r.timings
        lines.append(
            f"| {r.model} | {r.model_bytes / 1e6:.1f} | {r.stages} | {t.whole_s:.4f} "
            f"| {t.stages_s:.4f} | {t.wall_ratio:.3f} | {t.cpu_ratio:.3f} "
            f"| {r.cpu_ratio_range[0]:.3f}-{r.cpu_ratio_range[1]:.3f} "
            f"| {'yes' if r.outputs_equal else 'NO'} "
            f"| {r.split_s:.2f} | {r.split_peak_bytes / 1e6:.1f} | {r.memory_ratio:.2f} "
            f"| {r.memory_ratio - 1:.2f} |"
        )
    return "\n".join(lines) + "\n"


def cmd_partition(args: argparse.Namespace) -> int:
    from edge_app.inference import zoo

    names = [n.strip() for n in str(args.models).split(",") if n.strip()]
    unknown = [n for n in names if n not in zoo.ZOO_NAMES]
    if unknown or not names:
        raise ConfigError(f"unknown zoo model(s) {unknown}; known: {', '.join(zoo.ZOO_NAMES)}")
    if min(args.repeats, args.threads, args.processes) < 1:
        raise ConfigError("--repeats, --threads and --processes must be at least 1")
    results: list[PartitionResult] = []
    for name in names:
        results.append(bench_model(name, args.small, args.repeats, args.threads, args.processes))
        sys.stdout.write(format_table(results[-1:], args.threads, args.repeats, args.processes))
        sys.stdout.flush()
    sys.stdout.write("\n" + format_table(results, args.threads, args.repeats, args.processes))
    ok = all(r.outputs_equal for r in results)
    return 0 if ok else 1
