"""The split manifest (``DIR/manifest.json``) and ``write_split``, which writes a split atomically.

The manifest lists the stages in order with their files, tensors, shards (and how they merge),
hashes, MACs and weight bytes. The stage files are byte-identical to what ``cut_stage`` gives
for the same request, so a device may cut its stage itself and check it against ``sha256``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from edge_app.errors import PartitionError
from edge_app.inference.graph import Model
from edge_app.inference.layers import profile_model, resolve_layer, tensor_index
from edge_app.inference.partition import StageSpec, stage_model, stage_operators
from edge_app.inference.shard import layer_weights, shard_bounds

MANIFEST_NAME = "manifest.json"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorEntry(_Frozen):
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()


class StageFile(_Frozen):
    file: str
    sha256: str
    size: int
    shard: int | None = None  # index of the shard, None for an unsharded stage
    rows: tuple[int, int] | None = None  # output rows/channels [start, stop) of the shard


class StageEntry(_Frozen):
    index: int
    inputs: tuple[TensorEntry, ...]
    outputs: tuple[TensorEntry, ...]
    shardable_layer: str | None = None
    macs: int
    weight_bytes: int
    files: tuple[StageFile, ...]
    merge: Literal["concat_last_axis"] | None = None

    def spec(self) -> StageSpec:
        return StageSpec(
            self.index,
            tuple(t.name for t in self.inputs),
            tuple(t.name for t in self.outputs),
            self.shardable_layer,
        )


class Manifest(_Frozen):
    schema_version: Literal[1] = 1
    model_file: str
    model_sha256: str
    model_size: int
    stages: tuple[StageEntry, ...]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_manifest(directory: Path | str) -> Manifest:
    path = Path(directory) / MANIFEST_NAME
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise PartitionError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        raise PartitionError(f"{path} is not a valid split manifest: {exc}") from exc


def _tensor_entry(model: Model, name: str) -> TensorEntry:
    t = model.main.tensors[tensor_index(model.main, name)]
    q = t.quantization
    return TensorEntry(
        name=t.name,
        shape=tuple(int(d) for d in t.shape),
        dtype=str(t.dtype),
        scale=() if q is None else tuple(float(v) for v in q.scale),
        zero_point=() if q is None else tuple(int(v) for v in q.zero_point),
    )


def _write(directory: Path, name: str, part: Model) -> StageFile:
    """Streams the stage model to a file (weights are not copied into one big bytes object)."""
    from edge_app.inference.graph_io import write_model_to

    with (directory / name).open("w+b") as f:
        size = write_model_to(part, f)
        f.seek(0)
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return StageFile(file=name, sha256=digest, size=size)


def _stage_entry(model: Model, stage: StageSpec, k: int | None, directory: Path) -> StageEntry:
    ops = set(stage_operators(model, stage))
    infos = [info for info in profile_model(model) if info.index in ops]
    base = f"stage{stage.index:02d}"
    if k is None:
        files: tuple[StageFile, ...] = (
            _write(directory, f"{base}.tflite", stage_model(model, stage)),
        )
    else:
        assert stage.shardable_layer is not None
        weights, axis = layer_weights(model, resolve_layer(model, stage.shardable_layer))
        bounds = shard_bounds(weights.shape[axis], k)
        files = tuple(
            _write(
                directory, f"{base}.shard{i}of{k}.tflite", stage_model(model, stage, (i, k))
            ).model_copy(update={"shard": i, "rows": (bounds[i], bounds[i + 1])})
            for i in range(k)
        )
    return StageEntry(
        index=stage.index,
        inputs=tuple(_tensor_entry(model, n) for n in stage.inputs),
        outputs=tuple(_tensor_entry(model, n) for n in stage.outputs),
        shardable_layer=stage.shardable_layer,
        macs=sum(i.macs for i in infos),
        weight_bytes=sum(i.weight_bytes for i in infos),
        files=files,
        merge=None if k is None else "concat_last_axis",
    )


def _shards_by_stage(
    model: Model, stages: Sequence[StageSpec], shards: Mapping[str, int]
) -> dict[int, int]:
    sub = model.main
    by_layer = {s.shardable_layer: s.index for s in stages if s.shardable_layer}
    result: dict[int, int] = {}
    for ref, k in shards.items():
        op = sub.operators[resolve_layer(model, ref)]
        name = sub.tensors[op.outputs[0]].name
        if name not in by_layer:
            raise PartitionError(f"layer {ref!r} is not alone in a shardable stage of this split")
        if k != 1:
            result[by_layer[name]] = k
    return result


def write_split(
    model_path: Path | str,
    out_dir: Path | str,
    stages: Sequence[StageSpec],
    shards: Mapping[str, int] | None = None,
) -> Manifest:
    """Write the stage (and shard) files and ``manifest.json`` into ``out_dir``, which must not
    exist. Everything is written to a temporary sibling directory first and renamed at the end,
    so a failure leaves nothing behind."""
    from edge_app.inference.graph_io import read_model

    out = Path(out_dir)
    if out.exists():
        raise PartitionError(f"output directory {out} already exists")
    try:
        data = Path(model_path).read_bytes()
    except OSError as exc:
        raise PartitionError(f"cannot read model {model_path}: {exc.strerror or exc}") from exc
    model = read_model(data)
    per_stage = _shards_by_stage(model, stages, shards or {})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        entries = tuple(_stage_entry(model, s, per_stage.get(s.index), tmp) for s in stages)
        manifest = Manifest(
            model_file=Path(model_path).name,
            model_sha256=sha256(data),
            model_size=len(data),
            stages=entries,
        )
        (tmp / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n")
        if out.exists():
            raise PartitionError(f"output directory {out} already exists")
        tmp.chmod(0o755)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
