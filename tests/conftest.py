"""Shared fixtures: a real Mosquitto on a free port, and the in-memory bus.

``mosquitto`` yields a :class:`MosquittoBroker`: ``.config`` (a BrokerConfig for it), ``.port``,
``.url``, ``.fleet(name)`` (a FleetConfig on it), ``.restart()`` (same port, retained messages
kept through persistence), ``.stop(kill=False)`` and ``.start()``. It is killed at teardown.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_app.config import BrokerConfig, FleetConfig
from edge_app.transport.memory import MemoryBus

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 5.0, host: str = "127.0.0.1") -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class MosquittoBroker:
    """A private Mosquitto 2 process on 127.0.0.1:<free port>, with its own config and data."""

    def __init__(
        self, workdir: Path, extra_conf: str = "", scheme: str = "mqtt", anonymous: bool = True
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.scheme = scheme
        self.log_file = workdir / "mosquitto.log"
        self.conf_file = workdir / "mosquitto.conf"
        (workdir / "data").mkdir(exist_ok=True)
        self.conf_file.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"user {getpass.getuser()}\n"  # as root, mosquitto would drop to 'mosquitto'
            f"allow_anonymous {'true' if anonymous else 'false'}\n"
            "persistence true\n"
            "set_tcp_nodelay true\n"
            f"persistence_location {workdir / 'data'}/\n"
            f"log_dest file {self.log_file}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            f"{extra_conf}"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def config(self) -> BrokerConfig:
        return BrokerConfig(url=self.url)

    def fleet(self, fleet: str = "test", **fields: object) -> FleetConfig:
        return FleetConfig.model_validate({"fleet": fleet, "broker": self.config, **fields})

    def start(self) -> None:
        if self.proc is not None:
            return
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.proc = None
                raise RuntimeError(f"mosquitto exited: {err} {self.log()}")
            if wait_for_port(self.port, timeout=0.2):
                return
        self.stop(kill=True)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log()}")

    def stop(self, kill: bool = False) -> None:
        """Terminate (saving persistence) or kill -9 the broker."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()

    def restart(self, kill: bool = False, down_s: float = 0.0) -> None:
        """Stop and start again on the same port (clients must reconnect)."""
        self.stop(kill=kill)
        if down_s:
            time.sleep(down_s)
        self.start()

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed")
    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop(kill=True)


@pytest.fixture
def memory_bus() -> Iterator[MemoryBus]:
    bus = MemoryBus()
    try:
        yield bus
    finally:
        bus.close()
