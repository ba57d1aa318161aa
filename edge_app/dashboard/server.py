"""The dashboard's HTTP side: the page, its static assets, a JSON API and the SSE stream."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from edge_app.errors import ConfigError

from .hub import sse_frame

if TYPE_CHECKING:
    from .service import Dashboard

log = logging.getLogger(__name__)

STATIC_DIR = Path(str(resources.files("edge_app.dashboard") / "static"))
TOKEN_COOKIE = "edge_dashboard_token"
KEEPALIVE_S = 15.0
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DASH_KEY: web.AppKey[Dashboard] = web.AppKey("dashboard")


def parse_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:8080``) -> (host, port); ConfigError when malformed."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--bind {bind!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Binding anywhere but loopback needs a token: the page shows what the cameras see."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"binding the dashboard to {host} exposes it to the network: "
            "give --token or set EDGE_DASHBOARD_TOKEN"
        )
    if token is not None and len(token) < 8:
        raise ConfigError("the dashboard token must have at least 8 characters")


def _auth_middleware(token: str) -> Middleware:
    expected = token.encode()

    def ok(candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), expected)

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        bearer = header[7:] if header.startswith("Bearer ") else None
        if ok(bearer) or ok(request.cookies.get(TOKEN_COOKIE)):
            return await handler(request)
        if ok(request.query.get("token")) and request.method == "GET":
            response = web.HTTPFound(request.rel_url.path)  # drop the token from the URL
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
            raise response
        raise web.HTTPUnauthorized(text="edge-app dashboard: token required (?token=...)")

    return auth


@web.middleware
async def _headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def create_app(dash: Dashboard, token: str | None = None) -> web.Application:
    middlewares: list[Middleware] = [_headers_middleware]
    if token:
        middlewares.append(_auth_middleware(token))
    app = web.Application(middlewares=middlewares)
    app[DASH_KEY] = dash
    app.router.add_get("/", _index)
    app.router.add_get("/api/state", _state)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/api/thumb/{sensor}", _thumb)
    app.router.add_get("/api/history", _history)
    app.router.add_get("/api/device-events", _device_events)
    app.router.add_get("/api/cameras", _cameras)
    app.router.add_get("/healthz", _health)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    return app


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _health(request: web.Request) -> web.StreamResponse:
    dash = request.app[DASH_KEY]
    return web.json_response({"ok": True, "connected": dash.connected})


async def _state(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[DASH_KEY].snapshot())


async def _events(request: web.Request) -> web.StreamResponse:
    dash = request.app[DASH_KEY]
    client = dash.hub.connect()
    if client is None:
        raise web.HTTPServiceUnavailable(text="too many dashboard clients")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        await response.prepare(request)
        await response.write(b"retry: 1000\n\n" + sse_frame("snapshot", dash.snapshot()))
        while True:
            try:
                frame = await asyncio.wait_for(client.queue.get(), KEEPALIVE_S)
            except TimeoutError:
                frame = b": keep-alive\n\n"
            if frame is None:
                break
            await response.write(frame)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        dash.hub.disconnect(client)
    return response


async def _thumb(request: web.Request) -> web.StreamResponse:
    cam = request.app[DASH_KEY].state.cameras.get(request.match_info["sensor"])
    if cam is None or cam.thumb is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=cam.thumb, content_type="image/jpeg", headers={"Cache-Control": "no-cache"}
    )


def _float_arg(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw in (None, ""):
        return None
    try:
        return float(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a unix timestamp") from None


def _limit_arg(request: web.Request) -> int:
    raw = request.query.get("limit", "200")
    if not raw.isdigit():
        raise web.HTTPBadRequest(text="limit must be a positive integer")
    return int(raw)


async def _history(request: web.Request) -> web.StreamResponse:
    dash = request.app[DASH_KEY]
    rows = dash.store.results(
        camera=request.query.get("camera") or None,
        since=_float_arg(request, "since"),
        until=_float_arg(request, "until"),
        limit=_limit_arg(request),
    )
    return web.json_response({"results": rows, "now": time.time()})


async def _device_events(request: web.Request) -> web.StreamResponse:
    dash = request.app[DASH_KEY]
    rows = dash.store.events(
        device=request.query.get("device") or None,
        since=_float_arg(request, "since"),
        until=_float_arg(request, "until"),
        limit=_limit_arg(request),
    )
    return web.json_response({"events": rows, "now": time.time()})


async def _cameras(request: web.Request) -> web.StreamResponse:
    dash = request.app[DASH_KEY]
    names = set(dash.store.cameras()) | set(dash.state.cameras)
    return web.json_response({"cameras": sorted(names)})
