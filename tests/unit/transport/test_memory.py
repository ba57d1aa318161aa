"""The in-memory bus behaves like a QoS 1 broker: wildcards, retained, wills, restarts."""

from __future__ import annotations

import threading

import pytest

from edge_app.errors import TransportError
from edge_app.transport.base import Received, Transport, check_filter, topic_matches
from edge_app.transport.memory import MemoryBus, MemoryTransport


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/+/c", "a/b/c", True),
        ("a/#", "a", True),  # '#' also matches the parent level
        ("a/#", "a/b/c", True),
        ("#", "a/b", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("+", "", True),
        ("a/+", "a/", True),
        ("a", "a/b", False),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


@pytest.mark.parametrize("bad", ["a/#/b", "a#", "a/b+", "+a/b"])
def test_invalid_filters(bad: str) -> None:
    with pytest.raises(ValueError):
        check_filter(bad)


def collect(transport: MemoryTransport, topic_filter: str) -> list[Received]:
    got: list[Received] = []
    transport.subscribe(topic_filter, got.append)
    return got


def test_memory_transport_is_a_transport(memory_bus: MemoryBus) -> None:
    assert isinstance(memory_bus.connect("a"), Transport)


def test_publish_subscribe_with_wildcards(memory_bus: MemoryBus) -> None:
    a, b = memory_bus.connect("a"), memory_bus.connect("b")
    a.start()
    b.start()
    plus, hash_ = collect(b, "edge/+/task/w1"), collect(b, "edge/#")
    a.publish("edge/home/task/w1", b"one")
    a.publish("edge/home/task/w2", b"two")
    assert [m.payload for m in plus] == [b"one"]
    assert [m.payload for m in hash_] == [b"one", b"two"]
    assert not plus[0].retained
    b.unsubscribe("edge/#")
    a.publish("edge/home/task/w1", b"three")
    assert [m.payload for m in hash_] == [b"one", b"two"]
    assert [m.payload for m in plus] == [b"one", b"three"]


def test_retained_messages(memory_bus: MemoryBus) -> None:
    a = memory_bus.connect("a")
    a.start()
    a.publish("s/x", b"online", retain=True)
    a.publish("s/y", b"online", retain=True)
    a.publish("s/y", b"", retain=True)  # clears
    b = memory_bus.connect("b")
    b.start()
    got = collect(b, "s/+")
    assert got == [Received("s/x", b"online", True)]
    a.publish("s/x", b"offline", retain=True)
    assert got[-1] == Received("s/x", b"offline", False)
    assert memory_bus.retained == {"s/x": b"offline"}


def test_will_on_kill_not_on_stop(memory_bus: MemoryBus) -> None:
    watcher = memory_bus.connect("watcher")
    watcher.start()
    got = collect(watcher, "status/+")
    clean, dead = memory_bus.connect("clean"), memory_bus.connect("dead")
    for t in (clean, dead):
        t.set_will(f"status/{t.client_id}", b"offline")
        t.start()
    clean.stop()
    memory_bus.kill("dead")
    assert got == [Received("status/dead", b"offline", False)]
    assert memory_bus.retained == {"status/dead": b"offline"}
    assert memory_bus.client_ids() == ["watcher"]
    with pytest.raises(KeyError):
        memory_bus.kill("dead")


def test_handler_exceptions_are_counted_and_contained(memory_bus: MemoryBus) -> None:
    a = memory_bus.connect("a")
    a.start()

    def broken(_: Received) -> None:
        raise RuntimeError("boom")

    a.subscribe("t/bad", broken)
    good = collect(a, "t/#")
    a.publish("t/bad", b"1")
    a.publish("t/bad", b"2")
    assert a.handler_errors == 2
    assert [m.payload for m in good] == [b"1", b"2"]


def test_handler_publishing_does_not_recurse_and_keeps_order(memory_bus: MemoryBus) -> None:
    a = memory_bus.connect("a")
    a.start()
    seen: list[int] = []

    def relay(message: Received) -> None:
        n = int(message.payload)
        seen.append(n)
        if n < 2000:  # far deeper than the recursion limit if delivery recursed
            a.publish("chain", str(n + 1).encode())

    a.subscribe("chain", relay)
    a.publish("chain", b"0")
    assert seen == list(range(2001))


def test_restart_reconnects_resubscribes_and_calls_on_connect(memory_bus: MemoryBus) -> None:
    a = memory_bus.connect("a")
    calls: list[int] = []
    a.on_connect(lambda: a.publish("status/a", b"online", retain=True))
    a.on_connect(lambda: calls.append(1))
    got = collect(a, "status/+")
    a.start()
    assert calls == [1]
    assert got == [Received("status/a", b"online", False)]
    memory_bus.restart()
    assert calls == [1, 1] and a.reconnects == 1
    assert Received("status/a", b"online", True) in got  # retained again on re-subscribe


def test_not_connected_publish_is_dropped_and_bad_topics_refused(memory_bus: MemoryBus) -> None:
    a, b = memory_bus.connect("a"), memory_bus.connect("b")
    b.start()
    got = collect(b, "#")
    a.publish("x", b"before start")
    assert got == []
    a.start()
    with pytest.raises(TransportError):
        a.publish("x/+", b"")
    with pytest.raises(TransportError):
        a.subscribe("x/#/y", got.append)


def test_asynchronous_bus_from_many_threads() -> None:
    bus = MemoryBus(synchronous=False)
    try:
        sub, pub = bus.connect("sub"), bus.connect("pub")
        sub.start()
        pub.start()
        got = collect(sub, "n/+")

        def send(k: int) -> None:
            for i in range(200):
                pub.publish(f"n/{k}", str(i).encode())

        threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        bus.flush()
        assert len(got) == 800
        for k in range(4):  # per-publisher order is kept, as MQTT guarantees per topic
            mine = [int(m.payload) for m in got if m.topic == f"n/{k}"]
            assert mine == list(range(200))
    finally:
        bus.close()
