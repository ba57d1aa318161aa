"""`edge-app` subcommands; each module exposes ``register(subparsers)``."""
