"""The shipped device profiles: valid, sourced, and calibrated to the paper's known points."""

from __future__ import annotations

import pytest

from edge_app.emulation.profiles import get_profile, link_of, load_profiles, parse_profiles
from edge_app.emulation.workload import Work
from edge_app.errors import ConfigError

VGG16_CONV_MACS = 15_346_630_656  # the zoo's VGG16: sum of its CONV_2D MACs
VGG16_FC1_BYTES = 25088 * 4096 * 4 + 4096 * 4  # float32 weights and bias of fc_1


def test_every_profile_cites_its_sources() -> None:
    profiles = load_profiles()
    assert {"pi3b", "pi4", "pi5", "zero2w", "tx2cpu"} <= set(profiles.devices)
    for name, dev in profiles.devices.items():
        assert dev.name == name
        for field in ("conv", "fc", "other", "memory", "power", "link"):
            assert len(getattr(dev, f"{field}_source")) >= 8
        assert link_of(dev).mbit_per_s > 0


def test_pi3b_matches_the_paper() -> None:
    pi = get_profile("pi3b")
    conv = Work(conv_macs=VGG16_CONV_MACS).seconds(pi)
    fc1 = Work(fc_bytes=VGG16_FC1_BYTES).seconds(pi)
    assert conv == pytest.approx(7.29, rel=0.01)
    assert fc1 == pytest.approx(2.48, rel=0.01)
    assert (pi.power_idle_w, pi.power_full_w) == (1.3, 6.5)
    assert 20 <= link_of(pi).mbit_per_s <= 40
    tx2 = get_profile("tx2cpu")
    assert (tx2.power_idle_w, tx2.power_full_w) == (5.0, 15.0)


def test_bad_files_are_config_errors() -> None:
    good = 'schema_version = 1\n[links.l]\nmbit_per_s = 10.0\nsource = "a long enough source"\n'
    dev = "[devices.d]\nconv_macs_per_s = {conv}\nconv_source = 'x' \nfc_weight_bytes_per_s = 1.0\n"
    for text, word in (
        ("not toml [", "TOML"),
        ("schema_version = 2\n[links]\n[devices]\n", "schema_version"),
        (good + dev.format(conv=-1), "devices"),
        (good + "[devices.d]\nlink = 'nowhere'\n", "devices"),
    ):
        with pytest.raises(ConfigError, match=word):
            parse_profiles(text, "test.toml")
    with pytest.raises(ConfigError, match="unknown device profile"):
        get_profile("pi99")
