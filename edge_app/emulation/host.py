"""The host's own speed per operator kind, measured once with the real Runner and cached.

Two tiny models are timed: a stack of 3x3 convolutions (MACs per second) and one large
fully-connected layer whose weights do not fit in cache (weight bytes per second). The result is
cached per CPU model, runtime and thread count in ``$EDGE_APP_CACHE`` (or
``~/.cache/edge-app``), so every emulated worker of a run uses the same figures.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_app.emulation.profiles import DeviceProfile

log = logging.getLogger(__name__)

CONV_SHAPE = (1, 56, 56, 64)  # two 3x3 64->64 convolutions: 231 MMAC
FC_SHAPE = (2048, 8192)  # 64 MiB of float32 weights
REPEATS = 5


@dataclass(frozen=True)
class HostRates:
    cpu_model: str
    runtime: str
    threads: int
    conv_macs_per_s: float
    fc_weight_bytes_per_s: float

    def speed_vs_host(self, device: DeviceProfile) -> dict[str, float]:
        """How fast ``device`` is relative to this host, per operator kind (< 1: slower)."""
        return {
            "conv": device.conv_macs_per_s / self.conv_macs_per_s,
            "fc": device.fc_weight_bytes_per_s / self.fc_weight_bytes_per_s,
        }


def _cache_path() -> Path:
    root = os.environ.get("EDGE_APP_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "edge-app"
    return base / "host-rates.json"


def _best_time(run: object, x: np.ndarray, repeats: int) -> float:
    fn = run.run  # type: ignore[attr-defined]
    fn(x)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - start)
    return best


def measure(threads: int = 1, repeats: int = REPEATS) -> HostRates:
    """Time the two probe models (best of ``repeats``: a shared host only ever slows us)."""
    from edge_app.inference.builder import GraphBuilder
    from edge_app.inference.interpreter import Runner, runtime_name
    from edge_app.pipeline.health import cpu_model

    rng = np.random.default_rng(0)
    b = GraphBuilder()
    x = b.input("x", CONV_SHAPE)
    c = CONV_SHAPE[-1]
    for _ in range(2):
        w = rng.standard_normal((c, 3, 3, c)).astype(np.float32) * 0.05
        x = b.conv2d(x, w, None, padding="same", activation="relu")
    b.output(x)
    conv = Runner(b.to_bytes(), num_threads=threads)
    conv_macs = 2 * CONV_SHAPE[1] * CONV_SHAPE[2] * c * c * 9
    conv_s = _best_time(conv, rng.standard_normal(CONV_SHAPE).astype(np.float32), repeats)

    rows, cols = FC_SHAPE
    b = GraphBuilder()
    y = b.input("y", (1, cols))
    w = rng.standard_normal(FC_SHAPE).astype(np.float32) * 0.01
    b.output(b.fully_connected(y, w, None))
    fc = Runner(b.to_bytes(), num_threads=threads)
    fc_s = _best_time(fc, rng.standard_normal((1, cols)).astype(np.float32), repeats)
    return HostRates(
        cpu_model=cpu_model(),
        runtime=runtime_name(),
        threads=threads,
        conv_macs_per_s=conv_macs / conv_s,
        fc_weight_bytes_per_s=rows * cols * 4 / fc_s,
    )


def host_rates(threads: int = 1, *, refresh: bool = False) -> HostRates:
    """The cached measurement for this host (measured now when missing or ``refresh``)."""
    from edge_app.inference.interpreter import runtime_name
    from edge_app.pipeline.health import cpu_model

    path = _cache_path()
    key = f"{cpu_model()}|{runtime_name()}|{threads}"
    cached: dict[str, dict[str, object]] = {}
    try:
        cached = json.loads(path.read_text())
        if not refresh and key in cached:
            return HostRates(**cached[key])  # type: ignore[arg-type]
    except (OSError, ValueError, TypeError):
        cached = {}
    rates = measure(threads)
    log.info("host rates measured: %s", rates)
    cached[key] = asdict(rates)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cached, indent=1))
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot cache host rates in %s: %s", path, exc)
    return rates
