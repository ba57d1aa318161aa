"""A fake three-stage model of numpy functions, its plans, and a job source for pipeline tests.

stage 0 "conv": y = relu(x * a + b)           (replicated)
stage 1 "fc":   z = relu(W @ y + c)           (shardable along W's rows)
stage 2 "head": softmax(z)                    (replicated)
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_app.errors import DecodeError
from edge_app.messages.codec import Header, decode_envelope
from edge_app.messages.schemas import (
    JobOutcome,
    ModelRef,
    Plan,
    Replica,
    ShardSeat,
    StageDef,
    StagePlan,
    decode,
)
from edge_app.messages.topics import Topics
from edge_app.pipeline.accounting import Accounting
from edge_app.pipeline.courier import Courier, CourierConfig
from edge_app.pipeline.stages import Seat, Tensors
from edge_app.transport.base import Received, Transport

SHA = "ab" * 32
IN, HID, OUT = 16, 12, 10
RNG = np.random.default_rng(7)
A = RNG.standard_normal(IN).astype(np.float32)
B = RNG.standard_normal(IN).astype(np.float32)
W = RNG.standard_normal((HID, IN)).astype(np.float32)
C = RNG.standard_normal(HID).astype(np.float32)
STAGES = [
    StageDef(index=0, inputs=["x"], outputs=["y"]),
    StageDef(index=1, inputs=["y"], outputs=["z"], shardable_layer="fc"),
    StageDef(index=2, inputs=["z"], outputs=["p"]),
]


def conv(x: np.ndarray) -> np.ndarray:
    return np.maximum(x * A + B, 0).astype(np.float32)


def fc(y: np.ndarray, lo: int = 0, hi: int = HID) -> np.ndarray:
    return np.maximum(y @ W[lo:hi].T + C[lo:hi], 0).astype(np.float32)


def head(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def whole(x: np.ndarray) -> np.ndarray:
    return head(fc(conv(x)))


class FakeStage:
    def __init__(self, seat: Seat, delay: float = 0.0) -> None:
        self.seat = seat
        self.delay = delay
        self.calls = 0

    def check(self, tensors: Tensors) -> None:
        ((_, x),) = tensors
        width = IN if self.seat.stage.index == 0 else HID if self.seat.stage.index == 2 else IN
        if x.dtype != np.float32:
            raise DecodeError(f"dtype: expected float32, got {x.dtype}")
        if x.shape != (1, width):
            raise DecodeError(f"shape: expected {(1, width)}, got {x.shape}")

    def run(self, tensors: Tensors) -> Tensors:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        ((_, x),) = tensors
        i = self.seat.stage.index
        if i == 0:
            return (("y", conv(x)),)
        if i == 1:
            lo, hi = self.seat.bounds or (0, HID)
            return (("z", fc(x, lo, hi)),)
        return (("p", head(x)),)


@dataclass
class FakeLoader:
    delay: float = 0.0
    loaded: list[Seat] = field(default_factory=list)

    def __call__(self, seat: Seat) -> FakeStage:
        self.loaded.append(seat)
        return FakeStage(seat, self.delay)


def make_plan(
    epoch: int,
    conv: list[str],
    *,
    fc: list[str] | None = None,
    head_: list[str] | None = None,
    fc_shards: list[str] | None = None,
    mergers: list[str] | None = None,
) -> Plan:
    """A plan: conv replicas, fc replicas or shards (equal split), head replicas."""
    stages = [
        StagePlan(stage=STAGES[0], mode="replicated", replicas=[Replica(device=d) for d in conv])
    ]
    if fc_shards:
        k = len(fc_shards)
        bounds = [round(HID * i / k) for i in range(k + 1)]
        seats = [
            ShardSeat(device=d, index=i, lo=bounds[i], hi=bounds[i + 1])
            for i, d in enumerate(fc_shards)
        ]
        stages.append(
            StagePlan(
                stage=STAGES[1],
                mode="sharded",
                shards=seats,
                mergers=[Replica(device=d) for d in mergers or []],
            )
        )
    else:
        stages.append(
            StagePlan(
                stage=STAGES[1], mode="replicated", replicas=[Replica(device=d) for d in fc or conv]
            )
        )
    stages.append(
        StagePlan(
            stage=STAGES[2], mode="replicated", replicas=[Replica(device=d) for d in head_ or conv]
        )
    )
    return Plan(
        epoch=epoch,
        ts=time.time(),
        scheduler="sched",
        model=ModelRef(name="fake", sha256=SHA),
        stages=stages,
    )


class Source:
    """Publishes jobs for stage 0 through a Courier (holding custody) and collects outcomes."""

    def __init__(
        self,
        transport: Transport,
        topics: Topics,
        sensor: str = "cam1",
        ack_timeout_s: float = 10.0,
    ) -> None:
        self.transport = transport
        self.topics = topics
        self.sensor = sensor
        self.accounting = Accounting("source", "sensor")
        self.courier = Courier(
            transport,
            topics,
            "source",
            self.accounting,
            config=CourierConfig(window=8, ack_timeout_s=ack_timeout_s),
        )
        self.outcomes: dict[str, JobOutcome] = {}
        self.duplicates = 0
        self.inputs: dict[str, np.ndarray] = {}
        self.lock = threading.Lock()
        transport.subscribe(topics.ack("source"), self._on_ack)
        transport.subscribe(topics.result(sensor), self._on_result)
        transport.subscribe(topics.plan, self._on_plan)
        transport.subscribe(topics.all("status"), self._on_status)

    def _on_ack(self, msg: Received) -> None:
        from edge_app.messages.codec import decode_ack

        self.courier.on_ack(decode_ack(msg.payload))

    def _on_plan(self, msg: Received) -> None:
        self.courier.set_plan(decode(Plan, msg.payload))

    def _on_status(self, msg: Received) -> None:
        from edge_app.messages.schemas import DeviceStatus

        s = decode(DeviceStatus, msg.payload)
        self.courier.set_online(s.device, s.state == "online")

    def _on_result(self, msg: Received) -> None:
        out = decode(JobOutcome, msg.payload)
        with self.lock:
            if out.job in self.outcomes:
                self.duplicates += 1
            else:
                self.outcomes[out.job] = out

    def send(self, seq: int, x: np.ndarray, deadline_s: float = 30.0, name: str = "x") -> str:
        job = f"{self.sensor}-{seq}-{uuid.uuid4().hex[:6]}"
        now = time.time()
        header = Header(
            job=job,
            sensor=self.sensor,
            seq=seq,
            created=now,
            deadline=now + deadline_s,
            epoch=0,
            stage=0,
            attempt=0,
            sender="source",
        )
        self.inputs[job] = x
        reason = self.courier.forward(header, ((name, x),))
        assert reason is None, reason
        return job

    def wait(self, n: int, timeout: float = 20.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.courier.check()
            with self.lock:
                if len(self.outcomes) >= n:
                    return True
            time.sleep(0.02)
        return False


def inputs(n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, IN)).astype(np.float32) for _ in range(n)]


def decode_any(payload: bytes) -> Any:
    return decode_envelope(payload)
