"""Mosquitto started from the generated files: authentication, role ACLs, TLS, size limits.

Mosquitto drops unauthorised publishes silently under MQTT 3.1.1, so each check publishes the
message and then a sentinel on a topic the spy may read, from the same client: messages of one
publisher reach one subscriber in order, so once the sentinel arrives the checked message has
arrived too, or never will. MQTT 5 reason codes are read with the `mosquitto_pub` client.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_app.errors import TransportError
from edge_app.messages.topics import DiscoveryTopics, Topics
from edge_app.provision.generate import build_files
from edge_app.provision.seed import Seed
from edge_app.transport.mqtt import MqttTransport
from tests.integration.broker.conftest import LIMIT, SEED, SecuredBroker, Spy, wait_until

T = Topics.for_fleet("home")
D = DiscoveryTopics()


@pytest.fixture
def clients(secured_broker: SecuredBroker) -> Iterator[dict[str, MqttTransport]]:
    made: dict[str, MqttTransport] = {}
    for user in ("cam1", "cam2", "w1", "w2", "sched", "dash", "ha"):
        made[user] = MqttTransport(secured_broker.config(user), f"{user}-{uuid.uuid4().hex[:6]}")
        made[user].start()
    yield made
    for t in made.values():
        t.stop()


def sentinel_topic(user: str) -> str:
    return D.birth if user == "ha" else T.status(user)


def delivered(spy: Spy, pub: MqttTransport, user: str, topic: str, payload: bytes) -> bool:
    """Publish ``payload`` on ``topic``, then a sentinel; True if the spy got the payload."""
    pub.publish(topic, payload, qos=1)
    mark = b"sentinel-" + uuid.uuid4().bytes
    pub.publish(sentinel_topic(user), mark, qos=1)
    assert wait_until(lambda: spy.has(sentinel_topic(user), mark)), f"no sentinel from {user}"
    return spy.has(topic, payload)


PUBLISH_CASES = [
    # sensors: their own jobs and telemetry; never a plan, another's result, or a worker's topics
    ("cam1", T.task("w1"), True),
    ("cam1", T.fanout(0), True),
    ("cam1", T.thumb("cam1"), True),
    ("cam1", T.heartbeat("cam1"), True),
    ("cam1", T.metrics("cam1"), True),
    ("cam1", T.result("cam1"), True),
    ("cam1", T.plan, False),
    ("cam1", T.result("cam2"), False),
    ("cam1", T.status("w1"), False),
    ("cam1", T.thumb("cam2"), False),
    ("cam1", T.fanout(1), False),
    ("cam1", T.ack("w1"), False),
    # workers: tasks, fan-outs, acks and results of the pipeline; never the plan or others' status
    ("w1", T.task("w2"), True),
    ("w1", T.fanout(1), True),
    ("w1", T.ack("cam1"), True),
    ("w1", T.result("cam1"), True),
    ("w1", T.heartbeat("w1"), True),
    ("w1", T.plan, False),
    ("w1", T.status("w2"), False),
    ("w1", T.heartbeat("sched"), False),
    ("w1", T.thumb("cam1"), False),
    # the scheduler is the only writer of the plan, and writes nothing of the data path
    ("sched", T.plan, True),
    ("sched", T.heartbeat("sched"), True),
    ("sched", T.task("w1"), False),
    ("sched", T.result("cam1"), False),
    ("sched", T.ack("cam1"), False),
    # the dashboard writes discovery configs and its own status; never a job or a plan
    ("dash", D.config("sensor", "cam1", "action"), True),
    ("dash", T.camera("cam1"), True),
    ("dash", T.task("w1"), False),
    ("dash", T.fanout(0), False),
    ("dash", T.plan, False),
    ("dash", T.result("cam1"), False),
    ("dash", T.status("w1"), False),
    # Home Assistant announces itself and nothing else
    ("ha", D.birth, True),
    ("ha", T.camera("cam1"), False),
    ("cam1", T.camera("cam1"), False),
    ("ha", T.task("w1"), False),
    ("ha", D.config("sensor", "cam1", "action"), False),
]


def test_each_role_can_publish_what_it_needs_and_nothing_else(
    secured_broker: SecuredBroker, clients: dict[str, MqttTransport]
) -> None:
    fleet_spy = Spy(secured_broker, "admin", [T.everything])  # monitor: reads the whole fleet
    ha_spy = Spy(secured_broker, "ha", [D.everything, T.all("status")])
    wrong = []
    try:
        for user, topic, allowed in PUBLISH_CASES:
            spy = ha_spy if topic.startswith(D.prefix) or user == "ha" else fleet_spy
            payload = f"{user}->{topic}".encode() + uuid.uuid4().bytes
            if delivered(spy, clients[user], user, topic, payload) != allowed:
                wrong.append(f"{user} {'could not' if allowed else 'could'} publish {topic}")
    finally:
        fleet_spy.transport.stop()
        ha_spy.transport.stop()
    assert not wrong, "\n".join(wrong)
    assert all(t.connected for t in clients.values())


def test_reads_are_limited_to_what_each_role_needs(
    secured_broker: SecuredBroker, clients: dict[str, MqttTransport]
) -> None:
    """Frames and activations reach only the device they are for."""
    readers = {
        "w2": Spy(secured_broker, "w2", [T.task("w1"), T.all("status")]),
        "cam2": Spy(secured_broker, "cam2", [T.all("task"), T.all("status")]),
        "ha": Spy(secured_broker, "ha", [T.everything]),
        "w1": Spy(secured_broker, "w1", [T.task("w1"), T.all("status")]),
    }
    try:
        frame = b"frame-" + uuid.uuid4().bytes
        clients["cam1"].publish(T.task("w1"), frame)
        mark = b"mark-" + uuid.uuid4().bytes
        clients["cam1"].publish(T.status("cam1"), mark)
        for name, spy in readers.items():
            assert wait_until(lambda s=spy: s.has(T.status("cam1"), mark)), name
        assert readers["w1"].has(T.task("w1"), frame)
        for name in ("w2", "cam2", "ha"):
            assert not readers[name].has(T.task("w1"), frame), f"{name} read another's task"
    finally:
        for spy in readers.values():
            spy.transport.stop()


def test_only_the_scheduler_plan_reaches_sensors_and_workers_retained(
    secured_broker: SecuredBroker, clients: dict[str, MqttTransport]
) -> None:
    clients["w1"].publish(T.plan, b"forged by w1", retain=True)
    clients["sched"].publish(T.plan, b"plan epoch 7", retain=True)
    for user in ("cam2", "w2"):
        spy = Spy(secured_broker, user, [T.plan])
        try:
            assert wait_until(lambda s=spy: s.has(T.plan, b"plan epoch 7")), user
            assert all(m.payload == b"plan epoch 7" for m in spy.got)
        finally:
            spy.transport.stop()


@pytest.mark.parametrize("user", [None, "nobody"])
def test_anonymous_and_unknown_users_are_refused(
    secured_broker: SecuredBroker, user: str | None
) -> None:
    config = secured_broker.config(user, password="guess" if user else None)
    with pytest.raises(TransportError, match=r"refused|not authori"):
        MqttTransport(config, "intruder", connect_timeout=3).start()


def test_a_wrong_password_is_refused(secured_broker: SecuredBroker) -> None:
    with pytest.raises(TransportError, match=r"refused|not authori"):
        MqttTransport(secured_broker.config("w1", password="w1"), "w1x", connect_timeout=3).start()


def test_plain_listener_needs_credentials_and_serves_localhost_only(
    secured_broker: SecuredBroker,
) -> None:
    port = secured_broker.fleet.broker.plain_port
    plain = secured_broker.config("sched").model_copy(
        update={"url": f"mqtt://127.0.0.1:{port}", "ca_file": None}
    )
    t = MqttTransport(plain, "sched-local")
    t.start()
    t.stop()
    anonymous = plain.model_copy(update={"username": None, "password": None})
    with pytest.raises(TransportError):
        MqttTransport(anonymous, "anon-local", connect_timeout=3).start()
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this host has no non-loopback address")
    with pytest.raises(OSError), socket.create_connection((address, port), timeout=2):
        pass


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_tls_needs_the_fleet_ca(secured_broker: SecuredBroker, tmp_path: Path) -> None:
    for protocol in ("3.1.1", "5"):
        ok = MqttTransport(secured_broker.config("w1", protocol=protocol), f"w1-{protocol}")
        ok.start()
        assert ok.connected
        ok.stop()
    no_ca = secured_broker.config("w1").model_copy(update={"ca_file": None})
    with pytest.raises(TransportError):
        MqttTransport(no_ca, "w1-noca", connect_timeout=3).start()
    other = build_files(secured_broker.fleet, Seed(b"another-fleet-seed-000000000000", "home"))
    (tmp_path / "other-ca.crt").write_bytes(other["broker/ca.crt"].data)
    foreign = secured_broker.config("w1", ca_file=str(tmp_path / "other-ca.crt"))
    with pytest.raises(TransportError):
        MqttTransport(foreign, "w1-foreign", connect_timeout=3).start()
    cleartext = secured_broker.config("w1").model_copy(
        update={"url": f"mqtt://localhost:{secured_broker.fleet.broker.tls_port}", "ca_file": None}
    )
    with pytest.raises(TransportError):
        MqttTransport(cleartext, "w1-clear", connect_timeout=3).start()


def test_retained_plan_and_status_survive_a_broker_restart(
    secured_broker: SecuredBroker, clients: dict[str, MqttTransport]
) -> None:
    """persistence is on, and the persistence directory is writable by the broker's user."""
    clients["sched"].publish(T.plan, b"plan epoch 9", retain=True)
    clients["w1"].publish(T.status("w1"), b"online", retain=True)
    spy = Spy(secured_broker, "admin", [T.plan, T.status("w1")])
    assert wait_until(
        lambda: spy.has(T.plan, b"plan epoch 9") and spy.has(T.status("w1"), b"online")
    )
    spy.transport.stop()
    secured_broker.stop()
    secured_broker.start()
    again = Spy(secured_broker, "admin", [T.plan, T.status("w1")])
    try:
        assert wait_until(lambda: again.has(T.plan, b"plan epoch 9"), timeout=10)
        assert wait_until(lambda: again.has(T.status("w1"), b"online"), timeout=10)
    finally:
        again.transport.stop()


