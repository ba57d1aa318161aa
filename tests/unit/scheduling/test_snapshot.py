"""The fleet snapshot behind `edge-app status`: devices, seats, plan, counters and rates."""

from __future__ import annotations

from edge_app.messages.schemas import (
    DeviceStatus,
    Heartbeat,
    Metrics,
    ModelRef,
    Plan,
    Replica,
    ShardSeat,
    StageLoad,
    StagePlan,
)
from edge_app.scheduling.snapshot import FleetSnapshot
from tests.unit.scheduling.fleet import stage_def


def make_plan(epoch: int) -> Plan:
    return Plan(
        epoch=epoch,
        ts=100.0,
        scheduler="sched",
        model=ModelRef(name="m", sha256="ab" * 32),
        stages=[
            StagePlan(stage=stage_def(0), mode="replicated",
                      replicas=[Replica(device="w1", weight=0.75),
                                Replica(device="w2", weight=0.25)]),
            StagePlan(stage=stage_def(1, "fc"), mode="sharded",
                      shards=[ShardSeat(device="w1", index=0, lo=0, hi=8),
                              ShardSeat(device="w2", index=1, lo=8, hi=16)],
                      mergers=[Replica(device="w2")]),
        ],
    )  # fmt: skip


def test_report_lists_devices_seats_and_counters() -> None:
    snap = FleetSnapshot()
    snap.add_plan(make_plan(3))
    snap.add_plan(make_plan(2))  # older: ignored
    for d, role in (("w1", "worker"), ("w2", "worker"), ("cam", "sensor")):
        snap.add_status(DeviceStatus(device=d, role=role, state="online", ts=1.0))  # type: ignore[arg-type]
    snap.add_status(DeviceStatus(device="w9", role="worker", state="offline", ts=1.0))
    snap.add_heartbeat(
        Heartbeat(device="w1", role="worker", seq=1, ts=1.0, epoch=2, load=0.5, queue_depth=2,
                  queue_limit=8, stages=[StageLoad(stage=0, service_time_s=0.01, jobs=5)]),
        now=109.0,
    )  # fmt: skip
    snap.add_heartbeat(
        Heartbeat(device="w1", role="worker", seq=2, ts=3.0, epoch=2, load=0.5, queue_depth=2,
                  queue_limit=8, stages=[StageLoad(stage=0, service_time_s=0.01, jobs=25)]),
        now=109.0,
    )  # fmt: skip
    snap.add_metrics(Metrics(device="cam", role="sensor", ts=100.0, accepted=10), now=100.0)
    snap.add_metrics(Metrics(device="cam", role="sensor", ts=104.0, accepted=30), now=104.0)
    snap.add_metrics(
        Metrics(device="w1", role="worker", ts=104.0, completed=7, dropped={"deadline": 2}),
        now=104.0,
    )
    report = snap.report(now=110.0)
    assert report["plan"]["epoch"] == 3 and report["plan"]["age_s"] == 10.0
    devices = {d["device"]: d for d in report["devices"]}
    assert sorted(devices) == ["cam", "w1", "w2", "w9"]
    assert devices["w1"]["seats"] == ["0 (w=0.75)", "1[0:8]"]
    assert devices["w2"]["seats"] == ["0 (w=0.25)", "1[8:16]", "merge 1"]
    assert devices["w1"]["behind_plan"] is True and devices["w1"]["heartbeat_age_s"] == 1.0
    assert devices["w1"]["holds"] == [
        {"stage": 0, "shard": None, "service_time_s": 0.01, "jobs": 25}
    ]
    assert devices["w1"]["jobs_per_s"] == 10.0  # 20 jobs in the 2 s between its heartbeats
    assert devices["w9"]["state"] == "offline" and "load" not in devices["w9"]
    assert devices["cam"]["rates"] == {"accepted": 5.0, "completed": 0.0, "dropped": 0.0}
    assert devices["w1"]["rates"] is None  # one sample only
    assert report["totals"]["worker"]["dropped"] == 2
    assert report["totals"]["sensor"]["accepted"] == 30


def test_empty_snapshot() -> None:
    report = FleetSnapshot().report(now=0.0)
    assert report["plan"] is None and report["devices"] == [] and report["totals"] == {}
