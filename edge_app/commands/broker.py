"""`edge-app broker gen`: the locked-down Mosquitto files and device credentials for a fleet."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge_app.errors import ConfigError


def register(subparsers: Any) -> None:
    broker = subparsers.add_parser("broker", help="provision the fleet's Mosquitto broker")
    sub = broker.add_subparsers(dest="broker_command", metavar="ACTION", required=True)
    gen = sub.add_parser(
        "gen",
        help="generate password file, ACL, TLS CA/certificates and mosquitto.conf",
        description=(
            "Generate the broker's files (OUT/broker/) and each device's credentials "
            "(OUT/devices/<id>/) from the fleet file and the secrets seed. Reproducible: "
            "the same inputs give byte-identical files, and unchanged files are not touched."
        ),
    )
    gen.add_argument("--fleet", type=Path, required=True, help="fleet file (.toml or .json)")
    gen.add_argument("--out", type=Path, required=True, help="output directory")
    gen.add_argument(
        "--secrets",
        type=Path,
        default=None,
        help="seed file (hex); created if missing (default ~/.config/edge-app/<fleet>.seed)",
    )
    gen.add_argument(
        "--model",
        type=Path,
        action="append",
        default=[],
        help="a deployed .tflite model: size the message limit to its largest activation "
        "(repeatable)",
    )
    gen.add_argument(
        "--message-size-limit", type=int, default=None, help="explicit payload limit in bytes"
    )
    gen.set_defaults(func=run_gen)


def run_gen(args: argparse.Namespace) -> int:
    try:
        from edge_app.provision.generate import broker_url, build_files, write_tree
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"`broker gen` needs {exc.name}: pip install 'edge-app[provision]'"
        ) from exc
    from edge_app.provision.fleet import load_fleet
    from edge_app.provision.limits import with_message_limit
    from edge_app.provision.seed import load_or_create_seed

    fleet = with_message_limit(load_fleet(args.fleet), args.model, args.message_size_limit)
    secrets = args.secrets or Path.home() / ".config" / "edge-app" / f"{fleet.fleet}.seed"
    seed, created = load_or_create_seed(secrets, fleet.fleet)
    report = write_tree(args.out, build_files(fleet, seed))
    if created:
        print(f"created secrets seed {secrets} (back it up; it regenerates every credential)")
    for rel in report.changed:
        print(f"wrote {args.out / rel}")
    for rel in report.removed:
        print(f"removed {args.out / rel}")
    print(
        f"fleet {fleet.fleet}: {len(fleet.devices)} devices, broker {broker_url(fleet)}, "
        f"message_size_limit {fleet.broker.message_size_limit} bytes; "
        f"changed={len(report.changed) + len(report.removed)} unchanged={report.unchanged}"
    )
    return 0
