"""`edge-app bench pipeline`: the distributed pipeline against the whole model, the per-hop cost,
and failover, measured in one run (issue 3).

1. **Throughput** (full-size AlexNet; ``--quick``: the small one): steady-state jobs/s of
   - the whole model in one process (``--processes`` spawned processes, one Runner each, used
     in turn: where a process's 234 MB of FC weights land moves its speed by ~10 %),
   - the pipeline on 1 worker process (all default stages on it; every hop through the broker;
     ``--processes`` such one-worker fleets, used in turn),
   - the pipeline on 2 worker processes (conv replicas, FC stage(s) sharded 2 ways),
   same interpreter thread count everywhere. Measured in ``--rounds`` interleaved rounds (the
   order rotates each round); the pipeline keeps ``--in-flight`` jobs outstanding end to end so
   the workers never wait; the rate is taken between the completions of job ``warmup`` and job
   ``warmup + jobs``. Reported: medians and ranges of the rates and of the per-round ratios,
   and the CPU time per job (the reference process; the worker processes, from /proc) whose
   ratio a loaded machine disturbs much less than wall-clock rates.
2. **Per-hop cost**: :func:`edge_app.bench.codec.run_codec_bench` on Mosquitto and amqtt.
3. **Failover**: :mod:`edge_app.bench.failover` (definitions of "steady" there).

A private Mosquitto is started for 1 and 3 (:func:`edge_app.bench.codec.private_broker`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.errors import ConfigError, TransportError

log = logging.getLogger(__name__)

_RUNNERS: dict[tuple[str, int], Any] = {}


@dataclass(frozen=True)
class Settings:
    model: str = "alexnet"
    failover_model: str = "shapes"
    threads: int = 1
    rounds: int = 9
    jobs: int = 30
    warmup: int = 5
    in_flight: int = 8
    processes: int = 3  # reference processes and one-worker fleets, used in turn
    shards: dict[int, int] = field(default_factory=lambda: {1: 2})
    kills: int = 5
    rate: float = 20.0
    codec_repeats: int = 20
    parts: tuple[str, ...] = ("throughput", "codec", "failover")


QUICK = Settings(
    model="alexnet:small", rounds=3, jobs=150, warmup=20, processes=1, kills=3, codec_repeats=8
)


@dataclass(frozen=True)
class Series:
    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def range(self) -> tuple[float, float]:
        return (min(self.values), max(self.values)) if self.values else (float("nan"),) * 2


@dataclass(frozen=True)
class ThroughputResult:
    model: str
    threads: int
    rounds: int
    jobs: int
    in_flight: int
    processes: int
    whole: Series
    pipelines: dict[str, Series]  # "1 worker", "2 workers" -> jobs/s per round
    ratios: dict[str, Series]  # pipeline / whole per round
    cpu_ms: dict[str, Series]  # CPU ms per job: the whole model's process, the worker processes
    cpu_ratios: dict[str, Series]  # whole CPU / workers' CPU per job, per round
    plans: dict[str, str]
    dropped: int


# --- the whole model in one process ----------------------------------------------------------


def whole_model_input(path: str, threads: int) -> tuple[tuple[int, ...], str]:
    runner = _runner(path, threads)
    spec = runner.inputs[0]
    return tuple(spec.shape), str(np.dtype(spec.dtype))


def whole_model_rate(path: str, threads: int, jobs: int, warmup: int) -> tuple[float, float]:
    """(jobs/s, CPU seconds per job) of back-to-back runs of the whole model (runs in the
    reference process)."""
    runner = _runner(path, threads)
    shape, dtype = whole_model_input(path, threads)
    x = sample_input(shape, dtype)
    for _ in range(warmup):
        runner.run(x)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(jobs):
        runner.run(x)
    return jobs / (time.perf_counter() - start), (time.process_time() - cpu) / jobs


def _runner(path: str, threads: int) -> Any:
    from edge_app.inference.interpreter import Runner

    key = (path, threads)
    if key not in _RUNNERS:
        _RUNNERS[key] = Runner(Path(path), num_threads=threads)
    return _RUNNERS[key]


def sample_input(shape: Sequence[int], dtype: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, tuple(shape)).astype(dtype)


@contextmanager
def reference_process() -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        yield pool


# --- the pipeline ------------------------------------------------------------------------------


def pipeline_rate(
    fleet: Any, x: np.ndarray, *, jobs: int, warmup: int, in_flight: int, timeout: float = 120.0
) -> tuple[float, int]:
    """(jobs/s between completions ``warmup`` and ``warmup + jobs``, dropped) with ``in_flight``
    jobs outstanding end to end (``in_flight`` more are sent after, so the measured part is
    never a drain)."""
    sink = fleet.sink
    base, first = sink.total, len(fleet.arrivals)
    total = warmup + jobs + in_flight
    for submitted in range(total):
        if not sink.wait_total(base + submitted - in_flight + 1, timeout):
            raise TransportError(f"pipeline stalled: {sink.counts()}")
        fleet.submit(x)
    if not sink.wait_total(base + total, timeout):
        raise TransportError(f"pipeline did not finish: {sink.counts()}")
    got = fleet.outcomes_since(first)
    dropped = sum(1 for a in got if a.outcome.status != "ok")
    span = got[warmup + jobs].ts - got[warmup].ts
    return jobs / span, dropped


Config = tuple[int, dict[int, int]]  # workers, forced shards


class _Rounds:
    """The interleaved measurements: jobs/s and CPU seconds per job of each configuration."""

    def __init__(self, s: Settings, configs: dict[str, Config]) -> None:
        self.s = s
        self.configs = configs
        self.rates: dict[str, list[float]] = {"whole": [], **{k: [] for k in configs}}
        self.cpu: dict[str, list[float]] = {"whole": [], **{k: [] for k in configs}}
        self.dropped = 0

    def whole(self, ref: concurrent.futures.ProcessPoolExecutor, path: str) -> None:
        s = self.s
        rate, cpu = ref.submit(whole_model_rate, path, s.threads, s.jobs, s.warmup).result()
        self.rates["whole"].append(rate)
        self.cpu["whole"].append(cpu)

    def pipeline(self, name: str, fleet: Any, x: np.ndarray) -> None:
        k = self.configs[name][0]
        cpu0 = fleet.worker_cpu_s()
        rate, lost = pipeline_rate(
            fleet, x, jobs=self.s.jobs, warmup=self.s.warmup, in_flight=self.s.in_flight * k
        )
        total = self.s.jobs + self.s.warmup + self.s.in_flight * k
        self.rates[name].append(rate)
        self.cpu[name].append((fleet.worker_cpu_s() - cpu0) / total)
        self.dropped += lost

    def result(self, plans: dict[str, str]) -> ThroughputResult:
        def per_round(a: str, b: str, cpu: bool = False) -> Series:
            src = self.cpu if cpu else self.rates
            return Series([x / y for x, y in zip(src[a], src[b], strict=True)])

        return ThroughputResult(
            model=self.s.model,
            threads=self.s.threads,
            rounds=self.s.rounds,
            jobs=self.s.jobs,
            in_flight=self.s.in_flight,
            processes=self.s.processes,
            whole=Series(self.rates["whole"]),
            pipelines={k: Series(self.rates[k]) for k in self.configs},
            ratios={k: per_round(k, "whole") for k in self.configs},
            cpu_ms={k: Series([1e3 * c for c in v]) for k, v in self.cpu.items()},
            cpu_ratios={k: per_round("whole", k, cpu=True) for k in self.configs},
            plans=plans,
            dropped=self.dropped,
        )


def _start_fleets(
    s: Settings, stack: ExitStack, broker: Any, workdir: Path, configs: dict[str, Config]
) -> dict[str, list[Any]]:
    """``s.processes`` one-worker fleets (each its own worker process) and one 2-worker fleet."""
    from edge_app.bench.fleet_runner import BenchFleet

    fleets: dict[str, list[Any]] = {}
    for name, (n, shards) in configs.items():
        copies = s.processes if n == 1 else 1
        fleets[name] = []
        for c in range(copies):
            tag = f"{n}w{c}"
            fleet = BenchFleet(broker, f"tput{tag}", s.model, workdir, threads=s.threads,
                               shards=shards, max_in_flight=2 * s.in_flight)  # fmt: skip
            fleets[name].append(stack.enter_context(fleet))
            for w in range(n):
                fleet.spawn(f"t{tag}d{w}")
    return fleets


def run_throughput(s: Settings, workdir: Path, broker: Any) -> ThroughputResult:
    from edge_app.bench.fleet_runner import plan_summary, spread_over
    from edge_app.inference.catalog import resolve_model

    _, path = resolve_model(s.model)
    configs: dict[str, Config] = {"1 worker": (1, {}), "2 workers": (2, s.shards)}
    rounds = _Rounds(s, configs)
    plans: dict[str, str] = {}
    with ExitStack() as stack:
        refs = [stack.enter_context(reference_process()) for _ in range(s.processes)]
        shape, dtype = refs[0].submit(whole_model_input, str(path), s.threads).result()
        x = sample_input(shape, dtype)
        fleets = _start_fleets(s, stack, broker, workdir, configs)
        for name, copies in fleets.items():
            for fleet in copies:
                plans[name] = plan_summary(fleet.wait_ready(spread_over(*configs[name]), 180))
            log.info("%s ready: %s", name, plans[name])
        order = ["whole", *fleets]
        for r in range(s.rounds):
            for name in order[r % len(order) :] + order[: r % len(order)]:
                if name == "whole":
                    rounds.whole(refs[r % len(refs)], str(path))
                else:
                    rounds.pipeline(name, fleets[name][r % len(fleets[name])], x)
                log.info("round %d %s: %.2f jobs/s", r, name, rounds.rates[name][-1])
    return rounds.result(plans)


def run_failover_part(s: Settings, workdir: Path, broker: Any) -> Any:
    from edge_app.bench.failover import run_failover
    from edge_app.bench.fleet_runner import BenchFleet
    from edge_app.inference.interpreter import Runner

    fleet = BenchFleet(broker, "failover", s.failover_model, workdir, shards={1: 2},
                       deadline_s=15.0, max_in_flight=64)  # fmt: skip
    spec = Runner(Path(fleet.model_path)).inputs[0]
    rng = np.random.default_rng(5)
    inputs = [rng.uniform(-1, 1, spec.shape).astype(spec.dtype) for _ in range(64)]
    with fleet:
        return run_failover(fleet, inputs, kills=s.kills, rate=s.rate, progress=_progress)


def _progress(kill: Any) -> None:
    sys.stderr.write(
        f"kill -9 {kill.victim} ({kill.seat}): recovery {kill.recovery_s:.2f} s "
        f"(throughput {kill.throughput_recovery_s:.2f}, latency {kill.latency_recovery_s:.2f}), "
        f"vanished {kill.vanished}, dropped {kill.dropped} of {kill.jobs}\n"
    )


# --- the command -------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "pipeline", help="pipeline vs whole model, per-hop cost, failover (issue 3)"
    )
    p.add_argument("--quick", action="store_true", help="small models, fewer jobs (~2 min)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads, both sides (1)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (9; quick 3)")
    p.add_argument("--jobs", type=int, default=None, help="timed jobs per round (30; quick 150)")
    p.add_argument(
        "--processes",
        type=int,
        default=None,
        help="whole-model processes and 1-worker fleets "
        "used in turn (3; quick 1): a process's memory layout alone moves AlexNet by ~10 %%",
    )
    p.add_argument("--in-flight", type=int, default=None, help="jobs in flight per worker (8)")
    p.add_argument("--kills", type=int, default=None, help="kill -9 trials (5; quick 3)")
    p.add_argument("--parts", default="throughput,codec,failover", help="which parts to run")
    p.add_argument("--model", default=None, help="throughput model (alexnet; quick alexnet:small)")
    p.add_argument("--log-dir", default=None, help="keep the worker logs in this folder")
    p.set_defaults(func=cmd_pipeline)


def settings_from_args(args: argparse.Namespace) -> Settings:
    base = QUICK if args.quick else Settings()
    parts = tuple(x.strip() for x in str(args.parts).split(",") if x.strip())
    unknown = set(parts) - {"throughput", "codec", "failover"}
    if unknown or not parts:
        raise ConfigError(f"--parts: unknown {sorted(unknown)}; use throughput,codec,failover")
    over = {"rounds": args.rounds, "jobs": args.jobs, "kills": args.kills, "model": args.model,
            "processes": args.processes, "in_flight": args.in_flight}  # fmt: skip
    values = {**asdict(base), **{k: v for k, v in over.items() if v is not None}}
    values.update(threads=args.threads, parts=parts)
    s = Settings(**values)
    if min(s.threads, s.rounds, s.jobs, s.kills, s.processes, s.in_flight) < 1:
        raise ConfigError("--threads, --rounds, --jobs, --kills, --processes must be at least 1")
    return s


def run_all(s: Settings, log_dir: str | None = None) -> dict[str, Any]:
    from edge_app.bench.codec import SIZES, private_broker, run_codec_bench

    out: dict[str, Any] = {"settings": asdict(s)}
    with tempfile.TemporaryDirectory(prefix="edge-bench-pipeline-") as scratch:
        tmp = log_dir or scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        if "throughput" in s.parts or "failover" in s.parts:
            with private_broker("mosquitto") as broker:
                if "throughput" in s.parts:
                    out["throughput"] = run_throughput(s, Path(tmp), broker)
                if "failover" in s.parts:
                    out["failover"] = run_failover_part(s, Path(tmp), broker)
        if "codec" in s.parts:
            out["codec"] = run_codec_bench(list(SIZES), ["mosquitto", "amqtt"], s.codec_repeats)
    return out


def cmd_pipeline(args: argparse.Namespace) -> int:
    from edge_app.bench.pipeline_report import format_report, to_json

    settings = settings_from_args(args)
    started = time.monotonic()
    results = run_all(settings, args.log_dir)
    results["elapsed_s"] = time.monotonic() - started
    print(json.dumps(to_json(results), indent=1) if args.json else format_report(results))
    failover = results.get("failover")
    return 1 if failover is not None and failover.vanished else 0
