"""Acceptance: the whole fleet runs jobs end to end through the locked-down broker.

A scheduler, two workers, a sensor and the dashboard, each an `edge-app` process started the way
the systemd units start them: broker URL, user, password and CA from the device's generated
``broker.env``. The sensor's outcomes must all be results with the right labels, and every
role's own publications (status, heartbeats, plan, thumbnails, the dashboard's camera state)
must have passed the ACL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_app.messages.schemas import Plan, decode
from edge_app.messages.topics import Topics
from edge_app.provision.limits import message_limit_for_models
from edge_app.sensors.patterns import SHAPES, render_shape
from tests.conftest import free_port
from tests.integration.broker.conftest import LIMIT, SecuredBroker, Spy, wait_until

REPO = Path(__file__).resolve().parents[3]
T = Topics.for_fleet("home")
pytestmark = [pytest.mark.interpreter, pytest.mark.slow]


def device_env(broker: SecuredBroker, device: str) -> dict[str, str]:
    """The device's generated broker.env, with the CA path of this test's output directory."""
    text = (broker.out / "devices" / device / "broker.env").read_text()
    env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    env["EDGE_BROKER_CA"] = str(broker.out / "devices" / device / "ca.crt")
    return env


class Processes:
    def __init__(self, broker: SecuredBroker, logs: Path) -> None:
        self.broker, self.logs = broker, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, device: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **device_env(self.broker, device), "PYTHONUNBUFFERED": "1"}
        with (self.logs / f"{device}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edge_app.cli", *args, "--fleet", "home"],
                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log,
            )  # fmt: skip
        self.procs[device] = proc
        return proc

    def log(self, device: str) -> str:
        return (self.logs / f"{device}.log").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()


@pytest.fixture
def processes(secured_broker: SecuredBroker, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(secured_broker, tmp_path)
    try:
        yield procs
    finally:
        procs.close()


def _seated(plan_spy: Spy) -> bool:
    for msg in reversed(plan_spy.got):
        if msg.topic == T.plan:
            plan = decode(Plan, msg.payload)
            seated = {r.device for sp in plan.stages for r in sp.replicas}
            seated |= {s.device for sp in plan.stages for s in sp.shards}
            return seated == {"w1", "w2"}
    return False


def test_scheduler_workers_sensor_and_dashboard_run_jobs_through_the_secured_broker(
    secured_broker: SecuredBroker, processes: Processes, tmp_path: Path
) -> None:
    assert message_limit_for_models([REPO / "models/shapes/shapes.tflite"]) <= LIMIT
    spy = Spy(secured_broker, "admin", [T.everything])  # monitor role: reads, never writes
    try:
        processes.start("sched", "scheduler", "--id", "sched", "--model", "shapes")
        for worker in ("w1", "w2"):
            processes.start(worker, "worker", "--device", worker, "--model", "shapes")
        port = free_port()
        processes.start(
            "dash", "dashboard", "--id", "dash", "--bind", f"127.0.0.1:{port}",
            "--db", str(tmp_path / "history.sqlite3"),
        )  # fmt: skip
        assert wait_until(lambda: _seated(spy), timeout=60), processes.log("sched")

        folder = tmp_path / "shots"
        folder.mkdir()
        rng = np.random.default_rng(2024)
        truth = [SHAPES[i % len(SHAPES)] for i in range(12)]
        for i, shape in enumerate(truth):
            Image.fromarray(render_shape(shape, 240, 320, rng)).save(folder / f"{i:03d}.png")
        sensor = processes.start(
            "cam1", "sensor", "--sensor", "cam1", "--source", f"images:{folder}",
            "--model", "shapes", "--deadline", "30", "--json",
        )  # fmt: skip
        out, _ = sensor.communicate(timeout=120)
        assert sensor.returncode == 0, processes.log("cam1")
        lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
        assert len(lines) == len(truth), lines
        assert all(x["status"] == "ok" for x in lines), lines
        right = sum(x["label"] == truth[int(x["first_frame"])] for x in lines)
        assert right >= len(truth) - 1, f"{right}/{len(truth)} right"

        # Every role's own publications passed the ACL (a denied one would never arrive).
        expected = [T.status(d) for d in ("sched", "w1", "w2", "cam1", "dash")]
        expected += [T.heartbeat(d) for d in ("sched", "w1", "w2")]
        expected += [T.plan, T.result("cam1"), T.thumb("cam1"), T.camera("cam1")]
        seen = lambda: {m.topic for m in spy.got}  # noqa: E731
        assert wait_until(lambda: set(expected) <= seen(), timeout=15), set(expected) - seen()
        for name in ("sched", "w1", "w2", "dash"):
            assert processes.procs[name].poll() is None, processes.log(name)
    finally:
        spy.transport.stop()
