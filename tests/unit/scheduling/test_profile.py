"""Model profiles: stage costs and sizes from a real TFLite model."""

from __future__ import annotations

import pytest

from edge_app.errors import ModelError
from edge_app.inference import zoo
from edge_app.messages.schemas import ModelRef
from edge_app.scheduling.profile import ModelProfile, StageProfile, profile_from_model
from tests.unit.scheduling.fleet import stage_def, vgg_like


def test_profile_of_a_zoo_model_follows_the_musical_chair_split() -> None:
    data = zoo.build("alexnet", small=True)
    p = profile_from_model(data, "alexnet-small")
    assert len(p.model.sha256) == 64 and p.model.name == "alexnet-small"
    conv, *fcs, tail = p.stages
    assert not conv.shardable and conv.macs > sum(s.macs for s in fcs)
    assert [s.stage.shardable_layer for s in fcs] == ["fc6", "fc7", "fc8"]
    for s in fcs:
        assert s.shardable and s.rows >= 2
        assert s.shard_weight_bytes == s.weight_bytes > 0  # the FC layer is the whole stage
    assert tail.macs == 0 and not tail.shardable
    # consecutive stages agree on the activation between them
    for a, b in zip(p.stages, p.stages[1:], strict=False):
        assert a.output_bytes == b.input_bytes


def test_shard_shares_scale_memory_and_cost() -> None:
    fc = vgg_like().stages[1]
    assert fc.weight_bytes_for(0.5) == fc.weight_bytes // 2
    assert fc.memory_for(0.25) < fc.memory_for(0.5) < fc.memory_for(1.0)
    assert fc.reference_s(0.5) == pytest.approx(fc.reference_s(1.0) / 2, rel=0.05)
    # VGG16's fc_1 on the reference device (a Pi 3B): about 2.5 s
    assert 2.0 < fc.reference_s() < 3.0


def test_bad_profiles_are_rejected() -> None:
    ref = ModelRef(name="m", sha256="0" * 64)
    with pytest.raises(ModelError):
        ModelProfile(model=ref, stages=())
    with pytest.raises(ModelError):
        ModelProfile(model=ref, stages=(StageProfile(stage_def(1), 1, 1, 1),))
    with pytest.raises(ModelError):
        StageProfile(stage_def(0), macs=1, weight_bytes=1, output_bytes=1, shard_weight_bytes=2)
