"""Home Assistant discovery configs: checked against HA's rules, read back from retained alone."""

from __future__ import annotations

import json

import pytest

from edge_app.dashboard.discovery import (
    MAX_SEEN_CONFIGS,
    DiscoveryBuilder,
    DiscoveryPublisher,
    camera_state,
    ha_id,
)
from edge_app.dashboard.service import Dashboard
from edge_app.dashboard.store import HistoryStore
from edge_app.errors import ConfigError
from edge_app.messages.schemas import Heartbeat, encode
from edge_app.messages.topics import DiscoveryTopics, Topics

from . import factories as f
from .ha_rules import available, entities_from_retained, problems, render

T = Topics.for_fleet("home")
D = DiscoveryTopics("homeassistant")


class RetainedBroker:
    """What a broker keeps: the last retained payload per topic (empty payload deletes)."""

    def __init__(self) -> None:
        self.retained: dict[str, bytes] = {}
        self.sent: list[tuple[str, bytes, bool]] = []

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        self.sent.append((topic, payload, retain))
        if retain:
            if payload:
                self.retained[topic] = payload
            else:
                self.retained.pop(topic, None)


@pytest.fixture
def builder() -> DiscoveryBuilder:
    return DiscoveryBuilder(T, D, "dash1")


def test_ids_are_mapped_to_what_ha_accepts() -> None:
    assert ha_id("cam_1-a") == "cam_1-a"
    mapped = ha_id("pi.kitchen")
    assert mapped.startswith("pi_kitchen_") and mapped != ha_id("pi_kitchen")
    assert ha_id("pi.kitchen") == mapped  # stable


@pytest.mark.parametrize("ident", ["cam1", "pi.kitchen", "A-b_c.9", "x" * 64, "y." * 32])
def test_every_config_follows_ha_rules(builder: DiscoveryBuilder, ident: str) -> None:
    configs = builder.camera(ident) + builder.device(ident, "worker")
    assert len(configs) == 5
    for config in configs:
        assert problems(config.topic, json.loads(config.encoded())) == []
    assert len({c.payload["unique_id"] for c in configs}) == 5
    assert len({c.topic for c in configs}) == 5


def test_the_checker_catches_broken_configs(builder: DiscoveryBuilder) -> None:
    """The rules above must be able to fail: break each required part once."""
    good = builder.device("w1", "worker")[1]
    broken = [
        ("homeassistant/sensor/edge.home/x/config", good.payload),
        (good.topic, {k: v for k, v in good.payload.items() if k != "state_topic"}),
        (good.topic, {**good.payload, "device": {"name": "no ids"}}),
        (good.topic, {k: v for k, v in good.payload.items() if k != "unique_id"}),
        (good.topic, {**good.payload, "availability": [{"payload_available": "online"}]}),
        (good.topic, {**good.payload, "availability_topic": "a/b"}),
        (good.topic, {**good.payload, "state_topic": "edge/home/heartbeat/#/x"}),
        (good.topic, {**good.payload, "unit_of_measurement": "%", "device_class": "duration"}),
        (good.topic, {**good.payload, "stat_t": "typo"}),
    ]
    for topic, payload in broken:
        assert problems(topic, payload), (topic, payload)
    image = builder.camera("cam1")[1]
    no_topic = {k: v for k, v in image.payload.items() if k != "image_topic"}
    assert problems(image.topic, no_topic)


def test_entities_built_from_retained_configs_alone(builder: DiscoveryBuilder) -> None:
    broker = RetainedBroker()
    pub = DiscoveryPublisher(builder, broker.publish)
    pub.ensure_camera("cam1")
    pub.ensure_device("w1", "worker")
    pub.ensure_device("pi.kitchen", "worker")
    pub.ensure_device("dash1", "dashboard")  # not an entity of its own
    devices = entities_from_retained(broker.retained)
    names = {d.name: sorted(d.entities) for d in devices.values()}
    assert names == {
        "Camera cam1": ["Action", "Thumbnail"],
        "w1": ["Connectivity", "Load", "Service time"],
        "pi.kitchen": ["Connectivity", "Load", "Service time"],
    }
    cam = next(d for d in devices.values() if d.name == "Camera cam1")
    assert cam.entities["Thumbnail"].config["image_topic"] == T.thumb("cam1")
    assert cam.entities["Thumbnail"].config["content_type"] == "image/jpeg"


def test_entity_states_as_ha_would_render_them(builder: DiscoveryBuilder) -> None:
    broker = RetainedBroker()
    DiscoveryPublisher(builder, broker.publish).ensure_device("w1", "worker")
    broker.publish(T.status("w1"), f.status("w1", "online"), True)
    hb = f.heartbeat("w1", load=0.375, service=0.0425)
    dev = next(iter(entities_from_retained(broker.retained).values()))
    conn, load, service = (dev.entities[n] for n in ("Connectivity", "Load", "Service time"))
    on = render(conn.config["value_template"], broker.retained[T.status("w1")])
    assert on == conn.config["payload_on"]
    assert float(render(load.config["value_template"], hb)) == pytest.approx(37.5)
    assert float(render(service.config["value_template"], hb)) == pytest.approx(0.0425)
    assert available(load, broker.retained)
    broker.publish(T.status("w1"), f.status("w1", "offline"), True)
    assert not available(load, broker.retained)
    off = render(conn.config["value_template"], broker.retained[T.status("w1")])
    assert off == conn.config["payload_off"]
    # a heartbeat with no stages renders 0, not a template error
    empty = encode(Heartbeat(device="w1", role="worker", seq=1, ts=1.0))
    assert float(render(service.config["value_template"], empty)) == 0.0


