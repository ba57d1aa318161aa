"""The stages a worker holds: which seats the plan gives it, cut locally and cached.

Every device holds the whole model file and cuts its own stage (or shard) with
:func:`edge_app.inference.partition.cut_stage`, a pure function, after checking the file's
SHA-256 against the plan's model reference. The plan names stages, never files.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from edge_app.errors import DecodeError, EdgeAppError, ModelError
from edge_app.messages.schemas import Plan, StageDef
from edge_app.pipeline.routing import shard_layout

log = logging.getLogger(__name__)

Tensors = tuple[tuple[str, np.ndarray[Any, Any]], ...]
SeatKey = tuple[int, int | None]
"""(stage, shard index or None for a replica)"""


@dataclass(frozen=True)
class Seat:
    """One stage (a replica) or one shard of a stage that a device holds under a plan."""

    stage: StageDef
    shard: int | None = None
    layout: tuple[int, ...] | None = None

    @property
    def key(self) -> SeatKey:
        return (self.stage.index, self.shard)

    @property
    def bounds(self) -> tuple[int, int] | None:
        if self.shard is None or self.layout is None:
            return None
        return (self.layout[self.shard], self.layout[self.shard + 1])


class StageFn(Protocol):
    """A runnable stage: named inputs in, outputs in the StageDef's order out."""

    def check(self, tensors: Tensors) -> None: ...  # DecodeError on wrong names/shape/dtype

    def run(self, tensors: Tensors) -> Tensors: ...


Loader = Callable[[Seat], StageFn]


def seats_for(plan: Plan, device: str) -> list[Seat]:
    """The seats ``plan`` gives ``device``: replicas and shards."""
    seats: list[Seat] = []
    for sp in plan.stages:
        if sp.mode == "replicated":
            if any(r.device == device for r in sp.replicas):
                seats.append(Seat(sp.stage))
            continue
        tiled = shard_layout(sp)
        if tiled is None:
            continue
        layout, holders = tiled
        seats += [Seat(sp.stage, i, layout) for i, d in enumerate(holders) if d == device]
    return seats


# --- the TFLite stage ---------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RunnerStage:
    """A stage model in the TFLite interpreter; maps tensors by the StageDef's names."""

    def __init__(self, model_bytes: bytes, stage: StageDef, threads: int = 1) -> None:
        from edge_app.inference.interpreter import Runner

        self.runner = Runner(model_bytes, num_threads=threads)
        self.stage = stage
        if len(self.runner.inputs) != len(stage.inputs):
            raise ModelError(f"stage {stage.index}: model has {len(self.runner.inputs)} inputs")
        if len(self.runner.outputs) != len(stage.outputs):
            raise ModelError(f"stage {stage.index}: model has {len(self.runner.outputs)} outputs")
        self._lock = threading.Lock()  # one interpreter runs one job at a time
        # (scale, zero point) of each output; scale 0 for float outputs
        self.output_quant = tuple((o.scale, o.zero_point) for o in self.runner.outputs)

    def _ordered(self, tensors: Tensors) -> list[np.ndarray[Any, Any]]:
        given = dict(tensors)
        if len(tensors) == 1 and len(self.runner.inputs) == 1:
            return [tensors[0][1]]
        names = [s.name for s in self.runner.inputs]
        if set(given) == set(names):
            return [given[n] for n in names]
        if set(given) == set(self.stage.inputs):  # the cut renamed nothing but reordered
            return [given[n] for n in self.stage.inputs]
        raise DecodeError(f"stage {self.stage.index} takes tensors {names}, got {sorted(given)}")

    def check(self, tensors: Tensors) -> None:
        for spec, array in zip(self.runner.inputs, self._ordered(tensors), strict=True):
            if array.dtype != spec.dtype:
                raise DecodeError(
                    f"dtype: stage {self.stage.index} input {spec.name!r} expects {spec.dtype},"
                    f" got {array.dtype}"
                )
            if tuple(array.shape) != tuple(spec.shape):
                raise DecodeError(
                    f"shape: stage {self.stage.index} input {spec.name!r} expects"
                    f" {tuple(spec.shape)}, got {tuple(array.shape)}"
                )

    def run(self, tensors: Tensors) -> Tensors:
        arrays = self._ordered(tensors)
        with self._lock:
            out = self.runner.run(arrays)
        values = [out[s.name] for s in self.runner.outputs]
        return tuple(zip(self.stage.outputs, values, strict=True))


