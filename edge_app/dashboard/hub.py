"""Fan-out of live events to the browsers connected over Server-Sent Events.

Each client has a bounded queue; a client too slow to keep up is disconnected (its browser
reconnects by itself and starts again from a fresh snapshot) rather than holding memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

log = logging.getLogger(__name__)

CLIENT_QUEUE = 2_000
MAX_CLIENTS = 32


def sse_frame(kind: str, data: Any) -> bytes:
    body = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return f"event: {kind}\ndata: {body}\n\n".encode()


class Client:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(CLIENT_QUEUE)
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            while True:  # make room for the end marker
                try:
                    self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
            self.queue.put_nowait(None)


class Hub:
    def __init__(self, max_clients: int = MAX_CLIENTS) -> None:
        self.clients: set[Client] = set()
        self.max_clients = max_clients
        self.kicked = 0

    def connect(self) -> Client | None:
        if len(self.clients) >= self.max_clients:
            return None
        client = Client()
        self.clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
        self.clients.discard(client)
        client.close()

    def publish(self, kind: str, data: Any) -> None:
        if not self.clients:
            return
        frame = sse_frame(kind, data)
        for client in list(self.clients):
            try:
                client.queue.put_nowait(frame)
            except asyncio.QueueFull:
                self.kicked += 1
                log.warning("dashboard: a browser fell behind; disconnecting it")
                self.disconnect(client)

    def close_all(self) -> None:
        for client in list(self.clients):
            self.disconnect(client)
