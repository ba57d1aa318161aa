"""`edge-app sensor`: stream a camera, video, webcam, image folder or test pattern to the fleet."""

from __future__ import annotations

import argparse
import json
import logging
import queue
import signal
import threading
from typing import Any

from edge_app.config import add_fleet_args, fleet_config_from_args
from edge_app.inference.catalog import resolve_model
from edge_app.messages.topics import check_id
from edge_app.roles.sensor import Report, Sensor, SensorOptions
from edge_app.sensors.sources import open_source
from edge_app.transport.mqtt import MqttTransport

log = logging.getLogger(__name__)

SOURCES_HELP = (
    "picamera2[:WxH[@FPS]] | video:PATH | webcam[:DEVICE] | images:DIR_OR_GLOB | "
    "pattern:NAME[@WxH] (NAME: actions, one action name, bars, box)"
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sensor",
        help="capture frames and publish them as jobs",
        description="Capture frames from SOURCE, prepare them as the model card says and "
        "publish them as jobs; frames are skipped (and counted) when the fleet is full.",
    )
    p.add_argument("--source", required=True, help=SOURCES_HELP)
    p.add_argument("--model", required=True, help="model name, folder, card or .tflite")
    p.add_argument("--sensor", default="camera-1", help="sensor id (default camera-1)")
    p.add_argument("--rate", type=float, default=None, metavar="FPS", help="frames per second")
    p.add_argument("--loop", action="store_true", help="loop a video file")
    p.add_argument("--max-jobs", type=int, default=None, help="stop after N accepted jobs")
    p.add_argument("--in-flight", type=int, default=4, help="jobs held at once (4)")
    p.add_argument("--deadline", type=float, default=None, metavar="S", help="per-job deadline")
    p.add_argument("--json", action="store_true", help="print each outcome as a JSON line")
    add_fleet_args(p)
    p.set_defaults(func=run)


class ReportPrinter:
    """Prints reports on its own thread: outcomes arrive on the network thread, which must never
    wait for a slow reader of our stdout. Bounded: beyond ``limit`` waiting lines, new ones are
    counted and dropped."""

    def __init__(self, limit: int = 10_000) -> None:
        self.queue: queue.Queue[Report | None] = queue.Queue(maxsize=limit)
        self.lost = 0
        self.thread = threading.Thread(target=self._loop, name="report-printer", daemon=True)
        self.thread.start()

    def __call__(self, report: Report) -> None:
        try:
            self.queue.put_nowait(report)
        except queue.Full:
            self.lost += 1

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=10)
        if self.lost:
            log.warning("%d outcome lines were not printed (output too slow)", self.lost)

    def _loop(self) -> None:
        while (report := self.queue.get()) is not None:
            print_report(report)


def print_report(report: Report) -> None:
    o = report.outcome
    line = {
        "job": o.job,
        "seq": o.seq,
        "status": o.status,
        "label": o.label,
        "score": o.score,
        "reason": o.reason,
        "latency_s": round(o.latency_s, 4),
        "first_frame": report.first_frame,
        "last_frame": report.last_frame,
        "truth": report.truth,
    }
    print(json.dumps(line), flush=True)


def run(args: argparse.Namespace) -> int:
    config = fleet_config_from_args(args)
    sensor_id = check_id(args.sensor, "sensor id")
    card, _ = resolve_model(args.model)
    source = open_source(args.source, loop=args.loop, rate=args.rate)
    options = SensorOptions(max_in_flight=args.in_flight, deadline_s=args.deadline)
    transport = MqttTransport(config.broker, client_id=f"sensor-{sensor_id}")
    printer = ReportPrinter() if args.json else None
    sensor = Sensor(
        transport,
        config,
        sensor_id,
        source,
        card,
        options=options,
        on_report=printer,
    )

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        sensor.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sensor.start()
    try:
        code = sensor.run(max_jobs=args.max_jobs)
    finally:
        sensor.stop()
        if printer is not None:
            printer.close()
    m = sensor.publisher.metrics()
    log.warning(
        "%s: accepted %d, skipped %d, outcomes %s",
        sensor_id,
        m.accepted,
        sensor.publisher.skipped,
        sensor.sink.counts(),
    )
    return code
