"""What a worker does with one unit of work, on its compute thread (never the network thread).

``task``: the input of a stage this device holds as a replica; after computing it, the output
runs on locally while this device also holds the next stage as a replica (no network hop, the
upstream acks wait until the job leaves the process), then goes to the next stage's seat under
the newest plan, or becomes the job's result. ``shard``: a fan-out input; the slice goes to the
merger in custody and the fan-out sender is acked only once the merger acked the slice.
``merge``: a completed set of partials; their merged output is the next stage's input.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from edge_app.errors import DecodeError, EdgeAppError
from edge_app.messages.codec import Ack, Header, TraceEntry
from edge_app.messages.schemas import ErrorKind, JobOutcome, Plan, TopK
from edge_app.pipeline.accounting import Accounting, stage_timings, transfer_time
from edge_app.pipeline.courier import Courier
from edge_app.pipeline.custody import UpstreamAck
from edge_app.pipeline.merge import OpenMerge
from edge_app.pipeline.stages import SeatKey, StageCache, Tensors

log = logging.getLogger(__name__)

Reporter = Callable[[str, ErrorKind, str], None]
ComputeHook = Callable[[SeatKey, float], None]


@dataclass
class Work:
    kind: Literal["task", "shard", "merge"]
    header: Header
    tensors: Tensors
    received: float  # time.time() when it arrived
    topic: str = ""
    upstream: tuple[UpstreamAck, ...] = ()
    shard: int | None = None
    merge: OpenMerge | None = None


def error_kind(exc: Exception) -> ErrorKind:
    """Classify a rejected message for its ErrorReport."""
    text = str(exc).lower()
    pairs: tuple[tuple[str, ErrorKind], ...] = (
        ("exceeds", "size"),
        ("in the payload", "decode"),
        ("dtype", "dtype"),
        ("shape", "shape"),
    )
    for word, kind in pairs:
        if word in text:
            return kind
    return "decode" if isinstance(exc, DecodeError) else "runtime"


class Engine:
    def __init__(
        self,
        device: str,
        courier: Courier,
        cache: StageCache,
        accounting: Accounting,
        *,
        report: Reporter,
        plan: Callable[[], Plan | None],
        labels: Sequence[str] = (),
        model_name: str = "",
        load_wait_s: float = 60.0,
        output_limit: int = 1024,
        compute_hook: ComputeHook | None = None,
    ) -> None:
        self.device = device
        self.courier = courier
        self.cache = cache
        self.accounting = accounting
        self.report = report
        self.plan = plan
        self.labels = tuple(labels)
        self.model_name = model_name
        self.load_wait_s = load_wait_s
        self.output_limit = output_limit
        self.compute_hook = compute_hook
        self.busy_s = 0.0  # total compute time, read by the load meter

    def process(self, work: Work) -> None:
        """Handle one unit; every failure ends the job as a counted drop, never an exception.

        Accounting: a unit is ``accepted`` when this worker takes responsibility for it, and
        later ``completed`` (its result published, or its output acked downstream: counted by
        the worker's ack handler) or ``dropped``; at rest accepted == completed + dropped.
        """
        if work.kind != "shard":  # a shard counts once it is known to be ours (_shard)
            self.accounting.count("accepted")
        try:
            if work.kind == "shard":
                self._shard(work)
            elif work.kind == "merge":
                self._merge(work)
            else:
                self._task(work)
        except DecodeError as exc:
            self.report(work.topic, error_kind(exc), f"job {work.header.job}: {exc}")
            self.courier.drop(work.header, "error", str(exc), self._upstream(work))
        except Exception as exc:  # a bug or a runtime failure: the job ends, the worker goes on
            log.exception("job %s failed", work.header.job)
            kind: ErrorKind = "runtime" if isinstance(exc, EdgeAppError) else "other"
            self.report(work.topic, kind, f"job {work.header.job}: {exc}")
            self.courier.drop(work.header, "error", str(exc), self._upstream(work))

    def _upstream(self, work: Work) -> tuple[UpstreamAck, ...]:
        if work.kind == "shard":  # the fan-out sender is acked by the terminal drop too
            h = work.header
            return (UpstreamAck(h.sender, Ack(h.job, h.stage, None, h.attempt, self.device)),)
        return work.upstream

    # --- the three kinds --------------------------------------------------------------------------
    def _task(self, work: Work) -> None:
        h = work.header
        wait = max(0.0, time.time() - work.received)
        entry_hop = (transfer_time(h.created, h.trace, work.received), wait)
        self._advance(h, work.tensors, work.upstream, entry_hop, first=True)

    def _merge(self, work: Work) -> None:
        assert work.merge is not None
        parts = [work.merge.slots[i] for i in range(work.merge.k)]
        first = parts[0].envelope.header
        # The partials share the fan-out's trace; each adds its own shard's record last.
        trace = [*first.trace[:-1], *(p.envelope.header.trace[-1] for p in parts)]
        merged = work.merge.merged()
        header = replace(
            first,
            stage=first.stage + 1,
            shard=None,
            bounds=None,
            layout=None,
            merge_to=None,
            trace=tuple(trace),
        )
        upstream = tuple(
            UpstreamAck(p.envelope.header.sender, self._ack_for(p.envelope.header))
            for p in work.merge.all_partials
        )
        wait = max(0.0, time.time() - work.received)
        hop = (transfer_time(first.created, tuple(trace), work.received), wait)
        self._advance(header, merged, upstream, hop, first=False)

    def _ack_for(self, h: Header) -> Ack:
        return Ack(h.job, h.stage, h.shard, h.attempt, self.device)

    def _shard(self, work: Work) -> None:
        h = work.header
        assert work.shard is not None and h.layout is not None and h.merge_to is not None
        upstream = self._upstream(work)
        if time.time() > h.deadline:
            self.courier.drop(h, "deadline", f"shard {work.shard} found it expired", upstream)
            return
        key = (h.stage, work.shard)
        slot = self.cache.get(key, wait_s=self._wait_budget(h))
        if slot is None or slot.fn is None:
            state = "not held" if slot is None else slot.state
            self.report(work.topic, "stale", f"job {h.job}: shard {key} is {state}; not acked")
            return
        self.accounting.count("accepted")
        wait = max(0.0, time.time() - work.received)
        transfer = transfer_time(h.created, h.trace, work.received)
        out, compute = self._compute(key, slot.fn, work.tensors)
        bounds = (h.layout[work.shard], h.layout[work.shard + 1])
        entry: TraceEntry = (h.stage, work.shard, self.device, wait, compute, transfer)
        partial = replace(
            h, sender=self.device, shard=work.shard, bounds=bounds, trace=(*h.trace, entry)
        )
        self.courier.send_partial(partial, out, upstream)

    # --- running on -------------------------------------------------------------------------------
    def _wait_budget(self, h: Header) -> float:
        return max(0.0, min(self.load_wait_s, h.deadline - time.time()))

    def _compute(self, key: SeatKey, fn: Any, tensors: Tensors) -> tuple[Tensors, float]:
        fn.check(tensors)
        start = time.perf_counter()
        out: Tensors = fn.run(tensors)
        seconds = time.perf_counter() - start
        if self.compute_hook is not None:
            self.compute_hook(key, seconds)
            seconds = time.perf_counter() - start
        self.busy_s += seconds
        self.cache.measured(key, seconds)
        return out, seconds

    def _advance(
        self,
        h: Header,
        tensors: Tensors,
        upstream: tuple[UpstreamAck, ...],
        hop: tuple[float, float],
        *,
        first: bool,
    ) -> None:
        """Run stage ``h.stage`` here while we hold it, then pass the job on (or finish it)."""
        transfer, wait = hop
        trace = list(h.trace)
        quant: tuple[float, int] | None = None  # of the last output computed here
        stage = h.stage
        while True:
            if time.time() > h.deadline:
                self.courier.drop(replace(h, trace=tuple(trace)), "deadline", "expired", upstream)
                return
            plan = self.plan()
            if plan is not None and stage >= len(plan.stages):
                moved = replace(h, stage=stage, trace=tuple(trace))
                self._result(moved, tensors, plan, upstream, quant)
                return
            slot = self.cache.get((stage, None), wait_s=self._wait_budget(h) if first else 0.0)
            if slot is None or slot.fn is None:
                break
            tensors, compute = self._compute((stage, None), slot.fn, tensors)
            quant = getattr(slot.fn, "output_quant", (None,))[0]
            trace.append((stage, None, self.device, wait, compute, transfer))
            wait = transfer = 0.0
            stage, first = stage + 1, False
        moved = replace(h, stage=stage, trace=tuple(trace))
        self.courier.forward(moved, tensors, upstream)  # completed when acked, or dropped

    def _result(
        self,
        h: Header,
        tensors: Tensors,
        plan: Plan,
        upstream: tuple[UpstreamAck, ...],
        quant: tuple[float, int] | None,
    ) -> None:
        """Publish the job's result; ``output`` carries the raw values (exact, also int8)."""
        values = np.asarray(tensors[0][1], dtype=np.float64).reshape(-1)
        scores = values
        if quant is not None and quant[0] > 0:  # a quantized output: scores as real numbers
            scores = (values - quant[1]) * quant[0]
        order = np.argsort(-scores, kind="stable")[:5]
        topk = [TopK(label=self._label(int(i)), score=float(scores[i])) for i in order]
        now = time.time()
        outcome = JobOutcome(
            job=h.job,
            sensor=h.sensor,
            seq=h.seq,
            status="ok",
            model=self.model_name,
            label=topk[0].label if topk else None,
            score=topk[0].score if topk else None,
            topk=topk,
            created_ts=h.created,
            done_ts=now,
            latency_s=max(0.0, now - h.created),
            epoch=plan.epoch,
            stages=stage_timings(h.trace),
            output=[float(v) for v in values] if values.size <= self.output_limit else None,
        )
        self.courier.publish_outcome(outcome, upstream)
        self.accounting.count("completed")

    def _label(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else f"class_{index}"


class WorkQueue:
    """The worker's bounded job queue; merges may exceed the limit by the merge capacity.

    Shard and merge work is served before whole-frame tasks (each in arrival order): the other
    shard holders and the merger of a job wait on a shard, and a merged job is nearly done, while
    a queued frame of convolutions only delays itself. Without this, a device that holds both a
    conv replica and an FC shard queues long conv jobs ahead of its shard work, and the whole
    fleet waits on it (VGG16 on 9 emulated Pi 3B: 0.83 of the compute bound FIFO, 0.99 this way).
    """

    def __init__(self, limit: int, extra: int = 64) -> None:
        if limit < 1:
            raise ValueError("queue limit must be >= 1")
        self.limit = limit
        self.extra = extra
        self._urgent: deque[Work] = deque()  # shards and merges
        self._tasks: deque[Work] = deque()
        self._cond = threading.Condition()

    def offer(self, work: Work, *, force: bool = False) -> bool:
        with self._cond:
            cap = self.limit + (self.extra if force else 0)
            if len(self._urgent) + len(self._tasks) >= cap:
                return False
            (self._tasks if work.kind == "task" else self._urgent).append(work)
            self._cond.notify()
            return True

    def take(self, timeout: float) -> Work | None:
        with self._cond:
            if not self._urgent and not self._tasks:
                self._cond.wait(timeout=timeout)
            if self._urgent:
                return self._urgent.popleft()
            return self._tasks.popleft() if self._tasks else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._urgent) + len(self._tasks)
