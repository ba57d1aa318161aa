"""`edge-app inject FILE...`: images, video clips or .npy arrays as jobs, optionally waiting.

Each input is prepared exactly as a sensor would (``sensors.preprocess.Preprocessor`` from the
model card): an image is one job for an image model; a video gives one job per frame (image
model) or one per clip of ``frames_per_clip`` frames every ``clip_stride`` frames (action
model), decimated to the card's frame rate; a ``.npy`` is sent as is when it already has the
model's input shape and dtype (with or without the batch axis), else treated as a uint8 frame
(H, W, 3) or frame sequence (N, H, W, 3).

Unlike a live sensor, inject never skips: it waits for room in its in-flight window. With
``--wait`` it prints each outcome as it arrives (one JSON object per line with ``--json``) and
exits 1 if any job was dropped or did not finish within ``--timeout``.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import queue
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.config import FleetConfig, add_fleet_args, fleet_config_from_args
from edge_app.errors import ConfigError, EdgeAppError, SourceError
from edge_app.inference.card import ModelCard
from edge_app.messages.schemas import JobOutcome
from edge_app.messages.topics import check_id
from edge_app.pipeline.jobs import JobPublisher, PublisherOptions
from edge_app.roles.sink import OutcomeSink
from edge_app.sensors.preprocess import Preprocessor
from edge_app.sensors.sources import IMAGE_SUFFIXES, ImageFolderSource, VideoSource
from edge_app.transport.base import Transport

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
MAX_FRAMES_PER_FILE = 100_000
MAX_PENDING_OUTCOMES = 10_000


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "inject",
        help="send images, video clips or .npy arrays through the fleet as jobs",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="image, video or .npy file")
    p.add_argument("--model", required=True, help="model name, folder, card or .tflite")
    p.add_argument("--sensor", required=True, help="sensor id the jobs are published as")
    p.add_argument("--rate", type=float, default=None, metavar="HZ", help="jobs per second")
    p.add_argument("--wait", action="store_true", help="wait for and print every outcome")
    p.add_argument("--json", action="store_true", help="one JSON object per outcome/job")
    p.add_argument(
        "--timeout", type=float, default=60.0, metavar="S", help="give up after S s (60)"
    )
    p.add_argument(
        "--deadline", type=float, default=None, metavar="S", help="per-job deadline (fleet's)"
    )
    p.add_argument("--in-flight", type=int, default=16, help="jobs held at once (16)")
    add_fleet_args(p)
    p.set_defaults(func=run)


# --- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    name: str  # file, or file#index for frames/clips of a video or sequence
    tensor: np.ndarray[Any, Any]


def _frames_to_items(
    card: ModelCard, name: str, frames: Iterator[np.ndarray[Any, Any]], fps: float | None
) -> Iterator[Item]:
    prep = Preprocessor(card, source_fps=fps)
    count = 0
    for frame in frames:
        if not prep.take():
            continue
        tensor = prep.push(frame)
        if tensor is not None:
            yield Item(f"{name}#{count}", tensor)
            count += 1
    if count == 0 and card.task == "action":
        raise SourceError(f"{name}: fewer than {card.frames_per_clip} frames, no whole clip")


def _video_frames(path: Path) -> tuple[Iterator[np.ndarray[Any, Any]], float | None]:
    source = VideoSource(str(path))
    source.open()
    fps = source.media_fps

    def frames() -> Iterator[np.ndarray[Any, Any]]:
        try:
            for _ in range(MAX_FRAMES_PER_FILE):
                frame = source.read()
                if frame is None:
                    return
                yield frame.image
        finally:
            source.close()

    return frames(), fps


def _npy_items(card: ModelCard, path: Path) -> Iterator[Item]:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from None
    shape, dtype = tuple(card.input.shape), np.dtype(card.input.dtype)
    if array.dtype == dtype and tuple(array.shape) in (shape, shape[1:]):
        yield Item(str(path), array.reshape(shape))
    elif array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3:
        yield from _frames_to_items(card, str(path), iter([array]), None)
    elif array.dtype == np.uint8 and array.ndim == 4 and array.shape[3] == 3:
        yield from _frames_to_items(card, str(path), iter(list(array)), card.frame_rate)
    else:
        raise SourceError(
            f"{path}: array {array.dtype}{list(array.shape)} is neither the model input "
            f"{dtype}{list(shape)} nor uint8 RGB frames (H,W,3) / (N,H,W,3)"
        )


def read_items(card: ModelCard, path: Path) -> Iterator[Item]:
    """The prepared model inputs from one file (lazily; SourceError on unusable files)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        yield from _npy_items(card, path)
    elif suffix in IMAGE_SUFFIXES:
        if card.task == "action":
            raise SourceError(
                f"{path}: model {card.name} takes clips of {card.frames_per_clip} frames;"
                " give a video or a .npy clip"
            )
        source = ImageFolderSource(glob.escape(str(path)))  # the file, not a pattern
        source.open()
        frame = source.read()
        assert frame is not None
        yield from _frames_to_items(card, str(path), iter([frame.image]), None)
    elif suffix in VIDEO_SUFFIXES:
        frames, fps = _video_frames(path)
        yield from _frames_to_items(card, str(path), frames, fps)
    else:
        raise SourceError(f"{path}: unknown file type {suffix!r} (image, video or .npy)")


