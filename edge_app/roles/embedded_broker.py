"""The embedded MQTT broker (amqtt) of the one-machine demo, used only when no broker answers.

amqtt is MQTT 3.1.1 only (no ``$share``, no MQTT 5 properties), which is all edge-app's core needs
(QoS 1, retained messages, last will). It is an order of magnitude slower than Mosquitto on
large messages, so fleets use Mosquitto. Run as its own process::

    python -m edge_app.roles.embedded_broker --host 127.0.0.1 --port 1883

It prints ``listening on HOST:PORT`` once it accepts connections and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)


def broker_config(host: str, port: int) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "timeout_disconnect_delay": 0,
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


async def serve(host: str, port: int, stop: asyncio.Event) -> None:
    """Run the broker until ``stop`` is set."""
    from amqtt.broker import Broker

    broker = Broker(broker_config(host, port))
    await broker.start()
    print(f"listening on {host}:{port}", flush=True)  # noqa: T201 - the parent waits for it
    try:
        await stop.wait()
    finally:
        await broker.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="edge-app's embedded MQTT broker (amqtt)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.INFO if args.verbose else logging.ERROR)
    # A bare TCP connect (a readiness probe) is logged by amqtt as an error: not one.
    logging.getLogger("amqtt.broker").addFilter(
        lambda record: "No data to decode" not in record.getMessage()
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(args.host, args.port, stop)

    try:
        asyncio.run(run())
    except OSError as exc:
        print(f"embedded broker: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
