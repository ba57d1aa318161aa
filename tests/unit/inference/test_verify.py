"""verify_split and write_split: a split directory on disk, its manifest and its hashes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edge_app.errors import PartitionError
from edge_app.inference import zoo
from edge_app.inference.graph_io import read_model
from edge_app.inference.manifest import Manifest, load_manifest, write_split
from edge_app.inference.partition import cut_stage, plan_stages
from edge_app.inference.verify import verify_split

pytestmark = pytest.mark.interpreter


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "resnet_branch.tflite"
    path.write_bytes(zoo.build("resnet_branch", small=True))
    return path


def _split(model_file: Path, out: Path, shards: dict[str, int]) -> Manifest:
    stages = plan_stages(read_model(model_file.read_bytes()), shard_layers=list(shards))
    return write_split(model_file, out, stages, shards)


def test_split_directory_verifies_and_matches_cut_stage(model_file: Path, tmp_path: Path) -> None:
    manifest = _split(model_file, tmp_path / "split", {"fc6": 3, "stem": 2})
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == sorted(
        ["manifest.json", *(f.file for s in manifest.stages for f in s.files)]
    )
    assert load_manifest(tmp_path / "split") == manifest
    data = model_file.read_bytes()
    for entry in manifest.stages:
        for f in entry.files:
            content = (tmp_path / "split" / f.file).read_bytes()
            assert hashlib.sha256(content).hexdigest() == f.sha256
            shard = None if f.shard is None else (f.shard, len(entry.files))
            assert cut_stage(data, entry.spec(), shard) == content
    fc6 = next(s for s in manifest.stages if s.shardable_layer == "fc6")
    assert fc6.merge == "concat_last_axis"
    assert [f.rows for f in fc6.files] == [(0, 6), (6, 11), (11, 16)]
    assert fc6.macs == 128 * 16 and fc6.weight_bytes == 4 * (128 * 16 + 16)
    result = verify_split(data, tmp_path / "split", seeds=2)
    assert result.ok and result.max_abs_diff <= result.tolerance


def test_same_request_gives_identical_files(model_file: Path, tmp_path: Path) -> None:
    a = _split(model_file, tmp_path / "a", {"fc7": 2})
    b = _split(model_file, tmp_path / "b", {"fc7": 2})
    assert a == b


def test_swapped_shards_are_caught(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "split"
    manifest = _split(model_file, out, {"fc6": 2})
    fc6 = next(s for s in manifest.stages if s.shardable_layer == "fc6")
    first, second = (out / f.file for f in fc6.files)
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)
    with pytest.raises(PartitionError, match="does not match its sha256"):
        verify_split(model_file.read_bytes(), out)
    # With the hashes updated to match, the composition itself is wrong and verify says so.
    raw = json.loads((out / "manifest.json").read_text())
    for stage in raw["stages"]:
        for f in stage["files"]:
            f["sha256"] = hashlib.sha256((out / f["file"]).read_bytes()).hexdigest()
    (out / "manifest.json").write_text(json.dumps(raw))
    result = verify_split(model_file.read_bytes(), out)
    assert not result.ok


def test_verify_refuses_another_model_and_a_bad_manifest(model_file: Path, tmp_path: Path) -> None:
    _split(model_file, tmp_path / "split", {})
    with pytest.raises(PartitionError, match="split from another model"):
        verify_split(zoo.build("alexnet", small=True), tmp_path / "split")
    (tmp_path / "split" / "manifest.json").write_text('{"schema_version": 1, "extra": 1}')
    with pytest.raises(PartitionError, match="not a valid split manifest"):
        verify_split(model_file.read_bytes(), tmp_path / "split")


def test_write_split_leaves_nothing_behind_on_error(model_file: Path, tmp_path: Path) -> None:
    stages = plan_stages(read_model(model_file.read_bytes()), shard_layers=["fc8"])
    with pytest.raises(PartitionError, match="cannot split 10 rows/channels into 11 shards"):
        write_split(model_file, tmp_path / "out", stages, {"fc8": 11})
    with pytest.raises(PartitionError, match="not alone in a shardable stage"):
        write_split(model_file, tmp_path / "out", stages, {"res1/conv_a": 2})
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "out").mkdir()
    with pytest.raises(PartitionError, match="already exists"):
        write_split(model_file, tmp_path / "out", stages)
    assert list((tmp_path / "out").iterdir()) == []


def test_verify_in_memory_stages_with_shards_by_layer(model_file: Path) -> None:
    data = model_file.read_bytes()
    stages = plan_stages(read_model(data), n_stages=4, shard_layers=["fc7"])
    result = verify_split(data, stages, seeds=1, shards={"fc7": 3})
    assert result.ok and result.scale > 0
