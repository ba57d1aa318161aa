"""Turn a fleet file and a seed into the broker's files and each device's credentials.

Layout of the output directory::

    broker/mosquitto.conf  passwd  acl  ca.crt  server.crt  server.key
    devices/<id>/ca.crt  client.crt  client.key  broker.env

``broker.env`` is a systemd ``EnvironmentFile`` with EDGE_BROKER_URL, EDGE_BROKER_USERNAME,
EDGE_BROKER_PASSWORD and EDGE_BROKER_CA (read by ``edge_app.config``). Files are written only
when their bytes or mode differ, so a second run reports nothing changed.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from edge_app.provision.acl import render_acl
from edge_app.provision.certs import FleetCA
from edge_app.provision.fleet import FleetFile
from edge_app.provision.mosquitto_conf import render_conf
from edge_app.provision.passwd import password_line
from edge_app.provision.seed import Seed

log = logging.getLogger(__name__)

PUBLIC = 0o644
PRIVATE = 0o600
DEVICE_FILES = frozenset({"ca.crt", "client.crt", "client.key", "broker.env"})


@dataclass(frozen=True)
class OutFile:
    data: bytes
    mode: int


@dataclass
class WriteReport:
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0


def broker_url(fleet: FleetFile) -> str:
    return f"mqtts://{fleet.broker.hosts[0]}:{fleet.broker.tls_port}"


def env_file(fleet: FleetFile, seed: Seed, device_id: str) -> str:
    ca = f"{fleet.credentials_dir.rstrip('/')}/{device_id}/ca.crt"
    return (
        f"# Broker credentials of {device_id} (fleet {fleet.fleet}): generated, keep private.\n"
        f"EDGE_BROKER_URL={broker_url(fleet)}\n"
        f"EDGE_BROKER_USERNAME={device_id}\n"
        f"EDGE_BROKER_PASSWORD={seed.password(device_id)}\n"
        f"EDGE_BROKER_CA={ca}\n"
    )


def build_files(fleet: FleetFile, seed: Seed) -> dict[str, OutFile]:
    """Every generated file by its path relative to the output directory (pure)."""
    ca = FleetCA(fleet, seed)
    server = ca.issue("server", fleet.broker.hosts[0], server_hosts=list(fleet.broker.hosts))
    passwd = "".join(
        password_line(d.id, seed.password(d.id), seed.salt(d.id)) + "\n" for d in fleet.devices
    )
    files = {
        "broker/mosquitto.conf": OutFile(render_conf(fleet).encode(), PUBLIC),
        "broker/passwd": OutFile(passwd.encode(), PRIVATE),
        "broker/acl": OutFile(render_acl(fleet).encode(), PRIVATE),
        "broker/ca.crt": OutFile(ca.cert_pem, PUBLIC),
        "broker/server.crt": OutFile(server.cert_pem, PUBLIC),
        "broker/server.key": OutFile(server.key_pem, PRIVATE),
    }
    for device in fleet.devices:
        client = ca.issue(f"client/{device.id}", device.id)
        base = f"devices/{device.id}"
        files[f"{base}/ca.crt"] = OutFile(ca.cert_pem, PUBLIC)
        files[f"{base}/client.crt"] = OutFile(client.cert_pem, PUBLIC)
        files[f"{base}/client.key"] = OutFile(client.key_pem, PRIVATE)
        files[f"{base}/broker.env"] = OutFile(env_file(fleet, seed, device.id).encode(), PRIVATE)
    return files


def write_tree(out: Path, files: dict[str, OutFile]) -> WriteReport:
    """Write files whose bytes or mode differ; remove credentials of devices no longer listed."""
    report = WriteReport()
    for rel, item in sorted(files.items()):
        path = out / rel
        if _same(path, item):
            report.unchanged += 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, item.mode)
        with os.fdopen(fd, "wb") as f:
            f.write(item.data)
        os.chmod(tmp, item.mode)
        os.replace(tmp, path)
        report.changed.append(rel)
    report.removed = _remove_stale_devices(out, files)
    return report


def _same(path: Path, item: OutFile) -> bool:
    try:
        st = path.stat()
        return (st.st_mode & 0o777) == item.mode and path.read_bytes() == item.data
    except OSError:
        return False


def _remove_stale_devices(out: Path, files: dict[str, OutFile]) -> list[str]:
    """Delete ``devices/<id>/`` of removed devices, only if it holds nothing but our files."""
    devices = out / "devices"
    if not devices.is_dir():
        return []
    keep = {rel.split("/")[1] for rel in files if rel.startswith("devices/")}
    removed = []
    for entry in sorted(devices.iterdir()):
        if entry.name in keep or not entry.is_dir():
            continue
        if {p.name for p in entry.iterdir()} <= DEVICE_FILES:
            shutil.rmtree(entry)
            removed.append(f"devices/{entry.name}")
        else:
            log.warning("not removing %s: it holds files the generator did not write", entry)
    return removed
