"""The role table behind the ACL, checked with the same topic matcher the transport uses."""

from __future__ import annotations

import pytest

from edge_app.messages.topics import DiscoveryTopics, Topics
from edge_app.provision.acl import render_acl, rules_for
from edge_app.provision.fleet import BrokerRole, FleetFile
from edge_app.transport.base import topic_matches

FLEET = FleetFile.model_validate(
    {"devices": [{"id": "cam1", "role": "sensor"}, {"id": "w1", "role": "worker"}]}
)
T = Topics.for_fleet("home")
D = DiscoveryTopics()


def allowed(role: BrokerRole, me: str, access: str, topic: str) -> bool:
    return any(
        r.access in (access, "readwrite") and topic_matches(r.topic, topic)
        for r in rules_for(FLEET, me, role)
    )


@pytest.mark.parametrize(
    ("role", "access", "topic", "expected"),
    [
        ("sensor", "write", T.task("w9"), True),
        ("sensor", "write", T.fanout(0), True),
        ("sensor", "write", T.fanout(2), False),
        ("sensor", "write", T.plan, False),
        ("sensor", "write", T.result("cam2"), False),
        ("sensor", "read", T.task("w9"), False),
        ("sensor", "read", T.ack("me"), True),
        ("sensor", "read", T.ack("w1"), False),
        ("worker", "read", T.task("me"), True),
        ("worker", "read", T.task("w9"), False),
        ("worker", "read", T.fanout(3), True),
        ("worker", "write", T.plan, False),
        ("worker", "write", T.status("w9"), False),
        ("scheduler", "write", T.plan, True),
        ("scheduler", "write", T.task("w1"), False),
        ("scheduler", "read", T.heartbeat("w9"), True),
        ("dashboard", "read", T.task("w1"), True),
        ("dashboard", "write", T.task("w1"), False),
        ("dashboard", "write", D.config("sensor", "cam1", "action"), True),
        ("dashboard", "write", D.birth, False),
        ("homeassistant", "read", T.task("w1"), False),
        ("homeassistant", "read", T.fanout(0), False),
        ("homeassistant", "read", T.thumb("cam1"), True),
        ("homeassistant", "read", T.camera("cam1"), True),
        ("dashboard", "write", T.camera("cam1"), True),
        ("dashboard", "read", D.config("sensor", "cam1", "action"), True),
        ("sensor", "write", T.camera("cam1"), False),
        ("monitor", "write", T.status("me"), False),
    ],
)
def test_role_table(role: BrokerRole, access: str, topic: str, expected: bool) -> None:
    assert allowed(role, "me", access, topic) is expected


def test_acl_file_has_one_block_per_device_and_nothing_for_anonymous() -> None:
    lines = [x for x in render_acl(FLEET).splitlines() if x and not x.startswith("#")]
    assert lines[0] == "user cam1"
    assert [x for x in lines if x.startswith("user ")] == ["user cam1", "user w1"]
    assert not any(x.startswith("pattern") for x in lines)