def test_camera_entity_state_and_attributes(builder: DiscoveryBuilder) -> None:
    broker = RetainedBroker()
    DiscoveryPublisher(builder, broker.publish).ensure_camera("cam1")
    summary = {"label": "waving", "score": 0.91, "ts": 1_800_000_000.0, "seq": 4, "latency": 0.2}
    broker.publish(T.camera("cam1"), camera_state(summary), True)
    broker.publish(T.status("dash1"), f.status("dash1", role="dashboard"), True)
    cam = next(iter(entities_from_retained(broker.retained).values()))
    action = cam.entities["Action"]
    state_raw = broker.retained[action.config["state_topic"]]
    assert render(action.config["value_template"], state_raw) == "waving"
    attrs = json.loads(broker.retained[action.config["json_attributes_topic"]])
    assert attrs["confidence"] == pytest.approx(0.91)
    assert attrs["time"] == "2027-01-15T08:00:00.000+00:00"
    assert attrs["timestamp"] == 1_800_000_000.0
    assert available(action, broker.retained)
    long_label = camera_state({**summary, "label": "x" * 256})
    assert len(render(action.config["value_template"], long_label)) == 255


def test_removed_devices_lose_their_configs_and_birth_republishes(
    builder: DiscoveryBuilder,
) -> None:
    broker = RetainedBroker()
    pub = DiscoveryPublisher(builder, broker.publish)
    pub.ensure_device("w1", "worker")
    pub.ensure_device("w2", "worker")
    pub.remove_device("w1")
    assert [d.name for d in entities_from_retained(broker.retained).values()] == ["w2"]
    broker.sent.clear()
    pub.ensure_device("w2", "worker")  # unchanged: nothing re-sent
    assert broker.sent == []
    pub.republish()
    assert len(broker.sent) == 3 and all(retain for _, _, retain in broker.sent)


def test_stale_configs_on_the_broker_are_swept(builder: DiscoveryBuilder) -> None:
    broker = RetainedBroker()
    old = DiscoveryPublisher(builder, broker.publish)
    old.ensure_device("gone", "worker")
    old.ensure_device("w2", "worker")
    foreign = "homeassistant/sensor/other_node/x/config"
    broker.retained[foreign] = b'{"name": "not ours"}'
    fresh = DiscoveryPublisher(builder, broker.publish)  # a restarted dashboard
    for topic, payload in list(broker.retained.items()):
        fresh.note_retained(topic, payload)
    fresh.ensure_device("w2", "worker")  # w2 still has a retained status, "gone" does not
    assert fresh.sweep() == 3
    names = [d.name for d in entities_from_retained({**broker.retained, foreign: b""}).values()]
    assert names == ["w2"]
    assert foreign in broker.retained


def test_dashboard_drives_discovery_from_fleet_messages() -> None:
    broker = RetainedBroker()
    dash = Dashboard(T, HistoryStore(":memory:"), device_id="dash1", discovery=D)
    dash._publish = broker.publish  # type: ignore[method-assign]
    assert dash.discovery is not None
    dash.discovery._publish = broker.publish
    dash.feed(T.status("w1"), f.status("w1"))
    dash.feed(T.result("cam1"), f.outcome("cam1", label="clapping", score=0.7))
    names = {d.name for d in entities_from_retained(broker.retained).values()}
    assert names == {"w1", "Camera cam1"}
    assert json.loads(broker.retained[T.camera("cam1")])["action"] == "clapping"
    dash.feed(T.status("w1"), b"")  # the device was deleted from the fleet
    assert {d.name for d in entities_from_retained(broker.retained).values()} == {"Camera cam1"}
    broker.sent.clear()
    dash.feed(D.birth, b"online")
    assert len(broker.sent) == 2  # the camera's two configs again
    dash.feed(D.birth, b"offline")
    assert len(broker.sent) == 2


def test_long_ids_stay_unique_and_within_limits(builder: DiscoveryBuilder) -> None:
    a = builder.device("x" * 63 + "a", "worker")
    b = builder.device("x" * 63 + "b", "worker")
    ids = {c.payload["unique_id"] for c in a + b}
    assert len(ids) == 6 and all(len(i) <= 64 for i in ids)


@pytest.mark.parametrize("prefix", ["", "ha/+", "ha/#", "/ha", "ha/"])
def test_invalid_discovery_prefix_is_a_config_error(prefix: str) -> None:
    with pytest.raises(ConfigError, match="discovery prefix"):
        DiscoveryTopics.for_prefix(prefix)


def test_discovery_prefix_may_have_levels() -> None:
    assert DiscoveryTopics.for_prefix("home/ha").birth == "home/ha/status"


def test_retained_configs_remembered_for_the_sweep_stay_bounded(builder: DiscoveryBuilder) -> None:
    pub = DiscoveryPublisher(builder, RetainedBroker().publish)
    for i in range(MAX_SEEN_CONFIGS + 10):
        pub.note_retained(f"homeassistant/sensor/{builder.node}/x{i}/config", b"{}")
    assert len(pub.seen_on_broker) == MAX_SEEN_CONFIGS
