"""OutcomeSink on bad input: counted, the process goes on, the log is not flooded."""

from __future__ import annotations

import time

import pytest

from edge_app.messages.schemas import JobOutcome, encode
from edge_app.messages.topics import Topics
from edge_app.roles.sink import OutcomeSink
from edge_app.transport.memory import MemoryBus

TOPICS = Topics.for_fleet("unit")


def _outcome(sensor: str, job: str) -> bytes:
    now = time.time()
    fields = {"status": "ok", "label": "a", "score": 0.9, "latency_s": 0.1}
    return encode(
        JobOutcome(job=job, sensor=sensor, seq=1, created_ts=now - 0.1, done_ts=now, **fields)
    )


def test_bad_results_are_counted_and_logged_without_a_flood(
    memory_bus: MemoryBus, caplog: pytest.LogCaptureFixture
) -> None:
    t = memory_bus.connect("sink")
    sink = OutcomeSink(t, TOPICS)
    sink.attach()
    t.start()
    probe = memory_bus.connect("probe")
    probe.start()
    with caplog.at_level("WARNING", logger="edge_app.roles.sink"):
        for _ in range(500):
            probe.publish(TOPICS.result("cam1"), b"\xff not json")
        probe.publish(TOPICS.result("cam1"), _outcome("cam2", "j-1"))  # wrong sensor's topic
        probe.publish(TOPICS.result("cam1"), _outcome("cam1", "j-2"))
    assert sink.errors == 501
    assert sink.counts()["ok"] == 1 and sink.get("j-2") is not None
    logged = [r for r in caplog.records if "rejected result" in r.getMessage()]
    assert 1 <= len(logged) <= 20
