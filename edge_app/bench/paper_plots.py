"""PNG plots of ``edge-app bench paper`` results (matplotlib, from the test extra)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_app.errors import ConfigError


def _series(rows: Sequence[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    picked = [r for r in rows if r["label"].startswith(f"scaling {model} ")]
    return sorted(picked, key=lambda r: r["devices"])


def write_plots(doc: dict[str, Any], folder: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError("plots need matplotlib (pip install edge-app[test])") from exc
    folder.mkdir(parents=True, exist_ok=True)
    rows = doc["rows"]
    out: list[Path] = []
    models = [m for m in ("vgg16", "c3d") if _series(rows, m)]
    if models:
        out.append(_scaling(plt, rows, models, folder / "bench-paper-throughput.png", _throughput))
        out.append(_scaling(plt, rows, models, folder / "bench-paper-latency.png", _latency))
    mixed = [r for r in rows if r["label"].startswith("mixed ")]
    if mixed:
        fig, ax = plt.subplots(figsize=(7, 3.8))
        labels = [r["label"].removeprefix("mixed ") for r in mixed]
        ax.barh(labels, [r["throughput"] for r in mixed], color="tab:orange", label="emulated")
        ax.axvline(mixed[0]["bound"], color="k", ls="--", label="bound")
        ax.set_xlabel("inferences / s (device time)")
        ax.set_title("4 x Pi 3B + 3 x Pi 4 + 1 x Pi 5")
        ax.legend(fontsize=8)
        fig.tight_layout()
        out.append(_save(fig, folder / "bench-paper-mixed.png", plt))
    return out


def _scaling(plt: Any, rows: Any, models: list[str], path: Path, draw: Any) -> Path:
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        draw(ax, model, _series(rows, model))
        ax.set_xlabel("devices")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, plt)


def _throughput(ax: Any, model: str, s: list[dict[str, Any]]) -> None:
    n = [r["devices"] for r in s]
    ax.plot(n, [r["bound"] for r in s], "k--", label="bound (compute)")
    ax.plot(n, [0.9 * r["bound"] for r in s], ":", color="grey", label="0.90 x bound")
    ax.plot(n, [r["sim_throughput"] for r in s], "-", color="tab:blue", label="simulated")
    ax.plot(n, [r["throughput"] for r in s], "o", color="tab:orange", label="emulated")
    paper = [(r["devices"], r["paper"]) for r in s if r.get("paper")]
    if paper:
        ax.plot(*zip(*paper, strict=True), "r*", ms=11, label="paper (measured)")
    ax.set_title(f"{model}: Pi 3B fleet")
    ax.set_ylabel("inferences / s (device time)")


def _latency(ax: Any, model: str, s: list[dict[str, Any]]) -> None:
    n = [r["devices"] for r in s]
    ax.plot(n, [r["p50"] for r in s], "o", color="tab:orange", label="emulated p50")
    ax.plot(n, [r["p90"] for r in s], "^", color="tab:red", label="emulated p90")
    ax.plot(n, [r["mean_latency"] for r in s], "s", color="tab:green", ms=4, label="emulated mean")
    ax.plot(n, [r["sim_p50"] for r in s], "-", color="tab:orange", label="simulated p50")
    ax.plot(n, [r["sim_p90"] for r in s], "--", color="tab:red", label="simulated p90")
    ax.plot(n, [r["sim_mean_latency"] for r in s], ":", color="tab:green", label="simulated mean")
    ax.set_title(f"{model}: latency, sensor keeps 2N+2 jobs in flight")
    ax.set_ylabel("seconds (device time)")


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
