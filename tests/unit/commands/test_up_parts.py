"""The pieces of `edge-app up`: model choice, credentials by environment, the child supervisor."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from edge_app.cli import main
from edge_app.commands.up import child_env, cli, free_port, pick_model, port_free, port_open
from edge_app.config import BrokerConfig
from edge_app.errors import ModelError
from edge_app.roles.supervisor import Child, ChildSet


def test_credentials_travel_by_environment_not_argv() -> None:
    broker = BrokerConfig(url="mqtt://u:secret@127.0.0.1:1999", ca_file=None)
    env = child_env(broker)
    assert env["EDGE_BROKER_URL"] == broker.url
    assert env["EDGE_BROKER_USERNAME"] == "u" and env["EDGE_BROKER_PASSWORD"] == "secret"
    argv = cli("worker", "--device", "w1", "--model", "shapes", "--fleet", "home")
    assert not any("secret" in a for a in argv)


def test_model_choice_falls_back_to_what_exists() -> None:
    name, task = pick_model(None)
    assert (name, task) in {("actions", "action"), ("shapes", "image")}
    assert pick_model("shapes") == ("shapes", "image")
    with pytest.raises(ModelError):
        pick_model("no-such-model-anywhere")


def test_ports() -> None:
    port = free_port()
    assert port_free("127.0.0.1", port) and not port_open("127.0.0.1", port, timeout=0.2)


def test_supervisor_reports_a_crash_once_and_stops_the_rest(tmp_path: Path) -> None:
    children = ChildSet(tmp_path)
    sleeper = children.start(
        Child("worker", "w 1", [sys.executable, "-c", "import time; time.sleep(60)"])
    )
    crasher = children.start(
        Child(
            "scheduler",
            "sched",
            [sys.executable, "-c", "print('boom'); raise SystemExit(3)"],
            critical=True,
        )
    )
    assert sleeper.log_path.name == "w-1.log"
    end = time.monotonic() + 10
    crashes = []
    while not crashes and time.monotonic() < end:
        crashes = children.crashes()
        time.sleep(0.05)
    assert [(c.child.name, c.code) for c in crashes] == [("sched", 3)]
    assert "boom" in crasher.tail()
    assert children.crashes() == []  # reported once
    assert len(children.table()) == 2
    children.stop_all()
    assert sleeper.proc is not None and sleeper.proc.returncode == -signal.SIGTERM


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_dashboard_port_out_of_range_is_refused_before_anything_starts(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["up", "--dashboard-port", port, "--broker", "mqtt://127.0.0.1:9"]) == 2
    captured = capsys.readouterr()
    assert "--dashboard-port" in captured.err and "broker" not in captured.out
