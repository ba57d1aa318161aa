"""A real Mosquitto started from the files `edge-app broker gen` writes, unmodified.

The files go to a world-traversable temporary directory with the ownership the Ansible broker
role gives them (root:mosquitto 0640 for secrets), because Mosquitto started as root drops to
the ``mosquitto`` user before it reads the password file and the ACL.
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_app.config import BrokerConfig
from edge_app.provision.fleet import FleetFile
from edge_app.provision.generate import build_files, write_tree
from edge_app.provision.seed import Seed
from edge_app.transport.base import Received
from edge_app.transport.mqtt import MqttTransport
from tests.conftest import MOSQUITTO, free_port, wait_for_port

LIMIT = 256 * 1024
DEVICES = [
    ("cam1", "sensor"),
    ("cam2", "sensor"),
    ("w1", "worker"),
    ("w2", "worker"),
    ("sched", "scheduler"),
    ("dash", "dashboard"),
    ("ha", "homeassistant"),
    ("admin", "monitor"),
]
SEED = Seed(b"integration-test-seed-0123456789", "home")


@dataclass
class SecuredBroker:
    fleet: FleetFile
    out: Path
    proc: subprocess.Popen[bytes]

    @property
    def ca(self) -> str:
        return str(self.out / "broker" / "ca.crt")

    def config(
        self, user: str | None, *, password: str | None = None, **kw: object
    ) -> BrokerConfig:
        """Credentials of a device from the generated files, over TLS with the fleet CA."""
        fields: dict[str, object] = {
            "url": f"mqtts://localhost:{self.fleet.broker.tls_port}",
            "ca_file": self.ca,
        }
        if user is not None:
            fields |= {"username": user, "password": password or SEED.password(user)}
        return BrokerConfig.model_validate(fields | kw)

    def log(self) -> str:
        log = self.out / "mosquitto.log"
        return log.read_text() if log.exists() else ""

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its persistence file on the way out."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def start(self) -> None:
        with (self.out / "mosquitto.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.out / "broker" / "mosquitto.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not wait_for_port(self.fleet.broker.tls_port, timeout=10):
            self.proc.kill()
            pytest.fail(f"mosquitto did not start: {self.log()}")


def _fleet(root: Path) -> FleetFile:
    return FleetFile.model_validate(
        {
            "fleet": "home",
            "broker": {
                "hosts": ["localhost", "127.0.0.1"],
                "tls_port": free_port(),
                "plain_port": free_port(),
                "config_dir": str(root / "broker"),
                "persistence_dir": str(root / "data"),
                "message_size_limit": LIMIT,
            },
            "devices": [{"id": i, "role": r} for i, r in DEVICES],
        }
    )


def _own_like_the_broker_role(root: Path) -> None:
    """root:mosquitto 0640 for the secrets, a data directory mosquitto can write."""
    if os.geteuid() != 0:
        return
    gid = grp.getgrnam("mosquitto").gr_gid
    for name in ("passwd", "acl", "server.key"):
        os.chown(root / "broker" / name, 0, gid)
        os.chmod(root / "broker" / name, 0o640)
    shutil.chown(root / "data", "mosquitto", "mosquitto")


@pytest.fixture
def secured_broker() -> Iterator[SecuredBroker]:
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed")
    root = Path(tempfile.mkdtemp(prefix="edge-broker-"))
    root.chmod(0o755)
    try:
        fleet = _fleet(root)
        write_tree(root, build_files(fleet, SEED))
        (root / "data").mkdir()
        _own_like_the_broker_role(root)
        broker = SecuredBroker(fleet, root, None)  # type: ignore[arg-type]
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def wait_until(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


class Spy:
    """A connected client that records what it receives."""

    def __init__(self, broker: SecuredBroker, user: str, filters: list[str]) -> None:
        self.got: list[Received] = []
        self._lock = threading.Lock()
        self.transport = MqttTransport(broker.config(user), f"spy-{user}-{uuid.uuid4().hex[:6]}")
        for f in filters:
            self.transport.subscribe(f, self._record)
        self.transport.start()

    def _record(self, msg: Received) -> None:
        with self._lock:
            self.got.append(msg)

    def has(self, topic: str, payload: bytes) -> bool:
        with self._lock:
            return any(m.topic == topic and m.payload == payload for m in self.got)
