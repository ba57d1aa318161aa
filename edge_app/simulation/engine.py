"""The discrete-event core: devices with a FIFO compute server, a serial uplink and a courier.

It follows the worker's data path (``edge_app.pipeline.engine``) and custody protocol: a device
runs a job through every consecutive stage it holds as a replica, then routes it with the real
:class:`~edge_app.pipeline.routing.Router` (weighted round-robin, in-flight window per receiver)
and holds it until the receiver acks; the receiver acks once its own output is sent (or the job
is done). A sharded stage gets one fan-out message; each holder sends its partial to the merger,
which runs on once it has all of them; the fan-out is acked (by the first holder whose partial
the merger acked) only once the merged output has been passed on, and only then does its sender
ack its own upstream (``Courier._send_routed``). Sends are serialized on the sender's uplink at
its link rate; acks and control messages take no time. No failures, deadlines or queue limits.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from edge_app.messages.schemas import Plan
from edge_app.pipeline.routing import FanoutRoute, NoRoute, Router, TaskRoute

Key = tuple[int, int, int | None]  # (job, stage, shard)
Ack = tuple[str, Key]  # (to, key)


@dataclass
class Link:
    bytes_per_s: float
    free_at: float = 0.0
    busy_s: float = 0.0

    def send(self, now: float, nbytes: float) -> float:
        """When a message of ``nbytes`` queued now has been transmitted."""
        start = max(now, self.free_at)
        took = nbytes / self.bytes_per_s if self.bytes_per_s > 0 else 0.0
        self.free_at = start + took
        self.busy_s += took
        return self.free_at


@dataclass
class Item:
    kind: str  # "task" | "shard" | "merge"
    job: int
    stage: int
    upstream: tuple[Ack, ...]
    shard: int | None = None
    share: float = 1.0
    merge_to: str = ""


@dataclass
class Node:
    """A device (or the sensor): queue, compute server, courier and uplink."""

    id: str
    link: Link
    window: int
    capacity: int = 1_000_000
    queue: deque[Item] = field(default_factory=deque)
    busy: bool = False
    busy_s: float = 0.0
    held: dict[Key, tuple[frozenset[str], tuple[Ack, ...]]] = field(default_factory=dict)
    inflight: Counter[str] = field(default_factory=Counter)
    parked: deque[tuple[int, int, tuple[Ack, ...]]] = field(default_factory=deque)
    merges: dict[tuple[int, int], list[str]] = field(default_factory=dict)
    router: Router = field(init=False)

    def __post_init__(self) -> None:
        self.router = Router(self.window)


class Simulation:
    """Runs jobs through ``plan``. ``stage_time(device, stage, share)`` and ``bytes_of(stage,
    share)`` (the bytes of stage's input, or of a ``share`` partial of its output) come from the
    caller, so this module knows nothing of profiles."""

    def __init__(
        self,
        plan: Plan,
        *,
        stage_time: Callable[[str, int, float], float],
        input_bytes: Callable[[int], float],
        partial_bytes: Callable[[int, float], float],
        links: dict[str, float],
        window: int = 4,
    ) -> None:
        self.plan = plan
        self.n_stages = len(plan.stages)
        self.stage_time = stage_time
        self.input_bytes = input_bytes
        self.partial_bytes = partial_bytes
        self.nodes = {d: Node(d, Link(rate), window) for d, rate in links.items()}
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.created: dict[int, float] = {}
        self.done: dict[int, float] = {}
        self.on_done: Callable[[int], None] | None = None
        self.on_ack: Callable[[str], None] | None = None
        self._replica_sets = {sp.stage.index: {r.device for r in sp.replicas} for sp in plan.stages}

    # --- the event loop ---------------------------------------------------------------------
    def at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._seq), fn))

    def run(self, until_done: int, max_time: float = 1e9) -> None:
        while self._events and len(self.done) < until_done:
            when, _, fn = heapq.heappop(self._events)
            if when > max_time:
                break
            self.now = when
            fn()

    # --- sources ----------------------------------------------------------------------------
    def in_flight(self, source: str) -> int:
        node = self.nodes[source]
        return len(node.held) + len(node.parked)

    def submit(self, source: str, job: int) -> None:
        """A new job published by ``source`` (its courier routes and holds it)."""
        self.created[job] = self.now
        self._forward(self.nodes[source], job, 0, ())

    # --- couriers ---------------------------------------------------------------------------
    def _forward(self, node: Node, job: int, stage: int, upstream: tuple[Ack, ...]) -> None:
        node.parked.append((job, stage, upstream))
        self._pump(node)

    def _pump(self, node: Node) -> None:
        keep: deque[tuple[int, int, tuple[Ack, ...]]] = deque()
        while node.parked:
            job, stage, upstream = node.parked.popleft()
            route = node.router.route(self.plan, stage, inflight=node.inflight)
            if isinstance(route, NoRoute):
                keep.append((job, stage, upstream))
                continue
            # As the courier: a fan-out is passed on only once its merge is done, so the
            # upstream acks wait for the fan-out's ack; a task's go at once.
            fanout = isinstance(route, FanoutRoute)
            self._hold(node, (job, stage, None), route.receivers, upstream if fanout else ())
            self._send(node, job, stage, route)
            if not fanout:
                self._acks(upstream)
        node.parked = keep

    def _hold(self, node: Node, key: Key, receivers: frozenset[str], up: tuple[Ack, ...]) -> None:
        node.held[key] = (receivers, up)
        node.inflight.update(receivers)

    def _acks(self, acks: tuple[Ack, ...]) -> None:
        for to, key in acks:
            node = self.nodes[to]
            got = node.held.pop(key, None)
            if got is None:
                continue
            receivers, up = got
            node.inflight.subtract(receivers)
            self._acks(up)
            self._pump(node)
            if self.on_ack is not None:
                self.on_ack(to)

    def _send(self, node: Node, job: int, stage: int, route: TaskRoute | FanoutRoute) -> None:
        arrive = node.link.send(self.now, self.input_bytes(stage))
        up: tuple[Ack, ...] = ((node.id, (job, stage, None)),)
        if isinstance(route, TaskRoute):
            item = Item("task", job, stage, up)
            self.at(arrive, lambda: self._arrive(route.device, item))
            return
        rows = route.layout[-1] - route.layout[0]
        for i, holder in enumerate(route.holders):
            share = (route.layout[i + 1] - route.layout[i]) / rows
            item = Item("shard", job, stage, up, shard=i, share=share, merge_to=route.merge_to)
            self.at(arrive, lambda h=holder, it=item: self._arrive(h, it))  # type: ignore[misc]

    # --- devices ----------------------------------------------------------------------------
    def _arrive(self, device: str, item: Item) -> None:
        node = self.nodes[device]
        node.queue.append(item)
        self._start(node)

    def _start(self, node: Node) -> None:
        if node.busy or not node.queue:
            return
        item = _next_item(node.queue)
        seconds, last = self._service(node.id, item)
        node.busy = True
        node.busy_s += seconds
        self.at(self.now + seconds, lambda: self._finish(node, item, last))

    def _service(self, device: str, item: Item) -> tuple[float, int]:
        """Compute seconds of ``item`` here and the first stage it does not run here."""
        if item.kind == "shard":
            return self.stage_time(device, item.stage, item.share), item.stage + 1
        stage = item.stage + (1 if item.kind == "merge" else 0)
        seconds = 0.0
        while stage < self.n_stages and device in self._replica_sets[stage]:
            seconds += self.stage_time(device, stage, 1.0)
            stage += 1
        return seconds, stage

    def _finish(self, node: Node, item: Item, stage: int) -> None:
        node.busy = False
        if item.kind == "shard":
            assert item.shard is not None
            key: Key = (item.job, item.stage, item.shard)
            self._hold(node, key, frozenset((item.merge_to,)), item.upstream)
            arrive = node.link.send(self.now, self.partial_bytes(item.stage, item.share))
            self.at(arrive, lambda: self._partial(item.merge_to, item, node.id))
        elif stage >= self.n_stages:
            self.done[item.job] = self.now
            self._acks(item.upstream)
            if self.on_done is not None:
                self.on_done(item.job)
        else:
            self._forward(node, item.job, stage, item.upstream)
        self._start(node)

    def _partial(self, merger: str, item: Item, sender: str) -> None:
        node = self.nodes[merger]
        k = len(self.plan.stages[item.stage].shards)
        got = node.merges.setdefault((item.job, item.stage), [])
        got.append(sender)
        if len(got) < k:
            return
        del node.merges[(item.job, item.stage)]
        acks = tuple(
            (s, (item.job, item.stage, i)) for i, s in enumerate(self._holders(item.stage))
        )
        node.queue.append(Item("merge", item.job, item.stage, acks))
        self._start(node)

    def _holders(self, stage: int) -> list[str]:
        seats = sorted(self.plan.stages[stage].shards, key=lambda s: s.index)
        return [s.device for s in seats]


def _next_item(queue: deque[Item]) -> Item:
    """Shard and merge work before whole-frame work, as the worker's queue does: a job's other
    shards and its merger wait on it, while a frame of convolutions only adds to its own time."""
    for i, item in enumerate(queue):
        if item.kind != "task":
            del queue[i]
            return item
    return queue.popleft()
