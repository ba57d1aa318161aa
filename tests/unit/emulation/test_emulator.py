"""The emulator: padding on a virtual clock, the paced link, and what heartbeats report."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge_app.emulation.emulator import Emulator, PacedTransport
from edge_app.emulation.views import FREE_FRACTION, device_view
from edge_app.messages.codec import Envelope, Header, encode_envelope
from edge_app.messages.topics import Topics
from edge_app.simulation.fleet import converged_plan
from edge_app.transport.base import Received
from edge_app.transport.memory import MemoryBus
from tests.unit.simulation.cases import device, fleet, two_stage

TOPICS = Topics.for_fleet("emu")


def test_hook_pads_to_the_profile_and_counts_overruns() -> None:
    # stage 0: 2e9 MACs at 1e9 MAC/s = 2 s, scaled by 40: 50 ms
    emu = Emulator(device("a"), two_stage(1000), time_scale=40.0)
    assert emu.target_s((0, None)) == pytest.approx(0.05)
    start = time.monotonic()
    emu.hook((0, None), 0.0)
    assert time.monotonic() - start >= 0.05 - 1e-3
    emu.hook((0, None), 0.2)  # the host took longer than the device would: nothing to pad
    assert emu.overruns == 1 and emu.overrun_s == pytest.approx(0.15, abs=0.01)
    assert emu.busy_s == pytest.approx(0.1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_back_to_back_jobs_absorb_the_host_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two 50 ms jobs (host compute 10 ms each), the second starting 5 ms after the first ended:
    # the emulated device takes them back to back, so the second ends 100 ms after the first
    # began, not 105 ms. A job starting 30 ms after the previous one ended is not back to back.
    clock = FakeClock()
    monkeypatch.setattr("edge_app.emulation.emulator.time", clock)
    emu = Emulator(device("a"), two_stage(1000), time_scale=40.0)
    t0 = clock.now
    clock.now += 0.010
    emu.hook((0, None), 0.010)
    assert clock.now == pytest.approx(t0 + 0.05)
    clock.now += 0.005 + 0.010
    emu.hook((0, None), 0.010)
    assert clock.now == pytest.approx(t0 + 0.10)
    clock.now += 0.030 + 0.010
    emu.hook((0, None), 0.010)
    assert clock.now == pytest.approx(t0 + 0.10 + 0.030 + 0.05)
    assert emu.overruns == 0


def test_shard_share_comes_from_the_plan() -> None:
    w = two_stage(1000)
    devices = fleet(device("a"), device("b"))
    from edge_app.scheduling.planner import PlanPolicy

    plan = converged_plan(devices, w, policy=PlanPolicy(shards={1: 2}))
    emu = Emulator(device("a"), w)
    emu.bind("a-0", lambda: plan)
    assert emu.target_s((1, 0)) == pytest.approx(0.5)  # half the rows of a 1 s FC
    hw = emu.hardware()
    assert hw.emulated == "a" and hw.memory_total == 8 << 30
    held = w.profile.stages[0].memory_for(1.0) + w.profile.stages[1].memory_for(0.5)
    assert hw.memory_available == int((8 << 30) * FREE_FRACTION - held)
    view = device_view("a-0", device("a"), w, plan)
    assert view.memory_available == hw.memory_available
    assert {(s.stage, s.shard) for s in view.stages} == {(0, None), (1, 0)}


def test_speed_is_relative_and_scaled() -> None:
    w = two_stage(1000)
    slow, fast = Emulator(device("s"), w), Emulator(device("f", conv=2e9, fc=2e8), w)
    assert fast.speed / slow.speed == pytest.approx(2.0)
    assert Emulator(device("s"), w, time_scale=10).speed == pytest.approx(10 * slow.speed)


def _envelope(stage: int, n: int) -> bytes:
    h = Header(job="j", sensor="s", seq=1, created=0.0, deadline=1e12, epoch=1, stage=stage,
               attempt=0, sender="x")  # fmt: skip
    return encode_envelope(Envelope(h, (("t", np.zeros(n, np.uint8)),)))


def test_paced_link_sends_data_serially_and_control_at_once() -> None:
    bus = MemoryBus()
    got: list[tuple[str, float]] = []
    lock = threading.Lock()
    rx = bus.connect("rx")

    def seen(msg: Received) -> None:
        with lock:
            got.append((msg.topic, time.monotonic()))

    rx.subscribe(TOPICS.all("task"), seen)
    rx.subscribe(TOPICS.all("ack"), seen)
    rx.start()
    link = PacedTransport(bus.connect("tx"), TOPICS, bytes_per_s=20_000)
    link.start()
    payload = _envelope(0, 2000)  # ~2 kB: ~0.1 s each on a 20 kB/s link
    start = time.monotonic()
    for _ in range(3):
        link.publish(TOPICS.task("rx"), payload)
    link.publish(TOPICS.ack("rx"), b"ack")
    end = time.monotonic() + 5
    while len(got) < 4 and time.monotonic() < end:
        time.sleep(0.01)
    link.stop()
    assert got[0][0] == TOPICS.ack("rx")  # control overtakes queued data
    data = [at for t, at in got if t == TOPICS.task("rx")]
    assert len(data) == 3
    assert data[-1] - start >= 3 * len(payload) / 20_000 - 0.01


def test_paced_link_counts_the_timing_models_bytes() -> None:
    w = two_stage(input_bytes=123_456, mid_bytes=5000)
    link = PacedTransport(MemoryBus().connect("tx"), TOPICS, 1e9, timing=w)
    assert link.wire_bytes(_envelope(0, 10)) == 123_456  # stage 0's input, not 10 bytes
    assert link.wire_bytes(_envelope(1, 10)) == 5000
    assert link.wire_bytes(b"not an envelope") == len(b"not an envelope")
    link.stop()
