"""`edge-app model inspect | split | verify | build` and `edge-app bench partition`, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_app.cli import main
from edge_app.inference import zoo

pytestmark = pytest.mark.interpreter


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "alexnet-small.tflite"
    path.write_bytes(zoo.build("alexnet", small=True))
    return path


def test_inspect_prints_layers_and_cut_points(
    model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "inspect", str(model_file)]) == 0
    out = capsys.readouterr().out
    assert "FULLY_CONNECTED" in out and "CONV_2D" in out
    assert "cut points (12): conv1, pool1," in out
    assert "inputs:  image (1, 64, 64, 3) float32" in out


def test_split_then_verify(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "split"
    args = ["model", "split", str(model_file), "--stages", "6", "--out", str(out)]
    assert main([*args, "--shard", "fc6=3", "--shard", "conv2=2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["stages"]) == 6
    assert [len(s["files"]) for s in manifest["stages"] if s["shardable_layer"] == "fc6"] == [3]
    assert "wrote 6 stages" in capsys.readouterr().out
    assert main(["model", "verify", str(model_file), str(out), "--seeds", "2"]) == 0
    assert ": ok" in capsys.readouterr().out


def test_verify_fails_on_a_wrong_stage(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "split"
    assert main(["model", "split", str(model_file), "--cut", "pool2", "--out", str(out)]) == 0
    # Replace stage 0 by a model of the same interface but other weights, with a matching hash.
    other = tmp_path / "other.tflite"
    other.write_bytes(zoo.build("alexnet", small=True, seed=5))
    assert main(["model", "split", str(other), "--cut", "pool2", "--out", str(tmp_path / "o")]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    stage0 = json.loads((tmp_path / "o" / "manifest.json").read_text())["stages"][0]
    (out / "stage00.tflite").write_bytes((tmp_path / "o" / "stage00.tflite").read_bytes())
    manifest["stages"][0]["files"] = stage0["files"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["model", "verify", str(model_file), str(out)]) == 1
    assert "MISMATCH" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cut", "fc6/weights"], "'fc6/weights' is not a valid cut point"),
        (["--shard", "pool1=2"], "MAX_POOL_2D) cannot be split"),
        (["--shard", "fc8=11"], "cannot split 10 rows/channels into 11 shards"),
        (["--stages", "20"], "12 cut points, so at most 13 stages"),
        (["--shard", "nope=2"], "no layer named 'nope'"),
    ],
)
def test_bad_split_requests_fail_clearly_and_write_nothing(
    model_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    out = tmp_path / "work" / "split"
    out.parent.mkdir()
    assert main(["model", "split", str(model_file), "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []


def test_not_a_tflite_file_and_existing_out_dir(
    tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"this is not a model at all, just text")
    assert main(["model", "inspect", str(junk)]) == 2
    assert "not a TFLite model" in capsys.readouterr().err
    assert main(["model", "split", str(junk), "--out", str(tmp_path / "s")]) == 2
    assert not (tmp_path / "s").exists()
    (tmp_path / "exists").mkdir()
    assert main(["model", "split", str(model_file), "--out", str(tmp_path / "exists")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_shard_argument_must_be_layer_equals_k(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["model", "split", str(model_file), "--out", str(tmp_path / "x"), "--shard", "fc6"])
    assert exc.value.code == 2
    assert "expected LAYER=K" in capsys.readouterr().err


def test_build_writes_the_zoo_model_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.tflite"
    assert main(["model", "build", "c3d", "--small", "--out", str(out)]) == 0
    assert out.read_bytes() == zoo.build("c3d", small=True)
    assert main(["model", "build", "c3d", "--small", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["model", "build", "nonet", "--out", str(tmp_path / "n.tflite")]) == 2
    assert "unknown zoo model" in capsys.readouterr().err


def test_bench_partition_small(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--models", "alexnet", "--small", "--repeats", "2", "--processes", "1"]
    assert main(["bench", "partition", *args]) == 0
    out = capsys.readouterr().out
    assert "| alexnet (small) |" in out and "| yes |" in out
