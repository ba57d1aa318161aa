"""FleetState: MQTT messages in, cards and events out; bad input counted, never raised."""

from __future__ import annotations

import pytest

from edge_app.dashboard.series import Series, percentile
from edge_app.dashboard.state import MAX_CAMERAS, MAX_DEVICES, MAX_THUMB_BYTES, FleetState
from edge_app.messages.topics import Topics

from . import factories as f

T = Topics.for_fleet("home")
NOW = 1_800_000_000.0


@pytest.fixture
def state() -> FleetState:
    return FleetState(T)


def test_result_updates_camera_and_counts(state: FleetState) -> None:
    events = state.ingest(
        T.result("cam1"), f.outcome("cam1", 1, label="waving", score=0.93, done=NOW), NOW
    )
    assert [e.kind for e in events] == ["result"]
    assert events[0].history
    assert events[0].data["label"] == "waving" and events[0].data["score"] == pytest.approx(0.93)
    cam = state.cameras["cam1"]
    assert cam.last is not None and cam.last["label"] == "waving"
    state.ingest(T.result("cam1"), f.outcome("cam1", 2, status="dropped", reason="deadline"), NOW)
    assert cam.last is not None and cam.last["status"] == "dropped"
    assert cam.last_ok is not None and cam.last_ok["label"] == "waving"
    assert state.counters()["completed"] == 1
    assert state.counters()["dropped"] == {"deadline": 1}
    assert [r["seq"] for r in cam.recent] == [1, 2]


def test_duplicate_outcomes_are_counted_once(state: FleetState) -> None:
    payload = f.outcome("cam1", 7, job="job-7")
    assert state.ingest(T.result("cam1"), payload, NOW)
    assert state.ingest(T.result("cam1"), payload, NOW) == []
    assert state.completed == 1


def test_recent_strip_is_bounded(state: FleetState) -> None:
    for seq in range(100):
        state.ingest(T.result("cam1"), f.outcome("cam1", seq), NOW)
    cam = state.cameras["cam1"]
    assert len(cam.recent) == cam.recent.maxlen
    assert cam.recent[-1]["seq"] == 99


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (T.result("cam1"), b"not json"),
        (T.result("cam1"), b'{"v": 1}'),
        (T.result("cam2"), f.outcome("cam1")),  # sensor does not match its topic
        (T.status("w1"), f.status("w2")),
        (T.heartbeat("w1"), b"\xff\xfe"),
        (T.plan, b"[]"),
        (T.metrics("w1"), b"{}" * 200_000),  # oversized
        (T.thumb("cam1"), b"GIF89a not a jpeg"),
        (T.thumb("cam1"), b"\xff\xd8" + b"0" * MAX_THUMB_BYTES),
        ("edge/other/result/cam1", f.outcome("cam1")),
        (T.root + "/result/a/b", f.outcome("cam1")),
    ],
)
def test_bad_messages_are_counted_not_raised(state: FleetState, topic: str, payload: bytes) -> None:
    assert state.ingest(topic, payload, NOW) == []
    assert state.bad_messages == 1
    assert state.counters()["bad_messages"] == 1


def test_device_online_offline_and_history_events(state: FleetState) -> None:
    events = state.ingest(T.status("w1"), f.status("w1", "online"), NOW)
    assert events[0].kind == "device" and events[0].data["online"]
    assert events[0].data["change"] == "online" and events[0].history
    events = state.ingest(T.heartbeat("w1"), f.heartbeat("w1", load=0.4, ts=NOW), NOW + 0.5)
    data = events[0].data
    assert not events[0].history  # no change of state: not a history event
    assert data["load"] == pytest.approx(0.4)
    assert data["temperature_c"] == pytest.approx(51.5)
    assert data["emulated"] == "pi3b"
    assert data["service"][0]["service_time_s"] == pytest.approx(0.12)
    assert data["memory_total"] == 1 << 30
    events = state.ingest(T.status("w1"), f.status("w1", "offline"), NOW + 1)
    assert events[0].data["online"] is False and events[0].data["change"] == "offline"


def test_missed_heartbeats_mark_a_device_stale(state: FleetState) -> None:
    state.ingest(T.status("w1"), f.status("w1"), NOW)
    state.ingest(T.heartbeat("w1"), f.heartbeat("w1", ts=NOW), NOW)
    assert [e.kind for e in state.tick(NOW + 2)] == ["tick"]
    stale = [e for e in state.tick(NOW + 4) if e.kind == "device"]
    assert len(stale) == 1 and stale[0].data["change"] == "stale" and not stale[0].data["online"]
    assert [e.kind for e in state.tick(NOW + 5)] == ["tick"]  # reported once
    back = state.ingest(T.heartbeat("w1"), f.heartbeat("w1", seq=2, ts=NOW + 6), NOW + 6)
    assert back[0].data["online"] and back[0].data["change"] == "online"


