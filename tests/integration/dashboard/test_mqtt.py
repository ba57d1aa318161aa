"""The dashboard on a real Mosquitto: ingest, history across restarts, Home Assistant discovery."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_app.dashboard.app import DashboardOptions
from edge_app.dashboard.demo import DemoFleet
from edge_app.messages.topics import DiscoveryTopics
from edge_app.transport.mqtt import MqttTransport
from tests.unit.dashboard.ha_rules import available, entities_from_retained, render

from .running import get_json, retained_snapshot, running_dashboard, wait_for

PREFIX = "ha-test"


@pytest.fixture
def publisher(mosquitto: Any) -> Iterator[MqttTransport]:
    client = MqttTransport(mosquitto.config, client_id="fleet-sim")
    client.start()
    try:
        yield client
    finally:
        client.stop()


def options(tmp_path: Path, **kw: Any) -> DashboardOptions:
    fields: dict[str, Any] = {
        "bind": "127.0.0.1:0",
        "db": str(tmp_path / "history.sqlite3"),
        "device_id": "dash-test",
        "discovery_prefix": PREFIX,
        **kw,
    }
    return DashboardOptions(**fields)


def test_ingest_history_and_restart(
    mosquitto: Any, publisher: MqttTransport, tmp_path: Path
) -> None:
    fleet_cfg = mosquitto.fleet("it")
    fleet = DemoFleet(publisher, fleet_cfg.topics, cameras=("porch",), workers=("pi-a", "pi-b"))
    with running_dashboard(fleet_cfg, options(tmp_path)) as url:
        fleet.start()
        sent = [fleet.result("porch") for _ in range(5)]
        fleet.result("porch", status="dropped", reason="deadline")
        state = wait_for(
            lambda: (
                (s := get_json(f"{url}/api/state"))["pipeline"]["counters"]["completed"] == 5 and s
            )
        )
        cam = state["cameras"][0]
        assert cam["last_ok"]["label"] == sent[-1].label and cam["thumb_version"] >= 1
        assert {d["device"] for d in state["devices"]} >= {"pi-a", "pi-b", "dash-test"}
        assert state["pipeline"]["counters"]["dropped"] == {"deadline": 1}
        fleet.status("pi-b", "offline")
        wait_for(lambda: any(e["kind"] == "offline" for e in _events(url, "pi-b")))
    with running_dashboard(fleet_cfg, options(tmp_path)) as url:  # a restart
        state = get_json(f"{url}/api/state")
        assert [r["seq"] for r in state["cameras"][0]["recent"]] == [1, 2, 3, 4, 5, 6]
        history = get_json(f"{url}/api/history?camera=porch")["results"]
        assert [r["job"] for r in history if r["status"] == "ok"][::-1] == [o.job for o in sent]
        assert any(e["kind"] == "offline" for e in _events(url, "pi-b"))


def _events(url: str, device: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = get_json(f"{url}/api/device-events?device={device}")["events"]
    return events


def test_home_assistant_sees_entities_from_retained_configs(
    mosquitto: Any, publisher: MqttTransport, tmp_path: Path
) -> None:
    fleet_cfg = mosquitto.fleet("ha")
    topics = fleet_cfg.topics
    fleet = DemoFleet(publisher, topics, cameras=("porch",), workers=("pi-a", "pi.b"))
    with running_dashboard(fleet_cfg, options(tmp_path)) as url:
        fleet.start()
        outcome = fleet.result("porch")
        wait_for(lambda: get_json(f"{url}/api/state")["pipeline"]["counters"]["completed"] == 1)
        time.sleep(0.3)
        retained = retained_snapshot(mosquitto.config, "#")
        devices = entities_from_retained(retained, PREFIX)
        by_name = {d.name: d for d in devices.values()}
        assert set(by_name) == {"Camera porch", "pi-a", "pi.b", "scheduler-1"}
        action = by_name["Camera porch"].entities["Action"]
        assert render(action.config["value_template"], retained[action.config["state_topic"]]) == (
            outcome.label
        )
        attrs = json.loads(retained[action.config["json_attributes_topic"]])
        assert attrs["confidence"] == pytest.approx(outcome.score)
        assert available(action, retained)  # the dashboard's own retained status
        image = by_name["Camera porch"].entities["Thumbnail"]
        assert retained[image.config["image_topic"]].startswith(b"\xff\xd8")
        conn = by_name["pi.b"].entities["Connectivity"]
        assert (
            render(conn.config["value_template"], retained[conn.config["state_topic"]]) == "online"
        )

        # a device deleted from the fleet (its retained status cleared) loses its entities
        publisher.publish(topics.status("pi.b"), b"", retain=True)
        wait_for(lambda: "pi.b" not in _names(mosquitto, settle=0.2))

        # Home Assistant restarts and says so: every config comes again (not retained-only)
        seen: list[str] = []
        probe = MqttTransport(mosquitto.config, client_id="ha-probe")
        probe.start()
        probe.subscribe(f"{PREFIX}/+/+/+/config", lambda m: seen.append(m.topic))
        time.sleep(0.4)
        seen.clear()
        probe.publish(DiscoveryTopics(PREFIX).birth, b"online")
        wait_for(lambda: len(seen) >= 2 + 3 * 2)
        probe.stop()
    # the dashboard went away cleanly: its camera entities become unavailable
    retained = retained_snapshot(mosquitto.config, "#", settle=0.3)
    action = entities_from_retained(retained, PREFIX)
    cam = next(d for d in action.values() if d.name == "Camera porch").entities["Action"]
    assert not available(cam, retained)


def _names(mosquitto: Any, settle: float) -> set[str]:
    retained = retained_snapshot(mosquitto.config, f"{PREFIX}/#", settle=settle)
    return {d.name for d in entities_from_retained(retained, PREFIX).values()}


def test_stale_configs_are_removed_at_start(
    mosquitto: Any, publisher: MqttTransport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edge_app.dashboard.service.SWEEP_AFTER_S", 0.5)
    fleet_cfg = mosquitto.fleet("sweep")
    fleet = DemoFleet(publisher, fleet_cfg.topics, cameras=(), workers=("w1", "w2"))
    fleet.start()
    with running_dashboard(fleet_cfg, options(tmp_path)):
        wait_for(lambda: {"w1", "w2"} <= _names(mosquitto, settle=0.2))
    # while the dashboard is down, w2 is deleted from the fleet
    publisher.publish(fleet_cfg.topics.status("w2"), b"", retain=True)
    with running_dashboard(fleet_cfg, options(tmp_path)):
        wait_for(lambda: "w2" not in _names(mosquitto, settle=0.2), timeout=6)
        assert "w1" in _names(mosquitto, settle=0.2)


def test_no_discovery_publishes_no_configs(
    mosquitto: Any, publisher: MqttTransport, tmp_path: Path
) -> None:
    fleet_cfg = mosquitto.fleet("quiet")
    fleet = DemoFleet(publisher, fleet_cfg.topics, cameras=("c",), workers=("w1",))
    with running_dashboard(fleet_cfg, options(tmp_path, discovery_prefix=None)) as url:
        fleet.start()
        fleet.result("c")
        wait_for(lambda: get_json(f"{url}/api/state")["pipeline"]["counters"]["completed"] == 1)
        assert retained_snapshot(mosquitto.config, f"{PREFIX}/#", settle=0.3) == {}


def test_dashboard_survives_a_broker_restart(mosquitto: Any, tmp_path: Path) -> None:
    fleet_cfg = mosquitto.fleet("restart")
    with running_dashboard(fleet_cfg, options(tmp_path, discovery_prefix=None)) as url:
        mosquitto.restart(kill=True)  # kill -9: retained messages since the last save are gone
        client = MqttTransport(mosquitto.config, client_id="after-restart")
        client.start()
        try:
            fleet = DemoFleet(client, fleet_cfg.topics, cameras=("c",), workers=("w1",))
            wait_for(lambda: get_json(f"{url}/healthz")["connected"], timeout=10)
            fleet.start()
            fleet.result("c")
            state = wait_for(
                lambda: (
                    (s := get_json(f"{url}/api/state"))["pipeline"]["counters"]["completed"] and s
                ),
                timeout=5,
            )
            assert state["cameras"][0]["sensor"] == "c"
            # the dashboard's own retained online status is back after the reconnect
            retained = retained_snapshot(mosquitto.config, fleet_cfg.topics.status("dash-test"))
            assert b'"online"' in retained[fleet_cfg.topics.status("dash-test")]
        finally:
            client.stop()
