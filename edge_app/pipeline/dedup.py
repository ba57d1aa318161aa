"""A bounded LRU of the data messages a worker has already taken in.

Delivery is at-least-once: the broker may deliver a QoS 1 message twice and a holder re-sends
after a timeout. A receiver remembers ``(job, stage, shard, attempt, sender)`` of what it took,
so an exact duplicate is not computed twice; a re-send (a new attempt) is a new message on
purpose, because the first may have been lost with a dead device. The sender is in the key:
when a holder dies, the job is re-sent from further upstream, and the messages of the new path
start again at attempt 0, from other senders.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

DedupKey = tuple[str, int, int | None, int, str]
"""(job, stage, shard, attempt, sender)"""


class Dedup:
    """Thread-safe bounded LRU: ``seen(key)`` records ``key`` and says if it was there before."""

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._keys: OrderedDict[DedupKey, None] = OrderedDict()
        self._lock = threading.Lock()

    def seen(self, key: DedupKey) -> bool:
        """True if ``key`` was recorded before (and refresh it); else record it, False."""
        with self._lock:
            if key in self._keys:
                self._keys.move_to_end(key)
                return True
            self._keys[key] = None
            if len(self._keys) > self.capacity:
                self._keys.popitem(last=False)
            return False

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)