class TfliteLoader:
    """Cuts seats from the model file (parsed once) and loads them in the interpreter."""

    def __init__(self, model_path: Path, threads: int = 1) -> None:
        self.model_path = model_path
        self.threads = threads
        self._lock = threading.Lock()
        self._bytes: bytes | None = None
        self._model: Any = None
        self.sha256 = file_sha256(model_path)

    def _parsed(self) -> Any:
        from edge_app.inference.graph_io import read_model

        with self._lock:
            if self._model is None:
                self._bytes = self.model_path.read_bytes()
                if hashlib.sha256(self._bytes).hexdigest() != self.sha256:
                    raise ModelError(f"{self.model_path} changed on disk while running")
                self._model = read_model(self._bytes)
            return self._model

    def release(self) -> None:
        """Forget the parsed model (it can be as large as the file): cut, then free it."""
        with self._lock:
            self._bytes = None
            self._model = None

    def __call__(self, seat: Seat) -> StageFn:
        from edge_app.inference.partition import StageSpec, cut_stage_model

        spec = StageSpec(
            index=seat.stage.index,
            inputs=tuple(seat.stage.inputs),
            outputs=tuple(seat.stage.outputs),
            shardable_layer=seat.stage.shardable_layer,
        )
        shard = None
        if seat.shard is not None and seat.layout is not None:
            shard = (seat.shard, len(seat.layout) - 1)
        data = cut_stage_model(self._parsed(), spec, shard, seat.layout if shard else None)
        return RunnerStage(data, seat.stage, self.threads)


# --- the cache ----------------------------------------------------------------------------------

State = Literal["loading", "ready", "failed"]


@dataclass
class Slot:
    seat: Seat
    state: State
    fn: StageFn | None = None
    error: str = ""
    service_s: float = 0.0  # EWMA of compute time
    jobs: int = 0


class StageCache:
    """Seats loaded for the newest plan; loading runs on the caller's thread (the loader)."""

    def __init__(self, loader: Loader, alpha: float = 0.2) -> None:
        self.loader = loader
        self.alpha = alpha
        self._slots: dict[SeatKey, Slot] = {}
        self._cond = threading.Condition()

    def sync(self, seats: list[Seat]) -> list[Seat]:
        """Make ``seats`` the wanted set: drop the others; return the seats to load."""
        wanted = {s.key: s for s in seats}
        with self._cond:
            for key in list(self._slots):
                slot = self._slots[key]
                if key not in wanted or wanted[key] != slot.seat:
                    del self._slots[key]
                    log.info("unloaded stage %s shard %s", key[0], key[1])
            todo = [s for k, s in wanted.items() if k not in self._slots]
            for seat in todo:
                self._slots[seat.key] = Slot(seat, "loading")
            self._cond.notify_all()
        return todo

    def load(self, seat: Seat) -> None:
        """Cut and load ``seat`` (slow); a failure is recorded, not raised."""
        start = time.monotonic()
        try:
            fn: StageFn | None = self.loader(seat)
            state: State = "ready"
            error = ""
        except EdgeAppError as exc:
            fn, state, error = None, "failed", str(exc)
            log.error("cannot load stage %d shard %s: %s", seat.stage.index, seat.shard, exc)
        with self._cond:
            slot = self._slots.get(seat.key)
            if slot is not None and slot.seat == seat:
                slot.fn, slot.state, slot.error = fn, state, error
            self._cond.notify_all()
        if state == "ready":
            log.info(
                "loaded stage %d shard %s in %.2f s",
                seat.stage.index,
                seat.shard,
                time.monotonic() - start,
            )

    def get(self, key: SeatKey, wait_s: float = 0.0) -> Slot | None:
        """The slot for ``key``, waiting up to ``wait_s`` while it is still loading."""
        end = time.monotonic() + wait_s
        with self._cond:
            while True:
                slot = self._slots.get(key)
                remaining = end - time.monotonic()
                if slot is None or slot.state != "loading" or remaining <= 0:
                    return slot
                self._cond.wait(timeout=remaining)

    def measured(self, key: SeatKey, seconds: float) -> None:
        with self._cond:
            slot = self._slots.get(key)
            if slot is not None:
                first = slot.jobs == 0
                slot.service_s = (
                    seconds if first else (self.alpha * seconds + (1 - self.alpha) * slot.service_s)
                )
                slot.jobs += 1

    def slots(self) -> list[Slot]:
        with self._cond:
            return list(self._slots.values())
