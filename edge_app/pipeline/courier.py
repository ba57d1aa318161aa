"""The sending side of the custody protocol: route, publish, hold until acked, re-send.

Used by workers for every hop and by the job publisher for stage 0. Thread-safe: the compute
thread forwards, the network thread delivers acks, plans and device status, a timer calls
:meth:`Courier.check`. Nothing is published while the lock is held (an in-memory bus delivers
synchronously, so publishing under the lock could deadlock two processes' locks).

Sending never blocks: without room (every seat's in-flight window full) or without a live seat,
a job is parked and goes out in order as soon as there is room; its upstream ack waits, so the
senders before us run out of window (back-pressure up to the sensor, which skips frames).
A replicated hop's upstream acks go out right after the publish; a fan-out's wait for the
fan-out's own ack (the merger published the merged output), because this holder may itself hold
a shard or be the merger: two holders know of every job at every moment.

Re-send rules (bounded by ``max_sends``): a receiver that went offline (its last will), that the
newest plan no longer seats, or whose ack does not come in time (a timeout per stage adapted to
the measured ack round-trip, as TCP's, between ``min_ack_timeout_s`` and ``ack_timeout_s``): the
holder re-sends with ``attempt + 1`` to a live seat of the NEWEST plan. Past ``deadline + grace``
it drops the job (reason ``deadline``); after ``max_sends`` sends, reason ``error``. A partial
sent to a merger that died is released silently: the fan-out sender re-sends the whole step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from edge_app.errors import EdgeAppError
from edge_app.messages.codec import Ack, Envelope, Header, encode_ack, encode_envelope
from edge_app.messages.schemas import DropReason, JobOutcome, Plan, encode
from edge_app.messages.topics import Topics
from edge_app.pipeline.accounting import Accounting, dropped_outcome
from edge_app.pipeline.custody import CustodyTable, Entry, Rtt, Trigger, UpstreamAck
from edge_app.pipeline.routing import FanoutRoute, NoRoute, Route, Router, TaskRoute, is_seated

log = logging.getLogger(__name__)

Tensors = tuple[tuple[str, np.ndarray[Any, Any]], ...]


class Publisher(Protocol):
    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None: ...


@dataclass(frozen=True)
class Parked:
    header: Header
    tensors: Tensors
    upstream: tuple[UpstreamAck, ...]


@dataclass(frozen=True)
class CourierConfig:
    window: int = 4  # in-flight envelopes per receiver
    capacity: int = 1024  # envelopes held at once
    ack_timeout_s: float = 10.0  # the most an ack may take (and the value before any sample)
    min_ack_timeout_s: float = 3.0  # the adaptive timeout never goes below this
    deadline_grace_s: float = 1.0
    max_sends: int = 5


Outgoing = list[tuple[str, bytes]]


class Courier:
    def __init__(
        self,
        transport: Publisher,
        topics: Topics,
        device: str,
        accounting: Accounting,
        *,
        config: CourierConfig = CourierConfig(),
        model_name: str = "",
    ) -> None:
        self.transport = transport
        self.topics = topics
        self.device = device
        self.accounting = accounting
        self.config = config
        self.model_name = model_name
        self.router = Router(config.window)
        self.table = CustodyTable(config.capacity)
        self.plan: Plan | None = None
        self.offline: set[str] = set()
        self._cond = threading.Condition(threading.RLock())
        self._closed = False
        self._parked: deque[Parked] = deque()
        self._rtt: dict[int, Rtt] = {}

    # --- state from the network ---------------------------------------------------------------
    def set_plan(self, plan: Plan) -> None:
        with self._cond:
            if self.plan is not None and plan.epoch <= self.plan.epoch:
                return
            self.plan = plan
            self._cond.notify_all()
        self.check()

    def set_online(self, device: str, online: bool) -> None:
        with self._cond:
            if online:
                self.offline.discard(device)
            else:
                self.offline.add(device)
            self._cond.notify_all()
        self.check()

    def on_ack(self, ack: Ack) -> bool:
        """Release what ``ack`` acknowledges; True if we held it."""
        with self._cond:
            entry = self.table.release(ack)
            if entry is not None and entry.sends == 1:  # Karn: only unambiguous samples
                self._rtt.setdefault(entry.header.stage, Rtt()).add(
                    time.monotonic() - entry.sent_at
                )
            log.debug(
                "ack %s stage %d shard %s from %s: %s",
                ack.job,
                ack.stage,
                ack.shard,
                ack.device,
                "held" if entry else "not held",
            )
            if entry is None:
                return False
            self._cond.notify_all()
            out = self._ack_messages(entry.upstream)
            if self._parked:  # room for a parked job
                out += self._pump()
        self._flush(out)
        return True

    def close(self) -> None:
        """Drop what is parked and every later send (reason ``shutdown``)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            out = self._pump()
        self._flush(out)

    # --- sending ------------------------------------------------------------------------------
    def forward(
        self, header: Header, tensors: Tensors, upstream: Iterable[UpstreamAck] = ()
    ) -> DropReason | None:
        """Route the input of ``header.stage`` and hold it; None when sent or parked.

        Never blocks: while every seat is busy (their windows full) or none is live, the job is
        parked, and sent in order as soon as room appears (an ack, a plan, a device back
        online, the timer). ``upstream`` is acked only once the job is really sent, so the
        senders before us run out of window: that is the pipeline's back-pressure. A parked job
        past its deadline is dropped (reason ``deadline``, or ``no_route`` if no seat was live).
        """
        item = Parked(header, tensors, tuple(upstream))
        with self._cond:
            if len(self._parked) >= self.config.capacity or self._closed:
                reason: DropReason = "shutdown" if self._closed else "backpressure"
                out = self._drop_messages(header, reason, "too many parked jobs", item.upstream)
            else:
                self._parked.append(item)
                out = self._pump()
                reason = None  # type: ignore[assignment]
        self._flush(out)
        return reason

    def _pump(self) -> Outgoing:
        """Send the parked jobs that have a route now, drop the expired ones (lock held)."""
        out: Outgoing = []
        keep: deque[Parked] = deque()
        now = time.time()
        blocked: dict[int, NoRoute] = {}  # stages without room in this pass
        for item in self._parked:
            stage = item.header.stage
            got = blocked.get(stage) or self._route(stage)
            if not isinstance(got, NoRoute):
                out += self._send_routed(item.header, item.tensors, got, item.upstream)
                continue
            blocked[stage] = got
            if now > item.header.deadline or self._closed:
                why: DropReason = "no_route" if got.reason == "no_route" else "deadline"
                why = "shutdown" if self._closed else why
                out += self._drop_messages(item.header, why, got.detail, item.upstream)
            else:
                keep.append(item)
        self._parked = keep
        return out

    def parked(self) -> int:
        with self._cond:
            return len(self._parked)

    def send_partial(
        self, header: Header, tensors: Tensors, upstream: Iterable[UpstreamAck]
    ) -> None:
        """Send a shard's partial to ``header.merge_to`` and hold it (acks upstream deferred)."""
        assert header.merge_to is not None
        upstream = tuple(upstream)
        with self._cond:
            old = self.table.remove((header.job, header.stage, header.shard))
            if old is not None:  # a re-sent fan-out: owe acks for both attempts
                upstream = (*old.upstream, *upstream)
                self.accounting.count("completed")  # the older unit lives on in the new entry
            entry = Entry(header, tensors, frozenset((header.merge_to,)), time.monotonic())
            entry.upstream = upstream
            if not self.table.add(entry):
                log.warning("custody table full: partial of %s not held", header.job)
        self._flush(
            [(self.topics.task(header.merge_to), encode_envelope(Envelope(header, tensors)))]
        )

    def ack(self, to: str, ack: Ack) -> None:
        self._flush(self._ack_messages((UpstreamAck(to, ack),)))

    def drop(
        self, header: Header, reason: DropReason, detail: str, upstream: Iterable[UpstreamAck] = ()
    ) -> None:
        """Publish the terminal ``dropped`` outcome of a job, then ack upstream."""
        self._flush(self._drop_messages(header, reason, detail, tuple(upstream)))

    def publish_outcome(self, outcome: JobOutcome, upstream: Iterable[UpstreamAck] = ()) -> None:
        """Publish a job's terminal outcome, then ack upstream."""
        msgs = [(self.topics.result(outcome.sensor), encode(outcome))]
        self._flush(msgs + self._ack_messages(upstream))

    # --- the timer ------------------------------------------------------------------------------
    def check(self) -> None:
        """Act on entries whose receiver died, lost its seat, timed out or whose job expired."""
        out: Outgoing = []
        with self._cond:
            plan = self.plan
            due = self.table.due(
                mono=time.monotonic(),
                wall=time.time(),
                offline=self.offline,
                seated=(lambda r: True) if plan is None else (lambda r: is_seated(plan, r)),
                ack_timeout_s=self._timeout,
                deadline_grace_s=self.config.deadline_grace_s,
            )
            for entry, trigger in due:
                out += self._act(entry, trigger)
            out += self._pump()
        self._flush(out)

    def _act(self, entry: Entry, trigger: Trigger) -> Outgoing:
        h = entry.header
        if trigger == "deadline":
            self.table.remove(entry.key)
            return self._drop_messages(h, "deadline", "no ack before the deadline", entry.upstream)
        if entry.route is None:  # a partial: retry the same merger, or let the fan-out sender act
            if trigger == "timeout" and entry.sends < self.config.max_sends:
                return self._resend_partial(entry)
            self.table.remove(entry.key)
            self.accounting.count("completed")  # handed back: the fan-out sender re-sends
            log.info("partial %s of %s released (%s)", h.shard, h.job, trigger)
            return []
        if entry.sends >= self.config.max_sends:
            self.table.remove(entry.key)
            detail = f"{entry.sends} sends of stage {h.stage} failed ({trigger})"
            return self._drop_messages(h, "error", detail, entry.upstream)
        # offline devices are excluded anyway; after a timeout try another replica first
        tried = (
            entry.receivers if trigger == "timeout" and isinstance(entry.route, TaskRoute) else ()
        )
        got = self._route(h.stage, tried, resend=entry)
        if isinstance(got, NoRoute) and tried:
            got = self._route(h.stage, resend=entry)
        if isinstance(got, NoRoute):
            return []  # parked: retried on the next check, plan or status change
        log.info(
            "re-sending %s stage %d (%s) to %s", h.job, h.stage, trigger, sorted(got.receivers)
        )
        self.accounting.count("resent")
        header = self._header_for(h, got, attempt=h.attempt + 1)
        self.table.resent(entry, header, got.receivers, got, time.monotonic())
        return [(self._topic_for(got), encode_envelope(Envelope(header, entry.tensors)))]

    def _resend_partial(self, entry: Entry) -> Outgoing:
        self.accounting.count("resent")
        header = replace(entry.header, attempt=entry.header.attempt + 1)
        self.table.resent(entry, header, entry.receivers, None, time.monotonic())
        assert header.merge_to is not None
        return [
            (self.topics.task(header.merge_to), encode_envelope(Envelope(header, entry.tensors)))
        ]

    def _timeout(self, entry: Entry) -> float:
        """The ack timeout for ``entry``: adapted per stage to the measured ack round-trip (as
        TCP's RTO, between ``min_ack_timeout_s`` and ``ack_timeout_s``), doubled for every
        re-send of the entry (a loaded receiver is slow, not lost: back off)."""
        rtt = self._rtt.get(entry.header.stage)
        rto = self.config.ack_timeout_s
        if rtt is not None:
            rto = min(rto, max(self.config.min_ack_timeout_s, 2 * rtt.srtt + 4 * rtt.rttvar))
        return float(rto * 2 ** min(entry.sends - 1, 3))

    # --- helpers (called with the lock held) --------------------------------------------------
    def _route(
        self, stage: int, exclude: Iterable[str] = (), resend: Entry | None = None
    ) -> Route | NoRoute:
        """Route a new job, or re-route ``resend`` (its own seats do not count against it)."""
        if self.plan is None:
            return NoRoute("no_route", "no plan yet")
        inflight = self.table.inflight(stage)
        if resend is not None:
            inflight = inflight - Counter(resend.receivers)
        elif self.table.full:
            return NoRoute("full", "custody table full")
        return self.router.route(
            self.plan,
            stage,
            inflight=inflight,
            offline=self.offline,
            exclude=frozenset(exclude),
        )

    def _header_for(self, h: Header, route: Route, attempt: int) -> Header:
        assert self.plan is not None
        if isinstance(route, FanoutRoute):
            return replace(
                h,
                epoch=self.plan.epoch,
                attempt=attempt,
                sender=self.device,
                shard=None,
                bounds=None,
                layout=route.layout,
                merge_to=route.merge_to,
            )
        return replace(
            h,
            epoch=self.plan.epoch,
            attempt=attempt,
            sender=self.device,
            shard=None,
            bounds=None,
            layout=None,
            merge_to=None,
        )

    def _topic_for(self, route: Route) -> str:
        if isinstance(route, TaskRoute):
            return self.topics.task(route.device)
        return self.topics.fanout(route.stage)

    def _send_routed(
        self, h: Header, tensors: Tensors, route: Route, upstream: tuple[UpstreamAck, ...]
    ) -> Outgoing:
        fanout = isinstance(route, FanoutRoute)
        existing = self.table.get((h.job, h.stage, None))
        if existing is not None:  # a duplicate of a job we already passed on
            self.accounting.count("completed")
            if existing.route is not None and isinstance(existing.route, FanoutRoute):
                existing.upstream = (*existing.upstream, *upstream)
                return []
            return self._ack_messages(upstream)
        header = self._header_for(h, route, attempt=0)
        log.debug("send %s stage %d to %s", h.job, h.stage, sorted(route.receivers))
        entry = Entry(header, tensors, route.receivers, time.monotonic(), route=route)
        # A fan-out is not "passed on" until the merger published the merged output: this
        # holder may itself hold a shard or be the merger, so its own death must not lose the
        # job. Its upstream acks wait for the fan-out's ack (two holders at every moment).
        entry.upstream = upstream if fanout else ()
        self.table.add(entry)
        out = [(self._topic_for(route), encode_envelope(Envelope(header, tensors)))]
        return out if fanout else out + self._ack_messages(upstream)

    def _ack_messages(self, upstream: Iterable[UpstreamAck]) -> Outgoing:
        return [(self.topics.ack(u.to), encode_ack(u.ack)) for u in upstream]

    def _drop_messages(
        self, h: Header, reason: DropReason, detail: str, upstream: Iterable[UpstreamAck]
    ) -> Outgoing:
        self.accounting.drop(reason)
        log.info("dropping job %s at stage %d: %s (%s)", h.job, h.stage, reason, detail)
        outcome = dropped_outcome(h, reason, detail, self.model_name)
        return [(self.topics.result(h.sensor), encode(outcome)), *self._ack_messages(upstream)]

    def _flush(self, out: Outgoing) -> None:
        for topic, payload in out:
            try:
                self.transport.publish(topic, payload, qos=1)
            except EdgeAppError as exc:  # held entries are re-sent by check()
                log.warning("publish on %s failed: %s", topic, exc)

    # --- introspection --------------------------------------------------------------------------
    def held(self) -> int:
        with self._cond:
            return len(self.table)

    def drain(self, timeout_s: float, poll: Callable[[], None] | None = None) -> bool:
        """Wait until nothing is held (e.g. before a clean stop); True if drained."""
        end = time.monotonic() + timeout_s
        with self._cond:
            while (len(self.table) or self._parked) and time.monotonic() < end:
                self._cond.wait(timeout=0.05)
            return not len(self.table) and not self._parked
