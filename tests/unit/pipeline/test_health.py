from pathlib import Path

from edge_app.messages.schemas import Heartbeat, decode, encode
from edge_app.pipeline.health import HeartbeatBuilder, cpu_model, hardware, temperature_c


def test_cpu_model_from_x86_and_pi_cpuinfo(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n")
    assert cpu_model(x86) == "AMD EPYC 7B13"
    pi = tmp_path / "pi"
    pi.write_text(
        "processor\t: 0\nBogoMIPS\t: 38.40\n\nHardware\t: BCM2835\n"
        "Model\t\t: Raspberry Pi 3 Model B Rev 1.2\n"
    )
    assert cpu_model(pi) == "Raspberry Pi 3 Model B Rev 1.2"
    assert cpu_model(tmp_path / "missing")  # falls back to the platform, never raises


def test_temperature_is_the_hottest_sane_zone(tmp_path: Path) -> None:
    assert temperature_c(tmp_path) is None
    for i, milli in enumerate(["48312", "51000", "junk", "999999"]):
        zone = tmp_path / f"thermal_zone{i}"
        zone.mkdir()
        (zone / "temp").write_text(milli + "\n")
    assert temperature_c(tmp_path) == 51.0


def test_heartbeats_are_numbered_and_valid() -> None:
    builder = HeartbeatBuilder("w1", 1.0, 64, lambda: hardware("pi3b"), speed=0.25)
    first = builder.build(busy_s=0.0, queue_depth=3, epoch=7, slots=[])
    second = builder.build(busy_s=0.0, queue_depth=0, epoch=7, slots=[])
    assert (first.seq, second.seq) == (1, 2)
    hb = decode(Heartbeat, encode(first))
    assert hb.hardware.emulated == "pi3b" and hb.speed == 0.25 and hb.queue_limit == 64
    assert hb.hardware.memory_total > 0 and "edge-app" in hb.versions
