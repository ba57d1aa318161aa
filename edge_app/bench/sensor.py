"""`edge-app bench sensor`: what a sensor spends per frame between capture and publish.

For each case a camera frame (RGB) is already in memory (the camera's own work is not ours),
then timed, per frame:

- **prepare**: the card-driven preprocessing (centre crop, bilinear resize, normalization to
  float32) and, for clips, pushing into the sliding window;
- **encode**: the msgpack envelope of the job (only when a job is due: every frame for images,
  every ``stride`` frames for clips, amortized over the frames of that stride);
- **publish**: ``MqttTransport.publish`` of that envelope to a private Mosquitto (QoS 1).

Cases: an image model at 224x224x3 and an action model with clips of 16x112x112x3 (stride 16,
and stride 4 for overlapping clips), each from a 320x240 camera stream (what a Pi camera's ISP
delivers at no CPU cost when the sensor asks for a small main stream) and from 640x480. The
result is the mean per-frame cost as a fraction of the frame interval at 30 fps (target <= 10 %).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge_app.bench.codec import BENCH_TOPICS, private_broker
from edge_app.errors import ConfigError
from edge_app.inference.card import InputSpec
from edge_app.messages.codec import Envelope, Header, encode_envelope
from edge_app.sensors.preprocess import ClipAssembler, FramePreprocessor
from edge_app.transport.mqtt import MqttTransport

FRAME_INTERVAL_S = 1 / 30


@dataclass(frozen=True)
class Case:
    name: str
    height: int
    width: int
    clip: int  # frames per clip; 1 = image model
    stride: int
    camera: tuple[int, int]  # (height, width) of the frames the camera delivers


MODELS = (
    ("image 224x224", 224, 224, 1, 1),
    ("clip 16x112x112 stride 16", 112, 112, 16, 16),
    ("clip 16x112x112 stride 4", 112, 112, 16, 4),
)
CASES = tuple(
    Case(f"{name}, camera {w}x{h}", mh, mw, clip, stride, (h, w))
    for (h, w) in ((240, 320), (480, 640))
    for name, mh, mw, clip, stride in MODELS
)


@dataclass(frozen=True)
class SensorCost:
    case: str
    frames: int
    prepare_ms: float
    encode_ms: float
    publish_ms: float
    job_bytes: int

    @property
    def per_frame_ms(self) -> float:
        return self.prepare_ms + self.encode_ms + self.publish_ms

    @property
    def fraction_of_30fps(self) -> float:
        return self.per_frame_ms / 1000 / FRAME_INTERVAL_S


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("sensor", help="capture-to-publish cost per frame and per clip")
    p.add_argument("--frames", type=int, default=240, help="frames per case (240)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_sensor)


def _header(seq: int) -> Header:
    now = time.time()
    return Header(
        job=f"cam-1-{seq:06d}-0123abcd",
        sensor="cam-1",
        seq=seq,
        created=now,
        deadline=now + 5,
        epoch=1,
        stage=0,
        attempt=0,
        sender="cam-1",
    )


def measure_case(case: Case, transport: Any, topic: str, frames: int) -> SensorCost:
    if frames < case.clip:
        raise ConfigError(f"{case.name}: {frames} frames make no job (a clip needs {case.clip})")
    spec = InputSpec(
        shape=(1, case.height, case.width, 3) if case.clip == 1 else
        (1, case.clip, case.height, case.width, 3),
        layout="NHWC" if case.clip == 1 else "NDHWC",
        resize="crop",
        mean=(127.5,),
        std=(127.5,),
    )  # fmt: skip
    prepare = FramePreprocessor(spec)
    window = ClipAssembler(case.clip, case.stride)
    rng = np.random.default_rng(0)
    camera = [rng.integers(0, 256, (*case.camera, 3), dtype=np.uint8) for _ in range(8)]
    t_prep, t_enc, t_pub, size = [], [], [], 0
    for i in range(frames):
        t0 = time.perf_counter()
        x = prepare(camera[i % len(camera)])
        job = x[None] if case.clip == 1 else window.push(x)
        t1 = time.perf_counter()
        t_prep.append(t1 - t0)
        if job is None:
            continue
        if case.clip > 1:
            job = job[None]
        payload = encode_envelope(Envelope(_header(i), (("input", job),)))
        t2 = time.perf_counter()
        transport.publish(topic, payload, qos=1)
        t3 = time.perf_counter()
        t_enc.append(t2 - t1)
        t_pub.append(t3 - t2)
        size = len(payload)
    jobs_per_frame = len(t_enc) / frames
    return SensorCost(
        case=case.name,
        frames=frames,
        prepare_ms=statistics.mean(t_prep) * 1000,
        encode_ms=statistics.mean(t_enc) * 1000 * jobs_per_frame,
        publish_ms=statistics.mean(t_pub) * 1000 * jobs_per_frame,
        job_bytes=size,
    )


def cmd_sensor(args: argparse.Namespace) -> int:
    results = []
    with private_broker("mosquitto") as broker:
        transport = MqttTransport(broker, client_id="bench-sensor")
        transport.start()
        try:
            for case in CASES:
                results.append(
                    measure_case(case, transport, BENCH_TOPICS.task("sensor"), args.frames)
                )
        finally:
            transport.stop()
    if args.json:
        rows = [
            {**asdict(r), "per_frame_ms": r.per_frame_ms, "fraction_of_30fps": r.fraction_of_30fps}
            for r in results
        ]
        print(json.dumps(rows))
        return 0
    print(f"{'case':44} {'prepare':>9} {'encode':>8} {'publish':>8} {'per frame':>10} "
          f"{'of 33 ms':>9} {'job bytes':>10}")  # fmt: skip
    for r in results:
        ms = f"{r.prepare_ms:8.3f}m {r.encode_ms:7.3f}m {r.publish_ms:7.3f}m {r.per_frame_ms:9.3f}m"
        print(f"{r.case:44} {ms} {100 * r.fraction_of_30fps:8.1f}% {r.job_bytes:10d}")
    print("target: per-frame cost <= 10 % of the 33.3 ms frame interval at 30 fps")
    return 0
