from collections import Counter

import pytest

from edge_app.messages.schemas import Replica, ShardSeat, StagePlan
from edge_app.pipeline.routing import (
    FanoutRoute,
    NoRoute,
    Router,
    SmoothWRR,
    TaskRoute,
    is_seated,
    merge_candidates,
    shard_layout,
)
from tests.unit.pipeline.fakes import STAGES, make_plan


def test_smooth_wrr_follows_weights_and_interleaves() -> None:
    wrr = SmoothWRR()
    seats = [Replica(device="a", weight=3.0), Replica(device="b", weight=1.0)]
    picks = [wrr.pick(seats) for _ in range(400)]
    assert Counter(picks) == {"a": 300, "b": 100}
    # smooth: never more than 3 of "a" in a row
    run = longest = 0
    for p in picks:
        run = run + 1 if p == "a" else 0
        longest = max(longest, run)
    assert longest == 3


@pytest.mark.parametrize(
    ("inflight", "offline", "expected"),
    [
        ({}, set(), {"a", "b"}),
        ({"a": 2}, set(), {"b"}),
        ({"a": 2, "b": 2}, set(), "full"),
        ({}, {"a"}, {"b"}),
        ({}, {"a", "b"}, "no_route"),
        ({"b": 2}, {"a"}, "full"),
    ],
)
def test_replica_window_and_liveness(
    inflight: dict[str, int], offline: set[str], expected: object
) -> None:
    plan = make_plan(1, conv=["a", "b"])
    router = Router(window=2)
    got = {router.route(plan, 0, inflight=inflight, offline=offline) for _ in range(4)}
    if isinstance(expected, str):
        assert all(isinstance(g, NoRoute) and g.reason == expected for g in got)
    else:
        assert {g.device for g in got if isinstance(g, TaskRoute)} == expected


def test_sharded_route_layout_and_merger_is_next_replica() -> None:
    plan = make_plan(3, conv=["a"], fc_shards=["s0", "s1"], head_=["h"])
    got = Router().route(plan, 1, inflight={})
    assert got == FanoutRoute(1, (0, 6, 12), ("s0", "s1"), "h")
    assert got.receivers == {"s0", "s1", "h"}
    assert is_seated(plan, got)
    moved = make_plan(4, conv=["a"], fc_shards=["s0", "s2"], head_=["h"])
    assert not is_seated(moved, got)
    assert is_seated(moved, TaskRoute(0, "a")) and not is_seated(moved, TaskRoute(0, "x"))


def test_sharded_route_needs_every_holder_alive_and_with_room() -> None:
    plan = make_plan(3, conv=["a"], fc_shards=["s0", "s1"], head_=["h"])
    r = Router(window=1)
    dead = r.route(plan, 1, inflight={}, offline={"s1"})
    assert isinstance(dead, NoRoute) and dead.reason == "no_route"
    busy = r.route(plan, 1, inflight={"s0": 1})
    assert isinstance(busy, NoRoute) and busy.reason == "full"


def test_merge_candidates_for_a_last_stage() -> None:
    plan = make_plan(3, conv=["a"], fc_shards=["s0", "s1"], mergers=["m"])
    # stage 1 is followed by a replicated head: its replicas merge
    assert [r.device for r in merge_candidates(plan, 1)] == ["a"]
    last = plan.stages[1].model_copy(update={"mergers": [Replica(device="m")]})
    solo = plan.model_copy(update={"stages": [plan.stages[0], last]})
    assert [r.device for r in merge_candidates(solo, 1)] == ["m"]
    nomerger = plan.model_copy(
        update={"stages": [plan.stages[0], last.model_copy(update={"mergers": []})]}
    )
    assert [r.device for r in merge_candidates(nomerger, 1)] == ["s0", "s1"]


def test_shards_that_do_not_tile_are_refused() -> None:
    gap = StagePlan(
        stage=STAGES[1],
        mode="sharded",
        shards=[
            ShardSeat(device="a", index=0, lo=0, hi=5),
            ShardSeat(device="b", index=1, lo=6, hi=12),
        ],
    )
    assert shard_layout(gap) is None
    plan = make_plan(1, conv=["a"]).model_copy(update={"stages": [gap]})
    got = Router().route(plan, 0, inflight={})
    assert isinstance(got, NoRoute) and "tile" in got.detail


def test_unknown_stage_is_no_route() -> None:
    got = Router().route(make_plan(1, conv=["a"]), 7, inflight={})
    assert isinstance(got, NoRoute) and got.reason == "no_route"
