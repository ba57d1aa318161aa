"""Make a worker on this host behave like a profiled device.

* :meth:`Emulator.hook` is the worker's compute hook: after the real stage ran, it sleeps until
  the job has taken what the profile predicts for that stage (or shard) on the device, divided by
  the time scale. If the host was slower than that, nothing can be padded: the overrun is
  counted and logged (the emulation is then not faithful).
* :class:`PacedTransport` wraps the worker's transport: data messages (``task/...`` and
  ``fanout/...``) leave one at a time at the profile's link rate (times the time scale), from a
  sender thread, so compute goes on while the link is busy; control messages pass at once.
* :meth:`Emulator.hardware` and :attr:`Emulator.speed` are what the heartbeat reports: the
  profile's name, its memory (less what the seats of the plan hold), and its speed relative to
  the planner's reference device.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from edge_app.emulation.profiles import DeviceProfile, Link, link_of
from edge_app.emulation.views import memory_available, speed_of
from edge_app.emulation.workload import Workload
from edge_app.errors import DecodeError, WireError
from edge_app.messages.codec import decode_envelope
from edge_app.messages.schemas import Hardware, Plan
from edge_app.messages.topics import Topics
from edge_app.pipeline.stages import SeatKey
from edge_app.transport.base import Handler, Transport

log = logging.getLogger(__name__)

OVERRUN_SLACK_S = 0.002  # a tiny stage (softmax) may take a few host microseconds too long
BACK_TO_BACK_S = 0.02  # a job starting this soon after the previous one is taken to follow it
LINK_QUEUE = 256  # messages waiting for the emulated link; beyond that publish blocks


class Emulator:
    def __init__(
        self,
        profile: DeviceProfile,
        timing: Workload,
        *,
        time_scale: float = 1.0,
        reference_s: float | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.profile = profile
        self.timing = timing
        self.time_scale = time_scale
        ref = timing.profile.reference_s if reference_s is None else reference_s
        self.speed = speed_of(profile, timing, ref) * time_scale
        self.device = ""
        self.plan_source: Callable[[], Plan | None] = lambda: None
        self.busy_s = 0.0  # emulated seconds of compute so far (for utilization and energy)
        self._free_at = 0.0  # when the emulated device finishes its current job (monotonic)
        self.overruns = 0  # jobs the host ran more than OVERRUN_SLACK_S slower than emulated
        self.overrun_s = 0.0  # total seconds the host ran over the emulated times
        self.jobs = 0
        self._lock = threading.Lock()

    def bind(self, device: str, plan_source: Callable[[], Plan | None]) -> None:
        """Tell the emulator whose seats it pads (the worker's id and its current plan)."""
        self.device, self.plan_source = device, plan_source

    def target_s(self, key: SeatKey) -> float:
        """Seconds the profiled device takes for seat ``key`` (scaled)."""
        stage, shard = key
        share = 1.0
        plan = self.plan_source()
        if shard is not None and plan is not None and stage < len(plan.stages):
            seats = plan.stages[stage].shards
            rows = max((s.hi for s in seats), default=0)
            for s in seats:
                if s.index == shard and rows:
                    share = (s.hi - s.lo) / rows
        return self.timing.stages[stage].seconds(self.profile, share) / self.time_scale

    def hook(self, key: SeatKey, seconds: float) -> None:
        """The worker's compute hook: pad this job's service time to the profile's.

        The emulated device is a server on a virtual clock: a job that starts less than
        ``BACK_TO_BACK_S`` after the previous one ended is taken to follow it directly, so the
        host's own per-job overheads (routing, encoding, waking from sleep on a loaded host)
        are absorbed into the emulated service time instead of adding to it.
        """
        target = self.target_s(key)
        now = time.monotonic()
        real_start = now - seconds
        with self._lock:
            self.jobs += 1
            self.busy_s += target
            gap = real_start - self._free_at
            start = self._free_at if 0.0 <= gap < BACK_TO_BACK_S else real_start
            finish = start + target
            self._free_at = max(finish, now)
            late = now - finish
            if late > 0:
                self.overrun_s += late
            if late > OVERRUN_SLACK_S:
                self.overruns += 1
            n = self.overruns
        if late < 0:
            time.sleep(-late)
        elif late > OVERRUN_SLACK_S and (n in (1, 10, 100) or n % 1000 == 0):
            log.warning(
                "%s: seat %s ended %.1f ms later than on the emulated device (host compute "
                "%.1f ms, emulated %.1f ms; %d overruns so far)",
                self.device,
                key,
                late * 1e3,
                seconds * 1e3,
                target * 1e3,
                n,
            )

    def hardware(self) -> Hardware:
        available = memory_available(self.profile, self.timing, self.plan_source(), self.device)
        return Hardware(
            cpu_model=self.profile.description[:256],
            cores=4,
            memory_total=self.profile.memory_bytes,
            memory_available=available,
            emulated=self.profile.name,
        )

    def link(self) -> Link:
        return link_of(self.profile)

    def wrap(
        self, transport: Transport, topics: Topics, *, bytes_of: bool = False
    ) -> PacedTransport:
        """``transport`` with sends paced at this profile's link rate (see PacedTransport)."""
        rate = self.link().bytes_per_s * self.time_scale
        return PacedTransport(transport, topics, rate, self.timing if bytes_of else None)


class PacedTransport:
    """A Transport whose data messages leave serially at ``bytes_per_s``.

    With ``timing`` set, a message is paced by the bytes the timing model would send for it
    (decoded from its header: a stage's input, or a shard's share of a stage's output) instead of
    its own length: a surrogate model's small tensors travel as long as the real ones would.
    """

    def __init__(
        self,
        inner: Transport,
        topics: Topics,
        bytes_per_s: float,
        timing: Workload | None = None,
    ) -> None:
        self.inner = inner
        self.topics = topics
        self.bytes_per_s = bytes_per_s
        self.timing = timing
        self.sent_bytes = 0.0
        self.busy_s = 0.0
        self._queue: deque[tuple[str, bytes, int, bool]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._sender, name="emulated-link", daemon=True)
        self._thread.start()

    # --- the Transport protocol ---------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.inner.connected

    def start(self) -> None:
        self.inner.start()

    def stop(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)
        self.inner.stop()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        if not self._is_data(topic):
            self.inner.publish(topic, payload, qos=qos, retain=retain)
            return
        with self._cond:
            while len(self._queue) >= LINK_QUEUE and not self._closed:
                self._cond.wait(0.1)
            self._queue.append((topic, payload, qos, retain))
            self._cond.notify_all()

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        self.inner.subscribe(topic_filter, handler, qos)

    def unsubscribe(self, topic_filter: str) -> None:
        self.inner.unsubscribe(topic_filter)

    def set_will(self, topic: str, payload: bytes, retain: bool = True) -> None:
        self.inner.set_will(topic, payload, retain)

    def on_connect(self, callback: Callable[[], None]) -> None:
        self.inner.on_connect(callback)

    # --- the link -----------------------------------------------------------------------------
    def _is_data(self, topic: str) -> bool:
        try:
            kind = self.topics.parse(topic).kind
        except WireError:  # not one of ours: not paced
            return False
        return kind in ("task", "fanout")

    def wire_bytes(self, payload: bytes) -> float:
        if self.timing is None:
            return float(len(payload))
        try:
            h = decode_envelope(payload).header
        except DecodeError:
            return float(len(payload))
        if h.stage >= len(self.timing.stages):
            return float(len(payload))
        sw = self.timing.stages[h.stage]
        if h.shard is None or h.bounds is None or not h.layout:
            return float(sw.input_bytes)
        rows = h.layout[-1] - h.layout[0]
        return sw.output_bytes * (h.bounds[1] - h.bounds[0]) / rows if rows else 0.0

    def _sender(self) -> None:
        free_at = time.monotonic()
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait(0.2)
                if not self._queue:
                    return
                topic, payload, qos, retain = self._queue.popleft()
                self._cond.notify_all()
            took = self.wire_bytes(payload) / self.bytes_per_s
            free_at = max(free_at, time.monotonic()) + took
            delay = free_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.sent_bytes += len(payload)
            self.busy_s += took
            try:
                self.inner.publish(topic, payload, qos=qos, retain=retain)
            except Exception as exc:  # the link goes on; the courier re-sends on ack timeout
                log.warning("emulated link: publish on %s failed: %s", topic, exc)


def emulator_for(
    profile_name: str, model_bytes: bytes, model_name: str, *, time_scale: float = 1.0
) -> Emulator:
    """The emulator of ``profile_name`` for a worker running this model (``--emulate``).

    Checks once, against the host's measured speed, that the host can run each stage faster
    than the emulated device: otherwise the padding cannot hide the host and a warning says so.
    """
    from edge_app.emulation.host import host_rates
    from edge_app.emulation.profiles import get_profile
    from edge_app.emulation.workload import workload_from_model

    profile = get_profile(profile_name)
    workload = workload_from_model(model_bytes, model_name)
    emulator = Emulator(profile, workload, time_scale=time_scale)
    rates = host_rates()
    rel = rates.speed_vs_host(profile)
    host_s = workload.total.conv_macs / rates.conv_macs_per_s
    host_s += workload.total.fc_bytes / rates.fc_weight_bytes_per_s
    emulated_s = workload.seconds(profile) / time_scale
    log.info(
        "emulating %s (conv %.3g x, fc %.3g x this host): one %s inference %.3f s emulated, "
        "about %.3f s of real compute",
        profile_name,
        rel["conv"],
        rel["fc"],
        model_name,
        emulated_s,
        host_s,
    )
    if host_s > 0.8 * emulated_s:
        log.warning(
            "this host needs about %.3f s per inference, close to or above the emulated %.3f s:"
            " the emulation will be slower than the device; lower the time scale",
            host_s,
            emulated_s,
        )
    return emulator