def test_an_oversized_message_is_refused_and_the_fleet_keeps_running(
    secured_broker: SecuredBroker, clients: dict[str, MqttTransport]
) -> None:
    spy = Spy(secured_broker, "w1", [T.task("w1"), T.all("status")])
    try:
        cam1 = clients["cam1"]
        too_big = b"x" * (LIMIT + 1)
        assert not delivered(spy, cam1, "cam1", T.task("w1"), too_big)
        at_limit = b"y" * LIMIT
        assert delivered(spy, cam1, "cam1", T.task("w1"), at_limit)
        assert cam1.connected and cam1.reconnects == 0
        assert delivered(spy, clients["cam2"], "cam2", T.task("w1"), b"small job")
    finally:
        spy.transport.stop()


# --- MQTT 5: the broker tells the publisher why -----------------------------------------------

MOSQUITTO_PUB = shutil.which("mosquitto_pub")


def _v5_puback(broker: SecuredBroker, user: str, topic: str, payload: bytes) -> int:
    """Publish with QoS 1 over MQTT 5 (mosquitto_pub) and return the PUBACK reason code."""
    assert MOSQUITTO_PUB is not None
    port = str(broker.fleet.broker.tls_port)
    cmd = [MOSQUITTO_PUB, "-V", "5", "-q", "1", "-d", "-h", "localhost", "-p", port]
    cmd += ["--cafile", broker.ca, "-u", user, "-P", SEED.password(user), "-t", topic, "-s"]
    done = subprocess.run(cmd, input=payload, capture_output=True, timeout=20, check=False)
    found = re.search(rb"received PUBACK \(Mid: \d+, RC:(\d+)\)", done.stdout)
    assert found, done.stdout + done.stderr
    return int(found.group(1))


@pytest.mark.skipif(MOSQUITTO_PUB is None, reason="mosquitto_pub is not installed")
def test_mqtt5_reason_codes(secured_broker: SecuredBroker) -> None:
    not_authorized, too_large = 0x87, 0x95
    assert _v5_puback(secured_broker, "sched", T.plan, b"{}") in (0x00, 0x10)
    assert _v5_puback(secured_broker, "cam1", T.plan, b"{}") == not_authorized
    assert _v5_puback(secured_broker, "cam1", T.result("cam2"), b"{}") == not_authorized
    assert _v5_puback(secured_broker, "w1", T.plan, b"{}") == not_authorized
    assert _v5_puback(secured_broker, "dash", T.task("w1"), b"job") == not_authorized
    assert _v5_puback(secured_broker, "cam1", T.task("w1"), b"z" * (LIMIT + 1)) == too_large
