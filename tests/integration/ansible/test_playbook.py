"""The Ansible playbook: lint and syntax check, then applied for real to a Debian chroot.

The target is a debootstrap'd bookworm rootfs reached through the ``community.general.chroot``
connection, one host in every group (broker, scheduler, workers, sensors, dashboard). No systemd
runs there, so the play installs units without starting them; afterwards this test starts the
deployed Mosquitto inside the chroot and connects with a device's deployed credentials.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_app.cli import build_parser
from edge_app.config import broker_from_env
from edge_app.errors import TransportError
from edge_app.transport.mqtt import MqttTransport
from tests.conftest import free_port, wait_for_port
from tests.integration.ansible.conftest import REPO

ANSIBLE = REPO / "ansible"
BIN = Path(sys.executable).parent
HOST = "fleet-pi"
# Minutes, not seconds: apt and pip inside the chroot (rootfs and wheels are cached).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed in this venv")
    return str(path)


def test_ansible_lint_production_profile_and_syntax_check() -> None:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg")}
    syntax = subprocess.run(
        [
            _tool("ansible-playbook"),
            "--syntax-check",
            "-i",
            "inventory/example/hosts.yml",
            "site.yml",
        ],
        cwd=ANSIBLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr
    lint = subprocess.run(
        [_tool("ansible-lint"), "--profile", "production", "--offline", "."],
        cwd=ANSIBLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Profile 'production' was required, and it passed" in lint.stdout + lint.stderr


def _models() -> list[dict[str, object]]:
    """The repo's shapes model, deployed with its card like a user's model."""
    src = REPO / "models" / "shapes"
    files = [
        {"name": n, "sha256": hashlib.sha256((src / n).read_bytes()).hexdigest()}
        for n in ("shapes.tflite", "card.json")
    ]
    return [{"name": "shapes", "src": str(src), "files": files}]


def _inventory(tmp: Path, root: Path, wheel: Path, house: Path, **extra: object) -> Path:
    host = {
        "ansible_connection": "community.general.chroot",
        "ansible_host": str(root),
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_become": False,
        "edge_app_wheel": str(wheel),
        "edge_pip_wheelhouse": str(house),
        "edge_sensor_apt_packages": [],  # python3-picamera2 is in the Raspberry Pi archive only
        "edge_models": _models(),
        "edge_model": "shapes",
        "edge_sensors": [{"id": f"{HOST}-cam", "source": "pattern:box"}],  # no camera here
        "edge_broker_hosts": ["localhost", "127.0.0.1"],
        "edge_broker_tls_port": free_port(),
        "edge_broker_plain_port": free_port(),
        "edge_broker_extra_users": [{"id": "admin", "role": "monitor"}],
        **extra,
    }
    groups = ("broker", "scheduler", "workers", "sensors", "dashboard")
    inventory = {"all": {"children": {g: {"hosts": {HOST: None}} for g in groups}}}
    inventory["all"]["hosts"] = {HOST: host}  # type: ignore[index]
    path = tmp / "inventory" / "hosts.yml"
    path.parent.mkdir(exist_ok=True)
    # As a user does: start from the example inventory's documented group_vars.
    shutil.copytree(ANSIBLE / "inventory/example/group_vars", path.parent / "group_vars")
    path.write_text(json.dumps(inventory, indent=1))
    return path


def _play(inventory: Path, *args: str) -> tuple[str, dict[str, int]]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    done = subprocess.run(
        [_tool("ansible-playbook"), "-i", str(inventory), "site.yml", *args],
        cwd=ANSIBLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = done.stdout + done.stderr
    recap = re.search(rf"^{HOST}\s*:(.*)$", out, re.MULTILINE)
    assert recap, out[-6000:]
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap.group(1))}
    return out, counts


@dataclass
class Applied:
    root: Path
    inventory: Path
    runs: list[dict[str, int]]

    def owner(self, rel: str) -> tuple[str, str, str]:
        st = (self.root / rel).stat()
        users = _ids(self.root / "etc/passwd")
        groups = _ids(self.root / "etc/group")
        return oct(st.st_mode & 0o777), users.get(st.st_uid, "?"), groups.get(st.st_gid, "?")


def _ids(path: Path) -> dict[int, str]:
    rows = (line.split(":") for line in path.read_text().splitlines())
    return {int(r[2]): r[0] for r in rows if len(r) > 2}


@pytest.fixture(scope="module")
def applied(
    rootfs: Path, wheels: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Applied:
    """The playbook applied twice to a fresh rootfs."""
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the wheelhouse is for bookworm's Python 3.11")
    wheel, house = wheels
    tmp = tmp_path_factory.mktemp("playbook")
    inventory = _inventory(tmp, rootfs, wheel, house)
    runs = []
    for _ in range(2):
        started = time.monotonic()
        out, counts = _play(inventory)
        assert counts.get("failed") == 0 and counts.get("unreachable") == 0, out[-6000:]
        runs.append(counts | {"seconds": round(time.monotonic() - started)})
    return Applied(rootfs, inventory, runs)


def test_second_run_changes_nothing(applied: Applied) -> None:
    first, second = applied.runs
    logging.getLogger(__name__).warning("playbook runs: %s", applied.runs)
    assert first["changed"] > 10
    assert second["changed"] == 0


def test_app_is_installed_in_its_venv_by_an_unprivileged_user(applied: Applied) -> None:
    root = applied.root
    edge = next(x for x in (root / "etc/passwd").read_text().splitlines() if x.startswith("edge:"))
    fields = edge.split(":")
    assert fields[6] == "/usr/sbin/nologin" and int(fields[2]) < 1000  # system user, no shell
    version = subprocess.run(
        ["chroot", str(root), "/opt/edge-app/venv/bin/edge-app", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == "edge-app 0.1.0"
    probe = "import tflite_runtime, numpy; print(numpy.__version__)"
    subprocess.run(["chroot", str(root), "/opt/edge-app/venv/bin/python", "-c", probe], check=True)
    cfg = (root / "opt/edge-app/venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg  # a sensor host: picamera2 from apt
    model = (root / "opt/edge-app/models/shapes/shapes.tflite").read_bytes()
    assert model == (REPO / "models/shapes/shapes.tflite").read_bytes()


EXPECTED_FILES = {
    "etc/systemd/system/edge-app-worker.service": ("0o644", "root", "root"),
    "etc/systemd/system/edge-app-scheduler.service": ("0o644", "root", "root"),
    "etc/systemd/system/edge-app-dashboard.service": ("0o644", "root", "root"),
    "etc/systemd/system/edge-app-sensor@.service": ("0o644", "root", "root"),
    "etc/edge-app": ("0o750", "root", "edge"),
    "etc/edge-app/edge-app.env": ("0o640", "root", "edge"),
    f"etc/edge-app/credentials/{HOST}": ("0o750", "root", "edge"),
    f"etc/edge-app/credentials/{HOST}/broker.env": ("0o640", "root", "edge"),
    f"etc/edge-app/credentials/{HOST}/client.key": ("0o640", "root", "edge"),
    f"etc/edge-app/credentials/{HOST}/ca.crt": ("0o644", "root", "edge"),
    f"etc/edge-app/credentials/{HOST}-cam/broker.env": ("0o640", "root", "edge"),
    "etc/edge-app/credentials/scheduler/broker.env": ("0o640", "root", "edge"),
    "etc/edge-app/credentials/dashboard/broker.env": ("0o640", "root", "edge"),
    f"etc/edge-app/sensor-{HOST}-cam.env": ("0o640", "root", "edge"),
    "etc/mosquitto/mosquitto.conf": ("0o644", "root", "root"),
    "etc/mosquitto/edge-app": ("0o750", "root", "mosquitto"),
    "etc/mosquitto/edge-app/passwd": ("0o640", "root", "mosquitto"),
    "etc/mosquitto/edge-app/acl": ("0o640", "root", "mosquitto"),
    "etc/mosquitto/edge-app/server.key": ("0o640", "root", "mosquitto"),
    "var/lib/mosquitto": ("0o750", "mosquitto", "mosquitto"),
    "opt/edge-app/venv": ("0o755", "root", "root"),
    "opt/edge-app/models/shapes/shapes.tflite": ("0o644", "root", "root"),
    "opt/edge-app/models/shapes/card.json": ("0o644", "root", "root"),
}


def test_units_and_configs_are_in_place_with_owners_and_modes(applied: Applied) -> None:
    wrong = {
        rel: applied.owner(rel)
        for rel, want in EXPECTED_FILES.items()
        if applied.owner(rel) != want
    }
    assert not wrong, wrong
    unit = (applied.root / "etc/systemd/system/edge-app-worker.service").read_text()
    for line in (
        "User=edge",
        "Restart=always",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
        f"--device {HOST} --model shapes",
        f"EnvironmentFile=/etc/edge-app/credentials/{HOST}/broker.env",
    ):
        assert line in unit, line
    generated = applied.inventory.parent / "provision/out/broker/mosquitto.conf"
    assert (applied.root / "etc/mosquitto/mosquitto.conf").read_bytes() == generated.read_bytes()


def test_every_unit_command_is_a_valid_edge_app_command_line(applied: Applied) -> None:
    """The flags in the units exist: parse each ExecStart with the real CLI parser."""
    parser = build_parser()
    units = sorted((applied.root / "etc/systemd/system").glob("edge-app-*.service"))
    assert len(units) == 4
    for unit in units:
        line = next(x for x in unit.read_text().splitlines() if x.startswith("ExecStart="))
        line = line.replace("%i", f"{HOST}-cam").replace("%S", "/var/lib")
        argv = shlex.split(line.replace("${EDGE_SENSOR_SOURCE}", "camera:0"))
        assert argv[0].endswith("=/opt/edge-app/venv/bin/edge-app"), argv[0]
        args = parser.parse_args(argv[1:])
        assert args.fleet == "home", unit.name


def test_units_are_hardened(applied: Applied) -> None:
    """systemd's own offline audit: exposure 0 (locked down) .. 10 (unprotected)."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    for unit in sorted((applied.root / "etc/systemd/system").glob("edge-app-*.service")):
        rel = str(unit.relative_to(applied.root))
        done = subprocess.run(
            [tool, "security", "--offline=true", f"--root={applied.root}", rel],
            cwd=applied.root,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
        assert level, done.stdout + done.stderr
        assert float(level.group(1)) <= 2.5, f"{unit.name}: {level.group(0)}"


def test_the_deployed_fleet_runs_jobs_inside_the_target(applied: Applied, tmp_path: Path) -> None:
    """Mosquitto with its deployed config; scheduler, worker and sensor as the `edge` user with
    the exact commands and environment files of their units: jobs come back as results."""
    root = applied.root
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        conf = (root / "etc/mosquitto/mosquitto.conf").read_text()
        port = int(re.findall(r"^listener (\d+)$", conf, re.MULTILINE)[0])
        broker = ["/usr/sbin/mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"]
        procs.append(_in_chroot(root, broker, log=tmp_path / "mosquitto.log"))
        assert wait_for_port(port, timeout=10)
        _host_side_login_checks(root, port)
        for unit in ("edge-app-scheduler.service", "edge-app-worker.service"):
            log = tmp_path / f"{unit}.log"
            procs.append(_in_chroot(root, _unit_command(root, unit), user="edge", log=log))
        sensor = _in_chroot(
            root,
            [*_unit_command(root, "edge-app-sensor@.service", f"{HOST}-cam"),
             "--max-jobs", "5", "--json", "--deadline", "30"],
            user="edge",
        )  # fmt: skip
        out, err = sensor.communicate(timeout=120)
        logs = "".join(p.read_text(errors="replace")[-1500:] for p in tmp_path.glob("*.log"))
        assert sensor.returncode == 0, err.decode()[-3000:] + logs
        lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
        assert len(lines) == 5 and all(x["status"] == "ok" for x in lines), lines
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        subprocess.run(["umount", str(root / "proc")], check=False)


def _unit_command(root: Path, unit: str, instance: str = "") -> list[str]:
    """A shell command that does what systemd does for ``unit``: read its EnvironmentFiles
    (as the service user, so their permissions are tested too), then exec its ExecStart."""
    text = (root / "etc/systemd/system" / unit).read_text().replace("%i", instance)
    text = text.replace("%S", "/var/lib")
    envs = [
        x.split("=", 1)[1].lstrip("-")
        for x in text.splitlines()
        if x.startswith("EnvironmentFile=")
    ]
    start = next(x.split("=", 1)[1] for x in text.splitlines() if x.startswith("ExecStart="))
    sources = "; ".join(f"[ -r {e} ] && . {e}" for e in envs if e.endswith("dashboard.env"))
    sources = "; ".join([*(f". {e}" for e in envs if not e.endswith("dashboard.env")), sources])
    return ["/bin/sh", "-c", f'set -a; {sources.strip("; ")}; set +a; exec {start} "$@"', unit]


def _in_chroot(
    root: Path, argv: list[str], user: str | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Run ``argv`` inside the chroot; output to ``log`` (long-running) or pipes."""
    spec = [f"--userspec={user}:{user}"] if user else []
    out = log.open("wb") if log else None
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONUNBUFFERED": "1",
        "HOME": "/var/lib/edge-app",
    }
    try:
        return subprocess.Popen(
            ["chroot", *spec, str(root), *argv],
            stdout=out or subprocess.PIPE, stderr=out or subprocess.PIPE, env=env,
        )  # fmt: skip
    finally:
        if out:
            out.close()


def _host_side_login_checks(root: Path, port: int) -> None:
    """From outside: the worker's deployed credentials work over TLS, a wrong password does not."""
    creds = root / f"etc/edge-app/credentials/{HOST}"
    env = dict(
        line.split("=", 1)
        for line in (creds / "broker.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    env["EDGE_BROKER_CA"] = str(creds / "ca.crt")  # the same file, seen from outside
    config = broker_from_env(env)
    assert config.url == f"mqtts://localhost:{port}"
    probe = MqttTransport(config, "deployed-probe")
    probe.start()
    probe.stop()
    with pytest.raises(TransportError):
        MqttTransport(config.model_copy(update={"password": "x"}), "bad", connect_timeout=3).start()


def test_a_model_hash_mismatch_stops_the_play(applied: Applied) -> None:
    models = _models()
    models[0]["files"][0]["sha256"] = "0" * 64  # type: ignore[index]
    extra = json.dumps({"edge_models": models})
    out, counts = _play(applied.inventory, "--tags", "models", "-e", extra)
    assert counts.get("failed") == 1, out[-4000:]
    assert "is not the expected " + "0" * 64 in out
