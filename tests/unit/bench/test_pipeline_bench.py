"""The pipeline benchmark's code: the steadiness rules on synthetic streams, and a smoke run of
the throughput and failover measurements on a real Mosquitto with worker processes (small
models, few jobs). No timing is asserted beyond "measured and finite"."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest

from edge_app.bench.failover import (
    FailoverResult,
    Steadiness,
    latency_recovery,
    run_failover,
    throughput_recovery,
)
from edge_app.bench.fleet_runner import BenchFleet, spread_over
from edge_app.bench.pipeline import QUICK, pipeline_rate, sample_input, settings_from_args
from edge_app.bench.pipeline_report import format_failover, to_json
from edge_app.errors import ConfigError
from edge_app.messages.schemas import JobOutcome

RULE = Steadiness(window_s=1.0, step_s=0.05, tolerance=0.10, pre_window_s=2.0)


def paced(start: float, end: float, rate: float) -> list[float]:
    return list(np.arange(start, end, 1.0 / rate))


def test_an_undisturbed_stream_is_steady_at_once() -> None:
    done = paced(0.0, 10.0, 20.0)
    took, pre = throughput_recovery(done, kill_ts=4.0, stream_end=10.0, rule=RULE)
    assert took == 0.0 and pre == pytest.approx(20.0, rel=0.05)


def test_a_stall_then_a_catch_up_burst_is_steady_after_the_burst() -> None:
    # 20 jobs/s; nothing completes for 1 s after the kill at 4 s, then the 20 held jobs
    # complete within 0.2 s, then the pace resumes
    done = paced(0.0, 4.0, 20.0) + paced(5.0, 5.2, 100.0) + paced(5.2, 12.0, 20.0)
    took, _ = throughput_recovery(done, kill_ts=4.0, stream_end=12.0, rule=RULE)
    assert 1.1 <= took <= 1.35, took  # the first window that starts after the burst


def test_a_stream_that_stays_slow_never_becomes_steady() -> None:
    done = paced(0.0, 4.0, 20.0) + paced(4.0, 10.0, 12.0)
    took, _ = throughput_recovery(done, kill_ts=4.0, stream_end=10.0, rule=RULE)
    assert math.isinf(took)


def outcome(job: int, created: float, latency: float) -> JobOutcome:
    return JobOutcome(job=f"j{job}", sensor="bench", seq=job, status="ok",
                      created_ts=created, done_ts=created + latency, latency_s=latency)  # fmt: skip


def test_latency_recovery_is_the_last_late_completion_after_the_kill() -> None:
    normal = [outcome(i, i * 0.05, 0.1) for i in range(80)]  # up to 4 s
    late = [outcome(100, 4.0, 1.5), outcome(101, 4.1, 0.9)]  # done 5.5 s and 5.0 s
    after = [outcome(200 + i, 4.2 + i * 0.05, 0.1) for i in range(40)]
    assert latency_recovery(normal + late + after, kill_ts=4.0) == pytest.approx(1.5)
    assert latency_recovery(normal + after, kill_ts=4.0) == 0.0


def test_quick_settings_and_bad_options() -> None:
    ns = argparse.Namespace(quick=True, threads=1, rounds=None, jobs=7, kills=None, model=None,
                            processes=None, in_flight=None,
                            parts="throughput,failover")  # fmt: skip
    s = settings_from_args(ns)
    assert (s.model, s.jobs, s.kills, s.parts) == (QUICK.model, 7, QUICK.kills,
                                                   ("throughput", "failover"))  # fmt: skip
    with pytest.raises(ConfigError):
        settings_from_args(argparse.Namespace(**{**vars(ns), "parts": "nope"}))
    with pytest.raises(ConfigError):
        settings_from_args(argparse.Namespace(**{**vars(ns), "jobs": 0}))


@pytest.mark.slow
@pytest.mark.interpreter
def test_pipeline_rate_on_one_worker_process(mosquitto: object, tmp_path: Path) -> None:
    broker = mosquitto.config  # type: ignore[attr-defined]
    with BenchFleet(broker, "smoke", "alexnet:small", tmp_path) as fleet:
        fleet.spawn("s0")
        fleet.wait_ready(spread_over(1, {}), timeout=60)
        x = sample_input((1, 64, 64, 3), "float32")
        rate, dropped = pipeline_rate(fleet, x, jobs=20, warmup=3, in_flight=4)
        assert dropped == 0
        assert 0 < rate < math.inf
        assert fleet.sink.counts()["ok"] == 20 + 3 + 4  # the tail jobs were counted too


@pytest.mark.slow
@pytest.mark.interpreter
def test_failover_kill_loses_nothing_and_is_reported(mosquitto: object, tmp_path: Path) -> None:
    broker = mosquitto.config  # type: ignore[attr-defined]
    fleet = BenchFleet(broker, "smokefo", "shapes", tmp_path, shards={1: 2}, deadline_s=15.0,
                       max_in_flight=64)  # fmt: skip
    rng = np.random.default_rng(1)
    inputs = [rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32) for _ in range(8)]
    with fleet:
        result = run_failover(fleet, inputs, kills=1, rate=15.0, timing=(2.5, 3.0, 15.0),
                              rule=RULE)  # fmt: skip
    assert isinstance(result, FailoverResult) and len(result.kills) == 1
    kill = result.kills[0]
    assert kill.vanished == 0 and kill.dropped == 0, kill
    assert kill.jobs == int(15.0 * 5.5)
    doc = json.loads(json.dumps(to_json(result)))
    assert doc["kills"][0]["victim"] == kill.victim and "median_s" in doc
    assert kill.victim in "\n".join(format_failover(result))
