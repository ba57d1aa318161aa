"""The sensor role on the in-memory bus: camera failures are counted and the camera reopened
with backoff (no busy loop), health goes out in heartbeats, thumbnails at most once a second,
and a full in-flight window skips frames instead of queueing them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_app.config import FleetConfig
from edge_app.errors import ConfigError
from edge_app.inference.catalog import resolve_model
from edge_app.messages.schemas import ErrorReport, Heartbeat, decode
from edge_app.roles.sensor import Sensor, SensorOptions
from edge_app.sensors.camera import Picamera2Source
from edge_app.sensors.sources import PatternSource
from edge_app.transport.base import Received
from edge_app.transport.memory import MemoryBus
from tests.unit.sensors.test_sources import StandInCamera

CONFIG = FleetConfig(fleet="t", heartbeat_s=0.1)
TOPICS = CONFIG.topics
SHAPES = Path(__file__).resolve().parents[3] / "models" / "shapes"


@pytest.fixture
def bus() -> Iterator[MemoryBus]:
    b = MemoryBus(synchronous=False)
    yield b
    b.close()


class Recorder:
    def __init__(self, bus: MemoryBus) -> None:
        self.messages: list[Received] = []
        self.t = bus.connect("recorder")
        self.t.subscribe(TOPICS.everything, self.messages.append)
        self.t.start()

    def of(self, kind: str) -> list[Received]:
        return [m for m in list(self.messages) if TOPICS.parse(m.topic).kind == kind]


class FlakyCameras:
    """1st camera fails after 3 frames; opening the 2nd fails; the 3rd works."""

    def __init__(self) -> None:
        self.opened: list[float] = []

    def __call__(self) -> Any:
        self.opened.append(time.monotonic())
        if len(self.opened) == 1:
            return StandInCamera(fail_capture_after=3)
        if len(self.opened) == 2:
            raise_missing = StandInCamera()
            raise_missing.start = lambda: (_ for _ in ()).throw(RuntimeError("no camera"))  # type: ignore[method-assign]
            return raise_missing
        return StandInCamera()


def run_for(sensor: Sensor, seconds: float) -> None:
    thread = threading.Thread(target=sensor.run, daemon=True)
    thread.start()
    time.sleep(seconds)
    sensor.request_stop()
    thread.join(5)
    assert not thread.is_alive()


def test_camera_errors_are_counted_and_the_camera_reopened_with_backoff(bus: MemoryBus) -> None:
    rec = Recorder(bus)
    card, _ = resolve_model(str(SHAPES))
    cameras = FlakyCameras()
    source = Picamera2Source(width=64, height=48, fps=50, factory=cameras)
    sensor = Sensor(bus.connect("cam"), CONFIG, "cam", source, card,
                    options=SensorOptions(backoff_s=(0.1, 0.4), deadline_s=1.0))  # fmt: skip
    sensor.start()
    run_for(sensor, 1.2)
    sensor.stop(drain_s=0.2)
    bus.flush()
    assert sensor.camera_errors == 2
    assert len(cameras.opened) == 3  # reopened, not spinning
    gaps = np.diff(cameras.opened)
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19  # exponential backoff: 0.1 s, then 0.2 s
    errors = [decode(ErrorReport, m.payload) for m in rec.of("error")]
    assert [e.detail.split(":")[0] for e in errors] == ["camera error", "camera error"]
    beats = [decode(Heartbeat, m.payload) for m in rec.of("heartbeat")]
    assert beats and beats[-1].sensor is not None
    assert beats[-1].sensor.camera_errors == 2 and beats[-1].sensor.source == "picamera2"


def test_a_full_window_skips_frames_and_thumbnails_are_rate_limited(bus: MemoryBus) -> None:
    rec = Recorder(bus)
    card, _ = resolve_model(str(SHAPES))
    # No plan and no workers: nothing is ever acked, so the window of 2 fills at once.
    source = PatternSource("box", width=64, height=48, fps=100)
    sensor = Sensor(bus.connect("cam"), CONFIG, "cam", source, card,
                    options=SensorOptions(max_in_flight=2, deadline_s=30.0))  # fmt: skip
    sensor.start()
    run_for(sensor, 1.5)
    assert sensor.frames_read >= 60
    assert sensor.publisher.in_flight <= 2
    assert sensor.publisher.skipped >= sensor.frames_read - 2 - 5
    sensor.stop(drain_s=0.1)
    bus.flush()
    thumbs = rec.of("thumb")
    assert 1 <= len(thumbs) <= 2 and thumbs[0].payload[:2] == b"\xff\xd8"  # JPEG


@pytest.mark.parametrize(
    "options", [{"max_in_flight": 0}, {"deadline_s": 0.0}, {"deadline_s": -1.0}]
)
def test_options_that_could_never_send_a_job_are_refused(options: dict[str, Any]) -> None:
    """With no room in the window a file source would wait for room forever."""
    with pytest.raises(ConfigError):
        SensorOptions(**options)
