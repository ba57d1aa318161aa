"""The result consumer: every job's terminal outcome, counted once.

Delivery is at-least-once, so the same :class:`JobOutcome` (or a result and a late drop of a
re-sent copy) may arrive twice: the sink keeps the FIRST terminal state of each job id in a
bounded LRU and counts the rest as duplicates. With the publishers' counts, at rest
``accepted == ok + dropped`` (sum over reasons).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Collection

from edge_app.errors import WireError
from edge_app.messages.schemas import DropReason, JobOutcome, decode
from edge_app.messages.topics import Topics
from edge_app.transport.base import Received, Transport

log = logging.getLogger(__name__)

OutcomeCallback = Callable[[JobOutcome], None]


class OutcomeSink:
    """Subscribes ``result/<sensor>`` (or ``result/+``); de-duplicates; counts; lets you wait."""

    def __init__(
        self,
        transport: Transport,
        topics: Topics,
        sensor: str | None = None,
        *,
        capacity: int = 4096,
        recent: int = 256,
        on_outcome: OutcomeCallback | None = None,
    ) -> None:
        if capacity < 1 or recent < 1:
            raise ValueError("capacity and recent must be >= 1")
        self.transport = transport
        self.topics = topics
        self.topic_filter = topics.result(sensor) if sensor else topics.all("result")
        self.capacity = capacity
        self.on_outcome = on_outcome
        self._cond = threading.Condition()
        self._seen: OrderedDict[str, JobOutcome] = OrderedDict()
        self._recent: deque[JobOutcome] = deque(maxlen=recent)
        self.ok = 0
        self.dropped: Counter[DropReason] = Counter()
        self.duplicates = 0
        self.errors = 0

    def attach(self) -> None:
        self.transport.subscribe(self.topic_filter, self._on_result)

    def detach(self) -> None:
        self.transport.unsubscribe(self.topic_filter)

    # --- counts ---------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        """Distinct outcomes counted (results and drops)."""
        with self._cond:  # re-entrant: wait_total reads this while holding it
            return self.ok + sum(self.dropped.values())

    def counts(self) -> dict[str, object]:
        with self._cond:
            return {
                "ok": self.ok,
                "dropped": dict(self.dropped),
                "duplicates": self.duplicates,
                "errors": self.errors,
            }

    def recent(self) -> list[JobOutcome]:
        with self._cond:
            return list(self._recent)

    def get(self, job: str) -> JobOutcome | None:
        with self._cond:
            return self._seen.get(job)

    # --- waiting ------------------------------------------------------------------------------
    def wait_for(self, jobs: Collection[str], timeout: float) -> dict[str, JobOutcome]:
        """The outcomes of ``jobs`` that arrived within ``timeout`` (all of them if in time)."""
        want = set(jobs)
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                got = {j: self._seen[j] for j in want if j in self._seen}
                remaining = end - time.monotonic()
                if len(got) == len(want) or remaining <= 0:
                    return got
                self._cond.wait(remaining)

    def wait_total(self, n: int, timeout: float) -> bool:
        """Wait until ``n`` distinct outcomes were counted."""
        end = time.monotonic() + timeout
        with self._cond:
            while self.total < n:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    # --- the handler (network thread) ---------------------------------------------------------
    def _on_result(self, msg: Received) -> None:
        try:
            outcome = decode(JobOutcome, msg.payload)
            parsed = self.topics.parse(msg.topic)
        except WireError as exc:  # a bad payload, or a topic outside our layout
            self._reject(msg.topic, str(exc))
            return
        if parsed.ident != outcome.sensor:
            self._reject(msg.topic, f"result for sensor {outcome.sensor}")
            return
        if not self._record(outcome):
            return
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def _reject(self, topic: str, why: str) -> None:
        """Count a bad result; log the first ones and then every 1000th (no log flood)."""
        self.errors += 1
        if self.errors <= 20 or self.errors % 1000 == 0:
            log.warning("rejected result on %s (%d so far): %s", topic, self.errors, why)

    def _record(self, outcome: JobOutcome) -> bool:
        with self._cond:
            if outcome.job in self._seen:
                self._seen.move_to_end(outcome.job)
                self.duplicates += 1
                return False
            self._seen[outcome.job] = outcome
            if len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
            self._recent.append(outcome)
            if outcome.status == "ok":
                self.ok += 1
            else:
                self.dropped[outcome.reason or "error"] += 1
            self._cond.notify_all()
            return True
