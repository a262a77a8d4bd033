"""Bucketing: full batches leave at once, stragglers on flush or timeout, longest first, nothing lost."""
import random

import pytest

from pipeline.execution.bucketing import Bucketer


def test_full_batches_leave_immediately_and_flush_keeps_everything():
    b = Bucketer(batch_size=3, width=10)
    starts = [5, 7, 55, 9, 52, 3, 58, 99]
    released = []
    for i, s in enumerate(starts):
        released += b.add(("item", i), "g", s)
    assert released == [[("item", 0), ("item", 1), ("item", 3)], [("item", 2), ("item", 4), ("item", 6)]]
    rest = b.flush()
    assert rest == [[("item", 7)], [("item", 5)]]  # longest first
    assert len(b) == 0


def test_groups_never_mix_and_every_item_comes_out_once():
    rng = random.Random(0)
    b = Bucketer(batch_size=4, width=20)
    items = [(i, rng.choice("ab"), rng.randrange(200)) for i in range(300)]
    out = b.add_many([(it, it[1], it[2]) for it in items]) + b.flush()
    seen = [i for batch in out for i in batch]
    assert sorted(seen) == sorted(items)
    for batch in out:
        assert len({g for _, g, _ in batch}) == 1
        assert len({s // 20 for _, _, s in batch}) == 1
        assert len(batch) <= 4


def test_partial_bucket_released_after_wait_limit():
    now = [0.0]
    b = Bucketer(batch_size=8, width=10, max_wait_s=5.0, clock=lambda: now[0])
    b.add("a", "g", 1)
    now[0] = 3.0
    b.add("b", "g", 80)
    assert b.expired() == []
    now[0] = 5.5
    assert b.expired() == [["a"]]
    now[0] = 9.0
    assert b.expired() == [["b"]]


def test_bad_sizes_fail():
    with pytest.raises(ValueError):
        Bucketer(0, 10)
