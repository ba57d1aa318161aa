"""Benchmarks run by ``edge-app bench NAME``.

Each module here exposes ``register(subparsers)`` adding one ``bench`` subcommand (with ``func=``
taking the argparse Namespace and returning an exit code); ``edge_app.commands.bench`` finds the
modules by themselves, so adding a benchmark needs no other edit.
"""
