"""The intake: fan-outs of a newer plan wait for it; other splits are stale; others' are ignored."""

from __future__ import annotations

import time

import numpy as np

from edge_app.config import FleetConfig
from edge_app.messages.codec import Envelope, Header, encode_envelope
from edge_app.pipeline.accounting import Accounting, ErrorKind
from edge_app.pipeline.courier import Courier
from edge_app.pipeline.engine import WorkQueue
from edge_app.pipeline.intake import Intake
from edge_app.pipeline.merge import MergeBuffer
from edge_app.transport.base import Received
from edge_app.transport.memory import MemoryBus
from tests.unit.pipeline.fakes import make_plan

TOPICS = FleetConfig(fleet="t").topics


class Reports:
    def __init__(self) -> None:
        self.got: list[tuple[str, ErrorKind, str]] = []

    def __call__(self, topic: str, kind: ErrorKind, detail: str) -> None:
        self.got.append((topic, kind, detail))


def intake(memory_bus: MemoryBus, device: str = "s1") -> tuple[Intake, WorkQueue, Reports]:
    t = memory_bus.connect(device)
    t.start()
    acc = Accounting(device, "worker")
    queue = WorkQueue(8)
    reports = Reports()
    courier = Courier(t, TOPICS, device, acc)
    it = Intake(
        device,
        report=reports,
        accounting=acc,
        courier=courier,  # type: ignore[arg-type]
        merges=MergeBuffer(),
        queue=queue,
    )
    return it, queue, reports


def fanout(epoch: int, layout: tuple[int, ...], job: str = "j1") -> Received:
    now = time.time()
    h = Header(
        job=job,
        sensor="cam",
        seq=1,
        created=now,
        deadline=now + 30,
        epoch=epoch,
        stage=1,
        attempt=0,
        sender="a",
        layout=layout,
        merge_to="h",
    )
    payload = encode_envelope(Envelope(h, (("y", np.zeros((1, 16), np.float32)),)))
    return Received(TOPICS.fanout(1), payload, False)


def test_a_fanout_of_a_newer_plan_waits_for_that_plan(memory_bus: MemoryBus) -> None:
    it, queue, reports = intake(memory_bus)
    it.set_plan(make_plan(1, conv=["a"], fc=["a"], head_=["h"]))  # s1 holds nothing yet
    it.on_fanout(fanout(2, (0, 6, 12)))
    assert len(queue) == 0 and not reports.got
    it.set_plan(make_plan(2, conv=["a"], fc_shards=["s0", "s1"], head_=["h"]))
    it.replay_early()
    work = queue.take(0.1)
    assert work is not None and (work.kind, work.shard) == ("shard", 1)


def test_another_split_is_stale_and_others_fanouts_are_ignored(memory_bus: MemoryBus) -> None:
    it, queue, reports = intake(memory_bus)
    it.set_plan(make_plan(3, conv=["a"], fc_shards=["s0", "s1"], head_=["h"]))
    it.on_fanout(fanout(3, (0, 4, 12)))  # an old split: merges never mix layouts
    assert [k for _, k, _ in reports.got] == ["stale"] and len(queue) == 0
    other, oq, oreports = intake(memory_bus, "x9")  # holds no shard of stage 1
    other.set_plan(make_plan(3, conv=["a"], fc_shards=["s0", "s1"], head_=["h"]))
    other.on_fanout(fanout(3, (0, 6, 12)))
    assert len(oq) == 0 and not oreports.got
    it.on_fanout(fanout(3, (0, 6, 12), job="j2"))
    it.on_fanout(fanout(3, (0, 6, 12), job="j2"))  # a redelivered duplicate
    assert len(queue) == 1 and it.accounting.duplicates == 1


def test_full_queue_drops_with_backpressure_and_acks(memory_bus: MemoryBus) -> None:
    it, queue, _ = intake(memory_bus)
    seen: list[Received] = []
    tap = memory_bus.connect("tap")
    tap.start()
    tap.subscribe(TOPICS.everything, seen.append)
    it.set_plan(make_plan(3, conv=["a"], fc_shards=["s0", "s1"], head_=["h"]))
    for i in range(9):
        it.on_fanout(fanout(3, (0, 6, 12), job=f"j{i}"))
    assert len(queue) == 8
    kinds = [TOPICS.parse(m.topic).kind for m in seen]
    assert kinds == ["result", "ack"] and it.accounting.dropped["backpressure"] == 1
