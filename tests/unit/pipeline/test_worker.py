"""Workers on the in-memory bus with fake numpy stages: routing, shards, merges, failover."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from edge_app.config import FleetConfig
from edge_app.inference.compare import compare_outputs
from edge_app.messages.codec import Envelope, Header, encode_ack, encode_envelope
from edge_app.messages.schemas import ErrorReport, Heartbeat, Plan, decode, encode
from edge_app.roles.worker import Worker, WorkerOptions
from edge_app.transport.base import Received
from edge_app.transport.memory import MemoryBus
from tests.unit.pipeline.fakes import SHA, FakeLoader, Source, inputs, make_plan, whole

CONFIG = FleetConfig(fleet="t", heartbeat_s=0.2)
TOPICS = CONFIG.topics


@pytest.fixture
def bus() -> Iterator[MemoryBus]:
    b = MemoryBus(synchronous=False)
    yield b
    b.close()


def start_worker(bus: MemoryBus, device: str, delay: float = 0.0, **opts: object) -> Worker:
    w = Worker(
        CONFIG,
        device,
        "fake.tflite",
        transport=bus.connect(device),
        loader=FakeLoader(delay),
        model_sha256=SHA,
        model_name="fake",
        options=WorkerOptions(**opts),
    )  # type: ignore[arg-type]
    w.start()
    return w


def publish_plan(bus: MemoryBus, plan: Plan) -> None:
    t = bus.connect(f"sched-{plan.epoch}")
    t.start()
    t.publish(TOPICS.plan, encode(plan), retain=True)
    t.stop()


def wait_loaded(workers: list[Worker], plan: Plan, timeout: float = 5.0) -> None:
    from edge_app.pipeline.stages import seats_for

    end = time.monotonic() + timeout
    for w in workers:
        want = {s.key for s in seats_for(plan, w.device)}
        while time.monotonic() < end:
            ready = {s.seat.key for s in w.cache.slots() if s.state == "ready"}
            if want <= ready:
                break
            time.sleep(0.01)


def check_results(src: Source) -> None:
    for job, out in src.outcomes.items():
        assert out.status == "ok", out
        assert out.output is not None
        ref = whole(src.inputs[job]).reshape(-1)
        assert compare_outputs(ref, np.asarray(out.output, np.float32)).ok


def test_three_workers_with_a_sharded_fc_give_the_whole_model_output(bus: MemoryBus) -> None:
    workers = [start_worker(bus, d) for d in ("w1", "w2", "w3")]
    t = bus.connect("src")
    t.start()
    src = Source(t, TOPICS)
    plan = make_plan(1, conv=["w1", "w2", "w3"], fc_shards=["w2", "w3"], head_=["w1", "w3"])
    publish_plan(bus, plan)
    wait_loaded(workers, plan)
    xs = inputs(60)
    for seq, x in enumerate(xs):
        src.send(seq, x)
    assert src.wait(60), f"{len(src.outcomes)} of 60"
    check_results(src)
    stages = {(s.stage, s.shard) for o in src.outcomes.values() for s in o.stages}
    assert {(0, None), (1, 0), (1, 1), (2, None)} <= stages
    assert src.courier.held() == 0
    for w in workers:
        w.stop()
    assert all(w.courier.held() == 0 for w in workers)
    for w in workers:  # at rest every unit a worker took on was completed or dropped
        m = w.accounting.metrics()
        assert m.accepted == m.completed + sum(m.dropped.values()) > 0, m


def test_a_killed_replica_loses_nothing(bus: MemoryBus) -> None:
    workers = [start_worker(bus, d, delay=0.005) for d in ("w1", "w2", "w3")]
    t = bus.connect("src")
    t.start()
    src = Source(t, TOPICS)
    plan = make_plan(1, conv=["w1", "w2", "w3"], fc=["w1", "w2", "w3"])
    publish_plan(bus, plan)
    wait_loaded(workers, plan)
    for seq, x in enumerate(inputs(40)):
        src.send(seq, x)
        if seq == 15:
            bus.kill("w2")  # the last will goes out: holders re-send to w1 / w3
    assert src.wait(40), f"{len(src.outcomes)} of 40"
    check_results(src)
    assert sum(w.accounting.resent for w in workers) + src.accounting.resent >= 1
    for w in (workers[0], workers[2]):
        w.stop()


def test_bad_messages_get_error_reports_and_the_stream_goes_on(bus: MemoryBus) -> None:
    w = start_worker(bus, "w1")
    t = bus.connect("src")
    t.start()
    errors: list[ErrorReport] = []
    t.subscribe(TOPICS.all("error"), lambda m: errors.append(decode(ErrorReport, m.payload)))
    src = Source(t, TOPICS)
    plan = make_plan(20, conv=["w1"])
    publish_plan(bus, plan)
    wait_loaded([w], plan)
    now = time.time()
    h = Header(
        job="bad",
        sensor="cam",
        seq=0,
        created=now,
        deadline=now + 10,
        epoch=20,
        stage=0,
        attempt=0,
        sender="src",
    )
    good = encode_envelope(Envelope(h, (("x", inputs(1)[0]),)))
    cases = {
        "garbage": b"\x00garbage\xff" * 3,
        "truncated": good[: len(good) - 7],
        "oversized": good + b"\0" * (65 * 1024 * 1024),
        "dtype": encode_envelope(
            Envelope(replace(h, job="b1"), (("x", np.zeros((1, 16), np.int32)),))
        ),
        "shape": encode_envelope(
            Envelope(replace(h, job="b2"), (("x", np.zeros((1, 5), np.float32)),))
        ),
        "stale": encode_envelope(Envelope(replace(h, epoch=1), (("x", inputs(1)[0]),))),
    }
    for payload in cases.values():
        t.publish(TOPICS.task("w1"), payload)
    t.publish(TOPICS.ack("w1"), b"\x93garbage")
    t.publish(TOPICS.plan + "", b"{not json")
    end = time.monotonic() + 5
    while len(errors) < len(cases) + 2 and time.monotonic() < end:
        time.sleep(0.02)
    kinds = sorted(e.kind for e in errors)
    assert kinds.count("decode") == 4, kinds  # garbage, truncated, ack, plan
    for kind in ("size", "dtype", "shape", "stale"):
        assert kind in kinds, kinds
    for seq, x in enumerate(inputs(5, seed=3)):
        src.send(seq, x)
    assert src.wait(5)
    check_results(src)
    ok = [o for o in src.outcomes.values() if o.status == "ok"]
    assert len(ok) == 5
    w.stop()


def test_heartbeats_report_seats_and_service_times(bus: MemoryBus) -> None:
    w = start_worker(bus, "w1")
    t = bus.connect("obs")
    t.start()
    beats: list[Heartbeat] = []
    t.subscribe(TOPICS.all("heartbeat"), lambda m: beats.append(decode(Heartbeat, m.payload)))
    src = Source(t, TOPICS)
    plan = make_plan(3, conv=["w1"])
    publish_plan(bus, plan)
    wait_loaded([w], plan)
    for seq, x in enumerate(inputs(3)):
        src.send(seq, x)
    assert src.wait(3)
    time.sleep(0.5)
    last = beats[-1]
    assert last.epoch == 3 and last.queue_limit == 64 and last.hardware.cores >= 1
    assert {s.stage for s in last.stages} == {0, 1, 2}
    assert all(s.jobs == 3 and s.service_time_s > 0 for s in last.stages)
    w.stop()
    assert b"offline" in bus.retained[TOPICS.status("w1")]


def test_a_joining_worker_gets_work(bus: MemoryBus) -> None:
    w1 = start_worker(bus, "w1")
    t = bus.connect("src")
    t.start()
    src = Source(t, TOPICS)
    publish_plan(bus, make_plan(1, conv=["w1"]))
    w2 = start_worker(bus, "w2")
    plan = make_plan(2, conv=["w1", "w2"])
    publish_plan(bus, plan)
    wait_loaded([w1, w2], plan)
    for seq, x in enumerate(inputs(10)):
        src.send(seq, x)
    assert src.wait(10)
    devices = {s.device for o in src.outcomes.values() for s in o.stages}
    assert devices == {"w1", "w2"}
    w1.stop()
    w2.stop()


def test_received_type_is_what_handlers_get() -> None:
    assert Received("a", b"", False).payload == b""
    assert encode_ack  # imported for the wire helpers above
