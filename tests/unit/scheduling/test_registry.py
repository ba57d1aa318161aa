"""The device registry: online/offline from status, last will and missed heartbeats."""

from __future__ import annotations

import pytest

from edge_app.messages.schemas import DeviceStatus, Hardware, Heartbeat, StageLoad
from edge_app.scheduling.registry import Registry


def status(device: str, state: str, ts: float, role: str = "worker") -> DeviceStatus:
    return DeviceStatus(device=device, role=role, state=state, ts=ts)  # type: ignore[arg-type]


def beat(device: str, seq: int, ts: float, *, speed: float = 1.0, interval: float = 1.0,
         memory: int = 0, role: str = "worker") -> Heartbeat:  # fmt: skip
    return Heartbeat(
        device=device,
        role=role,  # type: ignore[arg-type]
        seq=seq,
        ts=ts,
        interval_s=interval,
        speed=speed,
        hardware=Hardware(memory_total=memory, memory_available=memory),
        stages=[StageLoad(stage=0, service_time_s=0.5, jobs=3)],
    )


def test_a_worker_is_plannable_after_its_first_heartbeat() -> None:
    reg = Registry()
    assert reg.on_status(status("w1", "online", 10.0), now=100.0) is False
    assert reg.pending() == ["w1"] and reg.workers() == []
    assert reg.on_heartbeat(beat("w1", 0, 10.1), now=100.1) is True
    [view] = reg.workers()
    assert view.device == "w1" and view.stages[0].service_time_s == 0.5
    assert reg.pending() == []


def test_last_will_takes_a_device_offline_at_once() -> None:
    reg = Registry()
    reg.on_heartbeat(beat("w1", 0, 10.0), now=100.0)
    assert reg.on_status(status("w1", "offline", 11.0), now=100.5) is True
    assert reg.workers() == []
    # a heartbeat sent before the will, delivered late, does not revive it
    assert reg.on_heartbeat(beat("w1", 1, 10.9), now=100.6) is False
    assert reg.workers() == []
    # a restarted device (newer heartbeat) is back
    assert reg.on_heartbeat(beat("w1", 0, 12.0), now=102.0) is True
    assert [v.device for v in reg.workers()] == ["w1"]


def test_three_missed_heartbeats_take_a_device_offline() -> None:
    reg = Registry()
    reg.on_heartbeat(beat("w1", 0, 0.0, interval=0.5), now=100.0)
    reg.on_heartbeat(beat("w2", 0, 0.0, interval=2.0), now=100.0)
    assert reg.expire(now=101.4) == []
    assert reg.next_expiry() == 101.5
    assert reg.expire(now=101.6) == ["w1"]  # 3 x 0.5 s
    assert reg.expire(now=105.9) == []
    assert reg.expire(now=106.1) == ["w2"]  # 3 x 2 s
    assert reg.workers() == [] and reg.next_expiry() is None


def test_only_material_heartbeat_changes_are_reported() -> None:
    reg = Registry()
    reg.on_heartbeat(beat("w1", 0, 0.0, speed=1.0, memory=1000), now=0.0)
    assert reg.on_heartbeat(beat("w1", 1, 1.0, speed=1.05, memory=1000), now=1.0) is False
    assert reg.on_heartbeat(beat("w1", 2, 2.0, speed=1.05, memory=900), now=2.0) is False
    assert reg.on_heartbeat(beat("w1", 3, 3.0, speed=2.0, memory=900), now=3.0) is True
    assert reg.on_heartbeat(beat("w1", 4, 4.0, speed=2.0, memory=500), now=4.0) is True


def test_reordered_heartbeats_are_ignored() -> None:
    reg = Registry()
    reg.on_heartbeat(beat("w1", 5, 5.0, speed=2.0), now=0.0)
    assert reg.on_heartbeat(beat("w1", 4, 4.0, speed=1.0), now=0.1) is False
    assert reg.workers()[0].speed == 2.0


def test_a_will_set_at_start_still_takes_the_device_offline() -> None:
    # the worker set its will (ts 1.0) before it published "online" (ts 2.0)
    reg = Registry()
    reg.on_status(status("w1", "online", 2.0), now=0.0)
    reg.on_heartbeat(beat("w1", 1, 3.0), now=0.1)
    assert reg.on_status(status("w1", "offline", 1.0), now=5.0) is True
    assert reg.workers() == []


def test_non_workers_are_tracked_but_not_planned() -> None:
    reg = Registry()
    reg.on_heartbeat(beat("cam", 0, 0.0, role="sensor"), now=0.0)
    reg.on_heartbeat(beat("w1", 0, 0.0), now=0.0)
    assert [v.device for v in reg.workers()] == ["w1"]
    assert {r.device for r in reg.records()} == {"cam", "w1"}


def test_the_registry_is_bounded() -> None:
    reg = Registry(max_devices=3)
    for i in range(3):
        reg.on_heartbeat(beat(f"w{i}", 0, 0.0), now=float(i))
    reg.on_status(status("w0", "offline", 1.0), now=5.0)
    reg.on_heartbeat(beat("w9", 0, 0.0), now=6.0)
    assert sorted(reg.devices) == ["w1", "w2", "w9"]  # the offline one is forgotten first
    reg.on_heartbeat(beat("w8", 0, 0.0), now=7.0)
    assert len(reg.devices) == 3


def test_service_times_are_smoothed_over_heartbeats() -> None:
    reg = Registry()

    def with_time(seq: int, seconds: float) -> Heartbeat:
        hb = beat("w1", seq, float(seq))
        return hb.model_copy(
            update={"stages": [StageLoad(stage=0, service_time_s=seconds, jobs=50)]}
        )

    reg.on_heartbeat(with_time(1, 1.0), now=1.0)
    assert reg.workers()[0].stages[0].service_time_s == 1.0
    reg.on_heartbeat(with_time(2, 2.0), now=2.0)  # one slow interval moves it only 30%
    assert reg.workers()[0].stages[0].service_time_s == pytest.approx(1.3)
    for seq in range(3, 30):
        reg.on_heartbeat(with_time(seq, 2.0), now=float(seq))
    assert reg.workers()[0].stages[0].service_time_s == pytest.approx(2.0, rel=1e-3)


def test_grace_after_a_deaf_period() -> None:
    reg = Registry()
    reg.on_heartbeat(beat("w1", 0, 0.0, interval=0.5), now=100.0)
    reg.grace(now=110.0)  # we could not hear anyone from 100 to 110
    assert reg.expire(now=111.0) == []
    assert reg.expire(now=111.6) == ["w1"]


def test_measurements_of_dropped_stages_are_remembered_for_a_while() -> None:
    reg = Registry()
    slow = [StageLoad(stage=0, service_time_s=2.0, jobs=50)]
    reg.on_heartbeat(beat("w1", 1, 1.0).model_copy(update={"stages": slow}), now=1.0)
    reg.on_heartbeat(beat("w1", 2, 2.0).model_copy(update={"stages": []}), now=2.0)  # unseated
    [view] = reg.workers(now=3.0)
    assert view.stages == () and [(m.stage, m.service_time_s) for m in view.measured] == [(0, 2.0)]
    assert reg.workers(now=100.0)[0].measured == ()  # forgotten after REMEMBER_S
