"""Stand-in workers that only speak the control plane (status, heartbeats), for scheduler tests."""

from __future__ import annotations

import threading
import time

from edge_app.messages.schemas import DeviceStatus, Hardware, Heartbeat, Plan, decode, encode
from edge_app.messages.topics import Topics
from edge_app.transport.base import Received, Transport


class FakeWorker:
    def __init__(self, transport: Transport, topics: Topics, device: str, *, speed: float = 1.0,
                 interval: float = 0.1, memory: int = 0) -> None:  # fmt: skip
        self.t, self.topics, self.device = transport, topics, device
        self.speed, self.interval, self.memory = speed, interval, memory
        self.seq = 0
        self.alive = True

    def status(self, state: str) -> bytes:
        return encode(DeviceStatus(device=self.device, role="worker", state=state, ts=time.time()))  # type: ignore[arg-type]

    def start(self) -> FakeWorker:
        self.t.set_will(self.topics.status(self.device), self.status("offline"))
        self.t.start()
        self.t.publish(self.topics.status(self.device), self.status("online"), retain=True)
        self.beat()
        return self

    def beat(self) -> None:
        self.seq += 1
        hb = Heartbeat(
            device=self.device, role="worker", seq=self.seq, ts=time.time(),
            interval_s=self.interval, speed=self.speed,
            hardware=Hardware(memory_total=self.memory, memory_available=self.memory),
        )  # fmt: skip
        self.t.publish(self.topics.heartbeat(self.device), encode(hb), qos=0)


class Beats:
    """A thread that sends every live fake worker's heartbeat on its interval."""

    def __init__(self, workers: list[FakeWorker], interval: float = 0.1) -> None:
        self.workers = workers
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Beats:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for w in list(self.workers):
                if w.alive:
                    w.beat()


class PlanWatch:
    """Records every plan published on the fleet (the retained one first)."""

    def __init__(self, transport: Transport, topics: Topics) -> None:
        self.plans: list[Plan] = []
        self._cond = threading.Condition()
        transport.subscribe(topics.plan, self._on_plan)

    def _on_plan(self, msg: Received) -> None:
        with self._cond:
            self.plans.append(decode(Plan, msg.payload))
            self._cond.notify_all()

    def wait_for(self, test: object, timeout: float = 5.0) -> Plan:
        """The first plan (newest first) for which ``test(plan)`` is true, waiting for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for p in self.plans:
                    if test(p):  # type: ignore[operator]
                        return p
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no such plan in {timeout} s; saw {[p.epoch for p in self.plans]}"
                    )
                self._cond.wait(left)


def seated(plan: Plan) -> set[str]:
    return {r.device for sp in plan.stages for r in sp.replicas} | {
        s.device for sp in plan.stages for s in sp.shards
    }
