"""A sensor process streams through a real fleet (Mosquitto, scheduler, 2 worker processes).

Inputs are generated with known labels: still shapes saved as image files, and a video of
action clips encoded with PyAV. The sensor's ``--json`` lines say which frames each job covered,
so every outcome can be checked against the truth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from edge_app.sensors.patterns import ACTIONS, SHAPES, render_clip, render_shape
from tests.integration.pipeline.fleet import REPO, Fleet

pytestmark = [pytest.mark.interpreter, pytest.mark.slow]

SEED = 424242  # not a training seed


def run_cli(args: list[str], timeout: float = 120) -> list[dict[str, object]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def start_fleet(mosquitto: object, tmp_path: Path, model: str) -> Fleet:
    fleet = Fleet(mosquitto, tmp_path, model=model)
    for device in ("w1", "w2"):
        fleet.spawn(device)
    fleet.start_scheduler()
    fleet.wait_ready(lambda plan: len({r.device for sp in plan.stages for r in sp.replicas}) == 2)
    return fleet


@pytest.fixture
def shapes_fleet(mosquitto: object, tmp_path: Path) -> Iterator[Fleet]:
    fleet = start_fleet(mosquitto, tmp_path, "shapes")
    try:
        yield fleet
    finally:
        fleet.close()


def test_image_folder_sensor_recognizes_shapes(shapes_fleet: Fleet, tmp_path: Path) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    rng = np.random.default_rng(SEED)
    truth = []
    for i in range(30):
        shape = SHAPES[i % len(SHAPES)]
        Image.fromarray(render_shape(shape, 240, 320, rng)).save(
            folder / f"{i:03d}.jpg", quality=85
        )
        truth.append(shape)
    lines = run_cli(["sensor", "--source", f"images:{folder}", "--model", "shapes",
                     "--sensor", "cam-img", "--json", "--broker", shapes_fleet.broker.url,
                     "--fleet", "test", "--deadline", "30"])  # fmt: skip
    assert len(lines) == 30, lines
    assert all(line["status"] == "ok" for line in lines), lines
    right = sum(line["label"] == truth[int(line["first_frame"])] for line in lines)  # type: ignore[call-overload]
    assert right >= 27, f"{right}/30 right"


def write_action_video(
    path: Path, fps: int, frames_per_action: int, size: tuple[int, int]
) -> list[str]:
    """A video cycling through every action twice; returns the action of each frame."""
    rng = np.random.default_rng(SEED)
    truth: list[str] = []
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for action in ACTIONS + ACTIONS:
            clip = render_clip(action, frames_per_action, size[1], size[0], rng, fps=fps)
            for pixels in clip:
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
                truth.append(action)
        for packet in stream.encode():
            container.mux(packet)
    return truth


@pytest.fixture
def actions_fleet(mosquitto: object, tmp_path: Path) -> Iterator[Fleet]:
    fleet = start_fleet(mosquitto, tmp_path, "actions")
    try:
        yield fleet
    finally:
        fleet.close()


def test_video_sensor_and_inject_recognize_actions(actions_fleet: Fleet, tmp_path: Path) -> None:
    card = actions_fleet.card
    n = card.frames_per_clip or 8
    # A 30 fps camera for a model trained on 15 fps clips: both the sensor and inject must
    # take every second frame, or every motion would look half as fast as in training.
    fps = 2 * int(card.frame_rate or 15)
    video = tmp_path / "actions.mp4"
    truth = write_action_video(video, fps, frames_per_action=6 * n, size=(320, 240))
    common = ["--model", "actions", "--broker", actions_fleet.broker.url, "--fleet", "test",
              "--deadline", "60", "--json"]  # fmt: skip
    # Not paced (--rate far above the file's): the test checks labels, not real time.
    lines = run_cli(["sensor", "--source", f"video:{video}", "--sensor", "cam-vid",
                     "--rate", "1000", "--in-flight", "64", *common], timeout=300)  # fmt: skip
    assert lines and all(line["status"] == "ok" for line in lines), lines[:5]
    pure = [line for line in lines if line["truth"] is None
            and truth[int(line["first_frame"])] == truth[int(line["last_frame"])]]  # type: ignore[call-overload]  # fmt: skip
    right = [line for line in pure if line["label"] == truth[int(line["first_frame"])]]  # type: ignore[call-overload]
    assert len(pure) >= 2 * len(ACTIONS), len(pure)
    assert len(right) >= 0.95 * len(pure), f"{len(right)}/{len(pure)} clips right"
    injected = run_cli(["inject", str(video), "--sensor", "cam-inj", "--wait", *common],
                       timeout=300)  # fmt: skip
    by_seq = {int(line["seq"]): line["label"] for line in lines}  # type: ignore[call-overload]
    inj = [line for line in injected if "seq" in line]
    assert len(inj) == len(lines), injected[:3]
    same = sum(by_seq.get(int(line["seq"])) == line.get("label") for line in inj)  # type: ignore[call-overload]
    assert same == len(lines), f"inject and sensor labels differ: {same}/{len(lines)}"
