"""`edge-app bench partition`: what cutting a model into stages costs.

Per model: the sum of the stage run times over the whole model's run time, in the same process
with the same thread count (runs of whole and stages interleaved, median of the ratios); the time
to cut every stage of the default (Musical-Chair) split; and the peak memory of that split,
measured with tracemalloc in a fresh subprocess (the model file's bytes included), relative to
the model file's size.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_app.errors import ConfigError

DEFAULT_MODELS = ("alexnet", "vgg16", "c3d")


@dataclass(frozen=True)
class SplitCost:
    stages: int
    seconds: float
    peak_bytes: int


@dataclass(frozen=True)
class PartitionResult:
    model: str
    model_bytes: int
    stages: int
    whole_s: float
    stages_s: float
    ratio: float  # median over repeats of (sum of stage times) / (whole-model time)
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
    p.add_argument("--repeats", type=int, default=7, help="interleaved timed runs per model")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (both sides)")
    p.set_defaults(func=cmd_partition)


def measure_split(path: str) -> SplitCost:
    """Reads the model and cuts every default stage, under tracemalloc (run in a subprocess)."""
    from edge_app.inference.graph_io import read_model
    from edge_app.inference.partition import cut_stage_model, default_stages

    tracemalloc.start()
    start = time.perf_counter()
    model = read_model(Path(path).read_bytes())
    stages = default_stages(model)
    for stage in stages:
        cut_stage_model(model, stage)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return SplitCost(len(stages), seconds, peak)


def _split_in_subprocess(path: Path) -> SplitCost:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(measure_split, str(path)).result()


def _time_split(data: bytes) -> float:
    from edge_app.inference.graph_io import read_model
    from edge_app.inference.partition import cut_stage_model, default_stages

    start = time.perf_counter()
    model = read_model(data)
    for stage in default_stages(model):
        cut_stage_model(model, stage)
    return time.perf_counter() - start


def _interleaved(
    whole: Any, stages: list[Any], feed: dict[str, Any], repeats: int
) -> tuple[list[float], list[float]]:
    """Alternating timed runs of the whole model and of the stages in sequence."""
    from edge_app.inference.verify import run_stages

    whole_t: list[float] = []
    stage_t: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        whole.run(feed)
        t1 = time.perf_counter()
        run_stages(stages, feed)
        t2 = time.perf_counter()
        whole_t.append(t1 - t0)
        stage_t.append(t2 - t1)
    return whole_t, stage_t


def bench_model(name: str, small: bool, repeats: int, threads: int) -> PartitionResult:
    from edge_app.inference import zoo
    from edge_app.inference.compare import compare_outputs
    from edge_app.inference.graph_io import read_model
    from edge_app.inference.interpreter import Runner
    from edge_app.inference.partition import cut_stage_model, default_stages
    from edge_app.inference.verify import run_stages, seeded_inputs

    path = zoo.cached_build(name, small)
    data = path.read_bytes()
    split_s = _time_split(data)
    cost = _split_in_subprocess(path)
    model = read_model(data)
    specs = default_stages(model)
    stages = [
        (s.inputs, s.outputs, [Runner(cut_stage_model(model, s), num_threads=threads)])
        for s in specs
    ]
    del model
    whole = Runner(data, num_threads=threads)
    feed = seeded_inputs(whole.inputs, 0)
    reference = whole.run(feed)
    env = run_stages(stages, feed)  # also the warm-up of the stages
    equal = all(compare_outputs(ref, env[n]).ok for n, ref in reference.items())
    whole_t, stage_t = _interleaved(whole, stages, feed, repeats)
    return PartitionResult(
        model=f"{name}{' (small)' if small else ''}",
        model_bytes=len(data),
        stages=len(specs),
        whole_s=statistics.median(whole_t),
        stages_s=statistics.median(stage_t),
        ratio=statistics.median(s / w for s, w in zip(stage_t, whole_t, strict=True)),
        outputs_equal=equal,
        split_s=split_s,
        split_peak_bytes=cost.peak_bytes,
    )


def format_table(results: list[PartitionResult], threads: int, repeats: int) -> str:
    lines = [
        f"threads={threads} repeats={repeats}",
        "| model | file MB | stages | whole s (median) | stages s (median) "
        "| stages/whole (median of pairs) | outputs equal | split s | split peak MB | peak/file |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.model_bytes / 1e6:.1f} | {r.stages} | {r.whole_s:.4f} "
            f"| {r.stages_s:.4f} | {r.ratio:.3f} | {'yes' if r.outputs_equal else 'NO'} "
            f"| {r.split_s:.2f} | {r.split_peak_bytes / 1e6:.1f} | {r.memory_ratio:.2f} |"
        )
    return "\n".join(lines) + "\n"


def cmd_partition(args: argparse.Namespace) -> int:
    from edge_app.inference import zoo

    names = [n.strip() for n in str(args.models).split(",") if n.strip()]
    unknown = [n for n in names if n not in zoo.ZOO_NAMES]
    if unknown or not names:
        raise ConfigError(f"unknown zoo model(s) {unknown}; known: {', '.join(zoo.ZOO_NAMES)}")
    if args.repeats < 1 or args.threads < 1:
        raise ConfigError("--repeats and --threads must be at least 1")
    results: list[PartitionResult] = []
    for name in names:
        results.append(bench_model(name, args.small, args.repeats, args.threads))
        sys.stdout.write(format_table(results[-1:], args.threads, args.repeats))
        sys.stdout.flush()
    sys.stdout.write("\n" + format_table(results, args.threads, args.repeats))
    ok = all(r.outputs_equal for r in results)
    return 0 if ok else 1
