import time

import numpy as np

from edge_app.config import FleetConfig
from edge_app.messages.codec import Ack, Header, decode_envelope, encode_ack
from edge_app.messages.schemas import DeviceStatus, JobOutcome, decode, encode
from edge_app.pipeline.accounting import Accounting
from edge_app.pipeline.courier import Courier, CourierConfig
from edge_app.pipeline.custody import UpstreamAck
from edge_app.transport.base import Received
from edge_app.transport.memory import MemoryBus
from tests.unit.pipeline.fakes import make_plan

TOPICS = FleetConfig(fleet="t").topics


class Tap:
    def __init__(self, bus: MemoryBus) -> None:
        self.t = bus.connect("tap")
        self.t.start()
        self.got: list[Received] = []
        self.t.subscribe(TOPICS.everything, self.got.append)

    def on(self, kind: str) -> list[Received]:
        return [m for m in self.got if TOPICS.parse(m.topic).kind == kind]


def header(job: str = "j1", deadline_s: float = 30.0, stage: int = 0) -> Header:
    now = time.time()
    return Header(
        job=job,
        sensor="cam",
        seq=1,
        created=now,
        deadline=now + deadline_s,
        epoch=0,
        stage=stage,
        attempt=0,
        sender="src",
    )


def courier(bus: MemoryBus, **kw: float) -> Courier:
    t = bus.connect("me")
    t.start()
    return Courier(t, TOPICS, "me", Accounting("me", "worker"), config=CourierConfig(**kw))  # type: ignore[arg-type]


X = (("x", np.ones((1, 4), np.float32)),)


def test_forward_holds_until_ack_and_acks_upstream_after_publishing(memory_bus: MemoryBus) -> None:
    tap = Tap(memory_bus)
    c = courier(memory_bus)
    c.set_plan(make_plan(5, conv=["a"]))
    up = UpstreamAck("src", Ack("j1", 0, None, 0, "me"))
    assert c.forward(header(stage=1), X, [up]) is None
    (task,) = tap.on("task")
    env = decode_envelope(task.payload)
    assert task.topic == TOPICS.task("a")
    assert (env.header.epoch, env.header.sender, env.header.attempt) == (5, "me", 0)
    kinds = [TOPICS.parse(m.topic).kind for m in tap.got]
    assert kinds == ["task", "ack"]  # published first, then the upstream ack
    assert c.held() == 1
    assert c.on_ack(Ack("j1", 1, None, 0, "a"))
    assert c.held() == 0 and not c.on_ack(Ack("j1", 1, None, 0, "a"))


def test_offline_receiver_gets_replaced_with_next_attempt(memory_bus: MemoryBus) -> None:
    tap = Tap(memory_bus)
    c = courier(memory_bus)
    c.set_plan(make_plan(1, conv=["a", "b"]))
    c.forward(header(stage=0), X)
    first = decode_envelope(tap.on("task")[0].payload).header
    dead = tap.on("task")[0].topic.rsplit("/", 1)[1]
    c.set_online(dead, False)
    second = tap.on("task")[1]
    assert second.topic != tap.on("task")[0].topic
    assert decode_envelope(second.payload).header.attempt == first.attempt + 1
    assert c.accounting.resent == 1 and c.held() == 1


def test_unseated_receiver_is_replaced_by_the_newest_plan(memory_bus: MemoryBus) -> None:
    tap = Tap(memory_bus)
    c = courier(memory_bus)
    c.set_plan(make_plan(1, conv=["a"]))
    c.forward(header(), X)
    c.set_plan(make_plan(2, conv=["b"]))
    assert [m.topic for m in tap.on("task")] == [TOPICS.task("a"), TOPICS.task("b")]
    assert decode_envelope(tap.on("task")[1].payload).header.epoch == 2


def test_no_ack_until_after_deadline_drops_with_outcome(memory_bus: MemoryBus) -> None:
    tap = Tap(memory_bus)
    c = courier(memory_bus, deadline_grace_s=0.0)
    c.set_plan(make_plan(1, conv=["a"]))
    up = UpstreamAck("src", Ack("j1", 0, None, 0, "me"))
    c.forward(header(deadline_s=0.05), X, [up])
    time.sleep(0.08)
    c.check()
    (res,) = tap.on("result")
    out = decode(JobOutcome, res.payload)
    assert (out.status, out.reason, out.job) == ("dropped", "deadline", "j1")
    assert c.held() == 0 and c.accounting.dropped["deadline"] == 1
    assert len(tap.on("ack")) == 1


def test_timeouts_resend_then_drop_after_max_sends(memory_bus: MemoryBus) -> None:
    tap = Tap(memory_bus)
    c = courier(memory_bus, ack_timeout_s=0.0, max_sends=3)
    c.set_plan(make_plan(1, conv=["a"]))
    c.forward(header(), X)
    for _ in range(3):
        time.sleep(0.002)
        c.check()
    assert len(tap.on("task")) == 3
    out = decode(JobOutcome, tap.on("result")[0].payload)
    assert (out.status, out.reason) == ("dropped", "error")


