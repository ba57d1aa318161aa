"""Workers running real TFLite stages on the in-memory bus: float and int8, sharded FC layers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_app.config import FleetConfig
from edge_app.inference.compare import compare_outputs
from edge_app.inference.graph_io import read_model
from edge_app.inference.interpreter import Runner
from edge_app.inference.partition import default_stages
from edge_app.messages.schemas import (
    ModelRef,
    Plan,
    Replica,
    ShardSeat,
    StageDef,
    StagePlan,
    encode,
)
from edge_app.pipeline.stages import file_sha256
from edge_app.roles.worker import Worker
from edge_app.transport.memory import MemoryBus
from tests.unit.pipeline.fakes import Source

MODELS = Path(__file__).resolve().parents[3] / "models"
CONFIG = FleetConfig(fleet="real", heartbeat_s=0.2)

pytestmark = pytest.mark.interpreter


@pytest.fixture
def bus() -> Iterator[MemoryBus]:
    b = MemoryBus(synchronous=False)
    yield b
    b.close()


def sharded_plan(path: Path, devices: list[str]) -> Plan:
    """Every stage replicated on all devices, except each FC layer split over two, unevenly."""
    stages = []
    for s in default_stages(read_model(path.read_bytes())):
        sd = StageDef(
            index=s.index,
            inputs=list(s.inputs),
            outputs=list(s.outputs),
            shardable_layer=s.shardable_layer,
        )
        if s.shardable_layer is None or s.index == 0:
            stages.append(
                StagePlan(
                    stage=sd, mode="replicated", replicas=[Replica(device=d) for d in devices]
                )
            )
            continue
        seats = [
            ShardSeat(device=devices[0], index=0, lo=0, hi=3),
            ShardSeat(device=devices[1], index=1, lo=3, hi=fc_rows(path, s.outputs[0])),
        ]
        stages.append(StagePlan(stage=sd, mode="sharded", shards=seats))
    return Plan(
        epoch=1,
        ts=time.time(),
        scheduler="test",
        stages=stages,
        model=ModelRef(name=path.stem, sha256=file_sha256(path)),
    )


def fc_rows(path: Path, tensor: str) -> int:
    model = read_model(path.read_bytes())
    t = next(t for t in model.main.tensors if t.name == tensor)
    return int(t.shape[-1])


@pytest.mark.parametrize("name", ["shapes", "shapes_int8"])
def test_sharded_pipeline_equals_the_whole_model(bus: MemoryBus, name: str) -> None:
    path = MODELS / name / f"{name}.tflite"
    workers = [
        Worker(CONFIG, d, path, transport=bus.connect(d), model_name=name) for d in ("r1", "r2")
    ]
    for w in workers:
        w.start()
    t = bus.connect("src")
    t.start()
    src = Source(t, CONFIG.topics)
    plan = sharded_plan(path, ["r1", "r2"])
    t.publish(CONFIG.topics.plan, encode(plan), retain=True)
    ref = Runner(path)
    spec = ref.inputs[0]
    rng = np.random.default_rng(5)
    xs = []
    for seq in range(12):
        if spec.dtype == np.float32:
            x = rng.uniform(-1, 1, spec.shape).astype(np.float32)
        else:
            x = rng.integers(-128, 127, spec.shape, dtype=np.int8)
        xs.append(x)
        src.send(seq, x, name=plan.stages[0].stage.inputs[0])
    assert src.wait(12, timeout=30), f"{len(src.outcomes)} of 12"
    for job, out in src.outcomes.items():
        assert out.status == "ok" and out.output is not None, out
        want = next(iter(ref.run(src.inputs[job]).values())).reshape(-1)
        got = np.asarray(out.output).astype(want.dtype)
        assert compare_outputs(want, got).ok  # int8: identical
        assert 0.0 <= (out.score or 0.0) <= 1.0  # int8 scores are dequantized
        assert {(s.stage, s.shard) for s in out.stages} >= {(1, 0), (1, 1)}
    for w in workers:
        w.stop()
