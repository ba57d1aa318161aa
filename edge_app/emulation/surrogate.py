"""Stand-in models for emulated runs: the full model's stage structure and FC rows, tiny convs.

An emulated Pi pads every job to the FULL model's predicted time, so what the host really
computes only has to be (a) much shorter than that and (b) the same pipeline: same stages, same
shardable layers with the same number of rows (the plan's shard bounds index rows). A surrogate
keeps the head (fc6, fc7, fc8 with the full model's row counts, then softmax) and replaces the
convolution trunk by one small convolution on a small input. The planner is given the full
model's costs under the surrogate's names and hash (:func:`timing_profile`), and the emulated
links pace each message by the full model's bytes for it.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge_app.emulation.workload import Workload, workload_from_model
from edge_app.errors import ConfigError, ModelError
from edge_app.scheduling.profile import ModelProfile

HEADS = {"alexnet": (4096, 4096, 1000), "vgg16": (4096, 4096, 1000), "c3d": (4096, 4096, 487)}
SURROGATE_VERSION = 1


def build_surrogate(name: str, seed: int = 0) -> bytes:
    """A stand-in for zoo model ``name`` (see the module docstring)."""
    from edge_app.inference.builder import GraphBuilder

    if name not in HEADS:
        raise ConfigError(f"no surrogate for {name!r}; known: {', '.join(sorted(HEADS))}")
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    if name == "c3d":
        x = b.input("clip", (1, 4, 16, 16, 3))
        w = rng.standard_normal((3, 3, 3, 3, 8), dtype=np.float32) * np.float32(0.2)
        x = b.conv3d(x, w, np.zeros(8, np.float32), padding="same", activation="relu", name="conv1")
        x = b.max_pool3d(x, (2, 4, 4), name="pool1")
    else:
        x = b.input("image", (1, 32, 32, 3))
        w = rng.standard_normal((8, 3, 3, 3), dtype=np.float32) * np.float32(0.2)
        x = b.conv2d(x, w, np.zeros(8, np.float32), padding="same", activation="relu", name="conv1")
        x = b.max_pool2d(x, (4, 4), name="pool1")
    y = b.flatten(x, name="flatten")
    hidden1, hidden2, classes = HEADS[name]
    for rows, layer, act in (
        (hidden1, "fc6", "relu"),
        (hidden2, "fc7", "relu"),
        (classes, "fc8", None),
    ):
        n = y.shape[-1]
        w = rng.standard_normal((rows, n), dtype=np.float32) * np.float32(np.sqrt(2.0 / n))
        y = b.fully_connected(y, w, np.zeros(rows, np.float32), activation=act, name=layer)
    b.output(b.softmax(y, name="softmax"), name="probabilities")
    return b.to_bytes()


def cached_surrogate(name: str) -> Path:
    """The surrogate of ``name`` built once into the zoo cache."""
    from edge_app.inference.zoo import cache_dir, write_model_file

    folder = cache_dir()
    path = folder / f"{name}-surrogate-v{SURROGATE_VERSION}.tflite"
    if path.is_file():
        return path
    data = build_surrogate(name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_model_file(path, data)
    except OSError as exc:
        raise ModelError(f"cannot write surrogate model to {folder}: {exc}") from exc
    return path


def timing_profile(real: Workload, timing: Workload, real_bytes: bytes) -> ModelProfile:
    """``timing``'s costs and sizes under ``real``'s stage names and model hash: what the
    scheduler plans with when workers run ``real`` but emulate ``timing``."""
    a, b = real.profile.stages, timing.profile.stages
    if len(a) != len(b) or any(x.rows != y.rows for x, y in zip(a, b, strict=True)):
        raise ConfigError(
            f"{real.name} cannot stand in for {timing.name}: stages or shard rows differ"
        )
    stages = tuple(replace(t, stage=r.stage) for r, t in zip(a, b, strict=True))
    ref = real.profile.model.model_copy(update={"sha256": hashlib.sha256(real_bytes).hexdigest()})
    return ModelProfile(model=ref, stages=stages)


def surrogate_workloads(name: str) -> tuple[Path, Workload, Workload]:
    """(surrogate path, its workload, the full model's workload) for zoo model ``name``."""
    from edge_app.inference.zoo import cached_build

    path = cached_surrogate(name)
    real = workload_from_model(path.read_bytes(), name)
    full = workload_from_model(cached_build(name).read_bytes(), name)
    return path, real, full
