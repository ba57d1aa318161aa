"""A job source for the scheduler's integration tests: jobs for stage 0 under custody, results
collected by job id, plans recorded in the order they arrive."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np

from edge_app.messages.codec import Header, decode_ack
from edge_app.messages.schemas import DeviceStatus, JobOutcome, Plan, decode
from edge_app.messages.topics import Topics
from edge_app.pipeline.accounting import Accounting
from edge_app.pipeline.courier import Courier, CourierConfig
from edge_app.transport.base import Received, Transport


class Stream:
    def __init__(self, transport: Transport, topics: Topics, input_name: str,
                 sensor: str = "cam1") -> None:  # fmt: skip
        self.transport, self.topics, self.input_name, self.sensor = (
            transport, topics, input_name, sensor
        )  # fmt: skip
        self.accounting = Accounting("src", "sensor")
        self.courier = Courier(transport, topics, "src", self.accounting,
                               config=CourierConfig(window=8, ack_timeout_s=5.0))  # fmt: skip
        self.outcomes: dict[str, JobOutcome] = {}
        self.inputs: dict[str, np.ndarray] = {}
        self.plans: list[Plan] = []
        self.lock = threading.Lock()
        transport.subscribe(topics.ack("src"), self._on_ack)
        transport.subscribe(topics.result(sensor), self._on_result)
        transport.subscribe(topics.plan, self._on_plan)
        transport.subscribe(topics.all("status"), self._on_status)

    def _on_ack(self, msg: Received) -> None:
        self.courier.on_ack(decode_ack(msg.payload))

    def _on_plan(self, msg: Received) -> None:
        plan = decode(Plan, msg.payload)
        with self.lock:
            self.plans.append(plan)
        self.courier.set_plan(plan)

    def _on_status(self, msg: Received) -> None:
        s = decode(DeviceStatus, msg.payload)
        self.courier.set_online(s.device, s.state == "online")

    def _on_result(self, msg: Received) -> None:
        out = decode(JobOutcome, msg.payload)
        with self.lock:
            self.outcomes.setdefault(out.job, out)

    def send(self, seq: int, x: np.ndarray, deadline_s: float = 60.0) -> str:
        job = f"{self.sensor}-{seq}-{uuid.uuid4().hex[:6]}"
        now = time.time()
        header = Header(
            job=job, sensor=self.sensor, seq=seq, created=now, deadline=now + deadline_s,
            epoch=0, stage=0, attempt=0, sender="src",
        )  # fmt: skip
        self.inputs[job] = x
        reason = self.courier.forward(header, ((self.input_name, x),))
        assert reason is None, reason
        return job

    def pump(self, seconds: float) -> None:
        """Let the courier re-send or expire what it holds, for ``seconds``."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.courier.check()
            time.sleep(0.02)

    def wait(self, n: int, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.courier.check()
            with self.lock:
                if len(self.outcomes) >= n:
                    return True
            time.sleep(0.02)
        return False

    def wait_plan(self, test: object, timeout: float = 10.0) -> Plan:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                for p in reversed(self.plans):
                    if test(p):  # type: ignore[operator]
                        return p
            self.courier.check()
            time.sleep(0.02)
        raise AssertionError(f"no such plan; epochs seen {[p.epoch for p in self.plans]}")


def seated(plan: Plan) -> set[str]:
    return {r.device for sp in plan.stages for r in sp.replicas} | {
        s.device for sp in plan.stages for s in sp.shards
    }