def test_full_window_parks_then_drops_at_deadline(memory_bus: MemoryBus) -> None:
    tap = Tap(memory_bus)
    c = courier(memory_bus, window=1, deadline_grace_s=60.0)
    c.set_plan(make_plan(1, conv=["a"]))
    assert c.forward(header("j1"), X) is None
    up = UpstreamAck("src", Ack("j2", 0, None, 0, "me"))
    assert c.forward(header("j2", deadline_s=0.1), X, [up]) is None  # parked, not blocking
    assert c.parked() == 1 and len(tap.on("task")) == 1 and not tap.on("ack")
    time.sleep(0.15)
    c.check()
    out = decode(JobOutcome, tap.on("result")[0].payload)
    assert (out.job, out.reason) == ("j2", "deadline")
    assert c.parked() == 0 and len(tap.on("ack")) == 1


def test_no_plan_parks_then_drops_as_no_route(memory_bus: MemoryBus) -> None:
    tap = Tap(memory_bus)
    c = courier(memory_bus)
    assert c.forward(header(deadline_s=0.05), X) is None
    time.sleep(0.08)
    c.check()
    assert decode(JobOutcome, tap.on("result")[0].payload).reason == "no_route"


def test_parked_job_goes_out_in_order_when_an_ack_frees_room(memory_bus: MemoryBus) -> None:
    tap = Tap(memory_bus)
    c = courier(memory_bus, window=1)
    c.set_plan(make_plan(1, conv=["a"]))
    for job in ("j1", "j2", "j3"):
        c.forward(header(job), X)
    assert c.parked() == 2
    up = UpstreamAck("src", Ack("j2", 0, None, 0, "me"))
    c.on_ack(Ack("j1", 0, None, 0, "a"))
    jobs = [decode_envelope(m.payload).header.job for m in tap.on("task")]
    assert jobs == ["j1", "j2"] and c.parked() == 1 and up


def test_parked_job_waits_for_a_plan(memory_bus: MemoryBus) -> None:
    tap = Tap(memory_bus)
    c = courier(memory_bus)
    c.forward(header(), X)
    assert not tap.on("task")
    c.set_plan(make_plan(1, conv=["a"]))
    assert len(tap.on("task")) == 1 and c.parked() == 0


def test_fanout_sender_resends_when_the_merger_dies(memory_bus: MemoryBus) -> None:
    tap = Tap(memory_bus)
    c = courier(memory_bus)
    c.set_plan(make_plan(1, conv=["a"], fc_shards=["s0", "s1"], head_=["h1", "h2"]))
    c.forward(header(stage=1), X)
    env = decode_envelope(tap.on("fanout")[0].payload).header
    assert env.layout == (0, 6, 12) and env.merge_to in ("h1", "h2")
    status = DeviceStatus(device=env.merge_to, role="worker", state="offline", ts=0.0)
    c.set_online(status.device, False)
    again = decode_envelope(tap.on("fanout")[1].payload).header
    assert again.merge_to != env.merge_to and again.attempt == 1
    assert encode(status)  # the schema round-trips


def test_acks_from_the_wire(memory_bus: MemoryBus) -> None:
    c = courier(memory_bus)
    c.set_plan(make_plan(1, conv=["a"]))
    c.forward(header(), X)
    from edge_app.messages.codec import decode_ack

    assert c.on_ack(decode_ack(encode_ack(Ack("j1", 0, None, 3, "a"))))  # any attempt releases


def test_a_full_window_does_not_block_re_sending_its_own_jobs(memory_bus: MemoryBus) -> None:
    tap = Tap(memory_bus)
    c = courier(memory_bus, window=2)
    c.set_plan(make_plan(1, conv=["a"], fc_shards=["s0", "s1"], head_=["h1", "h2"]))
    c.forward(header("j1", stage=1), X)
    c.forward(header("j2", stage=1), X)  # both shard holders' windows are now full
    mergers = [decode_envelope(m.payload).header.merge_to for m in tap.on("fanout")]
    c.set_online(mergers[0] or "", False)
    resent = [decode_envelope(m.payload).header for m in tap.on("fanout")[2:]]
    assert [h.job for h in resent] == ["j1"] and resent[0].merge_to != mergers[0]


def test_fanout_defers_the_upstream_ack_until_the_step_is_done(memory_bus: MemoryBus) -> None:
    tap = Tap(memory_bus)
    c = courier(memory_bus)
    c.set_plan(make_plan(1, conv=["a"], fc_shards=["s0", "s1"], head_=["h"]))
    up = UpstreamAck("src", Ack("j1", 0, None, 0, "me"))
    c.forward(header(stage=1), X, [up])
    assert not tap.on("ack")  # this holder may be a shard holder or the merger itself
    c.on_ack(Ack("j1", 1, None, 0, "s1"))
    (ack,) = tap.on("ack")
    assert ack.topic == TOPICS.ack("src")


def test_ack_timeout_adapts_to_the_measured_round_trip_and_backs_off(
    memory_bus: MemoryBus,
) -> None:
    c = courier(memory_bus, ack_timeout_s=10.0, min_ack_timeout_s=0.2)
    c.set_plan(make_plan(1, conv=["a"]))
    c.forward(header("j0"), X)
    first = c.table.get(("j0", 0, None))
    assert first is not None and c._timeout(first) == 10.0  # nothing measured yet
    c.on_ack(Ack("j0", 0, None, 0, "a"))
    c.forward(header("j1"), X)
    entry = c.table.get(("j1", 0, None))
    assert entry is not None and c._timeout(entry) == 0.2  # a fast receiver: the floor
    entry.sends = 3
    assert c._timeout(entry) == 0.8  # doubled per re-send
