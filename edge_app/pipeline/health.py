"""What a worker reports about itself in heartbeats: hardware, load, versions."""

from __future__ import annotations

import logging
import platform
import threading
import time
from pathlib import Path

import psutil

from edge_app.messages.schemas import Hardware

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
