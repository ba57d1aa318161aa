"""The sensor benchmark's measuring code, on the in-memory bus (the CLI adds a real Mosquitto)."""

from __future__ import annotations

import pytest

from edge_app.bench.sensor import Case, measure_case
from edge_app.errors import ConfigError
from edge_app.messages.codec import decode_envelope
from edge_app.transport.base import Received
from edge_app.transport.memory import MemoryBus


def test_measure_case_publishes_one_job_per_stride_and_reports_costs() -> None:
    bus = MemoryBus()
    got: list[Received] = []
    sub = bus.connect("sub")
    sub.subscribe("bench/#", got.append)
    sub.start()
    pub = bus.connect("pub")
    pub.start()
    case = Case("clip", 16, 16, clip=4, stride=2, camera=(24, 32))
    cost = measure_case(case, pub, "bench/task", frames=10)
    assert len(got) == 4  # clips end at frames 4, 6, 8, 10
    env = decode_envelope(got[0].payload)
    assert env.tensors[0][1].shape == (1, 4, 16, 16, 3)
    assert cost.job_bytes == len(got[-1].payload)
    assert cost.prepare_ms > 0 and cost.encode_ms > 0
    assert cost.per_frame_ms == cost.prepare_ms + cost.encode_ms + cost.publish_ms


def test_too_few_frames_for_one_job_is_a_config_error() -> None:
    bus = MemoryBus()
    pub = bus.connect("pub")
    pub.start()
    case = Case("clip", 16, 16, clip=4, stride=2, camera=(24, 32))
    with pytest.raises(ConfigError, match="frames"):
        measure_case(case, pub, "bench/task", frames=3)
