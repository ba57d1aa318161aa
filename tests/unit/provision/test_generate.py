"""`edge-app broker gen`: reproducible files, fleet file validation, passwords, certificates."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_app.cli import main
from edge_app.errors import ConfigError
from edge_app.inference import zoo
from edge_app.inference.graph_io import read_model
from edge_app.provision.fleet import FleetFile, load_fleet
from edge_app.provision.generate import build_files, write_tree
from edge_app.provision.limits import (
    HEADER_ROOM,
    MIN_LIMIT,
    ROUND_TO,
    largest_activation_bytes,
    with_message_limit,
)
from edge_app.provision.passwd import hash_password, verify_password
from edge_app.provision.seed import Seed, load_or_create_seed

FLEET = FleetFile.model_validate(
    {
        "fleet": "lab",
        "broker": {"hosts": ["hub.local", "192.168.1.10"]},
        "devices": [
            {"id": "cam-1", "role": "sensor"},
            {"id": "pi-1", "role": "worker"},
            {"id": "scheduler", "role": "scheduler"},
        ],
    }
)
SEED = Seed(b"0123456789abcdef0123456789abcdef", "lab")


def test_same_inputs_give_identical_files_and_another_seed_changes_every_secret() -> None:
    a, b = build_files(FLEET, SEED), build_files(FLEET, SEED)
    assert a == b
    other = build_files(FLEET, Seed(b"fedcba9876543210fedcba9876543210", "lab"))
    for rel in ("broker/passwd", "broker/ca.crt", "broker/server.key", "devices/pi-1/broker.env"):
        assert other[rel].data != a[rel].data, rel
    assert other["broker/acl"] == a["broker/acl"]  # the ACL depends on the fleet only


def test_second_write_changes_nothing_and_removed_devices_lose_their_credentials(
    tmp_path: Path,
) -> None:
    first = write_tree(tmp_path, build_files(FLEET, SEED))
    assert len(first.changed) == 6 + 4 * 3 and not first.removed
    assert (tmp_path / "broker/passwd").stat().st_mode & 0o777 == 0o600
    before = (tmp_path / "broker/passwd").stat().st_mtime_ns
    again = write_tree(tmp_path, build_files(FLEET, SEED))
    assert again.changed == [] and again.unchanged == len(first.changed)
    assert (tmp_path / "broker/passwd").stat().st_mtime_ns == before
    (tmp_path / "devices/cam-1/notes.txt").write_text("mine")
    smaller = FLEET.model_copy(update={"devices": FLEET.devices[1:]})
    gone = write_tree(tmp_path, build_files(smaller, SEED))
    assert gone.removed == [] and (tmp_path / "devices/cam-1/notes.txt").exists()
    (tmp_path / "devices/cam-1/notes.txt").unlink()
    assert write_tree(tmp_path, build_files(smaller, SEED)).removed == ["devices/cam-1"]
    assert "cam-1" not in (tmp_path / "broker/passwd").read_text()


def test_passwords_verify_in_mosquitto_format(tmp_path: Path) -> None:
    line = build_files(FLEET, SEED)["broker/passwd"].data.decode().splitlines()[1]
    user, encoded = line.split(":", 1)
    assert user == "pi-1" and encoded.startswith("$7$101$")
    assert verify_password(SEED.password("pi-1"), encoded)
    assert not verify_password(SEED.password("cam-1"), encoded)
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    subprocess.run([tool, "-c", "-b", str(tmp_path / "pw"), "u", "s3cret"], check=True)
    theirs = (tmp_path / "pw").read_text().strip().split(":", 1)[1]
    assert verify_password("s3cret", theirs)  # same algorithm as mosquitto's own tool
    assert hash_password("s3cret", b"\0" * 12) != theirs


def test_env_file_carries_what_the_transport_reads() -> None:
    env = build_files(FLEET, SEED)["devices/pi-1/broker.env"].data.decode()
    values = dict(line.split("=", 1) for line in env.splitlines() if "=" in line)
    assert values == {
        "EDGE_BROKER_URL": "mqtts://hub.local:8883",
        "EDGE_BROKER_USERNAME": "pi-1",
        "EDGE_BROKER_PASSWORD": SEED.password("pi-1"),
        "EDGE_BROKER_CA": "/etc/edge-app/credentials/pi-1/ca.crt",
    }


def test_certificates_chain_to_the_fleet_ca_with_the_right_names() -> None:
    files = build_files(FLEET, SEED)
    ca = x509.load_pem_x509_certificate(files["broker/ca.crt"].data)
    server = x509.load_pem_x509_certificate(files["broker/server.crt"].data)
    client = x509.load_pem_x509_certificate(files["devices/pi-1/client.crt"].data)
    for leaf in (server, client):
        leaf.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["hub.local"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["192.168.1.10"]
    cn = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert cn == "pi-1" and list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"devices": [{"id": "a/b", "role": "worker"}]}', "devices.0.id"),
        ('{"devices": [{"id": "a", "role": "worker"}, {"id": "a", "role": "sensor"}]}', "twice"),
        ('{"devices": [{"id": "a", "role": "king"}]}', "devices.0.role"),
        ('{"devices": [{"id": "a", "role": "worker"}], "colour": 1}', "colour"),
        ('{"devices": []}', "devices"),
        ("{not json", "not valid"),
    ],
)
def test_bad_fleet_files_are_clear_config_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "fleet.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_fleet(path)


def test_toml_fleet_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text('fleet = "lab"\n[[devices]]\nid = "pi-1"\nrole = "worker"\n')
    assert load_fleet(path).devices[0].id == "pi-1"


def test_message_limit_follows_the_largest_activation(tmp_path: Path) -> None:
    model_path = tmp_path / "alexnet.tflite"
    model_path.write_bytes(zoo.build("alexnet", small=True))
    model = read_model(model_path.read_bytes())
    activations = [
        int(np.prod(t.shape)) * t.dtype.itemsize
        for t in model.subgraphs[0].tensors
        if not model.buffers[t.buffer]
    ]
    assert largest_activation_bytes(model_path) == max(activations)
    sized = with_message_limit(FLEET, [model_path]).broker.message_size_limit
    assert sized == max(MIN_LIMIT, max(activations) + HEADER_ROOM)  # small model: the floor
    c3d = tmp_path / "c3d.tflite"
    c3d.write_bytes(zoo.build("c3d", small=True))
    bigger = with_message_limit(FLEET, [model_path, c3d]).broker.message_size_limit
    largest = largest_activation_bytes(c3d)
    assert largest > max(activations)
    assert largest + HEADER_ROOM <= bigger < largest + HEADER_ROOM + ROUND_TO
    explicit = FLEET.model_copy(
        update={"broker": FLEET.broker.model_copy(update={"message_size_limit": 1 << 20})}
    )
    pinned = FleetFile.model_validate(explicit.model_dump())
    assert with_message_limit(pinned, []).broker.message_size_limit == 1 << 20
    assert with_message_limit(FLEET, [model_path], explicit=2 << 20).broker.message_size_limit == (
        2 << 20
    )
    with pytest.raises(ConfigError, match="not a TFLite"):
        (tmp_path / "junk.tflite").write_bytes(b"\0" * 64)
        largest_activation_bytes(tmp_path / "junk.tflite")


def test_seed_file_is_created_private_and_reused(tmp_path: Path) -> None:
    seed, created = load_or_create_seed(tmp_path / "s" / "fleet.seed", "lab")
    assert created and (tmp_path / "s/fleet.seed").stat().st_mode & 0o777 == 0o600
    again, created_again = load_or_create_seed(tmp_path / "s" / "fleet.seed", "lab")
    assert not created_again and again.password("x") == seed.password("x")
    (tmp_path / "bad.seed").write_text("not hex")
    with pytest.raises(ConfigError, match="hex"):
        load_or_create_seed(tmp_path / "bad.seed", "lab")


def test_cli_gen_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps(FLEET.model_dump(mode="json")))
    args = ["broker", "gen", "--fleet", str(fleet), "--out", str(tmp_path / "out")]
    args += ["--secrets", str(tmp_path / "fleet.seed")]
    assert main(args) == 0
    assert " changed=18 " in capsys.readouterr().out
    assert main(args) == 0
    assert " changed=0 " in capsys.readouterr().out
    fleet.write_text("{}")
    assert main(args) == 2
    assert "fleet file" in capsys.readouterr().err


def test_the_example_fleet_file_generates(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[3] / "broker" / "fleet.example.toml"
    fleet = with_message_limit(load_fleet(example))
    assert fleet.broker.models and Path(fleet.broker.models[0]).is_file()
    assert fleet.broker.message_size_limit >= MIN_LIMIT
    files = build_files(fleet, SEED)
    assert "devices/homeassistant/broker.env" in files
    assert b"listener 1883 127.0.0.1" in files["broker/mosquitto.conf"].data
