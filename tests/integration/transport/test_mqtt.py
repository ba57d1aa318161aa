"""MqttTransport against a real Mosquitto: pub/sub, retained, wills, reconnects, auth, TLS."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_app.config import BrokerConfig
from edge_app.errors import TransportError
from edge_app.transport.base import Received, Transport
from edge_app.transport.mqtt import MqttTransport
from tests.conftest import MosquittoBroker, free_port


class Inbox:
    def __init__(self) -> None:
        self.q: queue.Queue[Received] = queue.Queue()

    def __call__(self, message: Received) -> None:
        self.q.put(message)

    def get(self, timeout: float = 5.0) -> Received:
        return self.q.get(timeout=timeout)

    def empty_for(self, seconds: float) -> bool:
        try:
            self.q.get(timeout=seconds)
        except queue.Empty:
            return True
        return False


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def clients(mosquitto: MosquittoBroker) -> Iterator[Callable[..., MqttTransport]]:
    made: list[MqttTransport] = []

    def make(client_id: str, config: BrokerConfig | None = None, **kw: object) -> MqttTransport:
        t = MqttTransport(config or mosquitto.config, client_id, **kw)  # type: ignore[arg-type]
        made.append(t)
        return t

    yield make
    for t in made:
        t.stop()


def test_pub_sub_wildcards_and_binary_payloads(clients: Callable[..., MqttTransport]) -> None:
    a, b = clients("a"), clients("b")
    assert isinstance(a, Transport)
    inbox = Inbox()
    b.subscribe("edge/+/task/#", inbox)
    a.start()
    b.start()
    payload = bytes(range(256)) * 4096  # 1 MiB of every byte value
    a.publish("edge/home/task/w1", payload)
    a.publish("edge/home/other/w1", b"not for b")
    got = inbox.get()
    assert got == Received("edge/home/task/w1", payload, False)
    assert inbox.empty_for(0.3)


def test_retained_delivered_to_late_subscribers(clients: Callable[..., MqttTransport]) -> None:
    a = clients("a")
    a.start()
    a.publish("edge/home/plan", b'{"epoch": 3}', retain=True)
    time.sleep(0.1)
    b = clients("b")
    b.start()
    inbox = Inbox()
    b.subscribe("edge/home/plan", inbox)
    assert inbox.get() == Received("edge/home/plan", b'{"epoch": 3}', True)


def test_handler_errors_are_counted_and_delivery_goes_on(
    clients: Callable[..., MqttTransport],
) -> None:
    a = clients("a")
    inbox = Inbox()

    def broken(message: Received) -> None:
        raise ValueError("bad handler")

    a.subscribe("t/bad", broken)
    a.subscribe("t/good", inbox)
    a.start()
    for i in range(3):
        a.publish("t/bad", b"x")
        a.publish("t/good", str(i).encode())
    assert [inbox.get().payload for _ in range(3)] == [b"0", b"1", b"2"]
    assert wait_until(lambda: a.handler_errors == 3)


def test_publish_from_many_threads(clients: Callable[..., MqttTransport]) -> None:
    a, b = clients("a"), clients("b")
    inbox = Inbox()
    b.subscribe("n/+", inbox)
    a.start()
    b.start()

    def send(k: int) -> None:
        for i in range(250):
            a.publish(f"n/{k}", f"{i}".encode())

    threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = [inbox.get() for _ in range(1000)]
    for k in range(4):
        assert [int(m.payload) for m in got if m.topic == f"n/{k}"] == list(range(250))


WILL_CLIENT = textwrap.dedent(
    """
    import sys, time
    from edge_app.config import BrokerConfig
    from edge_app.transport.mqtt import MqttTransport
    t = MqttTransport(BrokerConfig(url=sys.argv[1]), "victim")
    t.set_will("edge/home/status/victim", b"offline", retain=True)
    t.on_connect(lambda: t.publish("edge/home/status/victim", b"online", retain=True))
    t.start()
    print("ready", flush=True)
    if sys.argv[2] == "stop":
        time.sleep(0.2)
        t.stop()
    else:
        time.sleep(60)
    """
)


@pytest.mark.parametrize("ending", ["kill", "stop"])
def test_last_will_on_kill_only(
    mosquitto: MosquittoBroker, clients: Callable[..., MqttTransport], ending: str
) -> None:
    watcher = clients("watcher")
    inbox = Inbox()
    watcher.subscribe("edge/home/status/+", inbox)
    watcher.start()
    proc = subprocess.Popen(
        [sys.executable, "-c", WILL_CLIENT, mosquitto.url, ending],
        stdout=subprocess.PIPE,
        cwd=str(Path(__file__).resolve().parents[3]),
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        assert inbox.get().payload == b"online"
        if ending == "kill":
            proc.send_signal(signal.SIGKILL)
            assert inbox.get(timeout=5).payload == b"offline"
        else:
            assert proc.wait(timeout=10) == 0
            assert inbox.empty_for(1.0), "a clean stop must not send the will"
    finally:
        proc.kill()
        proc.wait()


def test_reconnect_after_broker_restart_resubscribes(
    mosquitto: MosquittoBroker, clients: Callable[..., MqttTransport]
) -> None:
    a, b = clients("a"), clients("b")
    inbox = Inbox()
    connects: list[float] = []
    b.subscribe("x/+", inbox)
    b.subscribe("y/#", inbox)
    b.on_connect(lambda: connects.append(time.monotonic()))
    a.start()
    b.start()
    a.publish("x/1", b"before")
    assert inbox.get().payload == b"before"
    mosquitto.restart(down_s=0.5)
    assert wait_until(lambda: a.connected and b.connected and len(connects) == 2, 10)
    assert b.reconnects == 1
    time.sleep(0.2)  # the SUBSCRIBE is sent right after CONNACK; give the broker a moment
    a.publish("x/2", b"after")
    a.publish("y/deep/er", b"after too")
    assert {inbox.get().payload, inbox.get().payload} == {b"after", b"after too"}


def test_start_fails_fast_when_no_broker() -> None:
    t = MqttTransport(BrokerConfig(url=f"mqtt://127.0.0.1:{free_port()}"), "x", connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(TransportError, match="cannot connect"):
        t.start()
    assert time.monotonic() - started < 4
    assert not t.connected


def test_mqtt5_protocol(clients: Callable[..., MqttTransport], mosquitto: MosquittoBroker) -> None:
    v5 = clients("v5", BrokerConfig(url=mosquitto.url, protocol="5"))
    inbox = Inbox()
    v5.subscribe("v/5", inbox)
    v5.start()
    v5.publish("v/5", b"five", retain=True)
    assert inbox.get().payload == b"five"


def test_username_and_password(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "edge", "s3cret"], check=True)
    broker = MosquittoBroker(tmp_path, f"password_file {passwd}\n", anonymous=False)
    broker.start()
    try:
        good = MqttTransport(BrokerConfig(url=f"mqtt://edge:s3cret@127.0.0.1:{broker.port}"), "g")
        good.start()
        assert good.connected
        good.stop()
        bad = MqttTransport(
            BrokerConfig(url=broker.url, username="edge", password="wrong"), "b", connect_timeout=3
        )
        with pytest.raises(TransportError, match="refused"):
            bad.start()
    finally:
        broker.stop(kill=True)


def _make_certs(d: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-ca")  # fmt: skip
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=worker-1")  # fmt: skip
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "client.crt", "-days", "2")  # fmt: skip


@pytest.mark.slow
def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    _make_certs(tmp_path)
    conf = (
        f"cafile {tmp_path}/ca.crt\ncertfile {tmp_path}/server.crt\nkeyfile {tmp_path}/server.key\n"
    )
    broker = MosquittoBroker(tmp_path, conf, scheme="mqtts")
    broker.start()
    try:
        t = MqttTransport(BrokerConfig(url=broker.url, ca_file=str(tmp_path / "ca.crt")), "tls")
        inbox = Inbox()
        t.subscribe("secure", inbox)
        t.start()
        t.publish("secure", b"hello")
        assert inbox.get().payload == b"hello"
        t.stop()
        untrusted = MqttTransport(BrokerConfig(url=broker.url), "no-ca", connect_timeout=2)
        with pytest.raises(TransportError):
            untrusted.start()
    finally:
        broker.stop(kill=True)


@pytest.mark.slow
def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    _make_certs(tmp_path)
    conf = (
        f"cafile {tmp_path}/ca.crt\ncertfile {tmp_path}/server.crt\n"
        f"keyfile {tmp_path}/server.key\nrequire_certificate true\n"
    )
    broker = MosquittoBroker(tmp_path, conf, scheme="mqtts")
    broker.start()
    ca = str(tmp_path / "ca.crt")
    try:
        cfg = BrokerConfig(
            url=broker.url,
            ca_file=ca,
            cert_file=str(tmp_path / "client.crt"),
            key_file=str(tmp_path / "client.key"),
        )
        t = MqttTransport(cfg, "mtls")
        t.start()
        assert t.connected
        t.stop()
        anonymous = MqttTransport(BrokerConfig(url=broker.url, ca_file=ca), "x", connect_timeout=2)
        with pytest.raises(TransportError):
            anonymous.start()
    finally:
        broker.stop(kill=True)
