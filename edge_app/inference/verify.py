"""Check a split: the stages run in sequence (shards merged) give the whole model's output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_app.errors import PartitionError
from edge_app.inference.compare import Comparison, compare_outputs
from edge_app.inference.interpreter import Runner, TensorSpec
from edge_app.inference.manifest import Manifest, load_manifest, sha256
from edge_app.inference.partition import StageSpec, cut_stage_model
from edge_app.inference.shard import merge_shards

# One stage: its input names, output names, and its runners (several when sharded).
StageRunners = tuple[tuple[str, ...], tuple[str, ...], list[Runner]]


def seeded_inputs(specs: Sequence[TensorSpec], seed: int) -> dict[str, NDArray[Any]]:
    """Reproducible inputs: standard normal floats, integers over their dtype's full range."""
    rng = np.random.default_rng(seed)
    out: dict[str, NDArray[Any]] = {}
    for spec in specs:
        shape = tuple(max(d, 1) for d in spec.shape)
        if spec.dtype.kind == "f":
            out[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype.kind == "b":
            out[spec.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            info = np.iinfo(spec.dtype)
            out[spec.name] = rng.integers(info.min, int(info.max) + 1, shape, dtype=spec.dtype)
    return out


def run_stages(
    stages: Sequence[StageRunners], inputs: Mapping[str, NDArray[Any]]
) -> dict[str, NDArray[Any]]:
    """Runs the stages in order; returns every tensor computed, by name."""
    env: dict[str, NDArray[Any]] = dict(inputs)
    for names_in, names_out, runners in stages:
        missing = [n for n in names_in if n not in env]
        if missing:
            raise PartitionError(f"stage inputs {missing} are not computed by earlier stages")
        feed = {n: env[n] for n in names_in}
        results = [r.run(feed) for r in runners]
        for name in names_out:
            env[name] = merge_shards([res[name] for res in results])
    return env


def _runners_from_dir(directory: Path, model_bytes: bytes, threads: int) -> list[StageRunners]:
    manifest: Manifest = load_manifest(directory)
    if manifest.model_sha256 != sha256(model_bytes):
        raise PartitionError(
            f"{directory} was split from another model (sha256 {manifest.model_sha256[:12]}...)"
        )
    stages: list[StageRunners] = []
    for entry in manifest.stages:
        runners = []
        for f in entry.files:
            path = directory / f.file
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise PartitionError(f"cannot read stage file {path}: {exc.strerror}") from exc
            if sha256(data) != f.sha256:
                raise PartitionError(f"stage file {path} does not match its sha256 in the manifest")
            runners.append(Runner(data, num_threads=threads))
        spec = entry.spec()
        stages.append((spec.inputs, spec.outputs, runners))
    return stages


def _runners_from_specs(
    model_bytes: bytes, specs: Sequence[StageSpec], shards: Mapping[str, int], threads: int
) -> list[StageRunners]:
    from edge_app.inference.graph_io import read_model

    model = read_model(model_bytes)
    stages: list[StageRunners] = []
    for spec in specs:
        k = shards.get(spec.shardable_layer) if spec.shardable_layer else None
        parts = [None] if k is None else [(i, k) for i in range(k)]
        runners = [Runner(cut_stage_model(model, spec, p), num_threads=threads) for p in parts]
        stages.append((spec.inputs, spec.outputs, runners))
    return stages


def _worst(results: Sequence[Comparison]) -> Comparison:
    bad = [c for c in results if not c.ok]
    if bad:
        return max(bad, key=lambda c: c.max_abs_diff)
    return max(results, key=lambda c: c.max_abs_diff / c.tolerance if c.tolerance else 0.0)


def verify_split(
    model_bytes: bytes,
    manifest_dir_or_stages: Path | str | Sequence[StageSpec],
    seeds: int = 3,
    shards: Mapping[str, int] | None = None,
    threads: int = 1,
) -> Comparison:
    """The worst comparison, over ``seeds`` seeded inputs and every graph output, of the stages
    composed against the whole model. ``shards`` (layer name -> k, for stages whose
    ``shardable_layer`` it names) applies to StageSpecs only; a split directory says its own
    shards (and every file's hash is checked)."""
    if isinstance(manifest_dir_or_stages, Path | str):
        stages = _runners_from_dir(Path(manifest_dir_or_stages), model_bytes, threads)
    else:
        stages = _runners_from_specs(model_bytes, manifest_dir_or_stages, shards or {}, threads)
    whole = Runner(model_bytes, num_threads=threads)
    results: list[Comparison] = []
    for seed in range(seeds):
        feed = seeded_inputs(whole.inputs, seed)
        reference = whole.run(feed)
        env = run_stages(stages, feed)
        for name, ref in reference.items():
            if name not in env:
                raise PartitionError(f"no stage computes the model output {name!r}")
            results.append(compare_outputs(ref, env[name]))
    if not results:
        raise PartitionError("nothing to compare (no seeds or no outputs)")
    return _worst(results)