def test_heartbeats_without_a_status_count_as_online_but_not_after_a_will(
    state: FleetState,
) -> None:
    assert state.ingest(T.heartbeat("w9"), f.heartbeat("w9", ts=NOW), NOW)[0].data["online"]
    state.ingest(T.status("w9"), f.status("w9", "offline", ts=NOW - 50), NOW + 0.1)  # the will
    late = state.ingest(T.heartbeat("w9"), f.heartbeat("w9", seq=2, ts=NOW + 0.2), NOW + 0.2)
    assert late[0].data["online"] is False


def test_cleared_status_removes_the_device(state: FleetState) -> None:
    state.ingest(T.status("w1"), f.status("w1"), NOW)
    events = state.ingest(T.status("w1"), b"", NOW)
    assert [e.kind for e in events] == ["device_removed"]
    assert "w1" not in state.devices
    assert state.ingest(T.status("w1"), b"", NOW) == []


def test_plan_gives_devices_their_seats_and_old_epochs_are_ignored(state: FleetState) -> None:
    for d in ("w1", "w3"):
        state.ingest(T.status(d), f.status(d), NOW)
    events = state.ingest(T.plan, f.plan(epoch=3), NOW)
    assert events[0].kind == "plan" and events[0].data["plan"]["epoch"] == 3
    seats = {e.data["device"]: e.data["seats"] for e in events if e.kind == "device"}
    assert {"stage": 0, "mode": "replica", "weight": 1.0} in seats["w1"]
    assert {"stage": 1, "mode": "merger"} in seats["w1"]
    assert seats["w3"] == [{"stage": 1, "mode": "shard", "shard": 0, "lo": 0, "hi": 2048}]
    assert state.ingest(T.plan, f.plan(epoch=2), NOW) == []
    assert state.ingest(T.plan, f.plan(epoch=3), NOW) == []  # retained again after a reconnect
    assert state.plan is not None and state.plan.epoch == 3


def test_metrics_are_summed_across_devices(state: FleetState) -> None:
    state.ingest(T.metrics("w1"), f.metrics("w1", resent=2, errors=1), NOW)
    state.ingest(T.metrics("w2"), f.metrics("w2", resent=3), NOW)
    events = state.ingest(T.metrics("s1"), f.metrics("s1", role="sensor", accepted=50), NOW)
    counters = events[0].data
    assert counters["resent"] == 5 and counters["errors"] == 1 and counters["accepted"] == 50
    state.ingest(T.metrics("w1"), f.metrics("w1", resent=4, errors=1), NOW)  # cumulative
    assert state.counters()["resent"] == 7


def test_thumbnail_is_kept_and_versioned(state: FleetState) -> None:
    img = f.jpeg()
    events = state.ingest(T.thumb("cam1"), img, NOW)
    assert events[0].data == {"sensor": "cam1", "version": 1}
    assert state.cameras["cam1"].thumb == img
    assert state.ingest(T.thumb("cam1"), b"", NOW) == []


def test_snapshot_holds_everything_the_page_needs(state: FleetState) -> None:
    state.ingest(T.result("cam1"), f.outcome("cam1"), NOW)
    state.ingest(T.status("w1"), f.status("w1"), NOW)
    state.ingest(T.plan, f.plan(), NOW)
    state.tick(NOW + 1)
    snap = state.snapshot(NOW + 1)
    assert [c["sensor"] for c in snap["cameras"]] == ["cam1"]
    assert [d["device"] for d in snap["devices"]] == ["w1"]
    assert snap["pipeline"]["plan"]["model"] == "alexnet"
    assert len(snap["series"]) == 1


def test_series_throughput_and_percentiles() -> None:
    s = Series()
    for i in range(100):
        s.add(NOW + 0.001 * i, True, latency_s=(i + 1) / 100)
    s.add(NOW, False, None)
    point = s.tick(NOW + 1)
    assert point["completed"] == 100 and point["dropped"] == 1
    assert point["p50"] == pytest.approx(0.5) and point["p95"] == pytest.approx(0.95)
    empty = s.tick(NOW + 2)
    assert empty["completed"] == 0 and empty["p95"] == pytest.approx(0.95)  # 5 s window
    assert s.tick(NOW + 10)["p95"] is None
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0


def test_cameras_and_devices_from_the_network_stay_bounded(state: FleetState) -> None:
    for i in range(MAX_CAMERAS + 3):
        state.ingest(T.result(f"cam{i}"), f.outcome(f"cam{i}", 1, done=NOW), NOW)
    for i in range(MAX_DEVICES + 2):
        state.ingest(T.status(f"w{i}"), f.status(f"w{i}"), NOW)
    assert len(state.cameras) == MAX_CAMERAS and len(state.devices) == MAX_DEVICES
    assert state.overflow == 5
    assert state.completed == MAX_CAMERAS + 3  # counted even without a card
