"""The sensor role: frames from a source become jobs for the fleet, in real time.

One capture thread reads the source at its own pace, stamps each frame at capture, prepares it
as the model card says (frames, or sliding clips for action models) and submits it through a
:class:`~edge_app.pipeline.jobs.JobPublisher`. When the fleet's in-flight window is full the job
is *skipped* and counted (a sensor never falls behind reality). A thumbnail goes out at most
once a second on ``thumb/<sensor>``, never on the data path. A live camera that fails is counted,
closed and reopened with exponential backoff; a file that fails ends the sensor with an error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from edge_app import __version__
from edge_app.config import FleetConfig
from edge_app.errors import ConfigError, EdgeAppError, SourceError
from edge_app.inference.card import ModelCard
from edge_app.messages.schemas import (
    DeviceState,
    ErrorReport,
    Heartbeat,
    JobOutcome,
    SensorHealth,
    encode,
    status_payload,
)
from edge_app.pipeline.health import hardware
from edge_app.pipeline.jobs import JobPublisher, PublisherOptions
from edge_app.roles.sink import OutcomeSink
from edge_app.sensors.preprocess import Preprocessor
from edge_app.sensors.sources import Frame, FrameSource
from edge_app.sensors.thumbnail import Thumbnailer
from edge_app.transport.base import Transport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SensorOptions:
    max_in_flight: int = 4  # jobs held at once; beyond that frames are skipped
    deadline_s: float | None = None  # None: the fleet config's
    backoff_s: tuple[float, float] = (0.5, 30.0)  # camera reopen: first and longest wait
    thumbnail_s: float = 1.0
    realtime: bool = True  # pace file sources at their frame rate
    spans: int = 1024  # job -> frame span records kept for reporting

    def __post_init__(self) -> None:
        # no room in the window: a file source would wait for room forever
        if self.max_in_flight < 1:
            raise ConfigError(f"jobs in flight must be at least 1, not {self.max_in_flight}")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise ConfigError(f"the job deadline must be positive, not {self.deadline_s}")


@dataclass(frozen=True)
class Report:
    """One job's outcome joined with the frames it covered (for ``--json`` and tests)."""

    outcome: JobOutcome
    first_frame: int
    last_frame: int
    truth: str | None


class FpsMeter:
    """Events per second over the last heartbeat interval."""

    def __init__(self) -> None:
        self._count, self._since = 0, time.monotonic()

    def tick(self) -> None:
        self._count += 1

    def read(self) -> float:
        now = time.monotonic()
        rate = self._count / max(1e-6, now - self._since)
        self._count, self._since = 0, now
        return rate


