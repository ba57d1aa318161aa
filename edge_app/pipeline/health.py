"""What a worker reports about itself in heartbeats: hardware, load, versions."""

from __future__ import annotations

import logging
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from edge_app.messages.schemas import Hardware, Heartbeat, StageLoad

log = logging.getLogger(__name__)


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU model name (x86 ``model name``; on a Pi the ``Model`` line names the board)."""
    fields: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and value.strip():
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        if key in fields:
            return fields[key][:256]
    return (platform.processor() or platform.machine() or "unknown")[:256]


def temperature_c(root: Path = Path("/sys/class/thermal")) -> float | None:
    """The hottest thermal zone in degrees Celsius, None when the machine exposes none."""
    best: float | None = None
    try:
        zones = sorted(root.glob("thermal_zone*/temp"))
    except OSError:
        return None
    for zone in zones:
        try:
            value = int(zone.read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
        if -50.0 < value < 150.0:
            best = value if best is None else max(best, value)
    return best


def hardware(emulated: str | None = None) -> Hardware:
    memory = psutil.virtual_memory()
    return Hardware(
        cpu_model=cpu_model(),
        cores=max(1, min(1024, psutil.cpu_count(logical=True) or 1)),
        memory_total=int(memory.total),
        memory_available=int(memory.available),
        temperature_c=temperature_c(),
        emulated=emulated,
    )


def versions() -> dict[str, str]:
    import numpy

    from edge_app import __version__

    out = {"edge-app": __version__, "python": platform.python_version(), "numpy": numpy.__version__}
    try:
        from edge_app.inference.interpreter import runtime_name

        out["runtime"] = runtime_name()
    except Exception as exc:  # the runtime may be missing on a control-only host
        log.debug("no TFLite runtime: %s", exc)
    return out


class LoadMeter:
    """Busy fraction of the compute thread since the last reading (0..1)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = 0.0
        self._since = time.monotonic()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._busy += seconds

    def read(self) -> float:
        with self._lock:
            now = time.monotonic()
            span = max(1e-6, now - self._since)
            value = min(1.0, self._busy / span)
            self._busy, self._since = 0.0, now
            return value


class HeartbeatBuilder:
    """A worker's heartbeats: numbered, with hardware, load since the last one and its seats."""

    def __init__(
        self,
        device: str,
        interval_s: float,
        queue_limit: int,
        hardware_fn: Callable[[], Hardware],
        speed: float = 1.0,
    ) -> None:
        self.device = device
        self.interval_s = interval_s
        self.queue_limit = queue_limit
        self.hardware_fn = hardware_fn
        self.speed = speed
        self.versions = versions()
        self._meter = LoadMeter()
        self._busy_seen = 0.0
        self._seq = 0
        self._lock = threading.Lock()

    def build(self, *, busy_s: float, queue_depth: int, epoch: int, slots: list[Any]) -> Heartbeat:
        """``slots``: the stage cache's slots (ready ones are reported with their service time)."""
        with self._lock:
            self._meter.add(busy_s - self._busy_seen)
            self._busy_seen = busy_s
            self._seq += 1
            seq = self._seq
        stages = [
            StageLoad(
                stage=s.seat.stage.index,
                shard=s.seat.shard,
                service_time_s=s.service_s,
                jobs=s.jobs,
            )
            for s in slots
            if s.state == "ready"
        ]
        return Heartbeat(
            device=self.device,
            role="worker",
            seq=seq,
            ts=time.time(),
            interval_s=self.interval_s,
            hardware=self.hardware_fn(),
            speed=self.speed,
            load=self._meter.read(),
            queue_depth=queue_depth,
            queue_limit=self.queue_limit,
            epoch=epoch,
            stages=stages,
            versions=self.versions,
        )
