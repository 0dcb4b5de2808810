import numpy as np
import pytest

from vwwfast.data.epochs import epoch_order, rank_bounds, rank_slice, steps_per_rank
from vwwfast.errors import UserError


def test_order_is_a_seeded_permutation():
    a = epoch_order(1000, seed=0, epoch=0)
    assert a.dtype == np.int64 and sorted(a.tolist()) == list(range(1000))
    np.testing.assert_array_equal(a, epoch_order(1000, 0, 0))
    assert (a != epoch_order(1000, 0, 1)).mean() > 0.9
    assert (a != epoch_order(1000, 1, 0)).mean() > 0.9
    assert (a != np.arange(1000)).mean() > 0.9
    np.testing.assert_array_equal(epoch_order(10, 0, 0, shuffle=False), np.arange(10))
    assert len(epoch_order(0, 0, 0)) == 0


def test_order_golden():
    """Fixed values: the order must not change across machines or numpy versions."""
    assert epoch_order(10, seed=0, epoch=0).tolist() == [9, 5, 3, 0, 6, 4, 8, 1, 2, 7]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 7, 10, 11, 1000])
def test_ranks_are_disjoint_and_cover(world, n):
    order = epoch_order(n, 3, 2)
    parts = [rank_slice(order, r, world) for r in range(world)]
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(n))          # every sample exactly once
    np.testing.assert_array_equal(joined, order)              # contiguous blocks, in order
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    extra = n % world
    assert sizes == [n // world + (1 if r < extra else 0) for r in range(world)]


def test_rank_bounds_and_steps():
    assert [rank_bounds(11, r, 3) for r in range(3)] == [(0, 4), (4, 8), (8, 11)]
    with pytest.raises(ValueError):
        rank_bounds(10, 3, 3)
    assert steps_per_rank(11, 3, batch_size=2) == 2           # 4, 4, 3 samples -> 2 steps
    assert steps_per_rank(11, 3, batch_size=2, drop_last=True) == 1
    assert steps_per_rank(10, 1, batch_size=4) == 3



def test_train_subset_is_fixed_by_seed_and_nested():
    from vwwfast.data.epochs import train_subset
    np.testing.assert_array_equal(train_subset(50, None, 0), np.arange(50))
    a = train_subset(1000, 100, seed=3)
    assert a.dtype == np.int64 and len(a) == len(set(a.tolist())) == 100
    assert np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 1000
    np.testing.assert_array_equal(a, train_subset(1000, 100, seed=3))   # fixed by the seed
    assert len(set(a.tolist()) & set(train_subset(1000, 100, seed=4).tolist())) < 50
    assert a.max() > 500                                               # not the first 100
    smaller = set(train_subset(1000, 30, 3).tolist())
    assert smaller <= set(a.tolist()) <= set(train_subset(1000, 400, 3).tolist())  # nested
    np.testing.assert_array_equal(train_subset(1000, 1000, 3), np.arange(1000))
    with pytest.raises(UserError, match="--train-limit 11 is more than the 10 training samples"):
        train_subset(10, 11, 0)


def test_every_epoch_permutes_the_subset_only():
    from vwwfast.data.epochs import subset_order, train_subset
    subset = train_subset(500, 64, seed=1)
    orders = [subset_order(subset, seed=0, epoch=e) for e in range(3)]
    for o in orders:
        assert sorted(o.tolist()) == subset.tolist()                   # each of them once, no other
    assert (orders[0] != orders[1]).mean() > 0.8
    # without a limit the orders are those of every run before --train-limit existed
    np.testing.assert_array_equal(subset_order(train_subset(500, None, 1), 0, 2), epoch_order(500, 0, 2))