# --- running -----------------------------------------------------------------------------------


def _print_outcome(out: JobOutcome, name: str, as_json: bool) -> None:
    if as_json:
        doc = {"file": name, **out.model_dump(exclude={"output"}, exclude_none=True)}
        print(json.dumps(doc), flush=True)
    elif out.status == "ok":
        print(
            f"{name}: {out.label} {out.score or 0:.3f}  ({out.latency_s * 1000:.0f} ms, "
            f"job {out.job})",
            flush=True,
        )
    else:
        print(f"{name}: DROPPED ({out.reason}: {out.detail})  job {out.job}", flush=True)


class Injector:
    """Submits prepared inputs through a JobPublisher and gathers their outcomes."""

    def __init__(self, transport: Transport, config: FleetConfig, sensor: str, args: Any) -> None:
        device = f"inject-{secrets.token_hex(4)}"
        options = PublisherOptions(max_in_flight=max(1, args.in_flight), deadline_s=args.deadline)
        self.publisher = JobPublisher(
            transport, config, sensor, device=device, role="inject", options=options
        )
        self.outcomes: queue.Queue[JobOutcome] = queue.Queue(maxsize=MAX_PENDING_OUTCOMES)
        self.sink = OutcomeSink(transport, config.topics, sensor, on_outcome=self._on_outcome)
        self.names: dict[str, str] = {}
        self.rate: float | None = args.rate

    def _on_outcome(self, outcome: JobOutcome) -> None:
        """On the network thread: hand over, never block (a full queue means nobody reads)."""
        try:
            self.outcomes.put_nowait(outcome)
        except queue.Full:
            log.debug("outcome of %s not queued: queue full", outcome.job)

    def submit_all(self, items: Iterator[Item], end: float) -> None:
        interval = 1.0 / self.rate if self.rate else 0.0
        next_at = time.monotonic()
        for item in items:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            while (job := self.publisher.submit(item.tensor)) is None:
                if time.monotonic() > end:
                    raise EdgeAppError(f"timed out with {len(self.names)} jobs submitted")
                time.sleep(0.005)  # the window is full: wait for stage 0 to take some
            self.names[job] = item.name
            next_at = max(next_at + interval, time.monotonic() - interval)


def _gather(inj: Injector, end: float, as_json: bool) -> tuple[int, int]:
    """Print outcomes of our jobs until all arrived or ``end``; (ok, not ok) counts."""
    done: set[str] = set()
    ok = 0
    while len(done) < len(inj.names):
        try:
            out = inj.outcomes.get(timeout=max(0.01, min(0.2, end - time.monotonic())))
        except queue.Empty:
            if time.monotonic() >= end:
                break
            continue
        if out.job not in inj.names or out.job in done:
            continue
        done.add(out.job)
        ok += out.status == "ok"
        _print_outcome(out, inj.names[out.job], as_json)
    return ok, len(inj.names) - ok


def run(args: argparse.Namespace) -> int:
    from edge_app.inference.catalog import resolve_model
    from edge_app.transport.mqtt import MqttTransport

    config = fleet_config_from_args(args)
    sensor = check_id(args.sensor, "sensor id")
    paths = [Path(f) for f in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(f"no such file: {', '.join(missing)}")
    if args.rate is not None and args.rate <= 0:
        raise ConfigError("--rate must be > 0")
    card, _ = resolve_model(args.model)
    transport = MqttTransport(
        config.broker,
        f"edge-inject-{secrets.token_hex(4)}",
        connect_timeout=max(1.0, min(5.0, args.timeout)),
    )
    inj = Injector(transport, config, sensor, args)
    inj.publisher.attach()
    inj.sink.attach()
    end = time.monotonic() + args.timeout
    transport.start()
    try:
        inj.publisher.start()
        if inj.publisher.wait_plan(min(args.timeout, 10.0)) is None:
            raise EdgeAppError(
                f"no plan on {config.topics.plan} at {config.broker.display_url}:"
                " is a scheduler running for this fleet?"
            )
        items = (item for path in paths for item in read_items(card, path))
        inj.submit_all(items, end)
        return _finish(inj, args, end)
    finally:
        inj.publisher.stop(drain_s=max(0.0, min(2.0, end - time.monotonic())))
        transport.stop()


def _finish(inj: Injector, args: argparse.Namespace, end: float) -> int:
    if args.wait:
        _, bad = _gather(inj, end, args.json)
        if bad:
            missing = len(inj.names) - len(inj.sink.wait_for(inj.names, 0))
            log.warning(
                "%d of %d jobs not ok (%d without an outcome)", bad, len(inj.names), missing
            )
            return 1
        return 0
    handed = inj.publisher.drain(max(0.0, end - time.monotonic()))
    for job, name in inj.names.items():
        print(json.dumps({"file": name, "job": job}) if args.json else f"{name}: job {job}")
    if not handed:
        log.warning(
            "%d jobs still held: stage 0 did not take them in time", inj.publisher.in_flight
        )
    return 0 if handed else 1
