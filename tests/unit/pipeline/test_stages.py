"""Seats cut locally from a real model file, run in the TFLite interpreter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_app.errors import DecodeError
from edge_app.inference.compare import compare_outputs
from edge_app.inference.graph_io import read_model
from edge_app.inference.interpreter import Runner
from edge_app.inference.partition import default_stages
from edge_app.messages.schemas import StageDef
from edge_app.pipeline.stages import Seat, StageCache, TfliteLoader, file_sha256

MODEL = Path(__file__).resolve().parents[3] / "models" / "shapes" / "shapes.tflite"

pytestmark = pytest.mark.interpreter


def stage_defs() -> list[StageDef]:
    return [
        StageDef(
            index=s.index,
            inputs=list(s.inputs),
            outputs=list(s.outputs),
            shardable_layer=s.shardable_layer,
        )
        for s in default_stages(read_model(MODEL.read_bytes()))
    ]


def test_stages_and_shards_composed_equal_the_whole_model() -> None:
    loader = TfliteLoader(MODEL)
    assert loader.sha256 == file_sha256(MODEL)
    defs = stage_defs()
    x = np.random.default_rng(3).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    tensors = ((defs[0].inputs[0], x),)
    for sd in defs:
        if sd.shardable_layer is None:
            tensors = loader(Seat(sd)).run(tensors)
            continue
        seat = Seat(sd)
        full = loader(seat).run(tensors)[0][1]
        rows = full.shape[-1]
        layout = (0, rows // 3, rows)  # an uneven split, as a weighted plan makes
        parts = [loader(Seat(sd, i, layout)).run(tensors)[0][1] for i in range(2)]
        assert [p.shape[-1] for p in parts] == [rows // 3, rows - rows // 3]
        merged = np.concatenate(parts, axis=-1)
        assert compare_outputs(full, merged).ok
        tensors = ((sd.outputs[0], merged),)
    ref = next(iter(Runner(MODEL).run(x).values()))
    assert compare_outputs(ref, tensors[0][1]).ok


def test_wrong_inputs_are_named_in_the_error() -> None:
    defs = stage_defs()
    fn = TfliteLoader(MODEL)(Seat(defs[0]))
    with pytest.raises(DecodeError, match="dtype"):
        fn.check(((defs[0].inputs[0], np.zeros((1, 32, 32, 3), np.int32)),))
    with pytest.raises(DecodeError, match="shape"):
        fn.check(((defs[0].inputs[0], np.zeros((1, 8, 8, 3), np.float32)),))


def test_cache_loads_wanted_seats_and_unloads_dropped_ones() -> None:
    defs = stage_defs()
    cache = StageCache(TfliteLoader(MODEL))
    todo = cache.sync([Seat(defs[0]), Seat(defs[1], 0, (0, 10, 128))])
    for seat in todo:
        cache.load(seat)
    assert {s.seat.key: s.state for s in cache.slots()} == {(0, None): "ready", (1, 0): "ready"}
    assert cache.sync([Seat(defs[0]), Seat(defs[1], 0, (0, 64, 128))]) == [
        Seat(defs[1], 0, (0, 64, 128))
    ]  # another split of the same shard must be cut again
    assert cache.get((1, 0)) is not None and cache.get((1, 0)).state == "loading"  # type: ignore[union-attr]
    assert cache.sync([]) == [] and cache.slots() == []
