"""A small emulated fleet on a real Mosquitto: the real scheduler and workers padded to Pi
profiles. Checks what must hold on any host: results equal the whole model's, nothing is lost,
the padding took place (a loaded host can only make things slower, never faster), heartbeats say
the devices are emulated. Throughput against the bound is measured by `edge-app bench paper`."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest

from edge_app.emulation.emulator import OVERRUN_SLACK_S
from edge_app.emulation.fleet import EmulatedFleet, FleetSpec
from edge_app.emulation.profiles import get_profile
from edge_app.emulation.surrogate import surrogate_workloads
from edge_app.inference.compare import compare_outputs
from edge_app.inference.interpreter import Runner
from edge_app.messages.schemas import Heartbeat, decode
from edge_app.simulation.fleet import parse_fleet
from edge_app.transport.mqtt import MqttTransport

pytestmark = [pytest.mark.interpreter, pytest.mark.slow]
SCALE = 40.0  # a Pi 3B's C3D inference (19.9 s) in 0.5 s of wall time


def test_emulated_fleet_on_mosquitto(mosquitto: Any) -> None:
    path, real, full = surrogate_workloads("c3d")
    devices = parse_fleet("pi3b:2,pi4:1")
    spec = FleetSpec(devices, path, real, full, time_scale=SCALE)
    fleet = EmulatedFleet(
        spec, connect=lambda cid: MqttTransport(mosquitto.config, client_id=f"emu-{cid}")
    )
    beats: dict[str, Heartbeat] = {}
    watcher = MqttTransport(mosquitto.config, client_id="emu-watch")
    lock = threading.Lock()

    def on_beat(msg: Any) -> None:
        hb = decode(Heartbeat, msg.payload)
        with lock:
            beats[hb.device] = hb

    watcher.subscribe(fleet.config.topics.all("heartbeat"), on_beat)
    watcher.start()
    fleet.start()
    try:
        run = fleet.measure(jobs=8, warmup=6)
        outcomes = list(fleet._done)
    finally:
        fleet.stop()
        watcher.stop()
    assert run.results == 8 and run.dropped == 0
    # every result is the surrogate's own output for the input the sensor sent
    x = np.random.default_rng(0).standard_normal((1, 4, 16, 16, 3)).astype(np.float32)
    want = next(iter(Runner(path).run(x).values())).reshape(-1)
    for o in outcomes:
        assert o.status == "ok" and o.output is not None
        assert compare_outputs(want, np.asarray(o.output, np.float32)).ok
    # no result can come back sooner than one emulated inference on the fastest device
    fastest = min(full.seconds(get_profile(n)) for n in ("pi3b", "pi4")) / SCALE
    assert min(o.latency_s for o in outcomes) >= fastest - OVERRUN_SLACK_S
    assert run.jobs_padded > 0
    with lock:
        assert {d.id for d in devices} <= set(beats)
        for d in devices:
            hb = beats[d.id]
            assert hb.hardware.emulated == d.profile.name
            assert hb.hardware.memory_total == d.profile.memory_bytes
        # the Pi 4 reports itself about 3 x faster than a Pi 3B (conv and FC rates both 3 x)
        ratio = beats["pi4-01"].speed / beats["pi3b-01"].speed
        assert ratio == pytest.approx(3.0, rel=0.05)


def test_worker_cli_emulates_a_profile(mosquitto: Any, tmp_path: Any) -> None:
    """`edge-app worker --emulate pi3b` says so in its heartbeat, with the Pi's memory."""
    config = mosquitto.fleet("cli")
    got: list[Heartbeat] = []
    watcher = MqttTransport(mosquitto.config, client_id="emu-cli-watch")
    watcher.subscribe(
        config.topics.heartbeat("pi-a"), lambda m: got.append(decode(Heartbeat, m.payload))
    )
    watcher.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_app.cli", "worker", "--device", "pi-a", "--model", "shapes",
         "--emulate", "pi3b", "--emulate-scale", "4", "--broker", mosquitto.url, "--fleet", "cli"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        end = time.monotonic() + 30
        while not got and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
        watcher.stop()
    assert got, err.decode()[-2000:]
    hb = got[-1]
    assert hb.hardware.emulated == "pi3b"
    assert hb.hardware.memory_total == get_profile("pi3b").memory_bytes
    assert hb.speed > 0
