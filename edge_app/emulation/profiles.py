"""Device profiles: the data file ``edge_app/data/devices.toml`` validated by pydantic.

A profile gives absolute rates per operator kind (conv MACs/s, FC weight bytes/s, other
activation bytes/s), memory, power at idle and full load and the network link, each number with
its source in the file. Speeds relative to the host are derived from a measurement of the host
(:mod:`edge_app.emulation.host`).
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_app.errors import ConfigError

Positive = Annotated[float, Field(gt=0)]
Source = Annotated[str, Field(min_length=8, max_length=600)]


class Link(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    description: str = ""
    mbit_per_s: Positive
    source: Source

    @property
    def bytes_per_s(self) -> float:
        return self.mbit_per_s * 1e6 / 8


class DeviceProfile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = ""
    description: str = ""
    conv_macs_per_s: Positive
    conv_source: Source
    fc_weight_bytes_per_s: Positive
    fc_source: Source
    other_bytes_per_s: Positive
    other_source: Source
    memory_bytes: Annotated[int, Field(gt=0)]
    memory_source: Source
    power_idle_w: Annotated[float, Field(ge=0)]
    power_full_w: Positive
    power_source: Source
    link: str
    link_source: Source

    @model_validator(mode="after")
    def _power_order(self) -> DeviceProfile:
        if self.power_full_w < self.power_idle_w:
            raise ValueError("power_full_w must be >= power_idle_w")
        return self


class ProfileFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: Literal[1]
    links: dict[str, Link]
    devices: dict[str, DeviceProfile]

    @model_validator(mode="after")
    def _links_exist(self) -> ProfileFile:
        for name, dev in self.devices.items():
            if dev.link not in self.links:
                raise ValueError(f"device {name}: unknown link {dev.link!r}")
        return self


def parse_profiles(text: str, origin: str = "devices.toml") -> ProfileFile:
    """Validate a profile file's text; every problem becomes a ConfigError naming the field."""
    try:
        raw = tomllib.loads(text)
        for name, dev in raw.get("devices", {}).items():
            if isinstance(dev, dict):
                dev.setdefault("name", name)
        return ProfileFile.model_validate(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ConfigError(f"{origin}: {where}: {first.get('msg', 'invalid')}") from None


@cache
def load_profiles(path: Path | None = None) -> ProfileFile:
    """The shipped profiles (or those of ``path``)."""
    if path is None:
        text = resources.files("edge_app").joinpath("data/devices.toml").read_text()
        return parse_profiles(text)
    try:
        return parse_profiles(path.read_text(), str(path))
    except OSError as exc:
        raise ConfigError(f"cannot read device profiles {path}: {exc}") from None


def get_profile(name: str, profiles: ProfileFile | None = None) -> DeviceProfile:
    profiles = profiles or load_profiles()
    try:
        return profiles.devices[name]
    except KeyError:
        known = ", ".join(sorted(profiles.devices))
        raise ConfigError(f"unknown device profile {name!r}; known: {known}") from None


def link_of(profile: DeviceProfile, profiles: ProfileFile | None = None) -> Link:
    profiles = profiles or load_profiles()
    return profiles.links[profile.link]
