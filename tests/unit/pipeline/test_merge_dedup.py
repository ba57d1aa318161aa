import numpy as np
import pytest

from edge_app.errors import DecodeError
from edge_app.messages.codec import Envelope, Header
from edge_app.pipeline.dedup import Dedup
from edge_app.pipeline.merge import MergeBuffer, Partial, check_partial


def partial(
    job: str,
    shard: int,
    layout: tuple[int, ...],
    *,
    attempt: int = 0,
    value: float | None = None,
    width: int | None = None,
) -> Partial:
    lo, hi = layout[shard], layout[shard + 1]
    h = Header(
        job=job,
        sensor="cam",
        seq=1,
        created=0.0,
        deadline=1e12,
        epoch=1,
        stage=1,
        attempt=attempt,
        sender=f"s{shard}",
        shard=shard,
        bounds=(lo, hi),
        layout=layout,
        merge_to="m",
    )
    fill = float(shard) if value is None else value
    array = np.full((1, width if width is not None else hi - lo), fill, np.float32)
    return Partial(Envelope(h, (("z", array),)), 0.0)


def test_interleaved_jobs_never_mix() -> None:
    buf = MergeBuffer()
    layout = (0, 2, 5)
    # job a's shard 0, job b's shard 1, job b's shard 0, job a's shard 1
    assert buf.add(partial("a", 0, layout, value=1.0))[0] == "pending"
    assert buf.add(partial("b", 1, layout, value=20.0))[0] == "pending"
    status, merge = buf.add(partial("b", 0, layout, value=10.0))
    assert status == "complete" and merge is not None
    np.testing.assert_array_equal(merge.merged()[0][1], [[10, 10, 20, 20, 20]])
    status, merge = buf.add(partial("a", 1, layout, value=2.0))
    assert status == "complete" and merge is not None and merge.key[0] == "a"
    np.testing.assert_array_equal(merge.merged()[0][1], [[1, 1, 2, 2, 2]])
    assert len(buf) == 0


def test_layouts_never_mix_but_attempts_do() -> None:
    buf = MergeBuffer()
    assert buf.add(partial("a", 0, (0, 2, 5)))[0] == "pending"
    assert buf.add(partial("a", 1, (0, 3, 5)))[0] == "pending"  # another split of the job
    assert len(buf) == 2
    status, merge = buf.add(partial("a", 1, (0, 2, 5), attempt=2))
    assert status == "complete" and merge is not None and merge.key[2] == (0, 2, 5)
    assert buf.add(partial("a", 1, (0, 2, 5), attempt=3))[0] == "late"


def test_duplicate_slot_is_kept_for_acking() -> None:
    buf = MergeBuffer()
    buf.add(partial("a", 0, (0, 1, 2)))
    buf.add(partial("a", 0, (0, 1, 2), attempt=1))
    status, merge = buf.add(partial("a", 1, (0, 1, 2)))
    assert status == "complete" and merge is not None
    assert len(merge.all_partials) == 3


def test_bounded_and_expiring() -> None:
    buf = MergeBuffer(capacity=2, timeout_s=1.0)
    buf.add(partial("a", 0, (0, 1, 2)), now=0.0)
    buf.add(partial("b", 0, (0, 1, 2)), now=0.5)
    buf.add(partial("c", 0, (0, 1, 2)), now=0.6)  # evicts a
    assert len(buf) == 2 and buf.evicted == 1
    expired = buf.expire(now=1.55)
    assert [m.key[0] for m in expired] == ["b"]
    assert len(buf) == 1


def test_malformed_partials_are_refused() -> None:
    with pytest.raises(DecodeError, match="last axis"):
        check_partial(partial("a", 0, (0, 2, 5), width=3).envelope)
    p = partial("a", 1, (0, 2, 5))
    bad = Envelope(
        p.envelope.header.__class__(**{**p.envelope.header.__dict__, "bounds": (2, 4)}),
        p.envelope.tensors,
    )
    with pytest.raises(DecodeError, match="bounds"):
        check_partial(bad)
    buf = MergeBuffer()
    buf.add(partial("a", 0, (0, 2, 5)))
    odd = partial("a", 1, (0, 2, 5))
    other = Envelope(odd.envelope.header, (("q", odd.envelope.tensors[0][1]),))
    with pytest.raises(DecodeError, match="does not fit"):
        buf.add(Partial(other, 0.0))


def test_dedup_lru() -> None:
    d = Dedup(capacity=2)
    assert not d.seen(("a", 0, None, 0, "w1"))
    assert d.seen(("a", 0, None, 0, "w1"))
    assert not d.seen(("a", 0, None, 1, "w1"))  # a re-send is new
    assert not d.seen(("a", 0, None, 1, "w2"))  # so is the same attempt from another sender
    assert len(d) == 2  # (a, 0, w1) was evicted, the least recently used
    assert not d.seen(("a", 0, None, 0, "w1"))


def test_work_queue_serves_shards_and_merges_before_tasks() -> None:
    from edge_app.messages.codec import Header
    from edge_app.pipeline.engine import Work, WorkQueue

    def work(kind: str, job: str) -> Work:
        h = Header(job=job, sensor="s", seq=1, created=0.0, deadline=1.0, epoch=1, stage=0,
                   attempt=0, sender="x")  # fmt: skip
        return Work(kind, h, (), 0.0)  # type: ignore[arg-type]

    q = WorkQueue(limit=4)
    for kind, job in [("task", "t1"), ("shard", "s1"), ("task", "t2"), ("merge", "m1")]:
        assert q.offer(work(kind, job))
    assert not q.offer(work("task", "t3"))  # bounded: shards and tasks share the limit
    order = [q.take(0.01).header.job for _ in range(4)]  # type: ignore[union-attr]
    assert order == ["s1", "m1", "t1", "t2"]
    assert q.take(0.01) is None and len(q) == 0
