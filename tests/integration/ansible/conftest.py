"""A Debian bookworm root file system (debootstrap) to apply the playbook to, and a wheelhouse.

Both are cached under ``~/.cache/edge-app/`` (or ``$EDGE_APP_CACHE``): the first run builds the
rootfs tarball with debootstrap (about a minute, through the Debian mirror) and downloads the
dependency wheels from the package index; later runs unpack the tarball in seconds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("EDGE_APP_CACHE", Path.home() / ".cache" / "edge-app"))
MIRROR = os.environ.get("EDGE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Raspberry Pi OS Lite ships python3; a bare debootstrap does not, so it is included here.
ROOTFS_TGZ = CACHE / "rootfs" / "bookworm-minbase-python3.tgz"


def _need_root_and(tool: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("applying the playbook to a chroot needs root")
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


def _build_rootfs_tarball() -> None:
    ROOTFS_TGZ.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-debootstrap-") as tmp:
        target = Path(tmp) / "root"
        cmd = ["debootstrap", "--variant=minbase", "--include=python3", "bookworm"]
        subprocess.run([*cmd, str(target), MIRROR], check=True, capture_output=True, timeout=900)
        partial = ROOTFS_TGZ.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(target), "-czf", str(partial), "."], check=True)
        partial.replace(ROOTFS_TGZ)


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Path]:
    """A fresh copy of the cached bookworm rootfs (the tarball is built once)."""
    _need_root_and("debootstrap")
    if not ROOTFS_TGZ.exists():
        _build_rootfs_tarball()
    root = Path(tempfile.mkdtemp(prefix="edge-chroot-"))
    try:
        subprocess.run(["tar", "-C", str(root), "-xzf", str(ROOTFS_TGZ)], check=True)
        # What Raspberry Pi Imager leaves that debootstrap does not: a hostname and hosts file.
        (root / "etc/hostname").write_text("fleet-pi\n")
        (root / "etc/hosts").write_text(
            "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
            "127.0.1.1\tfleet-pi\n"
        )
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the app's wheel, built now; a cached wheelhouse of its dependencies)."""
    dist = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(dist), str(REPO)], check=True)
    wheel = next(dist.glob("edge_app-*.whl"))
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    house = CACHE / f"wheelhouse-{sys.implementation.cache_tag}-{key}"
    if not house.is_dir():
        partial = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=CACHE))
        subprocess.run([*pip, "download", "-d", str(partial), str(wheel)], check=True, timeout=600)
        for own in partial.glob("edge_app-*.whl"):
            own.unlink()
        partial.rename(house)
    return wheel, house
