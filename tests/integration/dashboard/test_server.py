"""The dashboard's HTTP server on a real socket: page, API, SSE stream, token, exposure rules."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from edge_app.dashboard.server import check_exposure, create_app, parse_bind
from edge_app.dashboard.service import Dashboard
from edge_app.dashboard.store import HistoryStore
from edge_app.errors import ConfigError
from edge_app.messages.topics import Topics
from tests.unit.dashboard import factories as f

T = Topics.for_fleet("home")
Body = Callable[[TestClient[Any, Any], Dashboard], Awaitable[None]]


def serve(tmp_path: Path, body: Body, token: str | None = None) -> None:
    async def main() -> None:
        dash = Dashboard(T, HistoryStore(tmp_path / "h.sqlite3"), device_id="dash1")
        dash.start_background()
        client = TestClient(TestServer(create_app(dash, token)))
        await client.start_server()
        try:
            await body(client, dash)
        finally:
            await dash.stop_background()
            await client.close()
            dash.store.close()

    asyncio.run(main())


async def read_events(
    resp: aiohttp.ClientResponse, want: str, timeout: float = 3.0
) -> dict[str, Any]:
    """Read SSE frames until an event named ``want`` arrives; return its data."""
    deadline = time.monotonic() + timeout
    name = None
    while time.monotonic() < deadline:
        line = (await asyncio.wait_for(resp.content.readline(), timeout)).decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name == want:
            data: dict[str, Any] = json.loads(line[6:])
            return data
    raise AssertionError(f"no {want} event within {timeout} s")


def test_page_and_assets_are_served_with_a_strict_policy(tmp_path: Path) -> None:
    async def body(client: TestClient[Any, Any], dash: Dashboard) -> None:
        page = await client.get("/")
        assert page.status == 200
        html = await page.text()
        assert "/static/app.js" in html and "http" not in html.replace("http-equiv", "")
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        for asset in ("app.js", "charts.js", "style.css", "favicon.svg"):
            resp = await client.get(f"/static/{asset}")
            assert resp.status == 200, asset
            assert "//cdn" not in await resp.text()
        assert (await client.get("/static/../server.py")).status in (403, 404)

    serve(tmp_path, body)


def test_results_stream_over_sse_within_a_second(tmp_path: Path) -> None:
    async def body(client: TestClient[Any, Any], dash: Dashboard) -> None:
        resp = await client.get("/api/events")
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        snapshot = await read_events(resp, "snapshot")
        assert snapshot["cameras"] == []
        t0 = time.monotonic()
        dash.feed(T.result("cam1"), f.outcome("cam1", 5, label="waving"))
        result = await read_events(resp, "result")
        assert time.monotonic() - t0 < 1.0
        assert result["sensor"] == "cam1" and result["label"] == "waving"
        dash.feed(T.status("w1"), f.status("w1"))
        assert (await read_events(resp, "device"))["online"] is True
        tick = await read_events(resp, "tick", timeout=3)
        assert "p95" in tick
        resp.close()

    serve(tmp_path, body)


def test_state_history_and_thumbnail_api(tmp_path: Path) -> None:
    async def body(client: TestClient[Any, Any], dash: Dashboard) -> None:
        now = time.time()
        for seq in range(3):
            dash.feed(T.result("cam1"), f.outcome("cam1", seq, done=now - 100 + seq))
        dash.feed(T.result("cam2"), f.outcome("cam2", 1, status="dropped", reason="backpressure"))
        img = f.jpeg()
        dash.feed(T.thumb("cam1"), img)
        dash.feed(T.status("w1"), f.status("w1", "online"))
        dash.feed(T.status("w1"), f.status("w1", "offline"))
        state = await (await client.get("/api/state")).json()
        assert {c["sensor"] for c in state["cameras"]} == {"cam1", "cam2"}
        thumb = await client.get("/api/thumb/cam1")
        assert thumb.content_type == "image/jpeg" and await thumb.read() == img
        assert (await client.get("/api/thumb/nope")).status == 404
        hist = await (await client.get("/api/history?camera=cam1")).json()
        assert [r["seq"] for r in hist["results"]] == [2, 1, 0]
        since = await (await client.get(f"/api/history?since={now - 99.5}")).json()
        assert {r["seq"] for r in since["results"] if r["sensor"] == "cam1"} == {1, 2}
        assert (await client.get("/api/history?since=yesterday")).status == 400
        assert (await client.get("/api/history?limit=-1")).status == 400
        events = await (await client.get("/api/device-events?device=w1")).json()
        assert [e["kind"] for e in events["events"]] == ["offline", "online"]
        cams = await (await client.get("/api/cameras")).json()
        assert cams["cameras"] == ["cam1", "cam2"]

    serve(tmp_path, body)


def test_token_guards_everything(tmp_path: Path) -> None:
    token = "s3cret-token"

    async def body(client: TestClient[Any, Any], dash: Dashboard) -> None:
        for path in ("/", "/api/state", "/api/events", "/static/app.js", "/api/history"):
            assert (await client.get(path)).status == 401, path
        assert (await client.get("/?token=wrong-token")).status == 401
        ok = await client.get("/api/state", headers={"Authorization": f"Bearer {token}"})
        assert ok.status == 200
        login = await client.get(f"/?token={token}", allow_redirects=False)
        assert login.status == 302 and login.headers["Location"] == "/"
        assert "HttpOnly" in login.headers["Set-Cookie"]
        # the cookie jar now holds the token: the page and its stream work without the query
        assert (await client.get("/")).status == 200
        assert (await client.get("/static/app.js")).status == 200

    serve(tmp_path, body, token=token)


@pytest.mark.parametrize(
    ("bind", "expected"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:9", ("::1", 9)), (":80", ("127.0.0.1", 80))],
)
def test_parse_bind(bind: str, expected: tuple[str, int]) -> None:
    assert parse_bind(bind) == expected


@pytest.mark.parametrize("bind", ["localhost", "host:port", "1.2.3.4:70000", ""])
def test_parse_bind_rejects(bind: str) -> None:
    with pytest.raises(ConfigError):
        parse_bind(bind)


def test_exposure_needs_a_token() -> None:
    check_exposure("127.0.0.1", None)
    check_exposure("::1", None)
    check_exposure("localhost", None)
    with pytest.raises(ConfigError, match="token"):
        check_exposure("0.0.0.0", None)
    with pytest.raises(ConfigError, match="token"):
        check_exposure("192.168.1.5", "")
    with pytest.raises(ConfigError, match="8 characters"):
        check_exposure("0.0.0.0", "short")
    check_exposure("0.0.0.0", "long-enough-token")
