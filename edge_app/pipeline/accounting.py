"""Per-process accounting counters, published as :class:`~edge_app.messages.schemas.Metrics`."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from edge_app.messages.codec import Header, TraceEntry
from edge_app.messages.schemas import (
    DropReason,
    ErrorKind,
    ErrorReport,
    JobOutcome,
    Metrics,
    Role,
    StageTiming,
    encode,
)

log = logging.getLogger(__name__)


class Accounting:
    """Thread-safe counters: accepted, completed, dropped by reason, re-sent, errors, duplicates."""

    def __init__(self, device: str, role: Role) -> None:
        self.device = device
        self.role = role
        self._lock = threading.Lock()
        self.accepted = 0
        self.completed = 0
        self.dropped: Counter[DropReason] = Counter()
        self.resent = 0
        self.errors = 0
        self.duplicates = 0

    def count(self, what: str, n: int = 1) -> None:
        """Add ``n`` to ``accepted``, ``completed``, ``resent``, ``errors`` or ``duplicates``."""
        if what not in ("accepted", "completed", "resent", "errors", "duplicates"):
            raise ValueError(f"unknown counter {what!r}")
        with self._lock:
            setattr(self, what, getattr(self, what) + n)

    def drop(self, reason: DropReason) -> None:
        with self._lock:
            self.dropped[reason] += 1

    def metrics(self) -> Metrics:
        with self._lock:
            return Metrics(
                device=self.device,
                role=self.role,
                ts=time.time(),
                accepted=self.accepted,
                completed=self.completed,
                dropped=dict(self.dropped),
                resent=self.resent,
                errors=self.errors,
                duplicates=self.duplicates,
            )


def stage_timings(trace: tuple[TraceEntry, ...]) -> list[StageTiming]:
    """The per-stage breakdown of a job for its :class:`JobOutcome`."""
    return [
        StageTiming(
            stage=stage, shard=shard, device=device, queue_wait_s=q, compute_s=c, transfer_s=t
        )
        for stage, shard, device, q, c, t in trace[:256]
    ]


def dropped_outcome(h: Header, reason: DropReason, detail: str, model: str) -> JobOutcome:
    """The terminal ``dropped`` outcome of the job ``h`` (a codec Header)."""
    now = time.time()
    return JobOutcome(
        job=h.job,
        sensor=h.sensor,
        seq=h.seq,
        status="dropped",
        reason=reason,
        detail=detail[:2048],
        model=model,
        created_ts=h.created,
        done_ts=now,
        latency_s=max(0.0, now - h.created),
        epoch=h.epoch,
        stages=stage_timings(h.trace),
    )


def transfer_time(created: float, trace: tuple[TraceEntry, ...], received: float) -> float:
    """Time the last hop spent on the wire, estimated without a send timestamp.

    The previous holder published at about ``created + sum(queue + compute + transfer)`` of the
    trace so far; the difference to our receive time is the transfer (clocks synced by NTP on a
    fleet, identical on one machine).
    """
    per_stage: dict[int, float] = {}
    for stage, _, _, q, c, t in trace:  # shards of one stage ran in parallel: take the slowest
        per_stage[stage] = max(per_stage.get(stage, 0.0), q + c + t)
    published = created + sum(per_stage.values())
    return max(0.0, received - published)


class ErrorReporter:
    """A rejected message: a counter, a log line and an ErrorReport on ``error/<device>``.

    Rate-limited (``max_per_s`` reports and log lines a second; the counter counts them all), so
    a flood of garbage cannot turn into a flood of reports.
    """

    def __init__(
        self,
        publish: Callable[[bytes], None],
        device: str,
        accounting: Accounting,
        max_per_s: int = 50,
    ) -> None:
        self.publish = publish
        self.device = device
        self.accounting = accounting
        self.max_per_s = max_per_s
        self._lock = threading.Lock()
        self._second = 0.0
        self._n = 0

    def __call__(self, topic: str, kind: ErrorKind, detail: str) -> None:
        self.accounting.count("errors")
        with self._lock:
            now = time.monotonic()
            if now - self._second >= 1.0:
                self._second, self._n = now, 0
            self._n += 1
            if self._n > self.max_per_s:
                return
        log.warning("%s: rejected message on %s (%s): %s", self.device, topic, kind, detail)
        report = ErrorReport(
            device=self.device, ts=time.time(), topic=topic[:256], kind=kind, detail=detail[:2048]
        )
        self.publish(encode(report))
