"""JobPublisher + OutcomeSink with real workers (fake numpy stages) on the in-memory bus."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from edge_app.config import FleetConfig
from edge_app.inference.compare import compare_outputs
from edge_app.messages.schemas import JobOutcome, encode
from edge_app.pipeline.jobs import JobPublisher, PublisherOptions
from edge_app.roles.sink import OutcomeSink
from edge_app.roles.worker import Worker, WorkerOptions
from edge_app.transport.memory import MemoryBus
from tests.unit.pipeline.fakes import SHA, FakeLoader, inputs, make_plan, whole

CONFIG = FleetConfig(fleet="t", heartbeat_s=0.2, deadline_s=20.0)
TOPICS = CONFIG.topics


@pytest.fixture
def bus() -> Iterator[MemoryBus]:
    b = MemoryBus(synchronous=False)
    yield b
    b.close()


def start_worker(bus: MemoryBus, device: str, delay: float = 0.0) -> Worker:
    w = Worker(CONFIG, device, "fake.tflite", transport=bus.connect(device),
               loader=FakeLoader(delay), model_sha256=SHA, model_name="fake",
               options=WorkerOptions(drain_s=0.5))  # fmt: skip
    w.start()
    return w


def publish_plan(bus: MemoryBus, epoch: int, devices: list[str]) -> None:
    t = bus.connect(f"sched-{epoch}")
    t.start()
    t.publish(TOPICS.plan, encode(make_plan(epoch, conv=devices)), retain=True)
    t.stop()


def start_publisher(bus: MemoryBus, **options: object) -> tuple[JobPublisher, OutcomeSink]:
    t = bus.connect("cam1")
    pub = JobPublisher(t, CONFIG, "cam1", options=PublisherOptions(**options))  # type: ignore[arg-type]
    sink = OutcomeSink(t, TOPICS, "cam1")
    pub.attach()
    sink.attach()
    t.start()
    pub.start()
    return pub, sink


def test_jobs_flow_to_results_equal_to_the_whole_model(bus: MemoryBus) -> None:
    workers = [start_worker(bus, d) for d in ("w1", "w2")]
    publish_plan(bus, 1, ["w1", "w2"])
    pub, sink = start_publisher(bus, max_in_flight=64)
    assert pub.wait_plan(5) is not None
    assert pub.input_name() == "x"
    xs = {}
    for x in inputs(40):
        job = pub.submit(x)
        assert job is not None and job.startswith("cam1-")
        xs[job] = x
    got = sink.wait_for(xs, timeout=30)
    assert len(got) == 40
    for job, out in got.items():
        assert out.status == "ok" and out.seq >= 1 and out.output is not None
        assert compare_outputs(whole(xs[job]).reshape(-1), np.asarray(out.output, "f4")).ok
    assert pub.drain(5)
    m = pub.metrics()
    assert (m.accepted, m.completed, sum(m.dropped.values())) == (40, 40, 0)
    assert sink.counts()["ok"] == 40 and pub.skipped == 0
    assert len({o.job for o in got.values()}) == 40  # ids are unique
    pub.stop()
    for w in workers:
        w.stop()


def test_without_a_plan_inputs_are_skipped_beyond_the_window_and_dropped_at_deadline(
    bus: MemoryBus,
) -> None:
    pub, sink = start_publisher(bus, max_in_flight=3, deadline_s=0.3)
    jobs = [pub.submit(x) for x in inputs(10)]
    accepted = [j for j in jobs if j is not None]
    assert len(accepted) == 3 and pub.skipped == 7
    assert sink.wait_total(3, timeout=5)
    assert sink.counts()["dropped"] == {"no_route": 3}
    assert pub.drain(1)
    m = pub.metrics()
    assert m.accepted == 3 and m.completed == 0 and m.dropped == {"no_route": 3}
    assert pub.submit(inputs(1)[0]) is not None  # room again
    pub.stop(drain_s=0)


def test_a_replica_killed_mid_stream_loses_nothing(bus: MemoryBus) -> None:
    workers = [start_worker(bus, d, delay=0.01) for d in ("w1", "w2")]
    publish_plan(bus, 1, ["w1", "w2"])
    pub, sink = start_publisher(bus, max_in_flight=64)
    assert pub.wait_plan(5)
    jobs = []
    for i, x in enumerate(inputs(30)):
        jobs.append(pub.submit(x))
        if i == 10:
            bus.kill("w2")
    got = sink.wait_for([j for j in jobs if j], timeout=30)
    assert len(got) == 30 and all(o.status == "ok" for o in got.values())
    workers[0].stop()


def test_garbage_on_the_publisher_topics_is_counted_not_fatal(bus: MemoryBus) -> None:
    workers = [start_worker(bus, "w1")]
    publish_plan(bus, 1, ["w1"])
    pub, sink = start_publisher(bus)
    t = bus.connect("evil")
    t.start()
    t.publish(TOPICS.ack("cam1"), b"\x00\x01junk")
    t.publish(TOPICS.status("w9"), b"{}")
    t.publish(TOPICS.plan, b"not a plan")  # not retained: the good plan stays
    bus.flush()
    assert pub.errors == 3
    job = pub.submit(inputs(1)[0])
    assert job is not None and sink.wait_for([job], 10)[job].status == "ok"
    pub.stop()
    workers[0].stop()


def _outcome(job: str, status: str = "ok", **kw: object) -> JobOutcome:
    now = time.time()
    return JobOutcome.model_validate(
        {
            "job": job,
            "sensor": "cam1",
            "seq": 1,
            "status": status,
            "created_ts": now,
            "done_ts": now,
            **kw,
        }
    )


def test_sink_deduplicates_counts_and_stays_bounded(memory_bus: MemoryBus) -> None:
    t = memory_bus.connect("sink")
    seen: list[str] = []
    sink = OutcomeSink(t, TOPICS, capacity=10, recent=5, on_outcome=lambda o: seen.append(o.job))
    sink.attach()
    t.start()
    p = memory_bus.connect("p")
    p.start()
    for i in range(20):
        p.publish(TOPICS.result("cam1"), encode(_outcome(f"j{i}")))
    p.publish(TOPICS.result("cam1"), encode(_outcome("j19", "dropped", reason="deadline")))
    p.publish(TOPICS.result("cam1"), encode(_outcome("late", "dropped", reason="deadline")))
    p.publish(TOPICS.result("cam2"), encode(_outcome("wrong-topic")))
    p.publish(TOPICS.result("cam1"), b"{}")
    c = sink.counts()
    assert c == {"ok": 20, "dropped": {"deadline": 1}, "duplicates": 1, "errors": 2}
    assert sink.total == 21 and len(seen) == 21
    assert len(sink._seen) == 10 and len(sink.recent()) == 5
    assert sink.get("j19") is not None and sink.get("j19").status == "ok"  # type: ignore[union-attr]
    assert sink.wait_for(["j19", "never"], timeout=0.05).keys() == {"j19"}
