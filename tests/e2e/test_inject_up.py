"""The CLI end to end: `edge-app inject` against a real fleet, `edge-app up` in one command."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_app.inference.catalog import resolve_model
from edge_app.inference.interpreter import Runner
from edge_app.sensors.patterns import SHAPES, render_shape
from edge_app.sensors.preprocess import Preprocessor
from tests.conftest import MosquittoBroker, free_port

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "edge_app.cli"]


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*CLI, *args], stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )


@pytest.fixture
def fleet(mosquitto: MosquittoBroker, tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A scheduler and one worker for the shapes model, as real processes."""
    common = ["--model", "shapes", "--broker", mosquitto.url, "--fleet", "e2e"]
    procs = [
        spawn(["scheduler", *common], tmp_path / "scheduler.log"),
        spawn(["worker", "--device", "w1", *common], tmp_path / "w1.log"),
    ]
    yield mosquitto
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def inject(broker: MosquittoBroker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "inject", *args, "--broker", broker.url, "--fleet", "e2e"],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=90,
    )


@pytest.mark.slow
@pytest.mark.interpreter
def test_inject_images_and_npy_waits_for_results_equal_to_the_whole_model(
    fleet: MosquittoBroker, tmp_path: Path
) -> None:
    card, model_path = resolve_model("shapes")
    runner, prep = Runner(model_path), Preprocessor(card)
    files, expected = [], {}
    for i, shape in enumerate(SHAPES):
        rgb = render_shape(shape, 120, 160, np.random.default_rng(100 + i))
        path = tmp_path / f"{shape}.png"
        Image.fromarray(rgb).save(path)
        files.append(str(path))
        with Image.open(path) as img:  # what inject reads back from the file
            x = prep.push(np.asarray(img.convert("RGB")))
        expected[f"{path}#0"] = runner.run([x])[runner.outputs[0].name].reshape(-1)
    np.save(tmp_path / "raw.npy", np.zeros((32, 32, 3), np.float32))
    files.append(str(tmp_path / "raw.npy"))
    done = inject(fleet, *files, "--model", "shapes", "--sensor", "cam1", "--wait", "--json",
                  "--timeout", "60")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == len(files)
    assert {d["status"] for d in lines} == {"ok"}
    assert len({d["job"] for d in lines}) == len(files)
    late = inject(fleet, files[0], "--model", "shapes", "--sensor", "cam1", "--wait", "--json",
                  "--deadline", "0.000001")  # fmt: skip
    assert late.returncode == 1
    (doc,) = [json.loads(line) for line in late.stdout.splitlines()]
    assert doc["status"] == "dropped" and doc["reason"] == "deadline"
    for doc in lines:
        if doc["file"] in expected:
            ref = expected[doc["file"]]
            assert doc["label"] == card.labels[int(np.argmax(ref))]
            assert abs(doc["score"] - float(ref.max())) <= 1e-5 * max(1.0, float(ref.max()))


@pytest.mark.slow
def test_inject_fails_clearly_without_a_fleet(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((32, 32, 3), np.float32))
    done = inject(mosquitto, str(tmp_path / "x.npy"), "--model", "shapes", "--sensor", "c",
                  "--timeout", "2")  # fmt: skip
    assert done.returncode == 2 and "no plan" in done.stderr
    argv = [*CLI, "inject", str(tmp_path / "x.npy"), "--model", "shapes", "--sensor", "c"]
    argv += ["--broker", f"mqtt://127.0.0.1:{free_port()}", "--timeout", "2"]
    nobroker = subprocess.run(argv, check=False, capture_output=True, text=True, cwd=REPO)
    assert nobroker.returncode == 2 and "cannot connect" in nobroker.stderr
    bad = inject(mosquitto, str(tmp_path / "missing.png"), "--model", "shapes", "--sensor", "c")
    assert bad.returncode == 2 and "no such file" in bad.stderr


def run_up(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """Start `edge-app up`, read its output until the first result; (process, lines so far)."""
    argv = [*CLI, "up", "--log-dir", str(tmp_path / "logs"), "--fleet", "updemo"]
    argv += ["--dashboard-port", str(free_port()), *args]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    end = time.monotonic() + 60
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if line.startswith("first result after"):
            break
    return proc, lines


def child_pids(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := re.search(r"\bpid (\d+)", line))]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_up_with_the_embedded_broker_first_result_and_clean_stop(tmp_path: Path) -> None:
    port = free_port()
    started = time.monotonic()
    proc, lines = run_up(["--workers", "2", "--broker", f"mqtt://127.0.0.1:{port}"], tmp_path)
    try:
        text = "\n".join(lines)
        assert "first result after" in text, text
        took = float(re.search(r"first result after ([\d.]+) s", text).group(1))  # type: ignore[union-attr]
        assert took <= 15.0 and time.monotonic() - started <= 30, text
        assert "embedded amqtt" in text and "worker-2" in text and "http://127.0.0.1:" in text
        url = re.search(r"(http://127\.0\.0\.1:\d+/)", text).group(1)  # type: ignore[union-attr]
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200
        pids = child_pids(lines)
        assert len(pids) >= 5  # broker, scheduler, 2 workers, sensor (+ dashboard)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert "stopped." in rest
        assert not [p for p in pids if alive(p)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_up_uses_a_running_broker(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    proc, lines = run_up(
        ["--workers", "1", "--broker", mosquitto.url, "--no-dashboard", "--run-for", "30"],
        tmp_path,
    )
    try:
        text = "\n".join(lines)
        assert "already running: using it" in text and "first result after" in text, text
        argv = [*CLI, "up", "--broker", mosquitto.url, "--fleet", "updemo", "--no-dashboard"]
        second = subprocess.run(argv, check=False, capture_output=True, text=True, cwd=REPO)
        assert second.returncode == 2 and "already has a scheduler" in second.stderr
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
