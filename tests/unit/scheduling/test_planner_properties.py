"""Property tests: whatever the fleet and its history, a plan is valid, fits and is stable."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_app.scheduling.planner import PlanPolicy, plan
from edge_app.scheduling.predict import predict
from edge_app.scheduling.registry import DeviceView
from tests.unit.scheduling.fleet import device, vgg_like
from tests.unit.scheduling.test_planner import check_valid

PROFILE = vgg_like()

devices_st = st.lists(
    st.tuples(
        st.sampled_from([0.5, 1.0, 2.2, 4.5]),
        st.sampled_from([0, 300, 512, 1024, 4096]),  # MB; 0 = memory not reported
    ),
    min_size=1,
    max_size=16,
)
policy_st = st.sampled_from(
    [PlanPolicy(), PlanPolicy(shards={1: 2}), PlanPolicy(shards={1: 3, 2: 2})]
)


def make(spec: list[tuple[float, int]], offset: int = 0) -> list[DeviceView]:
    return [device(f"d{i + offset:02d}", s, m) for i, (s, m) in enumerate(spec)]


@settings(max_examples=60, deadline=None)
@given(spec=devices_st, policy=policy_st)
def test_any_fleet_gets_a_valid_plan_or_none(
    spec: list[tuple[float, int]], policy: PlanPolicy
) -> None:
    devices = make(spec)
    p = plan(devices, PROFILE, None, 0.0, policy)
    if all(m == 0 for _, m in spec):
        assert p is not None  # no memory limits: always plannable
    if p is None:
        return
    check_valid(p, devices, PROFILE)
    roomy = all(m == 0 or m >= 1024 for _, m in spec)  # memory binds nowhere
    if not policy.shards and roomy:
        assert predict(p, devices, PROFILE).efficiency >= 0.95
    assert plan(devices, PROFILE, p, 1.0, policy) is p  # nothing changed: same plan


@settings(max_examples=40, deadline=None)
@given(spec=devices_st, changes=st.lists(st.tuples(st.booleans(), st.integers(0, 15)), max_size=6))
def test_a_history_of_joins_and_losses(spec: list[tuple[float, int]],
                                       changes: list[tuple[bool, int]]) -> None:  # fmt: skip
    devices = make(spec)
    current = plan(devices, PROFILE, None, 0.0)
    joined = 100
    for step, (join, pick) in enumerate(changes):
        if join:
            devices = [*devices, device(f"d{joined}", 1.0, 1024)]
            joined += 1
        elif len(devices) > 1:
            devices = [d for i, d in enumerate(devices) if i != pick % len(devices)]
        nxt = plan(devices, PROFILE, current, float(step + 1))
        if nxt is None:
            continue
        check_valid(nxt, devices, PROFILE)
        if current is not None and join and all(m == 0 for _, m in spec):
            # a join never takes a replica seat from anyone (memory is no constraint here)
            for a, b in zip(current.stages, nxt.stages, strict=True):
                if a.mode == b.mode == "replicated":
                    assert {r.device for r in a.replicas} <= {r.device for r in b.replicas}
        if current is not None:
            assert nxt.epoch >= current.epoch
            assert nxt is current or nxt.epoch == current.epoch + 1
        current = nxt
