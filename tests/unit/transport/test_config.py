"""BrokerConfig / FleetConfig: URLs, credentials, environment and CLI flags."""

from __future__ import annotations

import argparse

import pytest

from edge_app.config import (
    BrokerConfig,
    FleetConfig,
    add_fleet_args,
    broker_from_env,
    fleet_config_from_args,
    make_broker_config,
)
from edge_app.errors import ConfigError


def test_defaults() -> None:
    cfg = BrokerConfig()
    assert (cfg.host, cfg.port, cfg.tls, cfg.protocol) == ("127.0.0.1", 1883, False, "3.1.1")
    assert FleetConfig().topics.root == "edge/home"


def test_url_with_credentials_and_tls() -> None:
    cfg = BrokerConfig(url="mqtts://al%40ice:p%3Ass@broker.lan")
    assert (cfg.host, cfg.port, cfg.tls) == ("broker.lan", 8883, True)
    assert cfg.credentials == ("al@ice", "p:ss")
    assert "p:ss" not in cfg.display_url and "p%3Ass" not in cfg.display_url
    explicit = BrokerConfig(url="mqtt://u:p@h:1999", username="other", password="pw")
    assert explicit.credentials == ("other", "pw") and explicit.port == 1999


@pytest.mark.parametrize(
    "url", ["http://h", "mqtt://", "mqtt://h:99999", "mqtt://h/path", "h:1883", "mqtt://h?x=1"]
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        make_broker_config(url=url)


def test_environment_and_overrides(tmp_path: object) -> None:
    env = {"EDGE_BROKER_URL": "mqtt://envhost:1884", "EDGE_BROKER_USERNAME": "envuser"}
    cfg = broker_from_env(env)
    assert (cfg.host, cfg.port, cfg.credentials[0]) == ("envhost", 1884, "envuser")
    cfg = broker_from_env(env, url="mqtt://flag:1", username=None)
    assert (cfg.host, cfg.credentials[0]) == ("flag", "envuser")
    with pytest.raises(ConfigError, match="does not exist"):
        broker_from_env({"EDGE_BROKER_CA": "/nonexistent/ca.pem"})


def test_cli_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_BROKER_URL", raising=False)
    monkeypatch.setenv("EDGE_BROKER_PASSWORD", "secret")
    parser = argparse.ArgumentParser()
    add_fleet_args(parser)
    args = parser.parse_args(["--broker", "mqtt://b:2000", "--fleet", "lab", "--username", "u"])
    cfg = fleet_config_from_args(args)
    assert cfg.fleet == "lab" and cfg.topics.root == "edge/lab"
    assert cfg.broker.port == 2000 and cfg.broker.credentials == ("u", "secret")
    with pytest.raises(ConfigError, match="fleet"):
        fleet_config_from_args(parser.parse_args(["--fleet", "bad/name"]))
