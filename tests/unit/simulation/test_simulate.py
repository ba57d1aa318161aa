"""The simulator on cases small enough to work out by hand (the arithmetic is in each test)."""

from __future__ import annotations

import pytest

from edge_app.errors import ConfigError
from edge_app.scheduling.planner import PlanPolicy
from edge_app.scheduling.predict import equal_split
from edge_app.simulation.fleet import converged_plan, parse_fleet
from edge_app.simulation.run import Load, simulate
from tests.unit.simulation.cases import GIGABIT_BPS, device, fleet, two_stage

INPUT = int(GIGABIT_BPS * 0.01)  # 10 ms on the sensor's gigabit uplink


def test_one_device_one_job_in_flight() -> None:
    # The job: 10 ms on the sensor's link, then 2 s + 1 s on the device (both stages local).
    # The sensor holds it until the device acks (the job is done): one every 3.01 s.
    w = two_stage(INPUT)
    r = simulate(fleet(device("a")), w, Load(jobs=20, warmup=2, in_flight=1, sensor_link="gigabit"))
    assert r.latency_p50 == pytest.approx(3.01, rel=1e-6)
    assert r.throughput == pytest.approx(1 / 3.01, rel=1e-6)
    assert r.bound.compute == pytest.approx(1 / 3.0)
    assert r.bound.binds == "compute"
    # busy 3.0 of every 3.01 s: power 1 W + 4 W x 0.9967, energy = power x 3.01 s
    assert r.utilization["a-0"] == pytest.approx(3.0 / 3.01, rel=1e-6)
    assert r.energy_j == pytest.approx((1.0 + 4.0 * 3.0 / 3.01) * 3.01, rel=1e-6)


def test_two_devices_reach_the_compute_bound() -> None:
    # Two devices at 3 s per inference: 2/3 inference/s, both fully busy.
    w = two_stage(INPUT)
    r = simulate(fleet(device("a"), device("b")), w, Load(jobs=400, sensor_link="gigabit"))
    assert r.bound.compute == pytest.approx(2 / 3)
    assert r.throughput == pytest.approx(2 / 3, rel=0.02)
    assert min(r.utilization.values()) > 0.97


def test_the_sensor_link_binds() -> None:
    # 1 s per input on the sensor's uplink, 4 devices could do 4/3 per s: the link binds at 1/s.
    w = two_stage(int(GIGABIT_BPS))
    devices = fleet(*(device(f"d{i}") for i in range(4)))
    r = simulate(devices, w, Load(jobs=200, sensor_link="gigabit"))
    assert r.bound.sensor_link == pytest.approx(1.0)
    assert r.bound.binds == "sensor link"
    assert r.throughput == pytest.approx(1.0, rel=0.02)
    assert r.bottleneck == "link of sensor"
    assert max(r.utilization.values()) == pytest.approx(0.75, rel=0.03)  # 1/s x 3 s / 4


def test_weighted_plan_against_an_equal_split() -> None:
    # Device f is twice as fast (1.5 s per inference), s takes 3 s: bound 1/1.5 + 1/3 = 1.0/s.
    # With routing by weight alone (a window too large to push back, like the paper's static
    # tables) an equal split gives s half of the jobs: s saturates at 1/3 per s, 2/3 in all.
    w = two_stage(INPUT)
    devices = fleet(device("f", conv=2e9, fc=2e8), device("s"))
    weighted = converged_plan(devices, w)
    assert [r.weight for r in weighted.stages[0].replicas] == pytest.approx(
        [2 / 3, 1 / 3], rel=1e-3
    )
    static = Load(jobs=400, sensor_link="gigabit", window=1000)
    good = simulate(devices, w, static, plan=weighted)
    even = simulate(devices, w, static, plan=equal_split(weighted))
    assert good.bound.compute == pytest.approx(1.0)
    assert good.throughput == pytest.approx(1.0, rel=0.03)
    assert even.throughput == pytest.approx(2 / 3, rel=0.03)
    # The default window of 4 pushes back: a full slow device gets no more, so even the equal
    # split reaches the bound (the sensor keeps 6 jobs in flight, s holds at most 4).
    pushed = simulate(devices, w, Load(jobs=400, sensor_link="gigabit"), plan=equal_split(weighted))
    assert pushed.throughput == pytest.approx(1.0, rel=0.03)


def test_a_sharded_stage_fans_out_and_merges() -> None:
    # Stage 1 forced into 2 shards of 50 rows: a job is 2 s of conv on one device, then 0.5 s on
    # each shard holder at once (no bytes between stages). A fan-out is passed on only once
    # merged, so the conv device acks the sensor only then: with one job in flight, each job
    # takes 0.01 (link) + 2 + 0.5 = 2.51 s and the next one is sent when it ends.
    w = two_stage(INPUT)
    devices = fleet(device("a"), device("b"))
    plan = converged_plan(devices, w, policy=PlanPolicy(shards={1: 2}))
    assert plan.stages[1].mode == "sharded"
    assert [(s.lo, s.hi) for s in plan.stages[1].shards] == [(0, 50), (50, 100)]
    one = simulate(
        devices, w, Load(jobs=20, warmup=2, in_flight=1, sensor_link="gigabit"), plan=plan
    )
    assert one.latency_p50 == pytest.approx(2.51, rel=1e-5)
    assert one.throughput == pytest.approx(1 / 2.51, rel=1e-5)
    # Saturated: per job each device does half the conv jobs (1 s) and its 0.5 s shard:
    # 1.5 s of work per job per device, so 1/1.5 = 2/3 job/s, the compute bound.
    full = simulate(devices, w, Load(jobs=400, sensor_link="gigabit"), plan=plan)
    assert full.throughput == pytest.approx(2 / 3, rel=0.03)


def test_parse_fleet() -> None:
    ids = [d.id for d in parse_fleet("pi3b:2, pi4 ,pi3b:1")]
    assert ids == ["pi3b-01", "pi3b-02", "pi4-01", "pi3b-03"]
    for bad in ("", "pi3b:0", "pi3b:x", "nosuch:2", "pi3b:2000"):
        with pytest.raises(ConfigError):
            parse_fleet(bad)


def test_bad_load_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        simulate(fleet(device("a")), two_stage(INPUT), Load(jobs=1))
