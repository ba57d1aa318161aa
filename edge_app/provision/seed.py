"""The fleet's secrets seed and everything derived from it (passwords, salts, keys, serials).

The seed is 32 random bytes kept as hex in one file (mode 0600) on the machine that runs the
generator. Each secret is ``HMAC-SHA512(seed, "edge-app/v1/<purpose>/<fleet>/<name>")``, so the
same seed and fleet file always give the same files, and one leaked password reveals nothing
about the others or the CA key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from edge_app.errors import ConfigError

log = logging.getLogger(__name__)
SEED_BYTES = 32


class Seed:
    def __init__(self, value: bytes, fleet: str) -> None:
        if len(value) < 16:
            raise ConfigError("the secrets seed must be at least 16 bytes")
        self._value = value
        self._fleet = fleet

    def derive(self, purpose: str, name: str = "") -> bytes:
        label = f"edge-app/v1/{purpose}/{self._fleet}/{name}".encode()
        return hmac.new(self._value, label, hashlib.sha512).digest()

    def password(self, user: str) -> str:
        """A 32-character URL-safe password for ``user`` (192 bits)."""
        return base64.urlsafe_b64encode(self.derive("password", user)[:24]).decode()

    def salt(self, user: str) -> bytes:
        return self.derive("salt", user)[:12]


def load_or_create_seed(path: Path, fleet: str) -> tuple[Seed, bool]:
    """Read the seed file, creating it (0600) with a fresh random seed if it does not exist.

    Returns the seed and whether the file was created.
    """
    created = False
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(SEED_BYTES) + "\n")
        log.warning("created a new secrets seed in %s: keep it safe and private", path)
        created = True
    try:
        text = path.read_text(encoding="ascii").strip()
        value = bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"secrets file {path} must hold one hex string: {exc}") from exc
    if path.stat().st_mode & 0o077:
        log.warning("secrets file %s is readable by others: chmod 600 it", path)
    return Seed(value, fleet), created
