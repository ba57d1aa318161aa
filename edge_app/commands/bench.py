"""`edge-app bench NAME`: a thin dispatcher over the benchmark modules in ``edge_app.bench``."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil

import edge_app.bench

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("bench", help="measure edge-app against its targets")
    sub = parser.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    for info in sorted(pkgutil.iter_modules(edge_app.bench.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        name = f"edge_app.bench.{info.name}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                raise
            log.warning("bench %s unavailable: missing module %s", info.name, exc.name)
            continue
        register_bench = getattr(module, "register", None)
        if callable(register_bench):
            register_bench(sub)
