"""`edge-app simulate` end to end on a small zoo model, and the bench's plots from rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_app.cli import main


def test_simulate_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--fleet", "pi3b:2,pi4", "--model", "alexnet:small", "--json",
                 "--jobs", "200", "--warmup", "20"])  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["fleet"] == {"pi3b": 2, "pi4": 1}
    assert set(doc["utilization"]) == {"pi3b-01", "pi3b-02", "pi4-01"}
    assert 0 < doc["throughput"] <= doc["bound"]["value"] * 1.05
    assert doc["bound"]["binds"] in ("compute", "sensor link", "fleet links")
    assert doc["latency_p50"] <= doc["latency_p90"] <= doc["latency_p99"]


def test_simulate_rejects_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--fleet", "pi3b:0", "--model", "alexnet:small"]) == 2
    assert main(["simulate", "--fleet", "pi3b", "--model", "alexnet:small", "--rate", "-1"]) == 2
    assert "pi3b:0" in capsys.readouterr().err


def _row(label: str, n: int, **kw: Any) -> dict[str, Any]:
    base = {"label": label, "devices": n, "bound": 0.1 * n, "throughput": 0.095 * n,
            "sim_throughput": 0.097 * n, "p50": 20.0, "p90": 25.0, "mean_latency": 21.0,
            "sim_p50": 20.5, "sim_p90": 24.0, "sim_mean_latency": 21.0, "paper": None}  # fmt: skip
    return {**base, **kw}


def test_plots_are_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from edge_app.bench.paper_plots import write_plots

    rows = [_row(f"scaling vgg16 {n} x pi3b", n) for n in (1, 2, 4)]
    rows.append(_row("scaling vgg16 9 x pi3b", 9, paper=0.48))
    rows += [_row("mixed vgg16 weighted", 8), _row("mixed vgg16 equal split", 8)]
    paths = write_plots({"rows": rows}, tmp_path)
    assert {p.name for p in paths} == {
        "bench-paper-throughput.png",
        "bench-paper-latency.png",
        "bench-paper-mixed.png",
    }
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)