class Sensor:
    def __init__(
        self,
        transport: Transport,
        config: FleetConfig,
        sensor_id: str,
        source: FrameSource,
        card: ModelCard,
        *,
        options: SensorOptions = SensorOptions(),
        on_report: Callable[[Report], None] | None = None,
    ) -> None:
        self.transport, self.config, self.topics = transport, config, config.topics
        self.sensor_id, self.source, self.card, self.options = sensor_id, source, card, options
        self.on_report = on_report
        self.preprocess = Preprocessor(card)
        self.publisher = JobPublisher(
            transport,
            config,
            sensor_id,
            model_name=card.name,
            options=PublisherOptions(
                max_in_flight=options.max_in_flight, deadline_s=options.deadline_s
            ),
        )
        self.sink = OutcomeSink(transport, self.topics, sensor_id, on_outcome=self._on_outcome)
        self.thumbs = Thumbnailer(interval_s=options.thumbnail_s)
        self.captured, self.sent = FpsMeter(), FpsMeter()
        self.camera_errors = 0
        self.frames_read = 0
        self._spans: OrderedDict[str, tuple[int, int, str | None]] = OrderedDict()
        self._window: deque[Frame] = deque(maxlen=card.frames_per_clip or 1)
        self._stop = threading.Event()
        self._seq = 0

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        t = self.transport
        t.set_will(self.topics.status(self.sensor_id), self._status("offline"), retain=True)
        t.on_connect(self._online)
        self.publisher.attach()
        self.sink.attach()
        t.start()
        self._online()
        self.publisher.start()

    def request_stop(self) -> None:
        """Ask run() to return (safe from a signal handler)."""
        self._stop.set()

    def stop(self, drain_s: float = 5.0) -> None:
        self._stop.set()
        self.publisher.stop(drain_s=drain_s)
        self.sink.wait_total(self.publisher.accepted, timeout=drain_s)
        self.transport.publish(
            self.topics.status(self.sensor_id), self._status("offline"), retain=True
        )
        self.transport.stop()

    def _status(self, state: DeviceState) -> bytes:
        return status_payload(self.sensor_id, "sensor", state)

    def _online(self) -> None:
        self.transport.publish(
            self.topics.status(self.sensor_id), self._status("online"), retain=True
        )

    # --- the capture loop ---------------------------------------------------------------------
    def run(self, max_jobs: int | None = None) -> int:
        """Capture until the source ends, ``stop()`` or ``max_jobs`` accepted; returns exit code."""
        backoff = self.options.backoff_s[0]
        while not self._stop.is_set():
            try:
                self.source.open()
                self.preprocess.set_source_fps(self.source.media_fps)
                backoff = self.options.backoff_s[0]
                ended = self._capture(max_jobs)
                if ended:
                    return 0
            except SourceError as exc:
                self.source.close()
                if not self.source.live:
                    log.error("%s: %s", self.sensor_id, exc)
                    return 1
                self._camera_failed(exc)
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.options.backoff_s[1])
        return 0

    def _capture(self, max_jobs: int | None) -> bool:
        """Read frames until the end (True) or stop; SourceError propagates to run()."""
        interval = 1.0 / self.source.fps if self.options.realtime and self.source.fps else 0.0
        next_frame = time.monotonic()
        next_hb = time.monotonic()
        while not self._stop.is_set():
            if interval:
                delay = next_frame - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return True
                next_frame = max(next_frame + interval, time.monotonic() - interval)
            frame = self.source.read()
            if frame is None:
                self.source.close()
                return True
            self._handle(frame, paced=bool(interval) or self.source.live)
            if time.monotonic() >= next_hb:
                next_hb = time.monotonic() + self.config.heartbeat_s
                self._heartbeat()
            if max_jobs is not None and self.publisher.accepted >= max_jobs:
                return True
        return True

    def _handle(self, frame: Frame, paced: bool) -> None:
        self.captured.tick()
        self.frames_read += 1
        thumb = self.thumbs.make(frame.image, frame.ts)
        if thumb is not None:
            self.transport.publish(self.topics.thumb(self.sensor_id), thumb, qos=0, retain=True)
        if not self.preprocess.take():
            return
        self._window.append(frame)
        prepared = self.preprocess.push(frame.image)
        if prepared is None:
            return
        first = self._window[0]
        if not paced:  # files without a rate: wait for room instead of skipping
            while self.publisher.in_flight >= self.options.max_in_flight:
                if self._stop.wait(0.01):
                    return
        job = self.publisher.submit(prepared, created=frame.ts)
        if job is None:
            return
        self.sent.tick()
        truth = frame.truth if first.truth == frame.truth else None
        self._spans[job] = (first.index, frame.index, truth)
        while len(self._spans) > self.options.spans:
            self._spans.popitem(last=False)

    def _camera_failed(self, exc: SourceError) -> None:
        self.camera_errors += 1
        self.preprocess.reset()
        self._window.clear()
        log.warning("%s: camera error %d: %s", self.sensor_id, self.camera_errors, exc)
        report = ErrorReport(
            device=self.sensor_id,
            ts=time.time(),
            topic=self.source.name,
            kind="other",
            detail=f"camera error: {exc}"[:2048],
        )
        try:
            self.transport.publish(self.topics.error(self.sensor_id), encode(report))
        except EdgeAppError as err:
            log.debug("error report not sent: %s", err)

    def _heartbeat(self) -> None:
        health = SensorHealth(
            captured_fps=self.captured.read(),
            sent_fps=self.sent.read(),
            skipped=self.publisher.skipped,
            camera_errors=self.camera_errors,
            source=self.source.name,
        )
        self._seq += 1
        hb = Heartbeat(
            device=self.sensor_id,
            role="sensor",
            seq=self._seq,
            ts=time.time(),
            interval_s=self.config.heartbeat_s,
            hardware=hardware(),
            queue_depth=self.publisher.in_flight,
            queue_limit=self.options.max_in_flight,
            sensor=health,
            versions={"edge-app": __version__},
        )
        self.transport.publish(self.topics.heartbeat(self.sensor_id), encode(hb), qos=0)

    # --- outcomes (network thread: quick) -----------------------------------------------------
    def _on_outcome(self, outcome: JobOutcome) -> None:
        span = self._spans.get(outcome.job)
        if span is None:
            return
        if outcome.status == "ok":
            log.info("%s: %s (%.2f)", self.sensor_id, outcome.label, outcome.score or 0.0)
        if self.on_report is not None:
            self.on_report(Report(outcome, span[0], span[1], span[2]))
