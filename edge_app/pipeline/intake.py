"""The network-thread side of a worker's data path: decode, validate, de-duplicate, queue.

Handlers run on the transport's thread, so nothing here computes: a task goes into the bounded
job queue (full: the job is dropped with reason ``backpressure`` and its sender acked), a partial
into the merge buffer (a completed merge into the queue), a fan-out into the queue once per shard
this device holds. Every rejected message becomes an ErrorReport through ``report``.

Epochs: an envelope more than ``STALE_EPOCH_LAG`` plan epochs old is rejected as stale (not
acked; its holder re-sends under the newest plan). A fan-out split another way than this device's
seat is stale too (merges never mix layouts), unless it comes from a NEWER plan than ours: then it
waits (bounded) until that plan arrives. Workers listen to the fan-out topic of every sharded
stage, so a device seated by a new plan is already listening when the first fan-out comes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from edge_app.errors import DecodeError
from edge_app.messages.codec import Ack, Envelope, decode_envelope
from edge_app.messages.schemas import Plan
from edge_app.pipeline.accounting import Accounting, ErrorReporter
from edge_app.pipeline.courier import Courier
from edge_app.pipeline.custody import UpstreamAck
from edge_app.pipeline.dedup import Dedup
from edge_app.pipeline.engine import Work, WorkQueue, error_kind
from edge_app.pipeline.merge import MergeBuffer, Partial, check_partial
from edge_app.pipeline.stages import Seat, seats_for
from edge_app.transport.base import Received

log = logging.getLogger(__name__)

STALE_EPOCH_LAG = 8
"""Envelopes more than this many plan epochs old are rejected as stale (not acked)."""


class Intake:
    def __init__(
        self,
        device: str,
        *,
        report: ErrorReporter,
        accounting: Accounting,
        courier: Courier,
        merges: MergeBuffer,
        queue: WorkQueue,
        dedup: Dedup | None = None,
    ) -> None:
        self.device = device
        self.report = report
        self.accounting = accounting
        self.courier = courier
        self.merges = merges
        self.queue = queue
        self.dedup = dedup or Dedup()
        self._lock = threading.Lock()
        self._plan: Plan | None = None
        self._seats: list[Seat] = []
        self._early: deque[tuple[str, Envelope]] = deque(maxlen=256)  # fan-outs of newer plans

    # --- the plan -----------------------------------------------------------------------------
    @property
    def plan(self) -> Plan | None:
        with self._lock:
            return self._plan

    @property
    def seats(self) -> list[Seat]:
        with self._lock:
            return list(self._seats)

    def set_plan(self, plan: Plan) -> None:
        with self._lock:
            self._plan = plan
            self._seats = seats_for(plan, self.device)

    def replay_early(self) -> None:
        """Take the fan-outs that waited for the plan we now have."""
        with self._lock:
            epoch = self._plan.epoch if self._plan else 0
            ready = [e for e in self._early if e[1].header.epoch <= epoch]
            for item in ready:
                self._early.remove(item)
        for topic, env in ready:
            self._take_fanout(topic, env, early_ok=False)

    # --- handlers -----------------------------------------------------------------------------
    def on_task(self, msg: Received) -> None:
        env = self._envelope(msg)
        if env is None or self._duplicate(env):
            return
        h = env.header
        if h.shard is not None:
            self._on_partial(msg.topic, env)
            return
        up = (UpstreamAck(h.sender, Ack(h.job, h.stage, None, h.attempt, self.device)),)
        self._enqueue(Work("task", h, env.tensors, time.time(), msg.topic, upstream=up))

    def on_fanout(self, msg: Received) -> None:
        env = self._envelope(msg)
        if env is not None:
            self._take_fanout(msg.topic, env, early_ok=True)

    # --- helpers --------------------------------------------------------------------------------
    def _envelope(self, msg: Received) -> Envelope | None:
        try:
            env = decode_envelope(msg.payload)
        except DecodeError as exc:
            self.report(msg.topic, error_kind(exc), str(exc))
            return None
        plan, h = self.plan, env.header
        if plan is not None and h.epoch + STALE_EPOCH_LAG < plan.epoch:
            self.report(
                msg.topic,
                "stale",
                f"job {h.job}: epoch {h.epoch} is more than "
                f"{STALE_EPOCH_LAG} behind plan epoch {plan.epoch}; not acked",
            )
            return None
        if plan is not None and h.stage >= len(plan.stages) + (h.shard is not None):
            self.report(msg.topic, "validation", f"job {h.job}: no stage {h.stage} in the plan")
            return None
        return env

    def _duplicate(self, env: Envelope) -> bool:
        h = env.header
        log.debug(
            "%s: got %s stage %d shard %s attempt %d from %s",
            self.device,
            h.job,
            h.stage,
            h.shard,
            h.attempt,
            h.sender,
        )
        if self.dedup.seen((h.job, h.stage, h.shard, h.attempt, h.sender)):
            self.accounting.count("duplicates")
            return True
        return False

    def _on_partial(self, topic: str, env: Envelope) -> None:
        h = env.header
        try:
            check_partial(env)
            status, merge = self.merges.add(Partial(env, time.monotonic()))
        except DecodeError as exc:
            self.report(topic, error_kind(exc), f"job {h.job}: {exc}")
            return
        if status == "late":  # merged and passed on already: release the holder now
            self.courier.ack(h.sender, Ack(h.job, h.stage, h.shard, h.attempt, self.device))
        elif status == "complete":
            work = Work("merge", h, (), time.time(), topic, merge=merge)
            if not self.queue.offer(work, force=True):
                log.warning("%s: queue full, merge of %s waits for a re-send", self.device, h.job)

    def _take_fanout(self, topic: str, env: Envelope, *, early_ok: bool) -> None:
        h = env.header
        if h.layout is None or h.merge_to is None or h.shard is not None:
            self.report(topic, "validation", f"job {h.job}: fan-out without layout/merger")
            return
        with self._lock:
            mine = [s for s in self._seats if s.stage.index == h.stage and s.shard is not None]
            newer = self._plan is not None and h.epoch > self._plan.epoch
            held = any(s.stage.index == h.stage for s in self._seats)
            fits = bool(mine) and all(s.layout == h.layout for s in mine)
            if not held and not newer:
                return  # a fan-out for the other shard holders
            if not fits and newer and early_ok:
                self._early.append((topic, env))  # its plan is on the way: wait for it
                return
        if not fits:
            self.report(
                topic,
                "stale",
                f"job {h.job}: layout {h.layout} of epoch {h.epoch} is "
                f"not this device's split of stage {h.stage}; not acked",
            )
            return
        if self._duplicate(env):
            return
        for seat in mine:
            self._enqueue(Work("shard", h, env.tensors, time.time(), topic, shard=seat.shard))

    def _enqueue(self, work: Work) -> None:
        if not self.queue.offer(work):
            self.accounting.count("accepted")  # and dropped at once
            h = work.header
            shard_ack = UpstreamAck(h.sender, Ack(h.job, h.stage, None, h.attempt, self.device))
            upstream = (shard_ack,) if work.kind == "shard" else work.upstream
            self.courier.drop(h, "backpressure", f"queue of {self.device} full", upstream)
