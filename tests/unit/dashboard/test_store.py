"""HistoryStore: SQLite history that survives a restart and stays within its bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_app.dashboard.store import HistoryStore
from edge_app.errors import ConfigError

NOW = 1_800_000_000.0


def summary(camera: str, seq: int, ts: float, status: str = "ok") -> dict[str, object]:
    return {
        "job": f"{camera}-{seq}",
        "sensor": camera,
        "seq": seq,
        "status": status,
        "label": "waving" if status == "ok" else None,
        "score": 0.8 if status == "ok" else None,
        "reason": None if status == "ok" else "deadline",
        "ts": ts,
        "created": ts - 0.1,
        "latency": 0.1,
        "epoch": 2,
    }


def test_history_survives_reopening(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite3"
    store = HistoryStore(db)
    for i in range(5):
        store.add_result(summary("cam1", i, NOW + i))
    store.add_result(summary("cam2", 0, NOW + 10, status="dropped"))
    store.add_event(NOW, "w1", "offline", "worker")
    store.close()
    again = HistoryStore(db)
    rows = again.results(camera="cam1")
    assert [r["seq"] for r in rows] == [4, 3, 2, 1, 0]  # newest first
    assert rows[0]["sensor"] == "cam1" and rows[0]["label"] == "waving"
    assert again.results(camera="cam2")[0]["reason"] == "deadline"
    assert again.cameras() == ["cam1", "cam2"]
    assert again.events(device="w1")[0]["kind"] == "offline"
    recent = again.recent_by_camera(2)
    assert [r["seq"] for r in recent["cam1"]] == [3, 4]  # oldest first, last two
    again.close()


def test_time_range_and_limit(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    for i in range(20):
        store.add_result(summary("cam1", i, NOW + i))
    assert [r["seq"] for r in store.results(since=NOW + 5, until=NOW + 7)] == [7, 6, 5]
    assert len(store.results(limit=3)) == 3
    assert len(store.results(limit=10**9)) == 20
    store.close()


def test_prune_by_age_and_rows(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3", max_age_s=100, max_rows=10)
    for i in range(30):
        store.add_result(summary("cam1", i, NOW - 200 + i * 10))  # 200 s ago .. 90 s ahead
    store.add_event(NOW - 500, "w1", "online")
    store.add_event(NOW, "w1", "offline")
    store.prune(NOW)
    rows = store.results(limit=100)
    assert len(rows) <= 10
    assert min(r["ts"] for r in rows) >= NOW - 100
    assert [e["kind"] for e in store.events()] == ["offline"]
    store.close()


def test_prune_by_file_size(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path, max_bytes=200_000)
    for round_ in range(4):  # the file stays bounded over many fill-and-prune rounds
        for i in range(5000):
            seq = round_ * 5000 + i
            store.add_result(summary(f"camera-with-a-long-name-{i % 7}", seq, NOW + seq))
        store.flush()
        before = store.count()
        store.prune(NOW + 30_000)
        assert store.count() < before
        assert store.size_bytes() <= 200_000
    newest = store.results(limit=1)[0]["seq"]
    assert newest == 19_999  # the oldest rows went, not the newest
    store.close()
    assert path.stat().st_size < 3_000_000  # one round's growth, reused afterwards


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "junk.sqlite3"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="dashboard history"):
        HistoryStore(bad)


def test_pending_buffer_is_bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("edge_app.dashboard.store.MAX_PENDING", 5)
    store = HistoryStore(tmp_path / "h.sqlite3")
    for i in range(8):
        store.add_result(summary("cam1", i, NOW + i))
    assert store.lost == 3
    assert store.count() == 5
    store.close()
