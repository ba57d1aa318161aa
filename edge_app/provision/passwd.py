"""Mosquitto 2 password file lines (``$7$``: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt).

The same format ``mosquitto_passwd`` writes; the salt is passed in so the file is reproducible.
"""

from __future__ import annotations

import base64
import hashlib

ITERATIONS = 101
SALT_BYTES = 12


def hash_password(password: str, salt: bytes, iterations: int = ITERATIONS) -> str:
    if len(salt) != SALT_BYTES:
        raise ValueError(f"salt must be {SALT_BYTES} bytes")
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, dklen=64)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Check ``password`` against one ``$7$`` hash (for tests and `broker check`)."""
    parts = encoded.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    salt = base64.b64decode(parts[3])
    return hash_password(password, salt, int(parts[2])) == encoded


def password_line(user: str, password: str, salt: bytes) -> str:
    if ":" in user:
        raise ValueError("a user name cannot contain ':'")
    return f"{user}:{hash_password(password, salt)}"
