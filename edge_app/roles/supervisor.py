"""Child processes of ``edge-app up``: start with a log file each, watch, stop in order.

Each child runs in its own session (a terminal's Ctrl-C reaches only the supervisor, which stops
the children in order) and, on Linux, is sent SIGTERM by the kernel if the supervisor dies
(``PR_SET_PDEATHSIG``), so no orphan keeps the broker port or the fleet busy.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

STOP_ORDER = ("sensor", "dashboard", "worker", "scheduler", "broker")
STOP_TIMEOUT_S = 8.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(proc: subprocess.Popen[bytes], host: str, port: int, timeout: float) -> bool:
    """Wait until ``port`` accepts connections; False if ``proc`` exited or time ran out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if port_open(host, port, timeout=0.2):
            return True
        time.sleep(0.05)
    return False


@dataclass
class Child:
    role: str  # broker, scheduler, worker, dashboard, sensor
    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    critical: bool = False  # the demo cannot go on without it
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)
    reported: bool = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class Crash:
    child: Child
    code: int


class ChildSet:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []

    def start(self, child: Child) -> Child:
        child.log_path = self.log_dir / f"{child.name.replace(' ', '-')}.log"
        with open(child.log_path, "ab") as out:
            child.proc = subprocess.Popen(
                child.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=child.env,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads are forked with it
            )
        self.children.append(child)
        log.info("started %s (pid %d): %s", child.name, child.proc.pid, " ".join(child.argv))
        return child

    def wait_port(self, child: Child, host: str, port: int, timeout: float) -> bool:
        """Wait until ``port`` accepts connections, False if the child died or time ran out."""
        return child.proc is not None and wait_port(child.proc, host, port, timeout)

    def table(self) -> list[str]:
        return [
            f"{c.role:<11} {c.name:<16} pid {c.pid or '-':<8} log {c.log_path.name}"
            for c in self.children
        ]

    def crashes(self) -> list[Crash]:
        """Children that exited since the last call (each reported once)."""
        out = []
        for c in self.children:
            code = c.proc.poll() if c.proc else None
            if code is not None and not c.reported:
                c.reported = True
                out.append(Crash(c, code))
        return out

    def stop_all(self) -> None:
        """SIGTERM by role in STOP_ORDER (a role's processes together), then SIGKILL laggards."""
        for role in STOP_ORDER:
            group = [c for c in self.children if c.role == role and c.proc is not None]
            for c in group:
                if c.proc is not None and c.proc.poll() is None:
                    c.proc.send_signal(signal.SIGTERM)
            end = time.monotonic() + STOP_TIMEOUT_S
            for c in group:
                assert c.proc is not None
                try:
                    c.proc.wait(timeout=max(0.1, end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in %.0f s: killed", c.name, STOP_TIMEOUT_S)
                    c.proc.kill()
                    c.proc.wait(timeout=5)
