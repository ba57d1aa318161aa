"""Dashboard service: the hand-over from the transport thread is bounded; bugs cost one event."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from edge_app.dashboard.service import Dashboard
from edge_app.dashboard.store import HistoryStore
from edge_app.messages.topics import DiscoveryTopics, Topics
from edge_app.transport.base import Received
from edge_app.transport.memory import MemoryBus

from . import factories as f

T = Topics.for_fleet("home")


def test_inbox_from_the_transport_thread_is_bounded() -> None:
    dash = Dashboard(T, HistoryStore(":memory:"))
    loop = asyncio.new_event_loop()
    dash.loop, dash.inbox_limit = loop, 10
    messages = [Received(T.result("cam1"), f.outcome("cam1", i), False) for i in range(25)]
    sender = threading.Thread(target=lambda: [dash.on_message(m) for m in messages])
    sender.start()
    sender.join()
    assert dash.inbox_dropped == 15
    loop.run_until_complete(asyncio.sleep(0.01))  # the loop delivers what it accepted
    loop.close()
    assert dash.state.completed == 10


def test_a_failing_handler_costs_one_event(monkeypatch: pytest.MonkeyPatch) -> None:
    dash = Dashboard(T, HistoryStore(":memory:"))

    def broken(summary: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(dash.store, "add_result", broken)
    dash.feed(T.result("cam1"), f.outcome("cam1", 1))
    dash.feed(T.status("w1"), f.status("w1"))
    assert dash.dispatch_errors == 1
    assert "w1" in dash.state.devices


def test_runs_on_the_memory_bus(memory_bus: MemoryBus) -> None:
    """Attach to a Transport: will, subscriptions, online status and the birth message."""
    loop = asyncio.new_event_loop()
    dash = Dashboard(T, HistoryStore(":memory:"), device_id="dash1")
    transport = memory_bus.connect("dash1")
    dash.attach(transport, loop)
    transport.start()
    fleet = memory_bus.connect("fleet")
    fleet.start()
    fleet.publish(T.result("cam1"), f.outcome("cam1", 1, label="waving"))
    fleet.publish(T.status("w1"), f.status("w1"), retain=True)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert dash.state.cameras["cam1"].last is not None
    assert dash.state.devices["w1"].state == "online"
    assert b'"online"' in memory_bus.retained[T.status("dash1")]
    memory_bus.kill("dash1")
    assert b'"offline"' in memory_bus.retained[T.status("dash1")]
    loop.close()


def test_camera_state_at_most_once_a_second_and_the_latest_at_the_next_tick(
    memory_bus: MemoryBus,
) -> None:
    """Home Assistant's retained camera/<sensor>: the first result at once, later ones within a
    second are held, and the tick publishes the newest of them."""
    loop = asyncio.new_event_loop()
    dash = Dashboard(T, HistoryStore(":memory:"), device_id="dash1", discovery=DiscoveryTopics())
    transport = memory_bus.connect("dash1")
    dash.attach(transport, loop)
    transport.start()
    sent: list[str] = []
    probe = memory_bus.connect("probe")
    probe.subscribe(T.camera("cam1"), lambda m: sent.append(json.loads(m.payload)["action"]))
    probe.start()

    def result(seq: int, label: str, now: float) -> None:
        dash.feed(T.result("cam1"), f.outcome("cam1", seq, label=label, done=now), now=now)

    result(1, "waving", 100.0)
    result(2, "jumping", 100.3)
    result(3, "squatting", 100.6)
    assert sent == ["waving"]
    dash.tick(101.0)
    assert sent == ["waving", "squatting"]
    dash.tick(102.0)  # nothing new: nothing sent
    assert sent == ["waving", "squatting"]
    result(4, "walking", 103.5)
    assert sent == ["waving", "squatting", "walking"]
    loop.close()
