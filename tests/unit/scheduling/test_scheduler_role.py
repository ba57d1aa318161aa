"""The scheduler role on the in-memory bus: plans on joins, losses and restarts; bad input."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from edge_app.config import FleetConfig
from edge_app.messages.schemas import ErrorReport, Heartbeat, Metrics, decode, encode
from edge_app.roles.scheduler import Scheduler, SchedulerOptions
from edge_app.transport.memory import MemoryBus, MemoryTransport
from tests.unit.scheduling.fakes import Beats, FakeWorker, PlanWatch, seated
from tests.unit.scheduling.fleet import vgg_like

CONFIG = FleetConfig(fleet="unit", heartbeat_s=0.1)
TOPICS = CONFIG.topics
PROFILE = vgg_like()


@pytest.fixture
def bus() -> Iterator[MemoryBus]:
    b = MemoryBus()
    yield b
    b.close()


def scheduler(bus: MemoryBus, name: str = "sched", **opts: object) -> Scheduler:
    s = Scheduler(CONFIG, PROFILE, name, transport=bus.connect(name),
                  options=SchedulerOptions(refresh_s=60.0, **opts))  # type: ignore[arg-type]  # fmt: skip
    s.start()
    return s


def workers(bus: MemoryBus, *names: str) -> list[FakeWorker]:
    return [FakeWorker(bus.connect(n), TOPICS, n).start() for n in names]


def test_plans_the_fleet_then_follows_a_death_and_a_join(bus: MemoryBus) -> None:
    watch = PlanWatch(_started(bus, "watch"), TOPICS)
    fleet = workers(bus, "w1", "w2", "w3")
    with Beats(fleet):
        sched = scheduler(bus)
        try:
            p1 = watch.wait_for(lambda p: seated(p) == {"w1", "w2", "w3"}, timeout=3)
            assert p1.epoch == 1 and p1.scheduler == "sched"
            assert bus.retained[TOPICS.plan] == encode(p1)
            # a worker dies: its last will goes out, a new plan comes within a second
            fleet[1].alive = False
            t0 = time.monotonic()
            bus.kill("w2")
            p2 = watch.wait_for(lambda p: p.epoch == 2, timeout=3)
            assert time.monotonic() - t0 < 1.0
            assert seated(p2) == {"w1", "w3"} and p2.reason == "left: w2"
            # a worker joins
            fleet += workers(bus, "w4")
            p3 = watch.wait_for(lambda p: p.epoch == 3, timeout=3)
            assert seated(p3) == {"w1", "w3", "w4"}
            # a silent worker (no will) is dropped after 3 missed heartbeats
            fleet[0].alive = False
            p4 = watch.wait_for(lambda p: p.epoch == 4, timeout=3)
            assert seated(p4) == {"w3", "w4"}
            assert [p.epoch for p in watch.plans] == [1, 2, 3, 4]
        finally:
            sched.stop()


def _started(bus: MemoryBus, name: str) -> MemoryTransport:
    t = bus.connect(name)
    t.start()
    return t


def test_restart_continues_from_the_retained_plan_without_a_gap(bus: MemoryBus) -> None:
    watch = PlanWatch(_started(bus, "watch"), TOPICS)
    fleet = workers(bus, "w1", "w2")
    with Beats(fleet):
        first = scheduler(bus, "sched-a")
        p1 = watch.wait_for(lambda p: seated(p) == {"w1", "w2"})
        first.stop()
        assert bus.retained[TOPICS.plan] == encode(p1)  # the workers keep running it
        second = scheduler(bus, "sched-b")
        try:
            time.sleep(0.6)  # warm-up and a few planning turns: the same fleet needs no new plan
            assert [p.epoch for p in watch.plans] == [p1.epoch]
            assert second.current_plan() == p1
            fleet += workers(bus, "w3")
            p2 = watch.wait_for(lambda p: "w3" in seated(p))
            assert p2.epoch == p1.epoch + 1 and p2.scheduler == "sched-b"
        finally:
            second.stop()


def test_no_plan_during_warm_up_while_the_fleet_reports_in(bus: MemoryBus) -> None:
    watch = PlanWatch(_started(bus, "watch"), TOPICS)
    fleet = workers(bus, "w1")
    with Beats(fleet):
        sched = scheduler(bus, warmup_s=0.5)
        try:
            fleet += workers(bus, "w2")  # joins during the warm-up
            p = watch.wait_for(lambda p: True, timeout=3)
            assert seated(p) == {"w1", "w2"} and p.epoch == 1
        finally:
            sched.stop()


def test_bad_messages_are_reported_and_planning_goes_on(bus: MemoryBus) -> None:
    probe = _started(bus, "probe")
    errors: list[ErrorReport] = []
    probe.subscribe(TOPICS.error("sched"), lambda m: errors.append(decode(ErrorReport, m.payload)))
    metrics: list[Metrics] = []
    probe.subscribe(TOPICS.metrics("sched"), lambda m: metrics.append(decode(Metrics, m.payload)))
    watch = PlanWatch(probe, TOPICS)
    fleet = workers(bus, "w1")
    with Beats(fleet):
        sched = scheduler(bus, metrics_s=0.2)
        try:
            for topic, payload in [
                (TOPICS.heartbeat("w9"), b"\xff\x00garbage"),
                (TOPICS.heartbeat("w9"), b'{"device": "w9"}'),
                (TOPICS.status("w9"), b"[]" * 200_000),
                (TOPICS.heartbeat("w8"), fleet[0].status("online")),
                (TOPICS.plan, b"not a plan"),
                (TOPICS.status("w5"), b""),  # a retained status being cleared: not an error
            ]:
                probe.publish(topic, payload)
            fake = FakeWorker(bus.connect("liar"), TOPICS, "w7")
            probe.publish(TOPICS.heartbeat("w6"), _heartbeat_of(fake))  # topic/device mismatch
            p = watch.wait_for(lambda p: seated(p) == {"w1"})
            assert p.epoch >= 1
            deadline = time.monotonic() + 3
            while (len(errors) < 6 or not metrics) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(errors) == 6 and sched.errors == 6
            assert {e.kind for e in errors} == {"decode", "validation"}
            assert metrics[-1].errors == 6 and metrics[-1].role == "scheduler"
            assert sched.current_plan() == p
        finally:
            sched.stop()
    status = bus.retained[TOPICS.status("sched")]
    assert b'"offline"' in status


def _heartbeat_of(fake: FakeWorker) -> bytes:
    return encode(Heartbeat(device=fake.device, role="worker", seq=1, ts=time.time()))


def test_a_fleet_that_cannot_hold_the_model_gets_no_plan(bus: MemoryBus) -> None:
    watch = PlanWatch(_started(bus, "watch"), TOPICS)
    tiny = [FakeWorker(bus.connect("w1"), TOPICS, "w1", memory=50 << 20).start()]
    with Beats(tiny):
        sched = scheduler(bus)
        try:
            time.sleep(0.6)
            assert watch.plans == [] and sched.current_plan() is None
        finally:
            sched.stop()


def test_a_restarted_scheduler_fixes_what_changed_while_none_ran(bus: MemoryBus) -> None:
    watch = PlanWatch(_started(bus, "watch"), TOPICS)
    fleet = workers(bus, "w1", "w2", "w3")
    with Beats(fleet):
        first = scheduler(bus, "sched-a")
        p1 = watch.wait_for(lambda p: seated(p) == {"w1", "w2", "w3"})
        first.stop()
        fleet[1].alive = False
        bus.kill("w2")  # dies while no scheduler runs
        second = scheduler(bus, "sched-b")
        try:
            p2 = watch.wait_for(lambda p: p.epoch == p1.epoch + 1)
            assert seated(p2) == {"w1", "w3"} and p2.scheduler == "sched-b"
            assert [p.epoch for p in watch.plans] == [p1.epoch, p2.epoch]
        finally:
            second.stop()


def test_a_flood_of_garbage_is_counted_but_logged_and_reported_rate_limited(
    bus: MemoryBus, caplog: pytest.LogCaptureFixture
) -> None:
    probe = _started(bus, "probe")
    reports: list[bytes] = []
    probe.subscribe(TOPICS.error("sched"), lambda m: reports.append(m.payload))
    sched = scheduler(bus, max_error_reports_per_s=5)
    try:
        with caplog.at_level("WARNING", logger="edge_app.roles.scheduler"):
            for _ in range(100):
                probe.publish(TOPICS.heartbeat("w9"), b"\xff garbage")
        assert sched.errors == 100
        assert len(reports) <= 10  # 5 a second; the flood may straddle a second boundary
        rejected = [r for r in caplog.records if "rejected message" in r.getMessage()]
        assert 5 <= len(rejected) <= 10
    finally:
        sched.stop()
