"""The `edge-app` command line: a thin dispatcher over the modules in ``edge_app.commands``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from edge_app import __version__
from edge_app.errors import EdgeAppError

# Each module registers its own subcommands with ``register(subparsers)``.
COMMAND_MODULES = (
    "model",
    "fleet",
    "control",
    "inject",
    "up",
    "sensor",
    "dashboard",
    "broker",
    "simulate",
    "bench",
)

log = logging.getLogger("edge_app")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-app",
        description="Real-time recognition on a fleet of small devices, pooled over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"edge-app {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"edge_app.commands.{name}").register(sub)
    return parser


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * verbosity
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        result: int = args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is caught below
    except EdgeAppError as exc:
        log.debug("failed", exc_info=True)
        print(f"edge-app {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader left (`edge-app ... | head`): stop quietly
        _silence_stdout()
        return 1
    return result


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
