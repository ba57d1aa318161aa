"""Joining the partial outputs of a sharded stage.

A sharded stage's k shard holders each publish a partial (their slice of the output rows or
channels) to the merger. The :class:`MergeBuffer` joins partials only when they belong to the
same ``(job, stage, layout)``: partials of different jobs, or of the same job split two different
ways (a plan change between attempts), never meet. Attempts may mix: the same layout gives the
same slice whatever the attempt. The buffer is bounded (oldest open merge evicted) and open merges
expire after a timeout; a merge that already completed answers later duplicates as ``late`` so the
caller can acknowledge them at once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from edge_app.errors import DecodeError
from edge_app.messages.codec import Envelope

MergeKey = tuple[str, int, tuple[int, ...]]
"""(job, stage, layout)"""


@dataclass(frozen=True)
class Partial:
    """One shard's slice of a stage output, as received from its holder."""

    envelope: Envelope
    received: float

    @property
    def key(self) -> MergeKey:
        h = self.envelope.header
        assert h.layout is not None
        return (h.job, h.stage, h.layout)

    @property
    def shard(self) -> int:
        assert self.envelope.header.shard is not None
        return self.envelope.header.shard


@dataclass
class OpenMerge:
    key: MergeKey
    opened: float
    slots: dict[int, Partial] = field(default_factory=dict)
    extra: list[Partial] = field(default_factory=list)  # duplicates of filled slots: ack too

    @property
    def k(self) -> int:
        return len(self.key[2]) - 1

    @property
    def complete(self) -> bool:
        return len(self.slots) == self.k

    @property
    def all_partials(self) -> list[Partial]:
        return [*self.slots.values(), *self.extra]

    def merged(self) -> tuple[tuple[str, np.ndarray[Any, Any]], ...]:
        """Concatenate the slices in shard order along the last axis, tensor by tensor."""
        parts = [self.slots[i].envelope.tensors for i in range(self.k)]
        out = []
        for t, (name, _) in enumerate(parts[0]):
            out.append((name, np.concatenate([p[t][1] for p in parts], axis=-1)))
        return tuple(out)


Status = Literal["pending", "complete", "late"]


def check_partial(env: Envelope) -> None:
    """Raise DecodeError unless ``env`` is a well-formed partial (shard, bounds, layout, slice)."""
    h = env.header
    if h.shard is None or h.bounds is None or h.layout is None:
        raise DecodeError("partial without shard, bounds or layout")
    if h.shard >= len(h.layout) - 1:
        raise DecodeError(f"partial shard {h.shard} outside layout of {len(h.layout) - 1} shards")
    want = (h.layout[h.shard], h.layout[h.shard + 1])
    if h.bounds != want:
        raise DecodeError(f"partial bounds {h.bounds} do not match layout slot {want}")
    if not env.tensors:
        raise DecodeError("partial without tensors")
    for name, array in env.tensors:
        if array.ndim == 0 or array.shape[-1] != want[1] - want[0]:
            raise DecodeError(
                f"partial tensor {name!r} has shape {array.shape}, expected last axis"
                f" {want[1] - want[0]} for rows {want}"
            )


def _same_form(a: Envelope, b: Envelope) -> bool:
    """Two partials of one merge must carry the same tensors, equal but for the last axis."""
    if [n for n, _ in a.tensors] != [n for n, _ in b.tensors]:
        return False
    for (_, x), (_, y) in zip(a.tensors, b.tensors, strict=True):
        if x.dtype != y.dtype or x.shape[:-1] != y.shape[:-1]:
            return False
    return True


class MergeBuffer:
    """Bounded, thread-safe buffer of open merges keyed by ``(job, stage, layout)``."""

    def __init__(self, capacity: int = 64, timeout_s: float = 10.0, remember: int = 4096) -> None:
        self.capacity = capacity
        self.timeout_s = timeout_s
        self._open: OrderedDict[MergeKey, OpenMerge] = OrderedDict()
        self._done: OrderedDict[MergeKey, None] = OrderedDict()
        self._remember = remember
        self._lock = threading.Lock()
        self.evicted = 0
        self.expired_count = 0

    def add(self, partial: Partial, now: float | None = None) -> tuple[Status, OpenMerge | None]:
        """Add a checked partial (see :func:`check_partial`).

        Returns ``("complete", merge)`` when it completes its merge (the merge leaves the
        buffer), ``("late", None)`` when that merge already completed, else ``("pending", None)``.
        Raises DecodeError when the partial's tensors do not fit those already buffered.
        """
        now = time.monotonic() if now is None else now
        key = partial.key
        with self._lock:
            if key in self._done:
                return "late", None
            merge = self._open.get(key)
            if merge is None:
                merge = self._open_merge(key, now)
            else:
                other = next(iter(merge.slots.values()))
                if not _same_form(other.envelope, partial.envelope):
                    raise DecodeError(f"partial of job {key[0]!r} does not fit the other partials")
            if partial.shard in merge.slots:
                merge.extra.append(partial)
            else:
                merge.slots[partial.shard] = partial
            if not merge.complete:
                return "pending", None
            del self._open[key]
            self._done[key] = None
            if len(self._done) > self._remember:
                self._done.popitem(last=False)
            return "complete", merge

    def _open_merge(self, key: MergeKey, now: float) -> OpenMerge:
        if len(self._open) >= self.capacity:
            self._open.popitem(last=False)
            self.evicted += 1
        merge = OpenMerge(key, now)
        self._open[key] = merge
        return merge

    def expire(self, now: float | None = None) -> list[OpenMerge]:
        """Remove and return the open merges older than the timeout."""
        now = time.monotonic() if now is None else now
        with self._lock:
            old = [m for m in self._open.values() if now - m.opened > self.timeout_s]
            for m in old:
                del self._open[m.key]
            self.expired_count += len(old)
            return old

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)
