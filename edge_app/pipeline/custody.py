"""What a sender holds until its receiver acknowledges it (the custody table).

Every data envelope stays in its sender's custody until the receiver acks it, and a receiver acks
only once its own output is published and in ITS custody (or the job reached a terminal state).
So some live process holds every job at every moment. The table is pure bookkeeping; the
:class:`~edge_app.pipeline.courier.Courier` does the I/O and decides the re-sends.

Keys are ``(job, stage, shard)``: the input of ``stage`` sent to a replica or to the fan-out topic
(``shard is None``), or shard ``shard``'s partial of ``stage`` sent to its merger. An ack of any
attempt releases the entry: whichever attempt got through, the job moved on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from edge_app.messages.codec import Ack, Header
from edge_app.pipeline.routing import Route

CustodyKey = tuple[str, int, int | None]
"""(job, stage, shard)"""

Trigger = Literal["deadline", "offline", "unseated", "timeout"]


@dataclass(frozen=True)
class UpstreamAck:
    """An ack this holder owes its own sender once the entry is released (deferred custody)."""

    to: str
    ack: Ack


@dataclass
class Entry:
    header: Header  # as last sent: attempt, epoch, sender, layout, merge_to
    tensors: tuple[tuple[str, np.ndarray[Any, Any]], ...]
    receivers: frozenset[str]
    sent_at: float  # monotonic time of the last send
    route: Route | None = None  # None: a partial sent straight to its merger
    upstream: tuple[UpstreamAck, ...] = ()
    sends: int = 1

    @property
    def key(self) -> CustodyKey:
        return key_of(self.header)


def key_of(header: Header) -> CustodyKey:
    return (header.job, header.stage, header.shard)


@dataclass
class CustodyTable:
    """Bounded table of held envelopes with in-flight counts per receiver (not thread-safe)."""

    capacity: int = 1024
    _entries: dict[CustodyKey, Entry] = field(default_factory=dict)
    # per stage, per receiver: windows are per stage, or a job held across consecutive sharded
    # stages (a fan-out waits for the next fan-out) could fill a receiver's window and wait on
    # itself
    _inflight: dict[int, Counter[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def full(self) -> bool:
        return len(self._entries) >= self.capacity

    def inflight(self, stage: int) -> Counter[str]:
        """Envelopes held per receiver for ``stage`` (a live view: do not modify)."""
        return self._inflight.get(stage) or Counter()

    def _count(self, entry: Entry, receivers: frozenset[str], sign: int) -> None:
        counts = self._inflight.setdefault(entry.header.stage, Counter())
        if sign > 0:
            counts.update(receivers)
            return
        counts.subtract(receivers)
        for device in receivers:
            if counts[device] <= 0:
                del counts[device]

    def add(self, entry: Entry) -> bool:
        """Hold ``entry``; False when the table is full or already holds that key."""
        if self.full or entry.key in self._entries:
            return False
        self._entries[entry.key] = entry
        self._count(entry, entry.receivers, +1)
        return True

    def get(self, key: CustodyKey) -> Entry | None:
        return self._entries.get(key)

    def remove(self, key: CustodyKey) -> Entry | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._count(entry, entry.receivers, -1)
        return entry

    def release(self, ack: Ack) -> Entry | None:
        """The entry acknowledged by ``ack`` (any attempt), removed; None if not held."""
        return self.remove((ack.job, ack.stage, ack.shard))

    def resent(
        self,
        entry: Entry,
        header: Header,
        receivers: frozenset[str],
        route: Route | None,
        now: float,
    ) -> None:
        """Record that ``entry`` went out again (new attempt, maybe new receivers)."""
        self._count(entry, entry.receivers, -1)
        entry.header, entry.receivers, entry.route = header, receivers, route
        entry.sent_at, entry.sends = now, entry.sends + 1
        self._count(entry, receivers, +1)

    def due(
        self,
        *,
        mono: float,
        wall: float,
        offline: Collection[str],
        seated: Any,
        ack_timeout_s: Callable[[Entry], float],
        deadline_grace_s: float,
    ) -> list[tuple[Entry, Trigger]]:
        """Entries that need action now, and why (the first reason that applies)."""
        out: list[tuple[Entry, Trigger]] = []
        for entry in self._entries.values():
            if wall > entry.header.deadline + deadline_grace_s:
                out.append((entry, "deadline"))
            elif any(d in offline for d in entry.receivers):
                out.append((entry, "offline"))
            elif entry.route is not None and not seated(entry.route):
                out.append((entry, "unseated"))
            elif mono - entry.sent_at > ack_timeout_s(entry):
                out.append((entry, "timeout"))
        return out


class Rtt:
    """Smoothed ack round-trip time and its variation (RFC 6298 style)."""

    def __init__(self) -> None:
        self.srtt = 0.0
        self.rttvar = 0.0
        self.samples = 0

    def add(self, sample: float) -> None:
        if self.samples == 0:
            self.srtt, self.rttvar = sample, sample / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
            self.srtt = 0.875 * self.srtt + 0.125 * sample
        self.samples += 1
